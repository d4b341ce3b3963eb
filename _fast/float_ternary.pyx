# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Twin of minibit/kernels/float_ternary.py: float activations times packed ternary codes.

Each output (t, r) is one thread's loop: per column block, 32 float32 lanes by column index
within the block (a zero-padded last step), mbd_tree's fixed reduction, times the block's
scale, added to y in block order -- the reference's steps exactly, so the bits match for
any thread count.  The codes are read straight from the hf_packed bytes.  Threads: the
shared pool of ``mb_rt.h`` over tiles of 64 output rows.
"""

import numpy as np
cimport numpy as cnp
from libc.stdint cimport int64_t, uint8_t

from minibit.kernels import float_ternary as _ref

cnp.import_array()

include "mb_rt.pxi"

cdef extern from "mb_float_ternary.h" nogil:
    float mbf_one(const float *x, const uint8_t *data, int64_t R, int64_t cols, int64_t r,
                  const float *scale_row, int64_t block)
    void MBF_MKL_TILE(const float *xq, const uint8_t *dt, int64_t Rp, int64_t R, int64_t K, int64_t N,
                      int plane, int64_t rr0, int64_t rr1, int64_t T, float wmul, int online,
                      float *y)


ctypedef struct Job:
    const float *x
    const uint8_t *d
    const float *s
    float *y
    int64_t T, N, K, R, nb, B


cdef void _tiles(void *ctx, int64_t i0, int64_t i1) noexcept nogil:
    """Items [i0, i1): item c is output rows [64 c, 64 c + 64) of every token."""
    cdef const Job *j = <const Job *>ctx
    cdef int64_t t, r
    for r in range(i0 * 64, min(i1 * 64, j.N)):
        for t in range(j.T):
            j.y[t * j.N + r] = mbf_one(j.x + t * j.K, j.d, j.R, j.K, r, j.s + r * j.nb, j.B)


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
    cdef Job job
    job.x, job.d, job.s, job.y = &X[0, 0], &D[0, 0], &S[0, 0], &Y[0, 0]
    job.T, job.N, job.K, job.R, job.nb, job.B = T, N, K, R, nb, B
    cdef int64_t tiles = (N + 63) // 64
    cdef int nt = 1 if T * N * K < (1 << 16) else <int>min(max(1, _threads()), tiles)
    with nogil:
        mb_parallel(_tiles, &job, tiles, nt)
    return out


# ---- mkl_linear: transformers' AutoBitLinear in MKL's order -------------------------------

ctypedef struct MklJob:
    const float *x
    const uint8_t *dt
    float *y
    int64_t T, N, K, R, tiles
    float wmul
    int online


cdef void _mkl_tiles(void *ctx, int64_t i0, int64_t i1) noexcept nogil:
    """Items [i0, i1): item c is plane c // tiles, byte rows [64 (c % tiles), + 64)."""
    cdef const MklJob *j = <const MklJob *>ctx
    cdef int64_t c, rr0
    for c in range(i0, i1):
        rr0 = (c % j.tiles) * 64
        MBF_MKL_TILE(j.x, j.dt, j.tiles * 64, j.R, j.K, j.N, <int>(c // j.tiles), rr0, min(rr0 + 64, j.R),
                     j.T, j.wmul, j.online, j.y)


def mkl_linear(xq, data, rows, cols, wmul=None, data_t=None):
    """y float32 [T, rows]: the reference's mkl_linear, in C.  data_t: the bytes transposed
    and padded (float_ternary.transpose_codes(data); made here when None)."""
    xq, data, wmul = _ref.check_mkl_args(xq, data, rows, cols, wmul)
    cdef int64_t T = xq.shape[0], N = rows, K = cols, R = data.shape[0]
    cdef int64_t Rp = (R + 63) // 64 * 64
    if data_t is None:
        data_t = _ref.transpose_codes(data)
    if not isinstance(data_t, np.ndarray) or data_t.dtype != np.uint8 or data_t.shape != (K, Rp) \
            or not data_t.flags.c_contiguous:
        raise _ref.FormatError(f"float_ternary: data_t must be uint8 [{K}, {Rp}] C-contiguous")
    out = np.empty((T, N), np.float32)
    if T == 0:
        return out
    cdef const float[:, ::1] X = xq
    cdef const uint8_t[:, ::1] D = data_t
    cdef float[:, ::1] Y = out
    cdef MklJob job
    job.x, job.dt, job.y = &X[0, 0], &D[0, 0], &Y[0, 0]
    job.T, job.N, job.K, job.R = T, N, K, R
    job.tiles = (R + 63) // 64
    job.online = 0 if wmul is None else 1
    job.wmul = 0.0 if wmul is None else <float>wmul
    cdef int64_t items = 4 * job.tiles
    cdef int nt = 1 if T * N * K < (1 << 16) else <int>min(max(1, _threads()), items)
    with nogil:
        mb_parallel(_mkl_tiles, &job, items, nt)
    return out
