/* mb_layers.h — the C loops of minibit's block arithmetic (_fast/layers.pyx).
 *
 * The spec is minibit/model/layers.py: RMSNorm, RoPE, causal attention and the gated
 * activations, every float32 operation rounded on its own, every reduction in the lane
 * order of minibit/kernels/dense.py (the dot product of mb_dense.h, reused here), and exp
 * as layers.expf's float32 steps.  Portable C and AVX2 give the same bits; products are
 * never fused into the following add (MB_KEEP, and the build's -ffp-contract=off).  No
 * bound is checked here: the Cython caller validates every shape first.
 */
#ifndef MB_LAYERS_H
#define MB_LAYERS_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "mb_dense.h"

#define MBL_LOG2E 1.44269504088896341f
#define MBL_C1 0.693359375f
#define MBL_C2 (-2.12194440e-4f)
#define MBL_P0 1.9875691500e-4f
#define MBL_P1 1.3981999507e-3f
#define MBL_P2 8.3334519073e-3f
#define MBL_P3 4.1665795894e-2f
#define MBL_P4 1.6666665459e-1f
#define MBL_P5 5.0000001201e-1f
#define MBL_LO (-87.5f)
#define MBL_HI 88.0f

/* layers.expf, one value */
static inline float mbl_exp1(float x) {
    if (x != x) return x;
    if (x < MBL_LO) return 0.0f;
    if (x > MBL_HI) return INFINITY;
    float t = x * MBL_LOG2E;
    MB_KEEP(t);
    const float n = rintf(t);                     /* ties to even: the default rounding mode */
    float a = n * MBL_C1, b = n * MBL_C2;
    MB_KEEP(a);
    MB_KEEP(b);
    const float r = (x - a) - b;
    float z = r * r;
    MB_KEEP(z);
    float p = MBL_P0;
    const float c[5] = {MBL_P1, MBL_P2, MBL_P3, MBL_P4, MBL_P5};
    for (int i = 0; i < 5; i++) {
        p = p * r;
        MB_KEEP(p);
        p = p + c[i];
    }
    float y = p * z;
    MB_KEEP(y);
    y = (y + r) + 1.0f;
    const uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float s;
    memcpy(&s, &bits, 4);
    return y * s;
}

