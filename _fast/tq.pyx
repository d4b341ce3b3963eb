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
    MAX_GROUP = 8                # weights per group job (more: one job each)


ctypedef struct Job:
    const uint8_t *data
    const int8_t *q
    const int32_t *ysum
    const float *da
    int32_t *sumi
    float *out
    int64_t T, rows, cols
    int fmt2


cdef void _tiles(void *ctx, int64_t i0, int64_t i1) noexcept nogil:
    """Work items [i0, i1) of the job at ctx; item i: rows [16 i, 16 i + 16) of every token
    (16 rows of weights stay in L1 while every token passes them)."""
    cdef const Job *j = <const Job *>ctx
    cdef int64_t i
    for i in range(i0, i1):
        mb_tq(j.fmt2, j.data, j.cols, j.q, j.ysum, j.da, j.T, j.rows, i * TILE_ROWS,
              min(i * TILE_ROWS + TILE_ROWS, j.rows), j.sumi, j.out)


cdef _run(data, Py_ssize_t rows, Py_ssize_t cols, str fmt, q, d):
    """Checked arrays -> int32 sumi [T, rows, nb] (d is None) or float32 y [T, rows]."""
    cdef int64_t T = q.shape[0], nb = cols // 256
    cdef int fmt2 = fmt == "tq2_0"
    cdef bint want_sums = d is None
    if want_sums:
        shape_sums, shape_out = (T, rows, nb), (1, 1)
    else:
        shape_sums, shape_out = (1, 1, 1), (T, rows)
    sumi = np.empty(shape_sums, dtype=np.int32)
    out = np.empty(shape_out, dtype=np.float32)
    result = sumi if want_sums else out
    if T == 0:
        return result
    ysum = np.empty((T, nb), dtype=np.int32)                            # [T, nb] sum of q per block
    if want_sums:
        d = np.zeros((T, nb), dtype=np.float32)
    cdef const uint8_t[:, ::1] D = data
    cdef const int8_t[:, ::1] Q = q
    cdef int32_t[:, ::1] YS = ysum
    cdef int64_t t, b, j
    cdef int32_t acc
    with nogil:
        for t in range(T):
            for b in range(nb):
                acc = 0
                for j in range(256):
                    acc = acc + Q[t, b * 256 + j]
                YS[t, b] = acc
    cdef const float[:, ::1] DA = d
    cdef int32_t[:, :, ::1] SI = sumi
    cdef float[:, ::1] O = out
    cdef int32_t *psumi = &SI[0, 0, 0] if want_sums else NULL
    cdef float *pout = NULL if want_sums else &O[0, 0]
    cdef Job job
    job.data, job.q, job.ysum, job.da, job.sumi, job.out = &D[0, 0], &Q[0, 0], &YS[0, 0], &DA[0, 0], psumi, pout
    job.T, job.rows, job.cols, job.fmt2 = T, rows, cols, fmt2
    cdef int64_t ntiles = (rows + TILE_ROWS - 1) // TILE_ROWS
    # small products run on one thread (no pool job at all); the split never changes a bit
    cdef int nth = max(1, min(_threads(), ntiles)) if T * rows * cols >= MIN_PARALLEL_MAC else 1
    with nogil:
        mb_parallel(_tiles, &job, ntiles, nth)
    return result


def block_sums(data, rows, cols, fmt, q):
    """sumi[t, n, b] = sum over block b of q * (code - 1): int32 [T, rows, nb]."""
    data, q, _ = _ref.check_args(data, rows, cols, fmt, q)
    return _run(data, int(rows), int(cols), fmt, q, None)


def linear_q8k(data, rows, cols, fmt, q, d):
    """Profile "llama.cpp": sum over blocks, in order, of (float)sumi * (d * d_w): float32 [T, rows]."""
    data, q, d = _ref.check_args(data, rows, cols, fmt, q, d)
    return _run(data, int(rows), int(cols), fmt, q, d)


ctypedef struct LaneJob:
    const uint8_t *data
    const int8_t *q
    const int32_t *csum
    const float *da
    int32_t *lanes
    float *out
    int64_t cols, T, rows
    int fmt2, fused


cdef void _lane_tiles(void *ctx, int64_t i0, int64_t i1) noexcept nogil:
    """Items [i0, i1) of the job at ctx; item i: weight rows [TILE_ROWS i, TILE_ROWS (i + 1))."""
    cdef const LaneJob *j = <const LaneJob *>ctx
    cdef int64_t i, r0
    for i in range(i0, i1):
        r0 = i * TILE_ROWS
        mb_tq_lanes(j.fmt2, j.data, j.cols, j.q, j.csum, j.da, j.T, j.rows, r0,
                    min(r0 + TILE_ROWS, j.rows), j.fused, j.lanes, j.out)


cdef _csum(q, int64_t nb):
    """The activations' sum over every 32-element chunk (bsums[2k] + bsums[2k + 1]): int32 [T, nb, 8]."""
    return q.reshape(q.shape[0], nb, 8, 32).sum(axis=3, dtype=np.int32)


