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

#include "mb_rt.h"     /* the shared SIMD switch */

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#  define MBG_X86 1
#else
#  define MBG_X86 0
#endif

#define MBG_FN(n) n##_c
#define MBG_ATTR
#include "mb_ggml_body.h"
#undef MBG_FN
#undef MBG_ATTR

#if MBG_X86
#  include <immintrin.h>
#  define MBG_FN(n) n##_x
#  define MBG_ATTR __attribute__((target("avx2,fma,f16c")))
#  define MBG_VECTOR 1          /* the body's vector fast paths (intrinsics) */
#  include "mb_ggml_body.h"
#  undef MBG_VECTOR
#  undef MBG_FN
#  undef MBG_ATTR
#endif

static int mbg_use_simd(void) {
#if MBG_X86
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                  && __builtin_cpu_supports("f16c")) ? 1 : 0;
    }
    return mb_simd() && cached;
#else
    return 0;
#endif
}

#if MBG_X86
#  define MBG_CALL(name, ...) (mbg_use_simd() ? name##_x(__VA_ARGS__) : name##_c(__VA_ARGS__))
#else
#  define MBG_CALL(name, ...) name##_c(__VA_ARGS__)
#endif

static float mbg_expf(float x) { return MBG_CALL(mbg_expf, x); }
static void mbg_silu_row(const float *x, int64_t n, float *y) { MBG_CALL(mbg_silu_row, x, n, y); }
static void mbg_rms_row(const float *x, const float *w, int64_t n, float eps, float *y) {
    MBG_CALL(mbg_rms_row, x, w, n, eps, y);
}
static void mbg_rope_tables(const int64_t *pos, int64_t T, int64_t n_dims, float base,
                            float *c, float *s) {
    mbg_rope_tables_c(pos, T, n_dims, base, c, s);    /* libm calls: one version */
}
static void mbg_rope_head(const float *x, const float *c, const float *s, int64_t half, float *y) {
    MBG_CALL(mbg_rope_head, x, c, s, half, y);
}
static float mbg_vec_dot(const void *x, int xh, int64_t xs, const void *y, int yh, int64_t ys,
                         int64_t n, int f16dot, int il) {
    return MBG_CALL(mbg_vec_dot, x, xh, xs, y, yh, ys, n, f16dot, il);
}
static float mbg_tinyblas(const void *a, int ah, int64_t as, const void *b, int bh, int64_t bs,
                          int64_t n, int il) {
    return MBG_CALL(mbg_tinyblas, a, ah, as, b, bh, bs, n, il);
}
static void mbg_attend(const float *q, const void *k, const void *v, int half16, int64_t D,
                       int64_t S, int64_t pos, int batch, int f16_rhs, int il, float *sc,
                       float *qq, float *accv, float *out) {
    MBG_CALL(mbg_attend, q, k, v, half16, D, S, pos, batch, f16_rhs, il, sc, qq, accv, out);
}

static void mbg_fa_row(const float *q, const uint16_t *k, const uint16_t *v, int64_t D,
                       int64_t n, float scale, int il, float *qq, float *acc, float *out) {
    MBG_CALL(mbg_fa_row, q, k, v, D, n, scale, il, qq, acc, out);
}
static void mbg_fa_tiled_rows(const float *q, int64_t qs, int nq, const uint16_t *k,
                              const uint16_t *v, int64_t D, int64_t n0, float scale, int il,
                              float *qT, float *kq, float *acc, float *out, int64_t os) {
    MBG_CALL(mbg_fa_tiled_rows, q, qs, nq, k, v, D, n0, scale, il, qT, kq, acc, out, os);
}

#endif /* MB_GGML_H */
