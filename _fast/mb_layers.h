/* mb_layers.h — the C loops of minibit's block arithmetic (_fast/layers.pyx).
 *
 * The spec is minibit/model/layers.py: RMSNorm, RoPE, causal attention and the gated
 * activations in torch's CPU order (its cascade sum, MKL's fused multiply-add chains,
 * its softmax reduction, Sleef's exp), every float32 operation rounded on its own except
 * where fmaf() fuses one; no other product is fused into the following add (MB_KEEP, and
 * the build's -ffp-contract=off).  No bound is checked here: the Cython caller validates
 * every shape first.
 */
#ifndef MB_LAYERS_H
#define MB_LAYERS_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "mb_dense.h"

#define MBL_R_LN2 1.442695040888963407359924681001892137426645954152985934135449406931f
#define MBL_L2U 0.693145751953125f
#define MBL_L2L 1.428606765330187045e-06f
#define MBL_LO (-104.0f)
#define MBL_HI 100.0f

/* layers.expf (Sleef's expf u10), one value */
static inline float mbl_exp1(float x) {
    if (x != x) return x;
    if (x < MBL_LO) return 0.0f;
    if (x > MBL_HI) return INFINITY;
    float t = x * MBL_R_LN2;
    MB_KEEP(t);
    const float q = rintf(t);                     /* ties to even: the default rounding mode */
    float s = fmaf(q, -MBL_L2U, x);
    s = fmaf(q, -MBL_L2L, s);
    const float c[5] = {0.00139304355252534151077271f, 0.00833336077630519866943359f,
                        0.0416664853692054748535156f, 0.166666671633720397949219f, 0.5f};
    float u = 0.000198527617612853646278381f;
    for (int i = 0; i < 5; i++) u = fmaf(u, s, c[i]);
    float z = s * s;
    MB_KEEP(z);
    float y = 1.0f + fmaf(z, u, s);
    const int32_t qi = (int32_t)q, h = qi >> 1;
    const uint32_t b1 = (uint32_t)(h + 127) << 23, b2 = (uint32_t)(qi - h + 127) << 23;
    float p1, p2;
    memcpy(&p1, &b1, 4);
    memcpy(&p2, &b2, 4);
    y = y * p1;
    MB_KEEP(y);
    return y * p2;
}

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
    for (int64_t i = 0; i < n; i++) y[i] = mbl_exp1(x[i]);
}

/* ---- layers.torch_sum: torch's cascade sum of a row, 8 lanes ---- */
#define MBL_SUM_LANES 8

static inline float mbl_sq(float v, int sq) {
    if (sq) { v = v * v; MB_KEEP(v); }
    return v;
}

/* _multi_row_sum of partial k: items k, k + 4, k + 8, ... (size of them), each item w
 * floats at x + index * w (squared as read when sq); out[w] */
static void mbl_msum(const float *x, int64_t w, int64_t k, int64_t size, int sq, float *out) {
    float acc[4][MBL_SUM_LANES];
    memset(acc, 0, sizeof acc);
    int64_t lp = 1;
    if (size > 2) { lp = 0; for (uint64_t v = (uint64_t)(size - 1); v; v >>= 1) lp++; }
    lp /= 4;
    if (lp < 4) lp = 4;
    const int64_t step = (int64_t)1 << lp, mask = step - 1;
    int64_t i = 0;
    while (i + step <= size) {
        for (int64_t j = 0; j < step; j++, i++)
            for (int64_t l = 0; l < w; l++) acc[0][l] = acc[0][l] + mbl_sq(x[(4 * i + k) * w + l], sq);
        for (int j = 1; j < 4; j++) {
            for (int64_t l = 0; l < w; l++) {
                acc[j][l] = acc[j][l] + acc[j - 1][l];
                acc[j - 1][l] = 0.0f;
            }
            if (i & (mask << (j * lp))) break;
        }
    }
    for (; i < size; i++)
        for (int64_t l = 0; l < w; l++) acc[0][l] = acc[0][l] + mbl_sq(x[(4 * i + k) * w + l], sq);
    for (int64_t l = 0; l < w; l++) out[l] = ((acc[0][l] + acc[1][l]) + acc[2][l]) + acc[3][l];
}

/* _row_sum of m items of w floats: four interleaved partials, the leftover items into
 * partial 0, then 0 + 1, + 2, + 3 */
static void mbl_rowsum(const float *x, int64_t w, int64_t m, int sq, float *out) {
    float part[4][MBL_SUM_LANES];
    const int64_t rows = m / 4;
    for (int k = 0; k < 4; k++) mbl_msum(x, w, k, rows, sq, part[k]);
    for (int64_t i = 4 * rows; i < m; i++)
        for (int64_t l = 0; l < w; l++) part[0][l] = part[0][l] + mbl_sq(x[i * w + l], sq);
    for (int64_t l = 0; l < w; l++) out[l] = ((part[0][l] + part[1][l]) + part[2][l]) + part[3][l];
}

