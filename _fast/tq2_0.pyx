# cython: language_level=3
"""Twin of minibit/formats/tq2_0.py: llama.cpp's TQ2_0 as C loops, gguf-py's bytes.

Rounding: C ``roundf`` (half away from zero), exactly ggml's ``lroundf``.  The fp16 block
scales are converted by NumPy (IEEE round to nearest even, as F16C's _cvtss_sh), so the
twin and the reference share one conversion.
"""

import numpy as np
cimport numpy as cnp
from libc.math cimport roundf

from minibit.formats._packed import check_matrix
from minibit.formats import tq2_0 as _ref

cnp.import_array()

cdef enum:
    QK = 256
    BLK = 66

include "tq_block.pxi"


def quantize(w):
    """float32 [rows, cols] -> uint8 [rows, cols/256 * 66]."""
    w = check_matrix(w)
    dmax, d16 = _block_scales("tq2_0", w)
    cdef Py_ssize_t rows = w.shape[0], cols = w.shape[1]
    cdef Py_ssize_t nb = cols // QK, r, b, h, m, n
    cdef const float[:, ::1] x = w
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
    data, fits = _packed_bytes("tq2_0", data, rows, cols, BLK)
    if not fits:
        return _ref.unpack(data, rows, cols)  # raises the reference's FormatError
    cdef Py_ssize_t nb = cols // QK, r, b, h, m, n
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
    return codes, _stored_scales(data, rows, cols, BLK)


def dequantize(data, Py_ssize_t rows, Py_ssize_t cols):
    """uint8 [rows, nb*66] -> float32 [rows, cols] = (code - 1) * d."""
    codes, scales = unpack(data, rows, cols)
    return _scale_codes(codes, scales, rows, cols)

