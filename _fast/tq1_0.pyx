# cython: language_level=3
"""Twin of minibit/formats/tq1_0.py: llama.cpp's base-3 TQ1_0 as C loops, gguf-py's bytes.

This file holds the TQ1_0 bit layout of one 256-block (_pack_block, _unpack_block);
quantize, unpack and dequantize around it are shared with the TQ2_0 twin (tq_block.pxi).
"""

import numpy as np
cimport numpy as cnp
from libc.math cimport roundf

from minibit.formats import tq1_0 as _ref

cnp.import_array()

cdef enum:
    QK = 256
    BLK = 54                    # qs[48], qh[4], fp16 d

_FMT = "tq1_0"

include "tq_block.pxi"


cdef inline int _trit(float v, float inv) noexcept nogil:
    return <int>roundf(v * inv) + 1


cdef inline cnp.uint8_t _frac(int q) noexcept nogil:
    """Base-3 number q (0..242) -> ceil(q * 256 / 243), the stored fixed-point byte."""
    return <cnp.uint8_t>((q * 256 + 242) // 243)


cdef inline void _pack_block(const float *x, float inv, cnp.uint8_t *o) noexcept nogil:
    """The 52 code bytes of one block: qs[m] holds the trits of elements m + 32 n (n = 0..4),
    qs[32 + m] those of 160 + m + 16 n, qh[j] those of 240 + j + 4 n (n = 0..3, then x3)."""
    cdef int m, n, j, q
    for m in range(32):
        q = 0
        for n in range(5):
            q = q * 3 + _trit(x[m + 32 * n], inv)
        o[m] = _frac(q)
    for m in range(16):
        q = 0
        for n in range(5):
            q = q * 3 + _trit(x[160 + m + 16 * n], inv)
        o[32 + m] = _frac(q)
    for j in range(4):
        q = 0
        for n in range(4):
            q = q * 3 + _trit(x[240 + j + 4 * n], inv)
        o[48 + j] = _frac(q * 3)


cdef inline cnp.int8_t _digit(cnp.uint8_t byte, int n) noexcept nogil:
    """Trit n (0 = most significant) of a stored byte: (byte * 3^n mod 256) * 3 >> 8, minus 1."""
    cdef int p = 1, i
    for i in range(n):
        p = p * 3
    return <cnp.int8_t>((((byte * p) & 255) * 3) >> 8) - 1


cdef inline int _unpack_block(const cnp.uint8_t *d, cnp.int8_t *c) noexcept nogil:
    """The inverse of _pack_block, trits - 1 in {-1, 0, 1}; every byte decodes (returns 0)."""
    cdef int m, n, j
    for n in range(5):
        for m in range(32):
            c[m + 32 * n] = _digit(d[m], n)
        for m in range(16):
            c[160 + m + 16 * n] = _digit(d[32 + m], n)
    for n in range(4):
        for j in range(4):
            c[240 + j + 4 * n] = _digit(d[48 + j], n)
    return 0
