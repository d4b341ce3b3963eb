# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Twin of minibit/kernels/mad.py: the int8 multiply-add on the packed bytes, in C.

Same functions, same signatures, same bits as the reference.  The arrays are validated by
the reference's ``check_args`` (FormatError) before any GIL-free code runs; the loops live
in ``mb_ternary.h`` (AVX2 chosen at run time, portable C otherwise).  Threads: the shared
pool of ``mb_rt.h`` over tiles of output rows, ``minibit.kernels.get_threads()`` of them;
each output is summed by one thread in a fixed order, so the thread count never changes a
bit.
"""

import numpy as np
cimport numpy as cnp
from libc.stdint cimport uint8_t, int8_t, int32_t, int64_t, uint32_t

from minibit.kernels import mad as _ref

cnp.import_array()

include "mb_rt.pxi"
include "mb_group.pxi"

cdef extern from "mb_ternary.h" nogil:
    int MB_GC_LANES
    int MB_GC_EXACT
    void mb_i2s(const uint8_t *data, int64_t cols, const int8_t *q, int64_t T, int64_t rows,
                int64_t r0, int64_t r1, int gc, const uint8_t *exact, int32_t *raw)
    void mb_i2s_exact_flags(const int8_t *q, int64_t T, int64_t cols, int gc, uint8_t *flags)
    int mb_vnni()
    int MB_VNNI_512
    void mb_hfp(const uint8_t *data, int64_t R, int64_t cols, const int8_t *q, int64_t T,
                int64_t rows, int64_t p0, int64_t p1, int gc, int32_t *raw)
    void mb_epilogue(const int32_t *raw, int64_t n, int mode, int32_t qsum, float fsum,
                     float s, float scale, float *y)

cdef enum:
    MIN_PARALLEL_MAC = 1 << 18   # multiply-adds below which one thread runs
    TILE_ROWS = 16       # output rows per work item (i2_s); hf_packed: 4 packed rows = 16 rows
    M_INT = 0            # integer_product: raw - sum q
    M_LANES = 1          # lane_product:    raw
    M_HF = 2             # linear_hf
    M_I2S = 3            # linear_i2s


ctypedef struct Job:
    const uint8_t *data
    const int8_t *q
    const int32_t *qs
    const float *s
    const int32_t *sums
    int32_t *raw
    float *y
    const uint8_t *exact    # i2_s: per token, 1 = no int16 lane can wrap (VNNI may run)
    int64_t T, rows, cols, R
    int gc, i2s, mode
    float scale


cdef void _tile(const Job *j, int64_t i) noexcept nogil:
    """Work item i: the raw sums of its 16 rows for every token, then (float modes, M_INT)
    the epilogue of exactly those rows."""
    cdef int64_t r0, r1, p0, p1, k, t, r
    cdef int64_t T = j.T, rows = j.rows
    if j.i2s:
        r0 = i * TILE_ROWS
        r1 = min(r0 + TILE_ROWS, rows)
        mb_i2s(j.data, j.cols, j.q, T, rows, r0, r1, j.gc, j.exact, j.raw)
    else:
        p0 = i * 4
        p1 = min(p0 + 4, j.R)
        mb_hfp(j.data, j.R, j.cols, j.q, T, rows, p0, p1, j.gc, j.raw)
    if j.mode == M_LANES:
        return
    # the epilogue of the rows this tile wrote: one run [r0, r1) (i2_s), or runs of up to
    # 4 rows p0 + jR .. p1 - 1 + jR, j = 0..3 (hf_packed)
    cdef int64_t a, n, runs = 1 if j.i2s else 4
    for k in range(runs):
        if j.i2s:
            a, n = r0, r1 - r0
        else:
            a, n = k * j.R + p0, p1 - p0
            if a + n > rows:
                n = rows - a
        if n <= 0:
            continue
        for t in range(T):
            if j.mode == M_INT:
                for r in range(a, a + n):
                    j.raw[t * rows + r] = <int32_t>(<uint32_t>j.raw[t * rows + r] - <uint32_t>j.qs[t])
            else:
                mb_epilogue(&j.raw[t * rows + a], n, j.mode, j.qs[t], <float>j.sums[t], j.s[t],
                            j.scale, &j.y[t * rows + a])


cdef void _tiles(void *ctx, int64_t i0, int64_t i1) noexcept nogil:
    """Work items [i0, i1) of the job at ctx (one pool chunk)."""
    cdef int64_t i
    for i in range(i0, i1):
        _tile(<const Job *>ctx, i)


cdef _qsums(q, int64_t cols):
    """[T] int32: the sum of each token's q."""
    cdef int64_t T = q.shape[0]
    qs = np.empty(T, dtype=np.int32)
    cdef const int8_t[:, ::1] Qv = q
    cdef int32_t[::1] QSv = qs
    cdef int64_t tt, kk
    cdef int32_t acc
    with nogil:
        for tt in range(T):
            acc = 0
            for kk in range(cols):
                acc = acc + Qv[tt, kk]
            QSv[tt] = acc
    return qs


