/* mb_quant.h — the inner loops of minibit's activation quantizers (_fast/quant.pyx).
 *
 * The spec is minibit/quant.py.  Two primitives serve every profile:
 *   mbq_absmax  max |x| over n floats (exact: a maximum does not round)
 *   mbq_round   q = clamp(rint(x * s), -128, 127), the product rounded to float32 first,
 *               rint half to even (the default rounding mode); optionally a non-finite
 *               product gives 0 (ggml's Q8_K); returns the int32 sum of q.
 * Portable C and AVX2 (chosen at run time) give the same bits: each is the same IEEE
 * multiply and the same rounding, element by element.  No bound is checked here.
 */
#ifndef MB_QUANT_H
#define MB_QUANT_H

#include <math.h>
#include <stdint.h>

#include "mb_rt.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#  define MBQ_X86 1
#  include <immintrin.h>
#  define MBQ_AVX2 __attribute__((target("avx2")))
#else
#  define MBQ_X86 0
#endif

static inline float mbq_absmax_scalar(const float *x, int64_t n) {
    float m = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        const float a = fabsf(x[i]);
        if (a > m) m = a;
    }
    return m;
}

static inline int8_t mbq_clamp8(float v) {
    return v > 127.0f ? 127 : (v < -128.0f ? -128 : (int8_t)v);
}

static inline int32_t mbq_round_scalar(const float *x, int64_t n, float s, int zero_nonfinite,
                                       int8_t *q) {
    int32_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        float v = x[i] * s;
        if (zero_nonfinite && !isfinite(v)) v = 0.0f;
        q[i] = mbq_clamp8(rintf(v));
        total += q[i];
    }
    return total;
}

#if MBQ_X86
MBQ_AVX2 static float mbq_absmax_avx2(const float *x, int64_t n) {
    const __m256 nosign = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 m0 = _mm256_setzero_ps(), m1 = m0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        m0 = _mm256_max_ps(m0, _mm256_and_ps(_mm256_loadu_ps(x + i), nosign));
        m1 = _mm256_max_ps(m1, _mm256_and_ps(_mm256_loadu_ps(x + i + 8), nosign));
    }
    m0 = _mm256_max_ps(m0, m1);
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m0), _mm256_extractf128_ps(m0, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    const float m = _mm_cvtss_f32(h), tail = mbq_absmax_scalar(x + i, n - i);
    return tail > m ? tail : m;
}

MBQ_AVX2 static int32_t mbq_round_avx2(const float *x, int64_t n, float s, int zero_nonfinite,
                                       int8_t *q) {
    const __m256 vs = _mm256_set1_ps(s), hi = _mm256_set1_ps(127.0f), lo = _mm256_set1_ps(-128.0f);
    const __m256 big = _mm256_set1_ps(3.402823466e+38f);
    const __m256 nosign = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    __m256i acc = _mm256_setzero_si256();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i r[4];
        for (int j = 0; j < 4; j++) {
            __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i + 8 * j), vs);
            if (zero_nonfinite)       /* |v| <= FLT_MAX is false for inf and NaN */
                v = _mm256_and_ps(v, _mm256_cmp_ps(_mm256_and_ps(v, nosign), big, _CMP_LE_OQ));
            v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            v = _mm256_max_ps(_mm256_min_ps(v, hi), lo);
            r[j] = _mm256_cvtps_epi32(v);                        /* exact: integers */
            acc = _mm256_add_epi32(acc, r[j]);
        }
        const __m256i p01 = _mm256_packs_epi32(r[0], r[1]), p23 = _mm256_packs_epi32(r[2], r[3]);
        const __m256i b = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p01, p23), order);
        _mm256_storeu_si256((__m256i *)(q + i), b);
    }
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1));
    return _mm_cvtsi128_si32(t) + mbq_round_scalar(x + i, n - i, s, zero_nonfinite, q + i);
}
#endif

static float mbq_absmax(const float *x, int64_t n) {
#if MBQ_X86
    if (mb_simd()) return mbq_absmax_avx2(x, n);
#endif
    return mbq_absmax_scalar(x, n);
}

static int32_t mbq_round(const float *x, int64_t n, float s, int zero_nonfinite, int8_t *q) {
#if MBQ_X86
    if (mb_simd()) return mbq_round_avx2(x, n, s, zero_nonfinite, q);
#endif
    return mbq_round_scalar(x, n, s, zero_nonfinite, q);
}

/* Q8_K's bsums: the sums of each 16 consecutive q of a 256-block (exact in int16) */
static void mbq_bsums16(const int8_t *q, int16_t *out) {
    for (int g = 0; g < 16; g++) {
        int32_t s = 0;
        for (int j = 0; j < 16; j++) s += q[16 * g + j];
        out[g] = (int16_t)s;
    }
}

#endif /* MB_QUANT_H */
