# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Twin of minibit/kernels/float_ternary.py: float activations times packed ternary codes.

Each output (t, r) is one thread's loop: per column block, 32 float32 lanes by column index
within the block (a zero-padded last step), mbd_tree's fixed reduction, times the block's
scale, added to y in block order -- the reference's steps exactly, so the bits match for
any thread count.  The codes are read straight from the hf_packed bytes.
"""

import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdint cimport int64_t, uint8_t

from minibit.kernels import float_ternary as _ref

cnp.import_array()

cdef extern from "mb_float_ternary.h" nogil:
    float mbf_one(const float *x, const uint8_t *data, int64_t R, int64_t cols, int64_t r,
                  const float *scale_row, int64_t block)


def matmul(x, data, rows, cols, scales, block):
    """y float32 [T, rows]: the reference's matmul, in C."""
    x, data, scales = _ref.check_args(x, data, rows, cols, scales, block)
    cdef int64_t T = x.shape[0], N = rows, K = cols, B = block, R = data.shape[0]
    cdef int64_t nb = K // B
    out = np.empty((T, N), np.float32)
    if T == 0 or N == 0:
        return out
    cdef const float[:, ::1] X = x
    cdef const uint8_t[:, ::1] D = data
    cdef const float[:, ::1] S = scales
    cdef float[:, ::1] Y = out
    cdef int64_t i, t, r
    cdef const float *xp = &X[0, 0]
    cdef const uint8_t *dp = &D[0, 0]
    cdef const float *sp = &S[0, 0]
    cdef float *yp = &Y[0, 0]
    from minibit.kernels import get_threads
    cdef int nt = get_threads()
    if T * N * K < (1 << 16):
        nt = 1
    for i in prange(T * N, nogil=True, num_threads=nt, schedule="static"):
        t = i // N
        r = i % N
        yp[i] = mbf_one(xp + t * K, dp, R, K, r, sp + r * nb, B)
    return out
