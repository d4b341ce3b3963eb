# cython: language_level=3
"""Twin of minibit/formats/tl1.py: the TL1 tile order as one plain loop nest.

The loops walk the bytes in file order, (t, kb, sb, g, h, p, l) with l fastest, and compute
the row and column of each nibble pair, so every byte is written exactly once.
Arguments are checked by the reference's own check functions before any unchecked loop.
"""

import numpy as np
cimport numpy as cnp

from minibit.formats._packed import check_codes
from minibit.formats import tl1 as _ref

cnp.import_array()


def pack(codes, BM, BK, bm):
    """int8 codes [M, K] in {-1, 0, 1} -> uint8 [M*K/4], transform_to_tl1's bytes."""
    codes = check_codes(codes)
    _ref.check_params(codes.shape[0], codes.shape[1], BM, BK, bm)
    cdef const cnp.int8_t[:, ::1] c = codes
    cdef Py_ssize_t M = codes.shape[0], K = codes.shape[1]
    cdef Py_ssize_t tBM = int(BM), tBK = int(BK), tbm = int(bm), by = 256 // tbm
    out = np.empty(_ref.nbytes(M, K), dtype=np.uint8)
    cdef cnp.uint8_t[::1] o = out
    cdef Py_ssize_t t, kb, sb, g, h, p, l, m, k, pos = 0
    cdef int hi, lo
    with nogil:
        for t in range(M // tBM):
            for kb in range(K // tBK):
                for sb in range(tBM // tbm):
                    for g in range(tBK // by):
                        for h in range(tbm // 16):
                            for p in range(by // 4):
                                k = kb * tBK + g * by + 4 * p
                                for l in range(16):
                                    m = t * tBM + sb * tbm + h * 16 + l
                                    hi = 3 * c[m, k] + c[m, k + 1] + 4
                                    lo = 3 * c[m, k + 2] + c[m, k + 3] + 4
                                    o[pos] = <cnp.uint8_t>((hi << 4) | lo)
                                    pos += 1
    return out


def unpack(data, M, K, BM, BK, bm):
    """uint8 [M*K/4] -> int8 codes [M, K], the inverse of pack."""
    _ref.check_params(M, K, BM, BK, bm)
    d_arr = np.asarray(data)
    if d_arr.dtype != np.uint8 or d_arr.ndim != 1 or d_arr.size != _ref.nbytes(M, K):
        return _ref.unpack(data, M, K, BM, BK, bm)       # raises the reference's FormatError
    d_arr = np.ascontiguousarray(d_arr)
    cdef const cnp.uint8_t[::1] d = d_arr
    cdef Py_ssize_t tM = int(M), tK = int(K)
    cdef Py_ssize_t tBM = int(BM), tBK = int(BK), tbm = int(bm), by = 256 // tbm
    out = np.empty((tM, tK), dtype=np.int8)
    cdef cnp.int8_t[:, ::1] c = out
    cdef Py_ssize_t t, kb, sb, g, h, p, l, m, k, pos = 0
    cdef int hi, lo, bad = 0
    with nogil:
        for t in range(tM // tBM):
            for kb in range(tK // tBK):
                for sb in range(tBM // tbm):
                    for g in range(tBK // by):
                        for h in range(tbm // 16):
                            for p in range(by // 4):
                                k = kb * tBK + g * by + 4 * p
                                for l in range(16):
                                    m = t * tBM + sb * tbm + h * 16 + l
                                    hi = d[pos] >> 4
                                    lo = d[pos] & 15
                                    pos += 1
                                    if hi > 8 or lo > 8:
                                        bad = 1
                                        hi = 4
                                        lo = 4
                                    c[m, k] = <cnp.int8_t>(hi // 3 - 1)
                                    c[m, k + 1] = <cnp.int8_t>(hi % 3 - 1)
                                    c[m, k + 2] = <cnp.int8_t>(lo // 3 - 1)
                                    c[m, k + 3] = <cnp.int8_t>(lo % 3 - 1)
    if bad:
        return _ref.unpack(data, M, K, BM, BK, bm)       # raises, naming the first bad byte
    return out
