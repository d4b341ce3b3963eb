# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Twin of minibit/quant_a48.py: BitNet a4.8's activation quantizers in C, same bits.

Arguments are validated by the reference's helpers (FormatError) first; each row is one
thread's loop.  mean|x| adds |x| into 32 lanes by index and reduces them with mbd_tree, the
reference's lane_dot order; rintf rounds half to even (the default rounding mode), as
np.rint; TopK finds the K-th largest |x| by sorting a copy and keeps ties by position.
"""

import numpy as np
cimport numpy as cnp
from libc.stdint cimport int64_t, int8_t
from libc.math cimport fabsf, rintf
from libc.stdlib cimport malloc, free, qsort

from minibit import quant_a48 as _ref
from minibit.quant import _activations

cnp.import_array()

include "mb_rt.pxi"

cdef extern from "mb_dense.h" nogil:
    float mbd_tree(const float *acc)

topk_count = _ref.topk_count
SQRT7, EPS, TOPK_RATIO = _ref.SQRT7, _ref.EPS, _ref.TOPK_RATIO


cdef inline float _clampf(float v, float lo, float hi) noexcept nogil:
    return lo if v < lo else (hi if v > hi else v)


cdef float _abs_lane_sum(const float *x, int64_t K) noexcept nogil:
    cdef float acc[32]
    cdef int l
    cdef int64_t k = 0
    cdef float p
    for l in range(32):
        acc[l] = 0.0
    while k < K:
        for l in range(32):
            if k + l < K:
                p = fabsf(x[k + l]) * 1.0
            else:
                p = 0.0 * 0.0
            acc[l] = acc[l] + p
        k += 32
    return mbd_tree(acc)


cdef float _absmax(const float *x, int64_t K) noexcept nogil:
    """max |x| over K floats (exact: a maximum does not round)."""
    cdef float g = 0.0
    cdef int64_t k
    for k in range(K):
        if fabsf(x[k]) > g:
            g = fabsf(x[k])
    return g


cdef void _round_clip(const float *x, int64_t K, float sc, float lo, float hi,
                      int8_t *q) noexcept nogil:
    """q = clip(rint(x * sc), lo, hi): the last step of both per-token quantizers."""
    cdef int64_t k
    for k in range(K):
        q[k] = <int8_t>_clampf(rintf(x[k] * sc), lo, hi)


cdef enum:                      # the two per-token quantizers of _per_token
    A4 = 0                      # INT4 absmean: s = sqrt(7) / (mean|x| + eps), q in [-8, 7]
    A8 = 1                      # INT8 absmax: s = 127 / (max|x| + eps), q in [-128, 127]


cdef tuple _per_token(x, int kind):
    """Both per-token quantizers in one loop: each row's scale by kind, then
    q = clip(rint(x * s)) -> (int8 q [T, K], float32 s [T])."""
    x = _activations(x)
    cdef int64_t T = x.shape[0], K = x.shape[1], t
    q = np.empty((T, K), np.int8)
    s = np.empty(T, np.float32)
    cdef const float[:, ::1] X = x
    cdef int8_t[:, ::1] Q = q
    cdef float[::1] S = s
    cdef float sc, sq7 = SQRT7, eps = EPS, c127 = 127.0
    cdef float lo = -8.0 if kind == A4 else -128.0, hi = 7.0 if kind == A4 else 127.0
    for t in range(T):
        if kind == A4:
            sc = sq7 / (_abs_lane_sum(&X[t, 0], K) / <float>K + eps)
        else:
            sc = c127 / (_absmax(&X[t, 0], K) + eps)      # float32 division, as the reference
        S[t] = sc
        _round_clip(&X[t, 0], K, sc, lo, hi, &Q[t, 0])
    return q, s


def quantize_act_a4(x):
    """INT4 absmean per token -> (int8 q in [-8, 7], float32 s [T]); see the reference."""
    return _per_token(x, A4)


def quantize_act_a8(x):
    """INT8 absmax per token -> (int8 q, float32 s [T]); see the reference."""
    return _per_token(x, A8)


cdef int _desc(const void *a, const void *b) noexcept nogil:
    cdef float fa = (<const float *>a)[0], fb = (<const float *>b)[0]
    return -1 if fa > fb else (1 if fa < fb else 0)


def topk_sparsify(x, ratio=TOPK_RATIO):
    """Keep the topk_count(K) entries of largest |x| per row (ties: earlier first)."""
    x = _activations(x)
    cdef int64_t T = x.shape[0], K = x.shape[1], t, k, n_gt, take
    cdef int64_t kk = topk_count(K, ratio)
    out = np.zeros((T, K), np.float32)
    cdef const float[:, ::1] X = x
    cdef float[:, ::1] O = out
    cdef float *buf
    cdef float thr, a
    for t in range(T):
        buf = <float *>malloc(K * sizeof(float))
        for k in range(K):
            buf[k] = fabsf(X[t, k])
        qsort(buf, K, sizeof(float), _desc)
        thr = buf[kk - 1]
        free(buf)
        n_gt = 0
        for k in range(K):
            if fabsf(X[t, k]) > thr:
                n_gt = n_gt + 1
        take = kk - n_gt                    # entries equal to thr kept, by position
        for k in range(K):
            a = fabsf(X[t, k])
            if a > thr:
                O[t, k] = X[t, k]
            elif a == thr and take > 0:
                O[t, k] = X[t, k]
                take = take - 1
    return out


def quantize_kv_int3(x, start=0):
    """The 3-bit cache values (u - h) / s per (token, head), the first position at 4 bits;
    see the reference."""
    a = np.ascontiguousarray(x, dtype=np.float32)
    if a.ndim != 3:
        raise ValueError(f"quantize_kv_int3: expected [T, G, D], got shape {a.shape}")
    start = int(start)
    if start < 0:
        raise ValueError(f"quantize_kv_int3: start must be >= 0, got {start}")
    cdef int64_t T = a.shape[0], G = a.shape[1], D = a.shape[2], i, t, k
    cdef int64_t first = 1 if start == 0 else 0     # rows of token 0 (4 bits)
    out = np.empty_like(a)
    cdef const float[:, :, ::1] X = a
    cdef float[:, :, ::1] O = out
    cdef float sc, L, h, u, eps = EPS
    for i in range(T * G):
        t = i // G
        L = 15.0 if t < first else 7.0
        h = 7.5 if t < first else 3.5
        if D == 0:
            continue
        sc = h / (_absmax(&X[t, i % G, 0], D) + eps)
        for k in range(D):
            u = _clampf(rintf(X[t, i % G, k] * sc + h), 0.0, L)
            O[t, i % G, k] = (u - h) / sc
    return out
