# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Twin of minibit/model/ggml.py: the engine profiles' block arithmetic in C, to the same bits.

Same functions and signatures as the reference (its module docstring has the rules); the
loops live in ``mb_ggml.h``.  Attention's (token, head) pairs and the LM head's rows run on
the shared pool of ``mb_rt.h`` (``minibit.kernels.get_threads()`` threads) when the work is
large; each output is one thread's fixed-order arithmetic, so the thread count never changes
a bit.
"""

import numpy as np
cimport numpy as cnp
from libc.stdint cimport int64_t, uint16_t

from minibit.model import ggml as _ref

cnp.import_array()

include "mb_rt.pxi"
include "rms_rows.pxi"

cdef extern from "mb_ggml.h" nogil:
    int mbg_use_simd()
    float mbg_expf(float x)
    void mbg_silu_row(const float *x, int64_t n, float *y)
    void mbg_rms_row(const float *x, const float *w, int64_t n, float eps, float *y)
    void mbg_rope_tables(const int64_t *pos, int64_t T, int64_t n_dims, float base,
                         float *c, float *s)
    void mbg_rope_head(const float *x, const float *c, const float *s, int64_t half, float *y)
    float mbg_vec_dot(const void *x, int xh, int64_t xs, const void *y, int yh, int64_t ys,
                      int64_t n, int f16dot, int il)
    float mbg_tinyblas(const void *a, int ah, int64_t as_, const void *b, int bh, int64_t bs,
                       int64_t n, int il)
    void mbg_attend(const float *q, const void *k, const void *v, int half16, int64_t D,
                    int64_t S, int64_t pos, int batch, int f16_rhs, int il, float *sc,
                    float *qq, float *accv, float *out)
    void mbg_fa_row(const float *q, const uint16_t *k, const uint16_t *v, int64_t D,
                    int64_t n, float scale, int il, float *qq, float *acc, float *out)
    void mbg_fa_tiled_rows(const float *q, int64_t qs, int nq, const uint16_t *k,
                           const uint16_t *v, int64_t D, int64_t n0, float scale, int il,
                           float *qT, float *kq, float *acc, float *out, int64_t os)

cdef enum:
    MIN_PARALLEL_MAC = 1 << 18   # multiply-adds below which one thread runs

ENGINES = _ref.ENGINES
TWINNED = _ref.TWINNED


def _nth(work):
    """Threads for a loop of ``work`` multiply-adds: the kernels' count, or one when small."""
    return max(1, _threads()) if work >= MIN_PARALLEL_MAC else 1


ctypedef struct AttnJob:
    const float *q
    const char *k
    const char *v
    float *out
    float *scratch
    int64_t T, H, D, S, st, rep, S32, row, vrow, per, scols, units, tb
    float scale
    int half16, f16_rhs, il, batch
    int flash               # 0: ggml's graph (mbg_attend); 1: the flash row kernel; 2: its 64x64 tiles


