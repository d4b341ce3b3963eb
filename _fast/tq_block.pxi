# Shared by the TQ1_0 and TQ2_0 twins (include "tq_block.pxi" after QK = 256 is declared):
# the steps both formats take around their own bit layouts -- each 256-block's max |x|, its
# fp16 scale bytes and inverse scale (quantize), the byte checks and the scales of a packed
# tensor, and codes times scales (unpack, dequantize).

from libc.math cimport isinf as _tq_isinf, fabsf as _tq_fabsf
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


cdef tuple _block_scales(str fmt, w):
    """A checked float32 matrix -> (max |x| per block float32 [rows, nb], the same as fp16
    bytes uint8 [rows, nb, 2]); a block over the fp16 range raises the reference's
    FormatError (tq2_0.block_scales)."""
    cdef Py_ssize_t rows = w.shape[0], cols = w.shape[1]
    _tq_ref2.check_shape(fmt, rows, cols)
    dmax = _block_max(w, cols // QK)
    if (dmax > _tq_ref2.FP16_MAX).any():
        _tq_ref2.block_scales(fmt, w)         # raises the reference's FormatError
    return dmax, dmax.astype("<f2").view(np.uint8).reshape(rows, cols // QK, 2)


cdef inline float _inv_scale(float d) noexcept nogil:
    """1 / d for a block's max |x| (0 for an all-zero block, and 0 when 1 / d overflows:
    d < 2^-128, see block_scales in minibit/formats/tq2_0.py)."""
    cdef float inv = 0.0
    if d != 0:
        inv = <float>1.0 / d
        if _tq_isinf(inv):
            inv = 0.0
    return inv


cdef tuple _packed_bytes(str fmt, data, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t blk):
    """(data as contiguous uint8, whether it is [rows, cols/256 * blk]); when it is not, the
    caller hands it to the reference, which raises its FormatError."""
    _tq_ref2.check_shape(fmt, rows, cols)
    data = np.ascontiguousarray(data, dtype=np.uint8)
    return data, data.ndim == 2 and data.shape[0] == rows and data.shape[1] == cols // QK * blk


cdef object _stored_scales(data, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t blk):
    """float32 [rows, nb]: the fp16 scale in the last two bytes of every blk-byte block."""
    cdef Py_ssize_t nb = cols // QK
    d16 = np.ascontiguousarray(data.reshape(rows, nb, blk)[:, :, blk - 2:]).view("<f2")[..., 0]
    return d16.astype(np.float32)


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
