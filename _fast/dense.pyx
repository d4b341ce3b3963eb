# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Twin of minibit/kernels/dense.py: the LM head's float product in C, same bits.

The arrays are validated by the reference's ``check_args`` (FormatError) before the GIL is
released; the loop lives in ``mb_dense.h`` (AVX2 + F16C at run time, portable C otherwise).
Threads: the shared pool of ``mb_rt.h`` over tiles of output rows; each output is one
thread's fixed-order dot product, so the thread count never changes a bit.
"""

import numpy as np
cimport numpy as cnp
from libc.stdint cimport int64_t

from minibit.kernels import dense as _ref

cnp.import_array()

include "mb_rt.pxi"

cdef extern from "mb_dense.h" nogil:
    void mbd_rows(const float *x, int64_t T, int64_t K, const void *W, int dtype,
                  int64_t N, int64_t n0, int64_t n1, float *y)

cdef enum:
    MIN_PARALLEL_MAC = 1 << 18
    TILE = 64

_CODES = {"F32": 0, "F16": 1, "BF16": 2}


ctypedef struct Job:
    const float *x
    const void *w
    float *y
    int64_t T, K, N
    int code


cdef void _tiles(void *ctx, int64_t i0, int64_t i1) noexcept nogil:
    """Work items [i0, i1) of the job at ctx; item i: output rows [64 i, 64 i + 64)."""
    cdef const Job *j = <const Job *>ctx
    mbd_rows(j.x, j.T, j.K, j.w, j.code, j.N, i0 * TILE, min(i1 * TILE, j.N), j.y)


def matmul_t(x, W, dtype, out=None):
    """y = x @ W.T in dense.py's lane order: float32 [T, N] (see minibit.kernels.dense).

    ``out``, when given, is a float32 C-contiguous [T, N] array written in place (the decode
    loop reuses one)."""
    x, W = _ref.check_args(x, W, dtype)
    cdef int64_t T = x.shape[0], K = x.shape[1], N = W.shape[0]
    out = _ref.check_out(out, T, N)
    if T == 0 or N == 0:
        return out
    cdef int code = _CODES[dtype]
    cdef const float[:, ::1] X = x
    cdef float[:, ::1] Y = out
    cdef cnp.ndarray Wa = W
    cdef const void *wp = <const void *>cnp.PyArray_DATA(Wa)
    cdef const float *xp = &X[0, 0]
    cdef float *yp = &Y[0, 0]
    cdef int64_t ntiles = (N + TILE - 1) // TILE
    cdef int nth = max(1, min(_threads(), ntiles)) if T * N * K >= MIN_PARALLEL_MAC else 1
    if K == 0:
        out[...] = 0
        return out
    cdef Job job
    job.x, job.w, job.y, job.T, job.K, job.N, job.code = xp, wp, yp, T, K, N, code
    with nogil:
        mb_parallel(_tiles, &job, ntiles, nth)
    return out