#if MBD_X86
/* layers.expf, eight values (the same steps, lane by lane) */
MBD_SIMD static inline __m256 mbl_exp8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(MBL_LO), hi = _mm256_set1_ps(MBL_HI);
    const __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);     /* NaN -> lo, fixed below */
    __m256 t = _mm256_mul_ps(xc, _mm256_set1_ps(MBL_LOG2E));
    MB_KEEP(t);
    const __m256 n = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 a = _mm256_mul_ps(n, _mm256_set1_ps(MBL_C1)), b = _mm256_mul_ps(n, _mm256_set1_ps(MBL_C2));
    MB_KEEP(a);
    MB_KEEP(b);
    const __m256 r = _mm256_sub_ps(_mm256_sub_ps(xc, a), b);
    __m256 z = _mm256_mul_ps(r, r);
    MB_KEEP(z);
    __m256 p = _mm256_set1_ps(MBL_P0);
    const float c[5] = {MBL_P1, MBL_P2, MBL_P3, MBL_P4, MBL_P5};
    for (int i = 0; i < 5; i++) {
        p = _mm256_mul_ps(p, r);
        MB_KEEP(p);
        p = _mm256_add_ps(p, _mm256_set1_ps(c[i]));
    }
    __m256 y = _mm256_mul_ps(p, z);
    MB_KEEP(y);
    y = _mm256_add_ps(_mm256_add_ps(y, r), _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    __m256 out = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
    out = _mm256_blendv_ps(out, _mm256_setzero_ps(), _mm256_cmp_ps(x, lo, _CMP_LT_OQ));
    out = _mm256_blendv_ps(out, _mm256_set1_ps(INFINITY), _mm256_cmp_ps(x, hi, _CMP_GT_OQ));
    return _mm256_blendv_ps(out, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

MBD_SIMD static void mbl_exp_simd(const float *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, mbl_exp8(_mm256_loadu_ps(x + i)));
    for (; i < n; i++) y[i] = mbl_exp1(x[i]);
}
#endif

#if MBD_X86
/* float32 -> float16 eight at a time (F16C: round to nearest even); returns how many done */
MBD_SIMD static int64_t mbl_store_f16c(const float *x, int64_t n, uint16_t *h) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(h + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    return i;
}
#endif

/* y[i] = expf(x[i]) (y may be x) */
static void mbl_exp(const float *x, float *y, int64_t n) {
#if MBD_X86
    if (mbd_use_simd()) { mbl_exp_simd(x, y, n); return; }
#endif
    for (int64_t i = 0; i < n; i++) y[i] = mbl_exp1(x[i]);
}

/* dense.py's lane-order dot product of two float32 vectors */
static inline float mbl_dot_w(const float *a, const void *w, int dtype, int64_t K) {
#if MBD_X86
    if (mbd_use_simd()) return mbd_dot_simd(a, w, dtype, K);
#endif
    return mbd_dot_scalar(a, w, dtype, K);
}

static inline float mbl_dot(const float *a, const float *b, int64_t K) {
    return mbl_dot_w(a, b, MBD_F32, K);
}

/* RMSNorm of one row of n values */
static void mbl_rms_row(const float *x, const float *w, int64_t n, float eps, float *y) {
    const float var = mbl_dot(x, x, n) / (float)n;
    const float inv = 1.0f / sqrtf(var + eps);
    for (int64_t i = 0; i < n; i++) {
        float a = x[i] * inv;
        MB_KEEP(a);
        y[i] = a * w[i];
    }
}

/* RoPE of one head vector of D values with one position's cos/sin rows */
static void mbl_rope_row(const float *x, const float *c, const float *s, int64_t D, float *y) {
    const int64_t h = D / 2;
    for (int64_t i = 0; i < D; i++) {
        const float r = i < h ? -x[i + h] : x[i - h];
        float a = x[i] * c[i], b = r * s[i];
        MB_KEEP(a);
        MB_KEEP(b);
        y[i] = a + b;
    }
}

/* o[d] = o[d] + fl(p * v[d]), d < D: one step of the p . v sum; v float32 or float16
 * (dtype MBD_F32 / MBD_F16, widened exactly) */
static inline void mbl_axpy_scalar(float *o, float p, const void *v, int dtype, int64_t D) {
    for (int64_t d = 0; d < D; d++) {
        float a = p * mbd_weight(v, dtype, d);
        MB_KEEP(a);
        o[d] = o[d] + a;
    }
}

#if MBD_X86
MBD_SIMD static inline void mbl_axpy_simd(float *o, float p, const void *v, int dtype, int64_t D) {
    const __m256 pp = _mm256_set1_ps(p);
    int64_t d = 0;
    for (; d + 8 <= D; d += 8) {
        __m256 a = _mm256_mul_ps(pp, mbd_load8(v, dtype, d));
        MB_KEEP(a);
        _mm256_storeu_ps(o + d, _mm256_add_ps(_mm256_loadu_ps(o + d), a));
    }
    mbl_axpy_scalar(o + d, p, (const char *)v + d * (dtype == MBD_F32 ? 4 : 2), dtype, D - d);
}
#endif

static inline void mbl_axpy(float *o, float p, const void *v, int dtype, int64_t D) {
#if MBD_X86
    if (mbd_use_simd()) { mbl_axpy_simd(o, p, v, dtype, D); return; }
#endif
    mbl_axpy_scalar(o, p, v, dtype, D);
}

#if MBD_X86
/* q . k0 and q . k1 (D % 32 == 0, k1 the row after k0), each in mbd_dot_simd's lanes and
 * tree, interleaved so that the two chains of adds overlap */
MBD_SIMD static inline void mbl_dot2_simd(const float *q, const void *k0, const void *k1,
                                          int dtype, int64_t D, float *d0, float *d1) {
    __m256 a[4], b[4];
    for (int i = 0; i < 4; i++) a[i] = b[i] = _mm256_setzero_ps();
    const int64_t es = dtype == MBD_F32 ? 4 : 2;
    for (int64_t off = 0; off < 2 * D * es; off += 64)     /* the keys MBD_PF_BYTES on */
        _mm_prefetch((const char *)k0 + MBD_PF_BYTES + off, _MM_HINT_T0);
    for (int64_t j = 0; j < D; j += 32)
        for (int i = 0; i < 4; i++) {
            const __m256 x = _mm256_loadu_ps(q + j + 8 * i);
            a[i] = mbd_step(a[i], x, mbd_load8(k0, dtype, j + 8 * i));
            b[i] = mbd_step(b[i], x, mbd_load8(k1, dtype, j + 8 * i));
        }
    const __m256 sa = _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]));
    const __m256 sb = _mm256_add_ps(_mm256_add_ps(b[0], b[1]), _mm256_add_ps(b[2], b[3]));
    const __m128 ba = _mm_add_ps(_mm256_castps256_ps128(sa), _mm256_extractf128_ps(sa, 1));
    const __m128 bb = _mm_add_ps(_mm256_castps256_ps128(sb), _mm256_extractf128_ps(sb, 1));
    const __m128 ca = _mm_add_ps(ba, _mm_movehl_ps(ba, ba)), cb = _mm_add_ps(bb, _mm_movehl_ps(bb, bb));
    *d0 = _mm_cvtss_f32(_mm_add_ss(ca, _mm_shuffle_ps(ca, ca, 1)));
    *d1 = _mm_cvtss_f32(_mm_add_ss(cb, _mm_shuffle_ps(cb, cb, 1)));
}

