/* mb_ggml.h — the C loops of the engine profiles' block arithmetic (_fast/ggml.pyx).
 *
 * The spec is minibit/model/ggml.py: ggml's float order on x86 AVX2 (bitnet.cpp's 2024 fork
 * and llama.cpp), rule by rule.  Every fused multiply-add there is C99 fmaf here (one
 * rounding); every other operation is one float32 rounding (the build's -ffp-contract=off
 * keeps products apart).  Float16 rounding is the C conversion to _Float16 (round to
 * nearest even, as F16C's vcvtps2ph and NumPy's astype).  The Cython caller checks every
 * shape first.
 */
#ifndef MB_GGML_H
#define MB_GGML_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float mbg_f16(float x) { return (float)(_Float16)x; }

static inline float mbg_h2f(uint16_t h) {
    _Float16 v;
    memcpy(&v, &h, 2);
    return (float)v;
}

static inline float mbg_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t mbg_u32(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* ggml_v_expf, one lane (ggml.py v_expf) */
static inline float mbg_expf(float x) {
    const float r = 0x1.8p23f;
    const float z = fmaf(x, 0x1.715476p+0f, r);
    const float n = z - r;
    const float b = fmaf(-n, 0x1.7f7d1cp-20f, fmaf(-n, 0x1.62e4p-1f, x));
    const uint32_t e = mbg_u32(z) << 23;
    const float k = mbg_bits(e + mbg_u32(1.0f));
    const float an = fabsf(n);
    const float u = b * b;
    const float j = fmaf(fmaf(fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u,
                              fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)), u, 0x1.ffffecp-1f * b);
    if (!(an > 126.0f)) return fmaf(j, k, k);
    const uint32_t g = (n <= 0.0f) ? 0x82000000u : 0u;
    const float s1 = mbg_bits(g + 0x7f000000u);
    const float s2 = mbg_bits(e - g);
    if (an > 192.0f) return s1 * s1;
    return fmaf(s2, j, s2) * s1;
}

/* ggml_vec_silu_f32 on one row */
static void mbg_silu_row(const float *x, int64_t n, float *y) {
    const int64_t n8 = n & ~(int64_t)7;
    int64_t i = 0;
    for (; i < n8; i++) y[i] = x[i] / (1.0f + mbg_expf(0.0f - x[i]));
    for (; i < n; i++) y[i] = x[i] / (1.0f + expf(-x[i]));
}

/* ggml_compute_forward_rms_norm_f32 then ggml_mul: one row */
static void mbg_rms_row(const float *x, const float *w, int64_t n, float eps, float *y) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const float sq = x[i] * x[i];
        sum += (double)sq;
    }
    const float mean = (float)(sum / (double)n);
    const float scale = 1.0f / sqrtf(mean + eps);
    for (int64_t i = 0; i < n; i++) {
        const float a = x[i] * scale;
        y[i] = a * w[i];
    }
}

/* ggml_rope_cache_init for T positions: cos, sin [T, half] */
static void mbg_rope_tables(const int64_t *pos, int64_t T, int64_t n_dims, float base,
                            float *c, float *s) {
    const float theta_scale = powf(base, -2.0f / (float)n_dims);
    const int64_t half = n_dims / 2;
    for (int64_t t = 0; t < T; t++) {
        float theta = (float)pos[t];
        for (int64_t i = 0; i < half; i++) {
            c[t * half + i] = cosf(theta);
            s[t * half + i] = sinf(theta);
            theta = theta * theta_scale;
        }
    }
}

/* one head's rotation (ggml.py rope_neox) */
static void mbg_rope_head(const float *x, const float *c, const float *s, int64_t half, float *y) {
    for (int64_t i = 0; i < half; i++) {
        const float x0 = x[i], x1 = x[i + half];
        const float p1 = x1 * s[i], p2 = x1 * c[i];
        y[i] = fmaf(x0, c[i], -p1);
        y[i + half] = fmaf(x0, s[i], p2);
    }
}

/* element e of a row read as the engine orders it: il = 1 reads minibit's halves as pairs */
static inline int64_t mbg_idx(int64_t e, int64_t half, int il) {
    return il ? (e & 1) * half + (e >> 1) : e;
}

/* a row of n values: float32, or float16 bits widened */
static inline float mbg_ld(const void *row, int half16, int64_t i) {
    return half16 ? mbg_h2f(((const uint16_t *)row)[i]) : ((const float *)row)[i];
}

/* GGML_F32x8_REDUCE on four 8-lane accumulators */
static inline float mbg_reduce4x8(float acc[4][8]) {
    float c[8], t0[4];
    for (int l = 0; l < 8; l++) {
        const float a = acc[0][l] + acc[2][l], b = acc[1][l] + acc[3][l];
        c[l] = a + b;
    }
    for (int l = 0; l < 4; l++) t0[l] = c[l] + c[l + 4];
    return (t0[0] + t0[1]) + (t0[2] + t0[3]);
}

/* ggml_vec_dot_f16 (tail in double) or ggml_vec_dot_f32 (tail fused, in float) over n
 * elements of x (stride xs) and y (stride ys); il: engine order (mbg_idx, half = n / 2) */
