# Shared by the TQ1_0 and TQ2_0 twins (include "tq_block.pxi"): one block's inverse scale.

from libc.math cimport isinf as _tq_isinf


cdef inline float _inv_scale(float d) noexcept nogil:
    """1 / d for a block's max |x| (0 for an all-zero block, and 0 when 1 / d overflows:
    d < 2^-128, see block_scales in minibit/formats/tq2_0.py)."""
    cdef float inv = 0.0
    if d != 0:
        inv = <float>1.0 / d
        if _tq_isinf(inv):
            inv = 0.0
    return inv
