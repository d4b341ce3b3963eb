# cython: language_level=3
"""Twin of minibit/quant.py: the same quantizers as C loops, the same bits.

The activation quantizers share two loops of ``mb_quant.h`` (max |x|, and the scaled
round-and-clamp with its sum; AVX2 chosen at run time, portable C otherwise).  Rounding:
``rintf`` / ``_mm256_round_ps`` to nearest (half to even) everywhere the reference uses
``np.rint``; every product is a float32 product, as in the reference.  The absmean scale
reuses the reference's NumPy mean, so both sum in the same order.
"""

import numpy as np
cimport numpy as cnp
from libc.math cimport rintf, fabsf, isfinite, INFINITY

from minibit._errors import FormatError
from minibit import quant as _ref

cnp.import_array()

include "mb_rt.pxi"

cdef extern from "mb_quant.h" nogil:
    float mbq_absmax(const float *x, Py_ssize_t n)
    int mbq_round(const float *x, Py_ssize_t n, float s, int zero_nonfinite, cnp.int8_t *q)
    void mbq_bsums16(const cnp.int8_t *q, cnp.int16_t *out)

cdef enum:
    QK_K = 256


def _activations(x):
    """The reference's checks, with the NaN/inf scan as a C loop (no temporary arrays)."""
    a = _ref._activations(x, finite=False)
    cdef const float[:, ::1] X = a
    cdef Py_ssize_t T = X.shape[0], K = X.shape[1], t, k
    cdef bint ok = True
    with nogil:
        for t in range(T):
            for k in range(K):
                if not isfinite(X[t, k]):
                    ok = False
                    break
            if not ok:
                break
    if not ok:
        _ref.not_finite(a)
    return a


def absmean_ternarize(w):
    """float32 [rows, cols] -> (int8 codes, float32 scale); see minibit.quant."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    cdef float s = np.float32(1) / _ref.absmean_scale(w)
    flat = w.reshape(-1)
    cdef const float[::1] x = flat
    out = np.empty(flat.shape[0], dtype=np.int8)
    cdef cnp.int8_t[::1] q = out
    cdef Py_ssize_t i, n = flat.shape[0]
    cdef float v
    with nogil:
        for i in range(n):
            v = rintf(x[i] * s)
            q[i] = 1 if v > 1.0 else (-1 if v < -1.0 else <cnp.int8_t>v)
    return out.reshape(w.shape), np.float32(np.float32(1) / np.float32(s))


cdef enum:                      # the per-token scale rules of _per_token
    HF = 0                      # transformers: 127 * (1 / max(max|x|, 1e-5)), in float32
    I2S = 1                     # bitnet.cpp I2_S: (float)(127.0 / max(max|x|, 1e-5)), in double
    TL = 2                      # bitnet.cpp TL: 127 / max|x| in float32, no floor


cdef inline float _token_scale(float amax, int rule, float *stored) noexcept nogil:
    """The scale s that multiplies a token whose max |x| is amax, under rule; *stored gets
    the scale the quantizer returns.  Only TL's two differ: a zero row stores inf and
    rounds with s = 0, as does a row whose 127 / max|x| overflows."""
    cdef float s
    cdef double amax_d
    if rule == TL:
        if not amax > 0:
            stored[0] = INFINITY
            return 0.0
        s = <float>127.0 / amax
        stored[0] = s
        return s if isfinite(s) else 0.0       # max|x| < 127 / FLT_MAX: a zero row
    if rule == HF:
        if amax < <float>1e-5:
            amax = <float>1e-5
        s = <float>127.0 * (<float>1.0 / amax)          # torch's 127 / t: 127 * (1 / t)
    else:                                               # I2S
        amax_d = <double>amax                           # max |x| is exact in float
        if amax_d < 1e-5:
            amax_d = 1e-5
        s = <float>(127.0 / amax_d)
    stored[0] = s
    return s


cdef tuple _per_token(x, int rule):
    """The per-token int8 quantizers in one loop: each row's max |x|, its scale by rule, then
    q = clamp(rint(x * s)) and the row's sum -> (q int8 [T, K], s float32 [T], sums int32 [T])."""
    a = _activations(x)
    cdef const float[:, ::1] X = a
    cdef Py_ssize_t T = a.shape[0], K = a.shape[1], t
    qa = np.empty((T, K), dtype=np.int8)
    sa = np.empty(T, dtype=np.float32)
    ua = np.empty(T, dtype=np.int32)
    cdef cnp.int8_t[:, ::1] Q = qa
    cdef float[::1] S = sa
    cdef cnp.int32_t[::1] U = ua
    cdef float s
    with nogil:
        for t in range(T):
            s = _token_scale(mbq_absmax(&X[t, 0], K), rule, &S[t])
            U[t] = mbq_round(&X[t, 0], K, s, 0, &Q[t, 0])
    return qa, sa, ua


def quantize_act_hf(x):
    """Per-token int8 as transformers' ActQuant: -> (q int8 [T, K], s float32 [T])."""
    q, s, _ = _per_token(x, HF)
    return q, s


def quantize_act_i2s(x):
    """bitnet.cpp's quantize_row_i8_s: -> (q int8 [T, K], s float32 [T], sums int32 [T])."""
    return _per_token(x, I2S)


def quantize_act_tl(x):
    """bitnet.cpp's TL activation quantization: -> (q int8 [T, K], s float32 [T])."""
    q, s, _ = _per_token(x, TL)
    return q, s


def quantize_q8_k(x):
    """ggml's quantize_row_q8_K_ref: -> (q int8 [T, K], d float32 [T, nb], bsums int16 [T, nb, 16])."""
    a = _activations(x)
    cdef Py_ssize_t T = a.shape[0], K = a.shape[1]
    if K % QK_K:
        raise FormatError(f"Q8_K: row length {K} is not a multiple of {QK_K}")
    cdef Py_ssize_t nb = K // QK_K, t, b, j
    cdef const float[:, ::1] X = a
    qa = np.empty((T, K), dtype=np.int8)
    da = np.empty((T, nb), dtype=np.float32)
    ba = np.empty((T, nb, 16), dtype=np.int16)
    cdef cnp.int8_t[:, ::1] Q = qa
    cdef float[:, ::1] D = da
    cdef cnp.int16_t[:, :, ::1] B = ba
    cdef float vmax, amax, iscale
    with nogil:
        for t in range(T):
            for b in range(nb):
                amax = mbq_absmax(&X[t, b * QK_K], QK_K)
                vmax = 0.0
                for j in range(QK_K):              # the first value of that magnitude
                    if fabsf(X[t, b * QK_K + j]) == amax:
                        vmax = X[t, b * QK_K + j]
                        break
                if amax == 0:
                    D[t, b] = 0.0
                    for j in range(QK_K):
                        Q[t, b * QK_K + j] = 0
                    for g in range(16):
                        B[t, b, g] = 0
                    continue
                iscale = <float>-127.0 / vmax
                # a non-finite product (iscale overflows when |max| < 127 / FLT_MAX): 0, as
                # the low byte of ggml's nearest_int; no product exceeds 127 in magnitude
                mbq_round(&X[t, b * QK_K], QK_K, iscale, 1, &Q[t, b * QK_K])
                mbq_bsums16(&Q[t, b * QK_K], &B[t, b, 0])
                D[t, b] = <float>1.0 / iscale
    return qa, da, ba