/* o[d] = sum over s < n, in order, of fl(p[s] * v[s, d]) from +0 (D % 8 == 0): up to 64
 * outputs stay in registers across all positions; v's rows are prefetched ahead */
MBD_SIMD static void mbl_pv_simd(const float *p, const void *v, int dtype, int64_t D,
                                 int64_t n, float *o) {
    const int64_t es = dtype == MBD_F32 ? 4 : 2;
    for (int64_t d0 = 0; d0 < D; d0 += 64) {
        const int m = (int)((D - d0 < 64 ? D - d0 : 64) / 8);     /* registers in use, 1..8 */
        __m256 a[8];
        for (int i = 0; i < 8; i++) a[i] = _mm256_setzero_ps();
        for (int64_t s = 0; s < n; s++) {
            const char *vs = (const char *)v + (s * D + d0) * es;
            _mm_prefetch(vs + 8 * D * es, _MM_HINT_T0);          /* the row 8 positions on */
            const __m256 ps = _mm256_set1_ps(p[s]);
            for (int i = 0; i < m; i++) a[i] = mbd_step(a[i], ps, mbd_load8(vs, dtype, 8 * i));
        }
        for (int i = 0; i < m; i++) _mm256_storeu_ps(o + d0 + 8 * i, a[i]);
    }
}
#endif

/* One query head over n allowed positions: q [D]; k, v rows of D values (float32 or
 * float16 by dtype), row s at element s * D; sc: n floats of scratch; ones: n floats equal
 * to 1 (the softmax sum is lane_dot(e, 1)); o [D] written. */
