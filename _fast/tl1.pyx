# cython: language_level=3
"""Twin of minibit/formats/tl1.py: the TL1 tile order as one plain loop nest.

The loop nest (_walk) visits the bytes in file order, (t, kb, sb, g, h, p, l) with l fastest,
and computes the row and column of each nibble pair, so every byte is visited exactly once;
pack and unpack are its two directions.  Arguments are checked by the reference's own check
functions before any unchecked loop.  The pair byte, pack and unpack are shared with the
TL2 twin (tl_pack.pxi).
"""

import numpy as np
cimport numpy as cnp

from minibit.formats import tl1 as _ref

cnp.import_array()

include "tl_pack.pxi"      # pack and unpack (the two directions of _walk), the pair byte


cdef int _walk(cnp.int8_t *c, cnp.uint8_t *d, Py_ssize_t M, Py_ssize_t K, Py_ssize_t BM,
               Py_ssize_t BK, Py_ssize_t bm, bint packing) except -1:
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