cdef _exact_flags(q, int64_t cols, int gc):
    """uint8 [T]: per token 1 when the VNNI kernel may run (no int16 lane can wrap,
    mb_i2s_lanes_exact); all 0, without a look at q, when the AVX-512 VNNI kernels (the only
    I2_S ones) are off or absent."""
    cdef int64_t T = q.shape[0]
    flags = np.zeros(T, dtype=np.uint8)
    if T == 0 or mb_vnni() != MB_VNNI_512:
        return flags
    cdef const int8_t[:, ::1] Q = q
    cdef uint8_t[::1] F = flags
    with nogil:
        mb_i2s_exact_flags(&Q[0, 0], T, cols, gc, &F[0])
    return flags


cdef _fill(Job *job, data, Py_ssize_t rows, Py_ssize_t cols, str layout, q, qs, int mode, s,
           sums, float scale, list keep):
    """Fill job for one weight (checked arrays, T > 0, qs from _qsums) -> its result array,
    int32 [T, rows] (modes M_INT, M_LANES) or float32 (M_HF, M_I2S).  The arrays the job
    points into are appended to keep (the caller holds them until the job has run)."""
    cdef int64_t T = q.shape[0], R = (rows + 3) // 4
    cdef int gc = MB_GC_LANES if mode in (M_LANES, M_I2S) else MB_GC_EXACT
    cdef int i2s = layout == "i2_s"
    raw = np.empty((T, rows), dtype=np.int32)
    out = raw if mode in (M_INT, M_LANES) else np.empty((T, rows), dtype=np.float32)
    if s is None:
        s = np.ones(T, dtype=np.float32)
    if sums is None:
        sums = qs
    flat = data.reshape(-1)
    exact = _exact_flags(q, cols, gc) if i2s else np.zeros(T, dtype=np.uint8)
    cdef const uint8_t[::1] EX = exact
    keep += [flat, q, qs, s, sums, raw, out, exact]
    cdef const uint8_t[::1] D = flat
    cdef const int8_t[:, ::1] Q = q
    cdef const int32_t[::1] QS = qs
    cdef const float[::1] S = s
    cdef const int32_t[::1] U = sums
    cdef int32_t[:, ::1] RAW = raw
    cdef float[:, ::1] Y = out if mode in (M_HF, M_I2S) else np.empty((1, 1), dtype=np.float32)
    job.data, job.q, job.qs, job.s, job.sums = &D[0], &Q[0, 0], &QS[0], &S[0], &U[0]
    job.raw, job.y, job.exact = &RAW[0, 0], &Y[0, 0], &EX[0]
    job.T, job.rows, job.cols, job.R = T, rows, cols, R
    job.gc, job.i2s, job.mode, job.scale = gc, i2s, mode, scale
    return out


cdef int64_t _ntiles(const Job *job) noexcept nogil:
    return (job.rows + TILE_ROWS - 1) // TILE_ROWS if job.i2s else (job.R + 3) // 4


cdef _run(data, Py_ssize_t rows, Py_ssize_t cols, str layout, q, int mode, s, sums, float scale):
    """The checked arrays -> int32 [T, rows] (modes M_INT, M_LANES) or float32 (M_HF, M_I2S)."""
    cdef int64_t T = q.shape[0]
    if T == 0:
        return np.empty((T, rows), dtype=np.int32 if mode in (M_INT, M_LANES) else np.float32)
    cdef Job job
    keep = []
    out = _fill(&job, data, rows, cols, layout, q, _qsums(q, cols), mode, s, sums, scale, keep)
    cdef int64_t ntiles = _ntiles(&job)
    # small products run on one thread (no pool job at all); the split never changes a bit
    cdef int nth = max(1, min(_threads(), ntiles)) if T * rows * cols >= MIN_PARALLEL_MAC else 1
    with nogil:
        mb_parallel(_tiles, &job, ntiles, nth)
    return out


