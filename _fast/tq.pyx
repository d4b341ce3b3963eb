# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Twin of minibit/kernels/tq.py: TQ1_0 / TQ2_0 x Q8_K block dot products, in C.

Same functions, same signatures, same bits as the reference.  Arrays are validated by the
reference's ``check_args`` (FormatError) before any GIL-free code runs; the loops live in
``mb_ternary.h``: per 256-block an exact int32 sum straight from the packed bytes (AVX2 or
portable C), then the float32 sum over blocks in block order, one rounding per operation.
The shared pool of ``mb_rt.h`` over tiles of rows; the thread count never changes a bit.
"""

import numpy as np
cimport numpy as cnp
from libc.stdint cimport uint8_t, int8_t, int32_t, int64_t

from minibit.kernels import tq as _ref

cnp.import_array()

include "mb_rt.pxi"
include "mb_group.pxi"

cdef extern from "mb_ternary.h" nogil:
    void mb_tq(int fmt2, const uint8_t *data, int64_t cols, const int8_t *q,
               const int32_t *ysum, const float *da, int64_t T, int64_t rows, int64_t r0,
               int64_t r1, int32_t *sumi, float *out)
    void mb_tq_lanes(int fmt2, const uint8_t *data, int64_t cols, const int8_t *q,
                     const int32_t *csum, const float *da, int64_t T, int64_t rows,
                     int64_t r0, int64_t r1, int fused, int32_t *lanes_out, float *out)

cdef enum:
    MIN_PARALLEL_MAC = 1 << 18   # multiply-adds below which one thread runs
    TILE_ROWS = 16


ctypedef struct Job:
    const uint8_t *data
    const int8_t *q
    const int32_t *qsum     # per-block (mb_tq) or per-32-chunk (mb_tq_lanes) sums of q
    const float *da
    int32_t *ints           # int32 results (sumi or lanes) when out is NULL
    float *out
    int64_t T, rows, cols
    int fmt2, lanes, fused


cdef void _tiles(void *ctx, int64_t i0, int64_t i1) noexcept nogil:
    """Work items [i0, i1) of the job at ctx; item i: rows [16 i, 16 i + 16) of every token
    (16 rows of weights stay in L1 while every token passes them)."""
    cdef const Job *j = <const Job *>ctx
    cdef int64_t i, r0, r1
    for i in range(i0, i1):
        r0 = i * TILE_ROWS
        r1 = min(r0 + TILE_ROWS, j.rows)
        if j.lanes:
            mb_tq_lanes(j.fmt2, j.data, j.cols, j.q, j.qsum, j.da, j.T, j.rows, r0, r1,
                        j.fused, j.ints, j.out)
        else:
            mb_tq(j.fmt2, j.data, j.cols, j.q, j.qsum, j.da, j.T, j.rows, r0, r1, j.ints, j.out)


cdef object _block_q_sums(q, int64_t nb):
    """int32 [T, nb]: the sum of q over every 256-block, one C loop (no temporaries)."""
    cdef int64_t T = q.shape[0], t, b, j
    ysum = np.empty((T, nb), dtype=np.int32)
    cdef const int8_t[:, ::1] Q = q
    cdef int32_t[:, ::1] YS = ysum
    cdef int32_t acc
    with nogil:
        for t in range(T):
            for b in range(nb):
                acc = 0
                for j in range(256):
                    acc = acc + Q[t, b * 256 + j]
                YS[t, b] = acc
    return ysum


cdef object _q_sums(q, int64_t nb, int lanes):
    """The activation sums a kernel subtracts: per 32-element chunk [T, nb, 8] (the AVX2
    lanes: bsums[2k] + bsums[2k + 1]) or per 256-block [T, nb]."""
    if lanes:
        return q.reshape(q.shape[0], nb, 8, 32).sum(axis=3, dtype=np.int32)
    return _block_q_sums(q, nb)


cdef object _fill_job(Job *job, data, Py_ssize_t rows, Py_ssize_t cols, str fmt, q, qsum, d,
                      int lanes, int fused, list keep):
    """Point job at one weight's product (checked arrays, qsum from _q_sums) -> its result:
    the int32 results when d is None (lanes: [T, rows, nb, 8], else sumi [T, rows, nb]) or
    float32 y [T, rows].  Every array the job points into goes to keep, which the caller
    holds until the job has run."""
    cdef int64_t T = q.shape[0], nb = cols // 256
    cdef bint want_ints = d is None
    if not want_ints:
        ints, out = np.empty(1, np.int32), np.empty((T, rows), np.float32)
    elif lanes:
        ints, out = np.empty((T, rows, nb, 8), np.int32), np.empty(1, np.float32)
    else:
        ints, out = np.empty((T, rows, nb), np.int32), np.empty(1, np.float32)
    if want_ints:
        d = np.zeros((T, nb), dtype=np.float32)
    keep += [data, q, qsum, d, ints, out]
    cdef const uint8_t[:, ::1] D = data
    cdef const int8_t[:, ::1] Q = q
    cdef const int32_t[::1] QS = qsum.reshape(-1)
    cdef const float[:, ::1] DA = d
    cdef int32_t[::1] I = ints.reshape(-1)
    cdef float[::1] O = out.reshape(-1)
    job.data, job.q, job.qsum, job.da = &D[0, 0], &Q[0, 0], &QS[0], &DA[0, 0]
    job.ints = &I[0] if want_ints else NULL
    job.out = NULL if want_ints else &O[0]
    job.T, job.rows, job.cols = T, rows, cols
    job.fmt2, job.lanes, job.fused = fmt == "tq2_0", lanes, fused
    return ints if want_ints else out


cdef int _nthreads(int64_t items, int64_t mac):
    """Small products run on one thread (no pool job at all); the split never changes a bit."""
    return max(1, min(_threads(), items)) if mac >= MIN_PARALLEL_MAC else 1


cdef _run(data, Py_ssize_t rows, Py_ssize_t cols, str fmt, q, d, int lanes, int fused):
    """Checked arrays -> one weight's result (see _fill_job), its row tiles on the pool."""
    cdef int64_t T = q.shape[0], nb = cols // 256
    if T == 0:
        if d is not None:
            return np.empty((0, rows), np.float32)
        if lanes:
            return np.empty((0, rows, nb, 8), np.int32)
        return np.empty((0, rows, nb), np.int32)
    cdef Job job
    keep = []
    result = _fill_job(&job, data, rows, cols, fmt, q, _q_sums(q, nb, lanes), d, lanes, fused, keep)
    cdef int64_t ntiles = (rows + TILE_ROWS - 1) // TILE_ROWS
    cdef int nth = _nthreads(ntiles, T * rows * cols)
    with nogil:
        mb_parallel(_tiles, &job, ntiles, nth)
    return result


