# cython: language_level=3
"""Twin of minibit/formats/tq2_0.py: llama.cpp's TQ2_0 as C loops, gguf-py's bytes.

This file holds the TQ2_0 bit layout of one 256-block (_pack_block, _unpack_block);
quantize, unpack and dequantize around it are shared with the TQ1_0 twin (tq_block.pxi).
Rounding: C ``roundf`` (half away from zero), exactly ggml's ``lroundf``.  The fp16 block
scales are converted by NumPy (IEEE round to nearest even, as F16C's _cvtss_sh), so the
twin and the reference share one conversion.
"""

import numpy as np
cimport numpy as cnp
from libc.math cimport roundf

from minibit.formats import tq2_0 as _ref

cnp.import_array()

cdef enum:
    QK = 256
    BLK = 66                    # 64 code bytes, fp16 d

_FMT = "tq2_0"

include "tq_block.pxi"


cdef inline void _pack_block(const float *x, float inv, cnp.uint8_t *o) noexcept nogil:
    """Code byte 32 h + m holds the codes lroundf(x * inv) + 1 of elements 128 h + 32 n + m,
    n = 0..3, two bits each (n = 0 in the lowest bits)."""
    cdef int h, m, n, code
    cdef cnp.uint8_t byte
    for h in range(2):
        for m in range(32):
            byte = 0
            for n in range(4):
                code = <int>roundf(x[128 * h + 32 * n + m] * inv) + 1
                byte = byte | <cnp.uint8_t>(code << (2 * n))
            o[32 * h + m] = byte


cdef inline int _unpack_block(const cnp.uint8_t *d, cnp.int8_t *c) noexcept nogil:
    """The inverse of _pack_block, codes - 1 in {-1, 0, 1}; returns how many 2-bit fields
    held 3, which no code has."""
    cdef int h, m, n, code, bad = 0
    for h in range(2):
        for n in range(4):
            for m in range(32):
                code = (d[32 * h + m] >> (2 * n)) & 3
                if code == 3:
                    bad += 1
                c[128 * h + 32 * n + m] = <cnp.int8_t>(code - 1)
    return bad