cdef void _attend_items(void *ctx, int64_t i0, int64_t i1) noexcept nogil:
    """Items [i0, i1) of the job at ctx; item c: units [c per, c per + per), with scratch
    row c (one item never runs on two threads at once).  A unit is one (token, head) pair,
    or for the tiled flash kernel (tb = 8) one head of 8 consecutive tokens; units go token
    block by token block.  k and v rows are byte strides (row, vrow); the flash kernels read
    them as float16 bits."""
    cdef const AttnJob *j = <const AttnJob *>ctx
    cdef int64_t c, i, t, h, g, e
    cdef float *sc
    cdef const float *qi
    cdef float *oi
    for c in range(i0, i1):
        sc = j.scratch + c * j.scols
        e = min((c + 1) * j.per, j.units)
        for i in range(c * j.per, e):
            t = (i // j.H) * j.tb
            h = i % j.H
            g = h // j.rep
            qi = j.q + (t * j.H + h) * j.D
            oi = j.out + (t * j.H + h) * j.D
            if j.flash == 0:
                mbg_attend(qi, j.k + g * j.row, j.v + g * j.vrow, j.half16, j.D, j.S, j.st + t,
                           j.batch, j.f16_rhs, j.il, sc, sc + j.S32, sc + j.S32 + j.D, oi)
            elif j.flash == 1:
                mbg_fa_row(qi, <const uint16_t *>(j.k + g * j.row),
                           <const uint16_t *>(j.v + g * j.vrow), j.D, j.st + t + 1, j.scale,
                           j.il, sc, sc + j.D, oi)
            else:
                mbg_fa_tiled_rows(qi, j.H * j.D, <int>min(j.tb, j.T - t),
                                  <const uint16_t *>(j.k + g * j.row),
                                  <const uint16_t *>(j.v + g * j.vrow), j.D, j.st + t + 1,
                                  j.scale, j.il, sc, sc + 8 * j.D, sc + 8 * j.D + 8 * 64, oi,
                                  j.H * j.D)


cdef _run_attention(AttnJob *job, q, out, int64_t work, int64_t scols):
    """Fill the job's q, out, scratch and split, then run it on the pool: the units (see
    _attend_items; job.tb set by the caller) in runs of about equal count, 8 runs a thread
    (later tokens see more positions: the pool's runs let a thread that finishes early take
    the others'), one scratch row of scols floats each."""
    job.units = ((job.T + job.tb - 1) // job.tb) * job.H
    cdef int nth = <int>min(_nth(work), job.units)
    cdef int64_t runs = min(job.units, 8 * nth if nth > 1 else 1)
    job.per = (job.units + runs - 1) // runs
    runs = (job.units + job.per - 1) // job.per
    scratch = np.empty((runs, scols), np.float32)
    cdef const float[:, :, ::1] Q = q
    cdef float[:, ::1] O = out
    cdef float[:, ::1] SC = scratch
    job.q, job.out, job.scratch, job.scols = &Q[0, 0, 0], &O[0, 0], &SC[0, 0], scols
    with nogil:
        mb_parallel(_attend_items, job, runs, nth)


def _qkv(q, k, v, start, interleaved, what):
    """The reference's check_qkv, q made C-contiguous for the kernels."""
    q, k, v, st = _ref.check_qkv(q, k, v, start, interleaved, what)
    return np.ascontiguousarray(q), k, v, st


ctypedef struct HeadJob:
    const float *x
    const char *w
    float *y
    int64_t T, K, N, row
    int wh, tb


cdef void _head_items(void *ctx, int64_t i0, int64_t i1) noexcept nogil:
    """Items [i0, i1): item c is output rows [64 c, 64 c + 64) of every token."""
    cdef const HeadJob *j = <const HeadJob *>ctx
    cdef int64_t n, t
    for n in range(i0 * 64, min(i1 * 64, j.N)):
        for t in range(j.T):
            if j.tb:
                j.y[t * j.N + n] = mbg_tinyblas(j.x + t * j.K, 0, 1, j.w + n * j.row, j.wh, 1,
                                                j.K, 0)
            else:
                j.y[t * j.N + n] = mbg_vec_dot(j.x + t * j.K, 0, 1, j.w + n * j.row, j.wh, 1,
                                               j.K, j.wh, 0)


def _f32(a, ndim, what):
    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} dimensions, got shape {a.shape}")
    return a


def v_expf(x):
    """ggml_v_expf elementwise: float32, same shape."""
    a = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty_like(a)
    cdef const float[::1] X = a.reshape(-1)
    cdef float[::1] Y = out.reshape(-1)
    cdef int64_t i, n = X.shape[0]
    with nogil:
        for i in range(n):
            Y[i] = mbg_expf(X[i])
    return out


def rms_norm(x, weight, eps):
    """[T, n] float32: ggml's RMSNorm (double sum) then * weight."""
    x = _f32(x, 2, "rms_norm: x")
    weight = _f32(weight, 1, "rms_norm: weight")
    if weight.shape[0] != x.shape[1]:
        raise ValueError(f"rms_norm: weight of {weight.shape[0]} for rows of {x.shape[1]}")
    return _rms_rows(x, weight, eps, mbg_rms_row)


def rope_tables(positions, n_dims, base):
    """cos, sin float32 [T, n_dims/2]: ggml_rope_cache_init (libm powf, cosf, sinf)."""
    pos = np.ascontiguousarray(np.asarray(positions).reshape(-1), dtype=np.int64)
    cdef int64_t T = pos.shape[0], half = int(n_dims) // 2
    c = np.empty((T, half), np.float32)
    s = np.empty((T, half), np.float32)
    cdef const int64_t[::1] P = pos
    cdef float[:, ::1] C = c
    cdef float[:, ::1] S = s
    cdef float b = <float>np.float32(base)
    cdef int64_t nd = int(n_dims)
    if T and half:
        with nogil:
            mbg_rope_tables(&P[0], T, nd, b, &C[0, 0], &S[0, 0])
    return c, s


def rope_neox(x, cos, sin):
    """[T, heads, D] float32: ggml's rotation (ggml.py rope_neox)."""
    x, cos, sin = _ref.check_rope(x, cos, sin)
    cdef int64_t T = x.shape[0], H = x.shape[1], D = x.shape[2], t, h
    out = np.empty_like(x)
    cdef const float[:, :, ::1] X = x
    cdef const float[:, ::1] C = cos
    cdef const float[:, ::1] S = sin
    cdef float[:, :, ::1] Y = out
    if T and H and D:
        with nogil:
            for t in range(T):
                for h in range(H):
                    mbg_rope_head(&X[t, h, 0], &C[t, 0], &S[t, 0], D // 2, &Y[t, h, 0])
    return out


def silu(x):
    """ggml_vec_silu_f32 on each row of x [T, n]."""
    x = _f32(x, 2, "silu: x")
    out = np.empty_like(x)
    cdef const float[:, ::1] X = x
    cdef float[:, ::1] Y = out
    cdef int64_t T = X.shape[0], n = X.shape[1], t
    if T and n:
        with nogil:
            for t in range(T):
                mbg_silu_row(&X[t, 0], n, &Y[t, 0])
    return out


def attention(q, k, v, start, engine="bitnet.cpp", interleaved=False, flash=None):
    """Causal grouped-query attention: the engine's flash kernel when ``flash`` (None: the
    engine's default), else ggml's non-flash graph (ggml.py attention)."""
    if ENGINES[engine]["flash_attn"] if flash is None else flash:
        if engine != "llama.cpp":
            raise ValueError(f"{engine}'s flash attention is not copied (only llama.cpp's)")
        return flash_attn(q, k, v, start, interleaved)
    q, k, v, st = _qkv(q, k, v, start, interleaved, "attention")
    k = _rows(k)
    v = _rows(v)
    cdef int64_t T = q.shape[0], H = q.shape[1], D = q.shape[2], S = k.shape[1]
    cdef int64_t S32 = (S + 31) // 32 * 32
    out = np.empty((T, H * D), np.float32)
    if T == 0:
        return out
    cdef int half16 = k.dtype == np.float16
    kb = k.view(np.uint16) if half16 else k
    vb = v.view(np.uint16) if half16 else v
    cdef AttnJob job
    job.k, job.v = <char *>cnp.PyArray_DATA(kb), <char *>cnp.PyArray_DATA(vb)
    job.row, job.vrow = k.strides[0], v.strides[0]            # kv head stride, bytes
    job.T, job.H, job.D, job.S, job.st, job.rep, job.S32 = T, H, D, S, st, H // k.shape[0], S32
    job.half16, job.il, job.batch = half16, 1 if interleaved else 0, 1 if T >= 2 else 0
    job.f16_rhs = 1 if ENGINES[engine]["f16_tinyblas_rhs"] else 0
    job.flash, job.scale, job.tb = 0, 0.0, 1
    _run_attention(&job, q, out, T * H * S * D * 2, S32 + D + 32 * D)
    return out


def flash_attn(q, k, v, start, interleaved=False):
    """llama.cpp's flash attention (ggml.py flash_attn): [T, H*D] float32."""
    q, k, v, st = _qkv(q, k, v, start, interleaved, "flash_attn")
    # the graph casts an F32 cache to F16 (nearest even); an F16 cache is read as it is
    k = _rows(k) if k.dtype == np.float16 else np.ascontiguousarray(k, np.float16)
    v = _rows(v) if v.dtype == np.float16 else np.ascontiguousarray(v, np.float16)
    if k.strides[0] != v.strides[0] or k.strides[0] % 2:
        k, v = np.ascontiguousarray(k), np.ascontiguousarray(v)
    cdef int64_t T = q.shape[0], H = q.shape[1], D = q.shape[2], S = k.shape[1]
    out = np.empty((T, H * D), np.float32)
    if T == 0:
        return out
    kb, vb = k.view(np.uint16), v.view(np.uint16)
    cdef AttnJob job
    job.k, job.v = <char *>cnp.PyArray_DATA(kb), <char *>cnp.PyArray_DATA(vb)
    job.row, job.vrow = k.strides[0], v.strides[0]            # kv head stride, bytes
    job.T, job.H, job.D, job.S, job.st, job.rep, job.S32 = T, H, D, S, st, H // k.shape[0], 0
    job.half16, job.il, job.batch, job.f16_rhs = 1, 1 if interleaved else 0, 0, 0
    job.scale = <float>(np.float32(1) / np.sqrt(np.float32(D)))
    job.flash = 2 if T >= _ref.FA_TILE else 1
    job.tb = 8 if job.flash == 2 else 1
    _run_attention(&job, q, out, T * H * S * D * 2, 16 * D + 8 * 64)
    return out


def _rows(a):
    """a [G, S, D] whose [S, D] blocks are contiguous (a KV cache slice) as it is, else a copy."""
    e = a.itemsize
    if a.strides[2] == e and a.strides[1] == e * a.shape[2] and a.strides[0] % e == 0 \
            and a.strides[0] >= 0:
        return a
    return np.ascontiguousarray(a)


def lm_head(h, W, dtype, engine="bitnet.cpp"):
    """h [T, hidden] float32 @ W.T for an F16 or F32 matrix (ggml.py lm_head)."""
    h, W = _ref.check_head(h, W, dtype)
    W = np.ascontiguousarray(W)
    cdef int64_t T = h.shape[0], K = h.shape[1], N = W.shape[0], i, t, n
    cdef int wh = dtype == "F16"
    cdef int tb = 1 if (T >= 2 and K % 8 == 0) else 0
    if wh and (not tb or ENGINES[engine]["f16_tinyblas_rhs"]):
        h = h.astype(np.float16).astype(np.float32)             # the row as the F16 matrix type
    out = np.empty((T, N), np.float32)
    if T == 0 or N == 0:
        return out
    Wb = W.view(np.uint16) if wh else W
    cdef char *pw = <char *>cnp.PyArray_DATA(Wb)
    cdef int64_t row = K * (2 if wh else 4)
    cdef const float[:, ::1] X = h
    cdef float[:, ::1] Y = out
    cdef int64_t tiles = (N + 63) // 64
    cdef int nth = <int>min(_nth(T * N * K), tiles)
    cdef HeadJob job
    job.x, job.w, job.y, job.T, job.K, job.N, job.row = &X[0, 0], pw, &Y[0, 0], T, K, N, row
    job.wh, job.tb = wh, tb
    with nogil:
        mb_parallel(_head_items, &job, tiles, nth)
    return out


def vec_dot_f16(x, y):
    """ggml_vec_dot_f16 over the last axis (broadcast, like the reference)."""
    return _dot(x, y, 1)


def vec_dot_f32(x, y):
    """ggml_vec_dot_f32 over the last axis (broadcast)."""
    return _dot(x, y, 0)


def tinyblas(a, b):
    """One tinyBLAS output per row pair over the last axis (k % 8 == 0)."""
    return _dot(a, b, 2)


cdef _dot(x, y, int kind):
    x, y = np.broadcast_arrays(np.asarray(x, np.float32), np.asarray(y, np.float32))
    nd = x.ndim
    shape = tuple(x.shape)[:nd - 1]         # (no negative indices: wraparound is off)
    n = x.shape[nd - 1]
    if kind == 2 and n % 8:
        raise ValueError("tinyblas: k must be a multiple of 8")
    X = np.ascontiguousarray(x).reshape(-1, n)
    Y = np.ascontiguousarray(y).reshape(-1, n)
    out = np.empty(X.shape[0], np.float32)
    cdef const float[:, ::1] XV = X
    cdef const float[:, ::1] YV = Y
    cdef float[::1] O = out
    cdef int64_t r, rows = X.shape[0], nn = n
    if nn == 0:
        out[:] = 0
        return out.reshape(shape)
    with nogil:
        for r in range(rows):
            if kind == 2:
                O[r] = mbg_tinyblas(&XV[r, 0], 0, 1, &YV[r, 0], 0, 1, nn, 0)
            else:
                O[r] = mbg_vec_dot(&XV[r, 0], 0, 1, &YV[r, 0], 0, 1, nn, kind, 0)
    return out.reshape(shape)
