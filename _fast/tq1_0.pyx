# cython: language_level=3
"""Twin of minibit/formats/tq1_0.py: llama.cpp's base-3 TQ1_0 as C loops, gguf-py's bytes."""

import numpy as np
cimport numpy as cnp
from libc.math cimport roundf

from minibit.formats._packed import check_matrix
from minibit.formats import tq1_0 as _ref

cnp.import_array()

cdef enum:
    QK = 256
    BLK = 54

include "tq_block.pxi"


cdef inline int _trit(const float[:, ::1] x, Py_ssize_t r, Py_ssize_t e, float inv) noexcept nogil:
    return <int>roundf(x[r, e] * inv) + 1


cdef inline cnp.uint8_t _frac(int q) noexcept nogil:
    """Base-3 number q (0..242) -> ceil(q * 256 / 243), the stored fixed-point byte."""
    return <cnp.uint8_t>((q * 256 + 242) // 243)


def quantize(w):
    """float32 [rows, cols] -> uint8 [rows, cols/256 * 54]."""
    w = check_matrix(w)
    dmax, d16 = _block_scales("tq1_0", w)
    cdef Py_ssize_t rows = w.shape[0], cols = w.shape[1]
    cdef Py_ssize_t nb = cols // QK, r, b, m, n, j, base, ob
    cdef const float[:, ::1] x = w
    cdef const cnp.uint8_t[:, :, ::1] dh = d16
    cdef const float[:, ::1] dm = dmax
    out = np.empty((rows, nb * BLK), dtype=np.uint8)
    cdef cnp.uint8_t[:, ::1] o = out
    cdef float inv
    cdef int q
    with nogil:
        for r in range(rows):
            for b in range(nb):
                inv = _inv_scale(dm[r, b])
                base = b * QK
                ob = b * BLK
                for m in range(32):                       # elements m + 32n
                    q = 0
                    for n in range(5):
                        q = q * 3 + _trit(x, r, base + m + 32 * n, inv)
                    o[r, ob + m] = _frac(q)
                for m in range(16):                       # elements 160 + m + 16n
                    q = 0
                    for n in range(5):
                        q = q * 3 + _trit(x, r, base + 160 + m + 16 * n, inv)
                    o[r, ob + 32 + m] = _frac(q)
                for j in range(4):                        # elements 240 + j + 4n, then x3
                    q = 0
                    for n in range(4):
                        q = q * 3 + _trit(x, r, base + 240 + j + 4 * n, inv)
                    o[r, ob + 48 + j] = _frac(q * 3)
                o[r, ob + 52] = dh[r, b, 0]
                o[r, ob + 53] = dh[r, b, 1]
    return out


cdef inline cnp.int8_t _digit(cnp.uint8_t byte, int n) noexcept nogil:
    """Trit n (0 = most significant) of a stored byte: (byte * 3^n mod 256) * 3 >> 8, minus 1."""
    cdef int p = 1, i
    for i in range(n):
        p = p * 3
    return <cnp.int8_t>((((byte * p) & 255) * 3) >> 8) - 1


def unpack(data, Py_ssize_t rows, Py_ssize_t cols):
    """uint8 [rows, nb*54] -> (int8 codes [rows, cols], float32 d [rows, nb])."""
    data, fits = _packed_bytes("tq1_0", data, rows, cols, BLK)
    if not fits:
        return _ref.unpack(data, rows, cols)  # raises the reference's FormatError
    cdef Py_ssize_t nb = cols // QK, r, b, m, n, j, base, ob
    cdef const cnp.uint8_t[:, ::1] d = data
    codes = np.empty((rows, cols), dtype=np.int8)
    cdef cnp.int8_t[:, ::1] c = codes
    with nogil:
        for r in range(rows):
            for b in range(nb):
                base = b * QK
                ob = b * BLK
                for n in range(5):
                    for m in range(32):
                        c[r, base + m + 32 * n] = _digit(d[r, ob + m], n)
                    for m in range(16):
                        c[r, base + 160 + m + 16 * n] = _digit(d[r, ob + 32 + m], n)
                for n in range(4):
                    for j in range(4):
                        c[r, base + 240 + j + 4 * n] = _digit(d[r, ob + 48 + j], n)
    return codes, _stored_scales(data, rows, cols, BLK)


def dequantize(data, Py_ssize_t rows, Py_ssize_t cols):
    """uint8 [rows, nb*54] -> float32 [rows, cols] = (trit - 1) * d."""
    codes, scales = unpack(data, rows, cols)
    return _scale_codes(codes, scales, rows, cols)
