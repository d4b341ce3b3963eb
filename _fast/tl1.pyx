# cython: language_level=3
"""Twin of minibit/formats/tl1.py: the TL1 tile order as one plain loop nest.

The loop nest (_walk) visits the bytes in file order, (t, kb, sb, g, h, p, l) with l fastest,
and computes the row and column of each nibble pair, so every byte is visited exactly once;
pack and unpack are its two directions.  Arguments are checked by the reference's own check
functions before any unchecked loop.
"""

import numpy as np
cimport numpy as cnp

from minibit.formats._packed import check_codes
from minibit.formats import tl1 as _ref

cnp.import_array()

include "tl_pairs.pxi"


cdef int _walk(cnp.int8_t *c, cnp.uint8_t *d, Py_ssize_t M, Py_ssize_t K, Py_ssize_t BM,
               Py_ssize_t BK, Py_ssize_t bm, bint packing) noexcept:
    """Every byte d[pos] of the TL1 layout with the codes c[m, k..k+3] it holds (c is
    [M, K] row-major): packing writes d from c, else c from d.  Returns 1 when an unpacked
    byte held a nibble over 8."""
    cdef Py_ssize_t t, kb, sb, g, h, p, l, m, k, by = 256 // bm, pos = 0
    cdef int bad = 0
    with nogil:
        for t in range(M // BM):
            for kb in range(K // BK):
                for sb in range(BM // bm):
                    for g in range(BK // by):
                        for h in range(bm // 16):
                            for p in range(by // 4):
                                k = kb * BK + g * by + 4 * p
                                for l in range(16):
                                    m = t * BM + sb * bm + h * 16 + l
                                    if packing:
                                        d[pos] = _pair_byte(c + m * K, k)
                                    else:
                                        bad |= _pair_codes(d[pos], c + m * K, k)
                                    pos += 1
    return bad


def pack(codes, BM, BK, bm):
    """int8 codes [M, K] in {-1, 0, 1} -> uint8 [M*K/4], transform_to_tl1's bytes."""
    codes = check_codes(codes)
    _ref.check_params(codes.shape[0], codes.shape[1], BM, BK, bm)
    cdef const cnp.int8_t[:, ::1] c = codes
    cdef Py_ssize_t M = codes.shape[0], K = codes.shape[1]
    out = np.empty(_ref.nbytes(M, K), dtype=np.uint8)
    cdef cnp.uint8_t[::1] o = out
    _walk(<cnp.int8_t *>&c[0, 0], &o[0], M, K, BM, BK, bm, True)    # reads the codes only
    return out


def unpack(data, M, K, BM, BK, bm):
    """uint8 [M*K/4] -> int8 codes [M, K], the inverse of pack."""
    d_arr = _unpack_input(_ref, data, M, K, BM, BK, bm)
    if d_arr is None:
        return _ref.unpack(data, M, K, BM, BK, bm)       # raises the reference's FormatError
    cdef const cnp.uint8_t[::1] d = d_arr
    out = np.empty((M, K), dtype=np.int8)
    cdef cnp.int8_t[:, ::1] c = out
    if _walk(&c[0, 0], <cnp.uint8_t *>&d[0], M, K, BM, BK, bm, False):   # reads the bytes only
        return _ref.unpack(data, M, K, BM, BK, bm)       # raises, naming the first bad byte
    return out
