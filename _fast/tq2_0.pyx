# cython: language_level=3
"""Twin of minibit/formats/tq2_0.py: llama.cpp's TQ2_0 as C loops, gguf-py's bytes.

Rounding: C ``roundf`` (half away from zero), exactly ggml's ``lroundf``.  The fp16 block
scales are converted by NumPy (IEEE round to nearest even, as F16C's _cvtss_sh), so the
twin and the reference share one conversion.
"""

import numpy as np
cimport numpy as cnp
from libc.math cimport roundf, fabsf

from minibit.formats._packed import check_matrix
from minibit.formats import tq2_0 as _ref

cnp.import_array()

include "tq_block.pxi"

cdef enum:
    QK = 256
    BLK = 66


def _block_max(const float[:, ::1] x, Py_ssize_t nb):
    """float32 [rows, nb]: max |x| of every 256-value block."""
    cdef Py_ssize_t rows = x.shape[0], r, b, j
    out = np.empty((rows, nb), dtype=np.float32)
    cdef float[:, ::1] d = out
    cdef float m, a
    with nogil:
        for r in range(rows):
            for b in range(nb):
                m = 0.0
                for j in range(QK):
                    a = fabsf(x[r, b * QK + j])
                    if a > m:
                        m = a
                d[r, b] = m
    return out


def quantize(w):
    """float32 [rows, cols] -> uint8 [rows, cols/256 * 66]."""
    w = check_matrix(w)
    cdef Py_ssize_t rows = w.shape[0], cols = w.shape[1]
    _ref.check_shape("tq2_0", rows, cols)
    cdef Py_ssize_t nb = cols // QK, r, b, h, m, n
    cdef const float[:, ::1] x = w
    dmax = _block_max(x, nb)
    if (dmax > _ref.FP16_MAX).any():
        _ref.block_scales("tq2_0", w)         # raises the reference's FormatError
    d16 = dmax.astype("<f2").view(np.uint8).reshape(rows, nb, 2)
    cdef const cnp.uint8_t[:, :, ::1] dh = d16
    cdef const float[:, ::1] dm = dmax
    out = np.empty((rows, nb * BLK), dtype=np.uint8)
    cdef cnp.uint8_t[:, ::1] o = out
    cdef float inv
    cdef int code
    cdef cnp.uint8_t byte
    cdef Py_ssize_t base
    with nogil:
        for r in range(rows):
            for b in range(nb):
                inv = _inv_scale(dm[r, b])
                base = b * QK
                for h in range(2):
                    for m in range(32):
                        byte = 0
                        for n in range(4):
                            code = <int>roundf(x[r, base + 128 * h + 32 * n + m] * inv) + 1
                            byte = byte | <cnp.uint8_t>(code << (2 * n))
                        o[r, b * BLK + 32 * h + m] = byte
                o[r, b * BLK + 64] = dh[r, b, 0]
                o[r, b * BLK + 65] = dh[r, b, 1]
    return out


def unpack(data, Py_ssize_t rows, Py_ssize_t cols):
    """uint8 [rows, nb*66] -> (int8 codes [rows, cols], float32 d [rows, nb])."""
    _ref.check_shape("tq2_0", rows, cols)
    data = np.ascontiguousarray(data, dtype=np.uint8)
    cdef Py_ssize_t nb = cols // QK, r, b, h, m, n
    if data.ndim != 2 or data.shape[0] != rows or data.shape[1] != nb * BLK:
        return _ref.unpack(data, rows, cols)  # raises the reference's FormatError
    cdef const cnp.uint8_t[:, ::1] d = data
    codes = np.empty((rows, cols), dtype=np.int8)
    cdef cnp.int8_t[:, ::1] c = codes
    cdef int bad = 0, code
    with nogil:
        for r in range(rows):
            for b in range(nb):
                for h in range(2):
                    for n in range(4):
                        for m in range(32):
                            code = (d[r, b * BLK + 32 * h + m] >> (2 * n)) & 3
                            if code == 3:
                                bad += 1
                            c[r, b * QK + 128 * h + 32 * n + m] = <cnp.int8_t>(code - 1)
    if bad:
        return _ref.unpack(data, rows, cols)
    scales = np.ascontiguousarray(data.reshape(rows, nb, BLK)[:, :, 64:]).view("<f2")[..., 0]
    return codes, scales.astype(np.float32)


def dequantize(data, Py_ssize_t rows, Py_ssize_t cols):
    """uint8 [rows, nb*66] -> float32 [rows, cols] = (code - 1) * d."""
    codes, scales = unpack(data, rows, cols)
    return _scale_codes(codes, scales, rows, cols)


def _scale_codes(codes, scales, Py_ssize_t rows, Py_ssize_t cols):
    """int8 codes [rows, cols] times their 256-block's scale float32 [rows, nb] -> float32
    [rows, cols] (the last step of TQ2_0's and TQ1_0's dequantize)."""
    cdef Py_ssize_t nb = cols // QK, r, b, j
    cdef const cnp.int8_t[:, ::1] c = codes
    cdef const float[:, ::1] s = scales
    out = np.empty((rows, cols), dtype=np.float32)
    cdef float[:, ::1] o = out
    with nogil:
        for r in range(rows):
            for b in range(nb):
                for j in range(QK):
                    o[r, b * QK + j] = <float>c[r, b * QK + j] * s[r, b]
    return out
