# cython: language_level=3
"""Twin of minibit/formats/i2_s.py: bitnet.cpp's 128-code blocks as C loops."""

import struct

import numpy as np
cimport numpy as cnp

from minibit.formats._packed import check_codes
from minibit.formats import i2_s as _ref

cnp.import_array()


def pack(codes, scale):
    """int8 codes [rows, cols] and the tensor scale -> uint8 [n/4 + 32]."""
    codes = check_codes(codes)
    _ref.check_shape(codes.shape[0], codes.shape[1])
    cdef const cnp.int8_t[::1] c = codes.reshape(-1)
    cdef Py_ssize_t n = codes.size, nblk = n // 128, b, p
    out = np.zeros(n // 4 + 32, dtype=np.uint8)
    cdef cnp.uint8_t[::1] o = out
    with nogil:
        for b in range(nblk):
            for p in range(32):
                o[32 * b + p] = <cnp.uint8_t>(((c[128 * b + p] + 1) << 6) | ((c[128 * b + 32 + p] + 1) << 4)
                                              | ((c[128 * b + 64 + p] + 1) << 2) | (c[128 * b + 96 + p] + 1))
    out[n // 4:n // 4 + 4] = np.frombuffer(struct.pack("<f", float(np.float32(scale))), dtype=np.uint8)
    return out


def unpack(data, Py_ssize_t rows, Py_ssize_t cols):
    """uint8 [n/4 + 32] -> (int8 codes [rows, cols], float32 scale)."""
    _ref.check_shape(rows, cols)
    data = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    if data.size != _ref.nbytes(rows, cols):
        return _ref.unpack(data, rows, cols)  # raises the reference's FormatError
    cdef const cnp.uint8_t[::1] d = data
    cdef Py_ssize_t n = rows * cols, nblk = n // 128, b, p, g
    out = np.empty(n, dtype=np.int8)
    cdef cnp.int8_t[::1] o = out
    cdef int bad = 0, code
    with nogil:
        for b in range(nblk):
            for g in range(4):
                for p in range(32):
                    code = (d[32 * b + p] >> (6 - 2 * g)) & 3
                    if code == 3:
                        bad += 1
                    o[128 * b + 32 * g + p] = <cnp.int8_t>(code - 1)
    if bad:
        return _ref.unpack(data, rows, cols)
    scale = data[n // 4:n // 4 + 4].view("<f4")[0]
    return out.reshape(rows, cols), np.float32(scale)