static float mbg_vec_dot(const void *x, int xh, int64_t xs, const void *y, int yh, int64_t ys,
                         int64_t n, int f16dot, int il) {
    float acc[4][8];
    memset(acc, 0, sizeof(acc));
    const int64_t np = n & ~(int64_t)31, half = n / 2;
    for (int64_t i = 0; i < np; i += 32)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 8; l++) {
                const int64_t e = mbg_idx(i + 8 * j + l, half, il);
                acc[j][l] = fmaf(mbg_ld(x, xh, e * xs), mbg_ld(y, yh, e * ys), acc[j][l]);
            }
    const float r = mbg_reduce4x8(acc);
    if (f16dot) {
        double sum = (double)r;
        for (int64_t i = np; i < n; i++) {
            const int64_t e = mbg_idx(i, half, il);
            const float p = mbg_ld(x, xh, e * xs) * mbg_ld(y, yh, e * ys);
            sum += (double)p;
        }
        return (float)sum;
    }
    float sum = r;
    for (int64_t i = np; i < n; i++) {
        const int64_t e = mbg_idx(i, half, il);
        sum = fmaf(mbg_ld(x, xh, e * xs), mbg_ld(y, yh, e * ys), sum);
    }
    return sum;
}

/* one output of tinyBLAS<8, __m256> (n % 8 == 0) */
static float mbg_tinyblas(const void *a, int ah, int64_t as, const void *b, int bh, int64_t bs,
                          int64_t n, int il) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const int64_t half = n / 2;
    for (int64_t i = 0; i < n; i += 8)
        for (int l = 0; l < 8; l++) {
            const int64_t e = mbg_idx(i + l, half, il);
            acc[l] = fmaf(mbg_ld(a, ah, e * as), mbg_ld(b, bh, e * bs), acc[l]);
        }
    float v[4];
    for (int l = 0; l < 4; l++) v[l] = acc[l + 4] + acc[l];
    return (v[0] + v[2]) + (v[1] + v[3]);
}

/* One (query t, head) of ggml.py attention.
 * q: D floats (already RoPE'd); k, v: the kv head's [S_alloc, D] rows (float16 bits when
 * half16); S = positions filled, allowed = positions <= pos; S8, S32 the padded lengths.
 * sc, e: scratch of S32 floats; qq: scratch of D floats; out: D floats. */
static void mbg_attend(const float *q, const void *k, const void *v, int half16, int64_t D,
                       int64_t S, int64_t pos, int batch, int f16_rhs, int il, float *sc,
                       float *qq, float *out) {
    const int64_t S8 = (S + 7) & ~(int64_t)7, S32 = (S + 31) & ~(int64_t)31;
    for (int64_t d = 0; d < D; d++) qq[d] = half16 ? mbg_f16(q[d]) : q[d];
    const float scale = 1.0f / sqrtf((float)D);
    float m = -INFINITY;
    for (int64_t s = 0; s < S8; s++) {
        if (s > pos || s >= S) { sc[s] = -INFINITY; continue; }
        const char *kr = (const char *)k + s * D * (half16 ? 2 : 4);
        float dot;
        if (half16 && f16_rhs && batch && D % 8 == 0)
            dot = mbg_tinyblas(qq, 0, 1, kr, 1, 1, D, il);
        else
            dot = mbg_vec_dot(qq, 0, 1, kr, half16, 1, D, half16, il);
        sc[s] = dot * scale;
        if (sc[s] > m) m = sc[s];
    }
    double total = 0.0;
    for (int64_t g = 0; g < S8; g += 8) {
        float ev[8];
        for (int l = 0; l < 8; l++) {
            ev[l] = mbg_expf(sc[g + l] - m);
            sc[g + l] = ev[l];
        }
        float v4[4];
        for (int l = 0; l < 4; l++) v4[l] = ev[l + 4] + ev[l];
        const float hs = (v4[0] + v4[2]) + (v4[1] + v4[3]);
        total += (double)hs;
    }
    const float inv = (float)(1.0 / total);
    for (int64_t s = 0; s < S32; s++) {
        const float p = s < S8 ? sc[s] * inv : 0.0f;
        sc[s] = ((half16 && (!batch || f16_rhs)) ? mbg_f16(p) : p);
    }
    /* p . V over S32 positions; V rows past S are the cache's zeros (read as 0 here) */
    for (int64_t d = 0; d < D; d++) {
        float acc8[8] = {0, 0, 0, 0, 0, 0, 0, 0}, acc[4][8];
        if (batch) {
            for (int64_t s = 0; s < S32; s += 8)
                for (int l = 0; l < 8; l++) {
                    const float vv = (s + l < S) ? mbg_ld(v, half16, (s + l) * D + d) : 0.0f;
                    acc8[l] = fmaf(vv, sc[s + l], acc8[l]);
                }
            float v4[4];
            for (int l = 0; l < 4; l++) v4[l] = acc8[l + 4] + acc8[l];
            out[d] = (v4[0] + v4[2]) + (v4[1] + v4[3]);
            continue;
        }
        memset(acc, 0, sizeof(acc));
        for (int64_t s = 0; s < S32; s += 32)
            for (int j = 0; j < 4; j++)
                for (int l = 0; l < 8; l++) {
                    const int64_t i = s + 8 * j + l;
                    const float vv = i < S ? mbg_ld(v, half16, i * D + d) : 0.0f;
                    acc[j][l] = fmaf(vv, sc[i], acc[j][l]);
                }
        out[d] = mbg_reduce4x8(acc);         /* S32 % 32 == 0: no tail */
    }
}

#endif /* MB_GGML_H */