static void mbl_attend(const float *q, const void *k, const void *v, int dtype, int64_t D,
                       int64_t n, float scale, float *sc, const float *ones, float *o) {
    const int64_t es = dtype == MBD_F32 ? 4 : 2;
    float m = -INFINITY;
    int64_t s = 0;
#if MBD_X86
    const int simd = mbd_use_simd();
    if (simd && D % 32 == 0)                   /* two keys at a time, the same bits */
        for (; s + 2 <= n; s += 2) {
            float d0, d1;
            mbl_dot2_simd(q, (const char *)k + s * D * es, (const char *)k + (s + 1) * D * es,
                          dtype, D, &d0, &d1);
            MB_KEEP(d0);
            MB_KEEP(d1);
            sc[s] = d0 * scale;
            sc[s + 1] = d1 * scale;
        }
#endif
    for (; s < n; s++) {
        float d = mbl_dot_w(q, (const char *)k + s * D * es, dtype, D);
        MB_KEEP(d);
        sc[s] = d * scale;
    }
    for (s = 0; s < n; s++)
        if (sc[s] > m) m = sc[s];
    for (s = 0; s < n; s++) sc[s] = sc[s] - m;
    mbl_exp(sc, sc, n);
    const float z = mbl_dot(sc, ones, n);
    for (s = 0; s < n; s++) sc[s] = sc[s] / z;
#if MBD_X86
    if (simd && D % 8 == 0) { mbl_pv_simd(sc, v, dtype, D, n, o); return; }
#endif
    for (int64_t d = 0; d < D; d++) o[d] = 0.0f;
    for (s = 0; s < n; s++) mbl_axpy(o, sc[s], (const char *)v + s * D * es, dtype, D);
}

/* float32 -> float16 bits, round to nearest even (NumPy's astype and F16C's conversion):
 * overflow to inf, subnormal halves, signed zeros; NaN stays NaN (quiet, upper payload) */
static inline uint16_t mbl_to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u)                                   /* inf, NaN */
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u | ((ax & 0x7fffffu) >> 13) : 0u));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);   /* >= 65520 rounds to inf */
    if (ax >= 0x38800000u) {                                 /* a normal half */
        uint32_t h = (ax - 0x38000000u) >> 13;
        const uint32_t rem = ax & 0x1fffu;
        if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
        return (uint16_t)(sign | h);
    }
    if (ax < 0x33000000u) return sign;                       /* below 2^-25: zero */
    const uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e;                         /* 14..24: m * 2^(e-126) */
    uint32_t k = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (k & 1u))) k++;
    return (uint16_t)(sign | k);
}

/* dst[g * ld + t * D + d] = x[(t * G + g) * D + d]: tokens [T, G, D] into a cache layer
 * [G, max_len, D] at its positions (dst already offset to the first one); float32, or
 * float16 (dtype MBD_F16) rounded to nearest even */
static void mbl_store(const float *x, int64_t T, int64_t G, int64_t D, void *dst, int dtype,
                      int64_t ld) {
    for (int64_t t = 0; t < T; t++)
        for (int64_t g = 0; g < G; g++) {
            const float *src = x + (t * G + g) * D;
            if (dtype == MBD_F32) {
                memcpy((float *)dst + g * ld + t * D, src, (size_t)D * 4);
                continue;
            }
            uint16_t *h = (uint16_t *)dst + g * ld + t * D;
            int64_t d = 0;
#if MBD_X86
            if (mbd_use_simd()) d = mbl_store_f16c(src, D, h);
#endif
            for (; d < D; d++) h[d] = mbl_to_half(src[d]);
        }
}

/* gated activation of n values: act 0 = relu2, 1 = silu */
static void mbl_act(const float *g, const float *u, int64_t n, int act, float *y) {
    if (act == 0) {
        for (int64_t i = 0; i < n; i++) {
            const float r = g[i] > 0.0f ? g[i] : 0.0f;
            float a = r * r;
            MB_KEEP(a);
            y[i] = a * u[i];
        }
        return;
    }
    for (int64_t i = 0; i < n; i++) y[i] = -g[i];
    mbl_exp(y, y, n);
    for (int64_t i = 0; i < n; i++) {
        float a = g[i] / (1.0f + y[i]);
        MB_KEEP(a);
        y[i] = a * u[i];
    }
}

#endif /* MB_LAYERS_H */
