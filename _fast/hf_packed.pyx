# cython: language_level=3
"""Twin of minibit/formats/hf_packed.py: transformers' 4-rows-per-byte layout as C loops.

Validation happens first, in Python, with the reference's own checks (same errors); the
loops run only on arrays whose shapes were proven to match.
"""

import numpy as np
cimport numpy as cnp

from minibit.formats._packed import check_codes
from minibit.formats import hf_packed as _ref

cnp.import_array()


def pack(codes):
    """int8 codes [rows, cols] in {-1, 0, 1} -> uint8 [ceil(rows/4), cols]."""
    codes = check_codes(codes)
    cdef const cnp.int8_t[:, ::1] c = codes
    cdef Py_ssize_t rows = codes.shape[0], cols = codes.shape[1]
    cdef Py_ssize_t R = (rows + 3) // 4, p, i, j, r
    out = np.zeros((R, cols), dtype=np.uint8)
    cdef cnp.uint8_t[:, ::1] o = out
    cdef cnp.uint8_t byte
    with nogil:
        for p in range(R):
            for j in range(cols):
                byte = 0
                for i in range(4):
                    r = i * R + p
                    if r < rows:
                        byte = byte | <cnp.uint8_t>((c[r, j] + 1) << (2 * i))
                o[p, j] = byte
    return out


def unpack(data, Py_ssize_t rows):
    """uint8 [R, cols] -> int8 codes [rows, cols]; code 3 raises FormatError."""
    data = np.ascontiguousarray(data, dtype=np.uint8)
    if data.ndim != 2 or rows <= 0 or (rows + 3) // 4 != data.shape[0]:
        return _ref.unpack(data, rows)        # raises the reference's FormatError
    cdef const cnp.uint8_t[:, ::1] d = data
    cdef Py_ssize_t R = data.shape[0], cols = data.shape[1], r, j
    out = np.empty((rows, cols), dtype=np.int8)
    cdef cnp.int8_t[:, ::1] o = out
    cdef int bad = 0, code
    with nogil:
        for r in range(rows):
            for j in range(cols):
                code = (d[r % R, j] >> (2 * (r // R))) & 3
                if code == 3:
                    bad += 1
                o[r, j] = <cnp.int8_t>(code - 1)
    if bad:
        return _ref.unpack(data, rows)        # same error, same position
    return out
