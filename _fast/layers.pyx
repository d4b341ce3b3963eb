# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Twin of minibit/model/layers.py's block arithmetic: RMSNorm, RoPE, causal attention, the
gated activations and expf (torch's CPU order), in C, to the same bits as the NumPy reference.

Each function takes its arguments through the reference's checks (ValueError naming the
argument) before any GIL-free code runs; the loops live in ``mb_layers.h``.  Attention
runs its (token, head) pairs on ``minibit.kernels.get_threads()`` threads of the shared
pool (``mb_rt.h``) when the work is large enough; each pair is one thread's fixed-order
arithmetic, so the thread count never changes a bit.
"""

import numpy as np
cimport numpy as cnp
from libc.stdint cimport int64_t
from libc.stdlib cimport malloc, free

from minibit.model import layers as _ref

cnp.import_array()

include "mb_rt.pxi"
include "rms_rows.pxi"

cdef extern from "mb_layers.h" nogil:
    void mbl_exp(const float *x, float *y, int64_t n)
    void mbl_rms_row(const float *x, const float *w, int64_t n, float eps, float *y)
    void mbl_rope_row(const float *x, const float *c, const float *s, int64_t D, float *y)
    void mbl_attend(const float *q, const void *k, const void *v, int dtype, int64_t D,
                    int64_t n, int64_t S, int64_t W, float scale, float *sc, float *o)
    void mbl_act(const float *g, const float *u, int64_t n, int act, int64_t cut, float *y)
    void mbl_store(const float *x, int64_t T, int64_t G, int64_t D, void *dst, int dtype,
                   int64_t ld)

cdef enum:
    MIN_PARALLEL_MAC = 1 << 18   # attention multiply-adds below which one thread runs


def expf(x):
    """e^x for float32 x in layers.expf's steps: float32, same shape."""
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    out = np.empty_like(x)
    cdef const float[::1] X = x.reshape(-1)
    cdef float[::1] Y = out.reshape(-1)
    cdef int64_t n = X.shape[0]
    if n:
        with nogil:
            mbl_exp(&X[0], &Y[0], n)
    return out


def rms_norm(x, weight, eps):
    """[T, n] float32 -> [T, n]: layers.rms_norm's steps."""
    x, weight = _ref.check_norm(x, weight)
    return _rms_rows(x, weight, eps, mbl_rms_row)


def apply_rope(x, cos, sin):
    """[T, heads, D] float32 -> [T, heads, D]: layers.apply_rope's steps."""
    x, cos, sin = _ref.check_rope(x, cos, sin)
    out = np.empty_like(x)
    cdef const float[:, :, ::1] X = x
    cdef const float[:, ::1] C = cos
    cdef const float[:, ::1] S = sin
    cdef float[:, :, ::1] Y = out
    cdef int64_t T = X.shape[0], NH = X.shape[1], D = X.shape[2], t, h
    if T and NH and D:
        with nogil:
            for t in range(T):
                for h in range(NH):
                    mbl_rope_row(&X[t, h, 0], &C[t, 0], &S[t, 0], D, &Y[t, h, 0])
    return out


ctypedef struct AttnJob:
    const float *q
    const char *k
    const char *v
    float *o
    int64_t H, D, rep, start, S, W, kg, vg
    int dt
    float scale
    int failed


cdef void _attend(void *ctx, int64_t i0, int64_t i1) noexcept nogil:
    """(token, head) pairs [i0, i1) of the job at ctx, with their own score scratch."""
    cdef AttnJob *j = <AttnJob *>ctx
    cdef float *sc = <float *>malloc(j.S * sizeof(float))
    cdef int64_t i, t, h, g
    if sc == NULL:
        j.failed = 1
        return
    for i in range(i0, i1):
        t = i // j.H
        h = i % j.H
        g = h // j.rep
        mbl_attend(j.q + (t * j.H + h) * j.D, j.k + g * j.kg, j.v + g * j.vg,
                   j.dt, j.D, j.start + t + 1, j.S, j.W, j.scale, sc,
                   j.o + (t * j.H + h) * j.D)
    free(sc)


def attention(q, k, v, start):
    """Causal grouped-query attention, layers.attention's steps: q [T, H, D] float32, k, v
    [G, start + T, D] float32 or float16 (each [S, D] block contiguous) -> [T, H*D] float32."""
    q, k, v = _ref.check_attention(q, k, v, start)
    cdef int64_t T = q.shape[0], H = q.shape[1], D = q.shape[2], G = k.shape[0]
    cdef int64_t S = k.shape[1], st = start, rep = H // G
    out = np.zeros((T, H, D), dtype=np.float32)
    if T == 0 or H == 0 or D == 0:
        return out.reshape(T, H * D)
    cdef int nth = 1
    if T * H * S * D >= MIN_PARALLEL_MAC:
        nth = max(1, min(_threads(), T * H))
    cdef const float[:, :, ::1] Q = q
    cdef float[:, :, ::1] O = out
    # k, v: [S, D] blocks contiguous (checked), kv heads apart by their own stride
    cdef cnp.ndarray ka = k, va = v
    cdef AttnJob job
    job.q, job.o = &Q[0, 0, 0], &O[0, 0, 0]
    job.k = <const char *>cnp.PyArray_DATA(ka)
    job.v = <const char *>cnp.PyArray_DATA(va)
    job.kg, job.vg = k.strides[0], v.strides[0]               # bytes
    job.dt = 1 if k.dtype == np.float16 else 0                # mb_dense.h: MBD_F16 / MBD_F32
    job.H, job.D, job.rep, job.start, job.S = H, D, rep, st, S
    job.W = _ref.torch_lanes()
    job.scale = <float>np.float32(int(D) ** -0.5)             # as the reference rounds it
    job.failed = 0
    with nogil:
        mb_parallel(_attend, &job, T * H, nth)
    if job.failed:
        raise MemoryError("attention: no memory for the score scratch")
    return out.reshape(T, H * D)


def ffn_act(gate, up, act):
    """Gated activation [T, F]: layers.ffn_act's steps ("relu2" or "silu")."""
    gate, up = _ref.check_act(gate, up, act)
    out = np.empty_like(gate)
    cdef const float[::1] Gv = gate.reshape(-1)
    cdef const float[::1] U = up.reshape(-1)
    cdef float[::1] Y = out.reshape(-1)
    cdef int64_t n = Gv.shape[0]
    cdef int a = 0 if act == "relu2" else 1
    cdef int64_t cut = n - n % (2 * _ref.torch_lanes())     # torch's vector runs, then its tail
    if n:
        with nogil:
            mbl_act(&Gv[0], &U[0], n, a, cut, &Y[0])
    return out


def store_kv(cache, start, x):
    """cache[:, start:start + T] = x.transpose(1, 0, 2), as layers.store_kv: x float32
    [T, G, D] into a cache layer [G, max_len, D] of float32 or float16 (round to nearest
    even, F16C where the CPU has it)."""
    cache, x = _ref.check_store(cache, start, x)
    cdef int64_t T = x.shape[0], G = x.shape[1], D = x.shape[2], st = start
    cdef int64_t ld = cache.shape[1] * D
    cdef int dt = 1 if cache.dtype == np.float16 else 0
    cdef int64_t es = cache.itemsize
    cdef cnp.ndarray ca = cache
    cdef char *base = <char *>cnp.PyArray_DATA(ca) + st * D * es
    cdef const float[:, :, ::1] X = x
    if T and G and D:
        with nogil:
            mbl_store(&X[0, 0, 0], T, G, D, base, dt, ld)
