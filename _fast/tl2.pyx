# cython: language_level=3
"""Twin of minibit/formats/tl2.py: the three TL2 parts as plain loop nests in file order.

1. magnitude bytes over (t, kb, sb, g, q), 2. sign words over (t, kb, sb, G, u),
3. pair bytes over (t, kb2, sb, g, q); the rest of the tensor is zero padding.
Inside a 32-row block, byte position q holds row 8*chunk(q // 8) + q % 8 with the chunk
order 0, 2, 1, 3.  Arguments are checked by the reference's own check functions first.
"""

import numpy as np
cimport numpy as cnp

from minibit.formats._packed import check_codes
from minibit.formats import tl2 as _ref

cnp.import_array()


cdef inline Py_ssize_t _row(Py_ssize_t q) noexcept nogil:
    """Block row stored at byte position q (0..31): chunks in the order 0, 2, 1, 3."""
    cdef Py_ssize_t ch = q >> 3
    return (((ch & 1) << 1) | (ch >> 1)) * 8 + (q & 7)


cdef inline int _iabs(int v) noexcept nogil:
    return -v if v < 0 else v


def pack(codes, BM, BK, bm):
    """int8 codes [M, K] in {-1, 0, 1} -> uint8 [nbytes(M, K)], transform_to_tl2's bytes."""
    codes = check_codes(codes)
    _ref.check_params(codes.shape[0], codes.shape[1], BM, BK, bm)
    cdef const cnp.int8_t[:, ::1] c = codes
    cdef Py_ssize_t M = codes.shape[0], K = codes.shape[1]
    cdef Py_ssize_t tBM = int(BM), tBK = int(BK)
    cdef Py_ssize_t three_k = K // tBK * tBK, two_k = K - three_k
    out = np.zeros(_ref.nbytes(M, K), dtype=np.uint8)
    cdef cnp.uint8_t[::1] o = out
    cdef Py_ssize_t t, kb, sb, g, q, u, i, m, k, base, pos = 0
    cdef int v0, v1
    cdef unsigned int word
    with nogil:
        # 1. magnitudes of two triplets per byte
        for t in range(M // tBM):
            for kb in range(three_k // tBK):
                for sb in range(tBM // 32):
                    base = t * tBM + sb * 32
                    for g in range(tBK // 6):
                        k = kb * tBK + 6 * g
                        for q in range(32):
                            m = base + _row(q)
                            v0 = 9 * c[m, k] + 3 * c[m, k + 1] + c[m, k + 2]
                            v1 = 9 * c[m, k + 3] + 3 * c[m, k + 4] + c[m, k + 5]
                            o[pos] = <cnp.uint8_t>((_iabs(v0) << 4) | _iabs(v1))
                            pos += 1
        # 2. sign bits, 16 per little-endian word
        for t in range(M // tBM):
            for kb in range(three_k // tBK):
                for sb in range(tBM // 32):
                    base = t * tBM + sb * 32
                    for g in range(tBK // 24):
                        for u in range(16):
                            word = 0
                            for i in range(16):
                                m = base + 16 * (i & 1) + u
                                k = kb * tBK + 24 * g + 3 * (i >> 1)
                                v0 = 9 * c[m, k] + 3 * c[m, k + 1] + c[m, k + 2]
                                if v0 < 0:
                                    word = word | ((<unsigned int>1) << (15 - i))
                            o[pos] = <cnp.uint8_t>(word & 255)
                            o[pos + 1] = <cnp.uint8_t>(word >> 8)
                            pos += 2
        # 3. pairs of the last two_k columns, 32-column blocks
        for t in range(M // tBM):
            for kb in range(two_k // 32):
                for sb in range(tBM // 32):
                    base = t * tBM + sb * 32
                    for g in range(8):
                        k = three_k + kb * 32 + 4 * g
                        for q in range(32):
                            m = base + _row(q)
                            v0 = 3 * c[m, k] + c[m, k + 1] + 4
                            v1 = 3 * c[m, k + 2] + c[m, k + 3] + 4
                            o[pos] = <cnp.uint8_t>((v0 << 4) | v1)
                            pos += 1
    return out


def unpack(data, M, K, BM, BK, bm):
    """uint8 [nbytes(M, K)] -> int8 codes [M, K], the inverse of pack (padding not read)."""
    _ref.check_params(M, K, BM, BK, bm)
    d_arr = np.asarray(data)
    if d_arr.dtype != np.uint8 or d_arr.ndim != 1 or d_arr.size != _ref.nbytes(M, K):
        return _ref.unpack(data, M, K, BM, BK, bm)       # raises the reference's FormatError
    d_arr = np.ascontiguousarray(d_arr)
    cdef const cnp.uint8_t[::1] d = d_arr
    cdef Py_ssize_t tM = int(M), tK = int(K), tBM = int(BM), tBK = int(BK)
    cdef Py_ssize_t three_k = tK // tBK * tBK, two_k = tK - three_k
    out = np.empty((tM, tK), dtype=np.int8)
    cdef cnp.int8_t[:, ::1] c = out
    vals_arr = np.empty((tM, three_k // 3), dtype=np.int8)
    cdef cnp.int8_t[:, ::1] vals = vals_arr             # signed triplet values -13..13
    cdef Py_ssize_t t, kb, sb, g, q, u, i, m, k, j, base, pos = 0
    cdef int hi, lo, v, bad = 0
    cdef unsigned int word
    with nogil:
        # 1. magnitudes
        for t in range(tM // tBM):
            for kb in range(three_k // tBK):
                for sb in range(tBM // 32):
                    base = t * tBM + sb * 32
                    for g in range(tBK // 6):
                        j = (kb * tBK + 6 * g) // 3
                        for q in range(32):
                            m = base + _row(q)
                            hi = d[pos] >> 4
                            lo = d[pos] & 15
                            pos += 1
                            if hi > 13 or lo > 13:
                                bad = 1
                            vals[m, j] = <cnp.int8_t>hi
                            vals[m, j + 1] = <cnp.int8_t>lo
        # 2. sign bits
        for t in range(tM // tBM):
            for kb in range(three_k // tBK):
                for sb in range(tBM // 32):
                    base = t * tBM + sb * 32
                    for g in range(tBK // 24):
                        for u in range(16):
                            word = d[pos] | (<unsigned int>d[pos + 1] << 8)
                            pos += 2
                            for i in range(16):
                                if (word >> (15 - i)) & 1:
                                    m = base + 16 * (i & 1) + u
                                    j = (kb * tBK + 24 * g) // 3 + (i >> 1)
                                    vals[m, j] = -vals[m, j]
        for m in range(tM):
            for j in range(three_k // 3):
                v = vals[m, j] + 13
                if v < 0 or v > 26:                    # only from a bad magnitude
                    v = 13
                c[m, 3 * j] = <cnp.int8_t>(v // 9 - 1)
                c[m, 3 * j + 1] = <cnp.int8_t>((v // 3) % 3 - 1)
                c[m, 3 * j + 2] = <cnp.int8_t>(v % 3 - 1)
        # 3. pairs
        for t in range(tM // tBM):
            for kb in range(two_k // 32):
                for sb in range(tBM // 32):
                    base = t * tBM + sb * 32
                    for g in range(8):
                        k = three_k + kb * 32 + 4 * g
                        for q in range(32):
                            m = base + _row(q)
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