def _i2s_lanes_exact(q, Py_ssize_t cols, bint lanes=True):
    """uint8 [T]: 1 where token t's int16 lanes in bitnet.cpp's I2_S kernel (lanes: widening
    every MB_GC_LANES chunks; else MB_GC_EXACT) cannot wrap for any codes, so the VNNI
    kernel may compute its exact sum (mb_i2s_lanes_exact; a test hook)."""
    q = np.ascontiguousarray(q, dtype=np.int8).reshape(-1, cols)
    flags = np.zeros(q.shape[0], dtype=np.uint8)
    if q.shape[0] == 0:
        return flags
    cdef const int8_t[:, ::1] Q = q
    cdef uint8_t[::1] F = flags
    mb_i2s_exact_flags(&Q[0, 0], q.shape[0], cols, MB_GC_LANES if lanes else MB_GC_EXACT, &F[0])
    return flags


def integer_product(data, rows, cols, layout, q):
    """R = sum w*q, exact: int32 [T, rows] (see minibit.kernels.mad)."""
    data, q = _ref.check_args(data, rows, cols, layout, q)
    return _run(data, int(rows), int(cols), layout, q, M_INT, None, None, 0.0)


def lane_product(data, rows, cols, layout, q):
    """R' = sum code*q through bitnet.cpp's wrapping int16 lanes: int32 [T, rows]."""
    data, q = _ref.check_args(data, rows, cols, layout, q, lanes=True)
    return _run(data, int(rows), int(cols), layout, q, M_LANES, None, None, 0.0)


def linear_hf(data, rows, cols, layout, q, s, scale):
    """Profile "hf": y = (float)R / s * scale, float32 [T, rows]."""
    data, q = _ref.check_args(data, rows, cols, layout, q)
    s, _ = _ref.check_scales(q.shape[0], s)
    return _run(data, int(rows), int(cols), layout, q, M_HF, s, None, np.float32(scale))


def linear_i2s(data, rows, cols, layout, q, s, sums, scale):
    """Profile "bitnet.cpp": y = ((float)R' - (float)sums) / s * scale, float32 [T, rows]."""
    data, q = _ref.check_args(data, rows, cols, layout, q, lanes=True)
    s, sums = _ref.check_scales(q.shape[0], s, sums)
    return _run(data, int(rows), int(cols), layout, q, M_I2S, s, sums, np.float32(scale))


def linear_i2s_group(datas, rows, cols, layout, q, s, sums, scales):
    """linear_i2s of several weights on the same activations -> a tuple of float32
    [T, rows[i]]: the sums of q once, every weight's row tiles in one thread-pool job (one
    parallel region for q/k/v or gate/up); the same bits."""
    from minibit.kernels.tq import check_group
    datas, rows = check_group(datas, rows)
    scales = tuple(scales)
    if len(scales) != len(datas):
        raise _ref.FormatError(f"mad: {len(datas)} weights need as many scales, got {len(scales)}")
    if len(datas) > MB_MAX_GROUP:
        return tuple(linear_i2s(a, r, cols, layout, q, s, sums, c)
                     for a, r, c in zip(datas, rows, scales))
    checked = []
    for a, r in zip(datas, rows):
        a, q = _ref.check_args(a, r, cols, layout, q, lanes=True)
        s, sums = _ref.check_scales(q.shape[0], s, sums)
        checked.append(a)
    if q.shape[0] == 0:
        return _mb_group_empty(rows)
    cdef Py_ssize_t c = int(cols)
    cdef Job jobs[MB_MAX_GROUP]
    cdef MbGroup g = _mb_group(_tiles)
    cdef int k
    qs = _qsums(q, c)
    keep, outs = [], []
    for k in range(len(datas)):
        outs.append(_fill(&jobs[k], checked[k], rows[k], c, layout, q, qs, M_I2S, s, sums,
                          np.float32(scales[k]), keep))
        _mb_group_add(&g, &jobs[k], _ntiles(&jobs[k]))
    _mb_group_run(&g, q.shape[0] * c * sum(rows))
    return tuple(outs)
