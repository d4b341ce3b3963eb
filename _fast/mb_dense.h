/* mb_dense.h — the C inner loop of minibit's float LM-head product (_fast/dense.pyx).
 *
 * The spec is minibit/kernels/dense.py: y = sum_k x[k] * w[k] with w widened from F32, F16
 * or BF16 as it is read, each product rounded to float32, added into lane k mod 32 in
 * increasing k, and the 32 lanes reduced by a fixed tree.  Two versions give the same bits:
 * portable C (32 floats in an array) and AVX2 + F16C (four 8-lane registers: register r
 * holds lanes 8r..8r+7), chosen at run time.  A short tail is zero-padded to a full
 * 32-wide step, exactly as the reference pads (adding +0.0 everywhere, so a lane holding
 * -0.0 becomes +0.0 in both).  Products are kept apart from the adds (MB_KEEP), so a
 * build with -march=native never fuses them into FMAs.  No bound is checked here: the
 * Cython caller validates every shape first.
 */
#ifndef MB_DENSE_H
#define MB_DENSE_H

#include <stdint.h>
#include <string.h>

#include "mb_rt.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#  define MBD_X86 1
#  include <immintrin.h>
#  define MBD_SIMD __attribute__((target("avx2,f16c")))
#  define MB_KEEP(v) __asm__("" : "+x"(v))
#else
#  define MBD_X86 0
#  define MB_KEEP(v) do { volatile float mb_v_ = (v); (v) = mb_v_; } while (0)
#endif

enum { MBD_F32 = 0, MBD_F16 = 1, MBD_BF16 = 2 };

#ifndef MBD_PF_BYTES
#  define MBD_PF_BYTES 12288  /* software prefetch distance while streaming a matrix */
#endif

/* mbd_use_simd(): the shared SIMD switch of mb_rt.h (the name mb_layers.h calls) */
#define mbd_use_simd mb_simd

/* float16 bits -> float32, exact (subnormals and inf/nan included) */
static inline float mbd_half(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    if (exp == 0x1fu) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else {                                   /* subnormal: normalise */
        int e = -1;
        do { e++; man <<= 1; } while (!(man & 0x400u));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline float mbd_weight(const void *w, int dtype, int64_t k) {
    if (dtype == MBD_F32) return ((const float *)w)[k];
    if (dtype == MBD_F16) return mbd_half(((const uint16_t *)w)[k]);
    uint32_t bits = (uint32_t)((const uint16_t *)w)[k] << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* the fixed tree of dense.py: 32 lanes -> 8 -> 4 -> 2 -> 1 */
static inline float mbd_tree(const float *acc) {
    float a[8], b[4], c[2];
    for (int l = 0; l < 8; l++) a[l] = (acc[l] + acc[l + 8]) + (acc[l + 16] + acc[l + 24]);
    for (int l = 0; l < 4; l++) b[l] = a[l] + a[l + 4];
    for (int l = 0; l < 2; l++) c[l] = b[l] + b[l + 2];
    return c[0] + c[1];
}

static float mbd_dot_scalar(const float *x, const void *w, int dtype, int64_t K) {
    float acc[32] = {0};
    int64_t k = 0;
    for (; k + 32 <= K; k += 32)
        for (int l = 0; l < 32; l++) {
            float p = x[k + l] * mbd_weight(w, dtype, k + l);
            MB_KEEP(p);
            acc[l] += p;
        }
    if (k < K)
        for (int l = 0; l < 32; l++) {
            float p = k + l < K ? x[k + l] * mbd_weight(w, dtype, k + l) : 0.0f * 0.0f;
            MB_KEEP(p);
            acc[l] += p;
        }
    return mbd_tree(acc);
}

#if MBD_X86
MBD_SIMD static inline __m256 mbd_load8(const void *w, int dtype, int64_t k) {
    if (dtype == MBD_F16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + k)));
    if (dtype == MBD_BF16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + k))), 16));
    return _mm256_loadu_ps((const float *)w + k);
}

MBD_SIMD static inline __m256 mbd_step(__m256 acc, __m256 x, __m256 w) {
    __m256 p = _mm256_mul_ps(x, w);
    MB_KEEP(p);
    return _mm256_add_ps(acc, p);
}

MBD_SIMD static float mbd_dot_simd(const float *x, const void *w, int dtype, int64_t K) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const char *wp = (const char *)w;
    const int64_t es = dtype == MBD_F32 ? 4 : 2;
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
        /* the matrix MBD_PF_BYTES ahead (the rows later calls read): the lines of this step */
        _mm_prefetch(wp + k * es + MBD_PF_BYTES, _MM_HINT_T0);
        if (es == 4) _mm_prefetch(wp + k * es + MBD_PF_BYTES + 64, _MM_HINT_T0);
        a0 = mbd_step(a0, _mm256_loadu_ps(x + k), mbd_load8(w, dtype, k));
        a1 = mbd_step(a1, _mm256_loadu_ps(x + k + 8), mbd_load8(w, dtype, k + 8));
        a2 = mbd_step(a2, _mm256_loadu_ps(x + k + 16), mbd_load8(w, dtype, k + 16));
        a3 = mbd_step(a3, _mm256_loadu_ps(x + k + 24), mbd_load8(w, dtype, k + 24));
    }
    if (k < K) {                               /* zero-padded tail, one full step */
        float xb[32] = {0}, wb[32] = {0};
        for (int64_t i = k; i < K; i++) {
            xb[i - k] = x[i];
            wb[i - k] = mbd_weight(w, dtype, i);
        }
        a0 = mbd_step(a0, _mm256_loadu_ps(xb), _mm256_loadu_ps(wb));
        a1 = mbd_step(a1, _mm256_loadu_ps(xb + 8), _mm256_loadu_ps(wb + 8));
        a2 = mbd_step(a2, _mm256_loadu_ps(xb + 16), _mm256_loadu_ps(wb + 16));
        a3 = mbd_step(a3, _mm256_loadu_ps(xb + 24), _mm256_loadu_ps(wb + 24));
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));      /* a */
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1)); /* b */
    __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));                              /* c0, c1 */
    return _mm_cvtss_f32(_mm_add_ss(c, _mm_shuffle_ps(c, c, 1)));
}
#endif

/* y[t * N + n] for rows n0 <= n < n1 of W [N, K] (element size by dtype) and all T tokens */
static void mbd_rows(const float *x, int64_t T, int64_t K, const void *W, int dtype,
                     int64_t N, int64_t n0, int64_t n1, float *y) {
    int64_t es = dtype == MBD_F32 ? 4 : 2;
#if MBD_X86
    if (mbd_use_simd()) {
        for (int64_t n = n0; n < n1; n++)
            for (int64_t t = 0; t < T; t++)
                y[t * N + n] = mbd_dot_simd(x + t * K, (const char *)W + n * K * es, dtype, K);
        return;
    }
#endif
    for (int64_t n = n0; n < n1; n++)
        for (int64_t t = 0; t < T; t++)
            y[t * N + n] = mbd_dot_scalar(x + t * K, (const char *)W + n * K * es, dtype, K);
}

#endif