def block_sums(data, rows, cols, fmt, q):
    """sumi[t, n, b] = sum over block b of q * (code - 1): int32 [T, rows, nb]."""
    data, q, _ = _ref.check_args(data, rows, cols, fmt, q)
    return _run(data, int(rows), int(cols), fmt, q, None, 0, 0)


def linear_q8k(data, rows, cols, fmt, q, d):
    """Profile "llama.cpp": sum over blocks, in order, of (float)sumi * (d * d_w): float32 [T, rows]."""
    data, q, d = _ref.check_args(data, rows, cols, fmt, q, d)
    return _run(data, int(rows), int(cols), fmt, q, d, 0, 0)


def lane_sums(data, rows, cols, fmt, q):
    """The AVX2 kernel's eight int32 lanes per block: int32 [T, rows, nb, 8]."""
    data, q, _ = _ref.check_args(data, rows, cols, fmt, q)
    return _run(data, int(rows), int(cols), fmt, q, None, 1, 0)


def linear_q8k_avx2(data, rows, cols, fmt, q, d, fused=False):
    """TQ x Q8_K in the AVX2 kernel's order (eight float lanes; fused: fmaf): float32 [T, rows]."""
    data, q, d = _ref.check_args(data, rows, cols, fmt, q, d)
    return _run(data, int(rows), int(cols), fmt, q, d, 1, 1 if fused else 0)


def linear_q8k_avx2_group(datas, rows, cols, fmt, q, d, fused=False):
    """linear_q8k_avx2 of several weights on the same activations -> a tuple of float32
    [T, rows[i]]: the activations' chunk sums once, every weight's row tiles in one
    thread-pool job (one parallel region for q/k/v or gate/up); the same bits."""
    datas, rows = _ref.check_group(datas, rows)
    if len(datas) > MB_MAX_GROUP:
        return tuple(linear_q8k_avx2(a, r, cols, fmt, q, d, fused) for a, r in zip(datas, rows))
    checked = [_ref.check_args(a, r, cols, fmt, q, d) for a, r in zip(datas, rows)]
    q, d = checked[0][1], checked[0][2]
    if q.shape[0] == 0:
        return _mb_group_empty(rows)
    cdef Py_ssize_t c = int(cols)
    cdef Job jobs[MB_MAX_GROUP]
    cdef MbGroup g = _mb_group(_tiles)
    cdef int k
    qsum = _q_sums(q, c // 256, 1)
    keep, outs = [], []
    for k in range(len(datas)):
        outs.append(_fill_job(&jobs[k], checked[k][0], rows[k], c, fmt, q, qsum, d, 1,
                              1 if fused else 0, keep))
        _mb_group_add(&g, &jobs[k], (rows[k] + TILE_ROWS - 1) // TILE_ROWS)
    _mb_group_run(&g, q.shape[0] * c * sum(rows))
    return tuple(outs)
