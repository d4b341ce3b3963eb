# Shared by the TQ1_0 and TQ2_0 twins (include "tq_block.pxi" after the module's QK = 256,
# BLK (bytes per block) and _FMT): quantize, unpack and dequantize, the steps both formats
# take around their own bit layouts.  Each module gives its layout as two block functions:
#   _pack_block(x, inv, o)   the code bytes o[0 .. BLK-3] of the 256 floats x (inverse scale inv)
#   _unpack_block(d, c)      the 256 codes c of the code bytes d; returns how many were invalid
# Every block ends with its fp16 scale d = max|x| in bytes BLK-2, BLK-1 (little-endian).

from libc.math cimport isinf as _tq_isinf, fabsf as _tq_fabsf
from minibit.formats._packed import check_matrix
from minibit.formats import tq2_0 as _tq_ref2


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
                    a = _tq_fabsf(x[r, b * QK + j])
                    if a > m:
                        m = a
                d[r, b] = m
    return out


cdef inline float _inv_scale(float d) noexcept nogil:
    """1 / d for a block's max |x| (0 for an all-zero block, and 0 when 1 / d overflows:
    d < 2^-128, see block_scales in minibit/formats/tq2_0.py)."""
    cdef float inv = 0.0
    if d != 0:
        inv = <float>1.0 / d
        if _tq_isinf(inv):
            inv = 0.0
    return inv


def quantize(w):
    """float32 [rows, cols] -> uint8 [rows, cols/256 * BLK]: per 256-block, the code bytes
    (_pack_block) and the fp16 scale max|x| (converted by NumPy, round to nearest even as
    F16C); a block over the fp16 range raises the reference's FormatError."""
    w = check_matrix(w)
    cdef Py_ssize_t rows = w.shape[0], cols = w.shape[1], nb = cols // QK, r, b
    _tq_ref2.check_shape(_FMT, rows, cols)
    dmax = _block_max(w, nb)
    if (dmax > _tq_ref2.FP16_MAX).any():
        _tq_ref2.block_scales(_FMT, w)        # raises the reference's FormatError
    d16 = dmax.astype("<f2").view(np.uint8).reshape(rows, nb, 2)
    cdef const float[:, ::1] x = w
    cdef const float[:, ::1] dm = dmax
    cdef const cnp.uint8_t[:, :, ::1] dh = d16
    out = np.empty((rows, nb * BLK), dtype=np.uint8)
    cdef cnp.uint8_t[:, ::1] o = out
    with nogil:
        for r in range(rows):
            for b in range(nb):
                _pack_block(&x[r, b * QK], _inv_scale(dm[r, b]), &o[r, b * BLK])
                o[r, b * BLK + BLK - 2] = dh[r, b, 0]
                o[r, b * BLK + BLK - 1] = dh[r, b, 1]
    return out


def unpack(data, Py_ssize_t rows, Py_ssize_t cols):
    """uint8 [rows, cols/256 * BLK] -> (int8 codes [rows, cols], float32 d [rows, nb])."""
    _tq_ref2.check_shape(_FMT, rows, cols)
    data = np.ascontiguousarray(data, dtype=np.uint8)
    cdef Py_ssize_t nb = cols // QK, r, b, bad = 0
    if data.ndim != 2 or data.shape[0] != rows or data.shape[1] != nb * BLK:
        return _ref.unpack(data, rows, cols)  # raises the reference's FormatError
    cdef const cnp.uint8_t[:, ::1] d = data
    codes = np.empty((rows, cols), dtype=np.int8)
    cdef cnp.int8_t[:, ::1] c = codes
    with nogil:
        for r in range(rows):
            for b in range(nb):
                bad += _unpack_block(&d[r, b * BLK], &c[r, b * QK])
    if bad:
        return _ref.unpack(data, rows, cols)  # raises, naming the first bad byte
    scales = np.ascontiguousarray(data.reshape(rows, nb, BLK)[:, :, BLK - 2:]).view("<f2")
    return codes, scales[..., 0].astype(np.float32)


def dequantize(data, Py_ssize_t rows, Py_ssize_t cols):
    """uint8 [rows, cols/256 * BLK] -> float32 [rows, cols] = (code - 1) * d, d the block's
    scale."""
    codes, scales = unpack(data, rows, cols)
    cdef Py_ssize_t nb = cols // QK, r, b, j
    cdef const cnp.int8_t[:, ::1] cv = codes
    cdef const float[:, ::1] s = scales
    out = np.empty((rows, cols), dtype=np.float32)
    cdef float[:, ::1] o = out
    with nogil:
        for r in range(rows):
            for b in range(nb):
                for j in range(QK):
                    o[r, b * QK + j] = <float>cv[r, b * QK + j] * s[r, b]
    return out
