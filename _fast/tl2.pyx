# cython: language_level=3
"""Twin of minibit/formats/tl2.py: the three TL2 parts as plain loop nests in file order.

1. magnitude bytes over (t, kb, sb, g, q), 2. sign words over (t, kb, sb, G, u),
3. pair bytes over (t, kb2, sb, g, q); the rest of the tensor is zero padding.
Inside a 32-row block, byte position q holds row 8*chunk(q // 8) + q % 8 with the chunk
order 0, 2, 1, 3.  The loop nests (_walk) are written once; pack and unpack are their two
directions.  Arguments are checked by the reference's own check functions first.
"""

import numpy as np
cimport numpy as cnp

from minibit.formats import tl2 as _ref

cnp.import_array()

include "tl_pack.pxi"      # pack and unpack (the two directions of _walk), the pair byte


cdef inline Py_ssize_t _row(Py_ssize_t q) noexcept nogil:
    """Block row stored at byte position q (0..31): chunks in the order 0, 2, 1, 3."""
    cdef Py_ssize_t ch = q >> 3
    return (((ch & 1) << 1) | (ch >> 1)) * 8 + (q & 7)


cdef inline int _iabs(int v) noexcept nogil:
    return -v if v < 0 else v


cdef inline int _triplet(const cnp.int8_t *row, Py_ssize_t k) noexcept nogil:
    """The signed base-3 value 9 a + 3 b + c (-13..13) of the codes row[k..k+2]."""
    return 9 * row[k] + 3 * row[k + 1] + row[k + 2]


cdef void _triplet_codes(const cnp.int8_t *vals, Py_ssize_t nv, cnp.int8_t *c, Py_ssize_t M,
                         Py_ssize_t K) noexcept nogil:
    """Codes c[m, 3j..3j+2] from the signed triplet values vals[m, j] (-13..13; anything else,
    only from a bad magnitude byte, gives zeros)."""
    cdef Py_ssize_t m, j
    cdef int v
    for m in range(M):
        for j in range(nv):
            v = vals[m * nv + j] + 13
            if v < 0 or v > 26:
                v = 13
            c[m * K + 3 * j] = <cnp.int8_t>(v // 9 - 1)
            c[m * K + 3 * j + 1] = <cnp.int8_t>((v // 3) % 3 - 1)
            c[m * K + 3 * j + 2] = <cnp.int8_t>(v % 3 - 1)


cdef int _walk(cnp.int8_t *c, cnp.uint8_t *d, Py_ssize_t M, Py_ssize_t K, Py_ssize_t BM,
               Py_ssize_t BK, Py_ssize_t bm, bint packing) except -1:
    """Every stored byte d[pos] of the TL2 layout with what it holds (c is the codes [M, K]
    row-major): packing writes d from c, else c from d (the triplet columns by way of their
    signed values, _triplet_codes).  Returns 1 when an unpacked byte held a nibble out of
    range."""
    cdef Py_ssize_t three_k = K // BK * BK, two_k = K - three_k, nv = three_k // 3
    cdef Py_ssize_t t, kb, sb, g, q, u, i, m, k, base, pos = 0
    cdef int hi, lo, bad = 0
    cdef unsigned int word
    vals_arr = np.empty(0 if packing else M * nv, dtype=np.int8)
    cdef cnp.int8_t[::1] vals = vals_arr       # unpack: signed triplet values [M, nv], -13..13
    with nogil:
        # 1. magnitudes of two triplets per byte
        for t in range(M // BM):
            for kb in range(three_k // BK):
                for sb in range(BM // 32):
                    base = t * BM + sb * 32
                    for g in range(BK // 6):
                        k = kb * BK + 6 * g
                        for q in range(32):
                            m = base + _row(q)
                            if packing:
                                hi, lo = _iabs(_triplet(c + m * K, k)), _iabs(_triplet(c + m * K, k + 3))
                                d[pos] = <cnp.uint8_t>((hi << 4) | lo)
                            else:
                                hi, lo = d[pos] >> 4, d[pos] & 15
                                if hi > 13 or lo > 13:
                                    bad = 1
                                vals[m * nv + k // 3] = <cnp.int8_t>hi
                                vals[m * nv + k // 3 + 1] = <cnp.int8_t>lo
                            pos += 1
        # 2. sign bits, 16 per little-endian word: bit 15 - i for (row 16 (i & 1) + u,
        #    triplet i >> 1 of the 8-triplet group)
        for t in range(M // BM):
            for kb in range(three_k // BK):
                for sb in range(BM // 32):
                    base = t * BM + sb * 32
                    for g in range(BK // 24):
                        for u in range(16):
                            word = 0 if packing else d[pos] | (<unsigned int>d[pos + 1] << 8)
                            for i in range(16):
                                m = base + 16 * (i & 1) + u
                                k = kb * BK + 24 * g + 3 * (i >> 1)
                                if packing:
                                    if _triplet(c + m * K, k) < 0:
                                        word = word | ((<unsigned int>1) << (15 - i))
                                elif (word >> (15 - i)) & 1:
                                    vals[m * nv + k // 3] = -vals[m * nv + k // 3]
                            if packing:
                                d[pos] = <cnp.uint8_t>(word & 255)
                                d[pos + 1] = <cnp.uint8_t>(word >> 8)
                            pos += 2
        # 3. pairs of the last two_k columns, 32-column blocks
        for t in range(M // BM):
            for kb in range(two_k // 32):
                for sb in range(BM // 32):
                    base = t * BM + sb * 32
                    for g in range(8):
                        k = three_k + kb * 32 + 4 * g
                        for q in range(32):
                            m = base + _row(q)
                            if packing:
                                d[pos] = _pair_byte(c + m * K, k)
                            else:
                                bad |= _pair_codes(d[pos], c + m * K, k)
                            pos += 1
        if not packing:
            _triplet_codes(&vals[0], nv, c, M, K)
    return bad