cdef _lane_job(LaneJob *job, data, Py_ssize_t rows, Py_ssize_t cols, str fmt, q, csum, d,
               int fused, list keep):
    """Fill job for one weight (checked arrays; csum from _csum) -> its result array: int32
    lanes [T, rows, nb, 8] (d is None) or float32 y [T, rows].  The arrays the job points
    into are appended to keep (the caller holds them until the job has run)."""
    cdef int64_t T = q.shape[0], nb = cols // 256
    cdef bint want_lanes = d is None
    if want_lanes:
        shape_lanes, shape_out = (T, rows, nb, 8), (1, 1)
    else:
        shape_lanes, shape_out = (1, 1, 1, 1), (T, rows)
    lanes = np.empty(shape_lanes, dtype=np.int32)
    out = np.empty(shape_out, dtype=np.float32)
    if want_lanes:
        d = np.zeros((T, nb), dtype=np.float32)
    keep += [data, q, csum, d, lanes, out]
    cdef const uint8_t[:, ::1] D = data
    cdef const int8_t[:, ::1] Q = q
    cdef const int32_t[:, :, ::1] CS = csum
    cdef const float[:, ::1] DA = d
    cdef int32_t[:, :, :, ::1] LN = lanes
    cdef float[:, ::1] O = out
    job.data, job.q, job.csum, job.da = &D[0, 0], &Q[0, 0], &CS[0, 0, 0], &DA[0, 0]
    job.lanes = &LN[0, 0, 0, 0] if want_lanes else NULL
    job.out = NULL if want_lanes else &O[0, 0]
    job.cols, job.T, job.rows = cols, T, rows
    job.fmt2, job.fused = fmt == "tq2_0", fused
    return lanes if want_lanes else out


cdef _run_lanes(data, Py_ssize_t rows, Py_ssize_t cols, str fmt, q, d, int fused):
    """Checked arrays -> int32 lanes [T, rows, nb, 8] (d is None) or float32 y [T, rows]."""
    cdef int64_t T = q.shape[0]
    if T == 0:
        return (np.empty((0, rows, cols // 256, 8), dtype=np.int32) if d is None
                else np.empty((0, rows), dtype=np.float32))
    cdef LaneJob job
    keep = []
    result = _lane_job(&job, data, rows, cols, fmt, q, _csum(q, cols // 256), d, fused, keep)
    cdef int64_t ntiles = (rows + TILE_ROWS - 1) // TILE_ROWS
    cdef int nth = max(1, min(_threads(), ntiles)) if T * rows * cols >= MIN_PARALLEL_MAC else 1
    with nogil:
        mb_parallel(_lane_tiles, &job, ntiles, nth)
    return result


ctypedef struct LaneGroup:
    LaneJob job[MAX_GROUP]
    int64_t first[MAX_GROUP + 1]      # weight k owns work items [first[k], first[k + 1])


cdef void _group_tiles(void *ctx, int64_t i0, int64_t i1) noexcept nogil:
    """Items [i0, i1) of a group: item i is tile i - first[k] of weight k."""
    cdef const LaneGroup *g = <const LaneGroup *>ctx
    cdef int k = 0
    cdef int64_t i
    for i in range(i0, i1):
        while g.first[k + 1] <= i:
            k += 1
        _lane_tiles(<void *>&g.job[k], i - g.first[k], i - g.first[k] + 1)


def lane_sums(data, rows, cols, fmt, q):
    """The AVX2 kernel's eight int32 lanes per block: int32 [T, rows, nb, 8]."""
    data, q, _ = _ref.check_args(data, rows, cols, fmt, q)
    return _run_lanes(data, int(rows), int(cols), fmt, q, None, 0)


def linear_q8k_avx2(data, rows, cols, fmt, q, d, fused=False):
    """TQ x Q8_K in the AVX2 kernel's order (eight float lanes; fused: fmaf): float32 [T, rows]."""
    data, q, d = _ref.check_args(data, rows, cols, fmt, q, d)
    return _run_lanes(data, int(rows), int(cols), fmt, q, d, 1 if fused else 0)


def linear_q8k_avx2_group(datas, rows, cols, fmt, q, d, fused=False):
    """linear_q8k_avx2 of several weights on the same activations -> a tuple of float32
    [T, rows[i]]: the activations' chunk sums once, every weight's row tiles in one
    thread-pool job (one parallel region for q/k/v or gate/up); the same bits."""
    datas, rows = _ref.check_group(datas, rows)
    if len(datas) > MAX_GROUP:
        return tuple(linear_q8k_avx2(a, r, cols, fmt, q, d, fused) for a, r in zip(datas, rows))
    checked = [_ref.check_args(a, r, cols, fmt, q, d) for a, r in zip(datas, rows)]
    q, d = checked[0][1], checked[0][2]
    cdef Py_ssize_t c = int(cols)
    cdef int64_t T = q.shape[0], mac = 0
    cdef int k, n = len(datas)
    if T == 0:
        return tuple(np.empty((0, int(r)), dtype=np.float32) for r in rows)
    cdef LaneGroup g
    keep = []
    csum = _csum(q, c // 256)
    outs = []
    g.first[0] = 0
    for k in range(n):
        outs.append(_lane_job(&g.job[k], checked[k][0], rows[k], c, fmt, q, csum, d,
                              1 if fused else 0, keep))
        g.first[k + 1] = g.first[k] + (rows[k] + TILE_ROWS - 1) // TILE_ROWS
        mac += T * rows[k] * c
    cdef int nth = max(1, min(_threads(), g.first[n])) if mac >= MIN_PARALLEL_MAC else 1
    with nogil:
        mb_parallel(_group_tiles, &g, g.first[n], nth)
    return tuple(outs)