/* layers.torch_sum of n values (of their squares when sq) */
static float mbl_tsum(const float *x, int64_t n, int sq) {
    float vec[MBL_SUM_LANES];
    if (n < MBL_SUM_LANES) {
        if (n == 0) return 0.0f;
        mbl_rowsum(x, 1, n, sq, vec);
        return vec[0];
    }
    const int64_t nv = n / MBL_SUM_LANES;
    mbl_rowsum(x, MBL_SUM_LANES, nv, sq, vec);
    float acc = 0.0f;
    for (int64_t k = nv * MBL_SUM_LANES; k < n; k++) acc = acc + mbl_sq(x[k], sq);
    for (int l = 0; l < MBL_SUM_LANES; l++) acc = acc + vec[l];
    return acc;
}

/* RMSNorm of one row of n values */
static void mbl_rms_row(const float *x, const float *w, int64_t n, float eps, float *y) {
    const float var = mbl_tsum(x, n, 1) / (float)n;
    const float inv = 1.0f / sqrtf(var + eps);
    for (int64_t i = 0; i < n; i++) {
        float a = x[i] * inv;
        MB_KEEP(a);
        y[i] = w[i] * a;
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

/* dense.mkl_k_blocks: the block size MKL's sgemm chains a sum of K terms in */
static inline int64_t mbl_k_block(int64_t K) {
    return K <= 192 ? K : (K <= 384 ? K / 2 : 192);
}

/* One query head over n allowed positions of a row of S keys, layers.attention's steps:
 * q [D]; k, v rows of D values (float32 or float16 by dtype), row s at element s * D;
 * W: torch's softmax lanes (8 or 16); sc: n floats of scratch; o [D] written. */
static void mbl_attend(const float *q, const void *k, const void *v, int dtype, int64_t D,
                       int64_t n, int64_t S, int64_t W, float scale, float *sc, float *o) {
    const int64_t es = dtype == MBD_F32 ? 4 : 2;
    float m = -INFINITY;
    int64_t s;
    const int64_t bd = mbl_k_block(D), bs = mbl_k_block(S);
    for (s = 0; s < n; s++) {
        const char *ks = (const char *)k + s * D * es;
        float dot = 0.0f;
        for (int64_t b0 = 0; b0 < D; b0 += bd) {
            const int64_t b1 = b0 + bd < D ? b0 + bd : D;
            float acc = 0.0f;
            for (int64_t d = b0; d < b1; d++) acc = fmaf(q[d], mbd_weight(ks, dtype, d), acc);
            dot = b0 ? dot + acc : acc;
        }
        sc[s] = dot * scale;
    }
    for (s = 0; s < n; s++)
        if (sc[s] > m) m = sc[s];
    for (s = 0; s < n; s++) sc[s] = mbl_exp1(sc[s] - m);
    float z;
    if (S < W) {
        z = sc[0];
        for (s = 1; s < n; s++) z = z + sc[s];
    } else {
        float lane[16];
        for (int64_t l = 0; l < W; l++) lane[l] = l < n ? sc[l] : 0.0f;
        for (s = W; s < n; s++) lane[s % W] = lane[s % W] + sc[s];
        for (int64_t h = W / 2; h >= 1; h /= 2)
            for (int64_t l = 0; l < h; l++) lane[l] = lane[l] + lane[l + h];
        z = lane[0];
    }
    const float r = 1.0f / z;
    for (s = 0; s < n; s++) sc[s] = sc[s] * r;
    for (int64_t d = 0; d < D; d++) o[d] = 0.0f;
    for (int64_t b0 = 0; b0 < S; b0 += bs) {              /* positions from n on add 0 */
        const int64_t b1 = b0 + bs < n ? b0 + bs : n;
        for (int64_t d = 0; d < D; d++) {
            float acc = 0.0f;
            for (s = b0; s < b1; s++)
                acc = fmaf(sc[s], mbd_weight((const char *)v + s * D * es, dtype, d), acc);
            o[d] = b0 ? o[d] + acc : acc;
        }
    }
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

/* gated activation of n values: act 0 = relu2, 1 = silu (Sleef's exp for the first cut
 * values, the C library's expf for the rest: torch's vector runs and scalar tail) */
static void mbl_act(const float *g, const float *u, int64_t n, int act, int64_t cut, float *y) {
    if (act == 0) {
        for (int64_t i = 0; i < n; i++) {
            const float r = g[i] > 0.0f ? g[i] : 0.0f;
            float a = r * r;
            MB_KEEP(a);
            y[i] = a * u[i];
        }
        return;
    }
    for (int64_t i = 0; i < n; i++) y[i] = i < cut ? mbl_exp1(-g[i]) : expf(-g[i]);
    for (int64_t i = 0; i < n; i++) {
        float a = g[i] / (1.0f + y[i]);
        MB_KEEP(a);
        y[i] = a * u[i];
    }
}

#endif /* MB_LAYERS_H */
