/* mb_float_ternary.h — the inner loop of _fast/float_ternary.pyx (spec:
 * minibit/kernels/float_ternary.py).  One output y[t, r]: for each block of `block` columns,
 * x * code added into lane (k mod 32) of 32 float32 sums (k counted from the block's first
 * column, a zero-padded last step as dense.py pads), reduced by mbd_tree, multiplied by the
 * block's scale and added to y in block order.  Products are kept apart from the adds
 * (MB_KEEP), so no FMA can fuse them.  Shapes are validated by the Cython caller.
 */
#ifndef MB_FLOAT_TERNARY_H
#define MB_FLOAT_TERNARY_H

#include <stdint.h>
#include <math.h>
#include "mb_dense.h"
#include "mb_rt.h"

static float mbf_one(const float *x, const uint8_t *data, int64_t R, int64_t cols,
                     int64_t r, const float *scale_row, int64_t block) {
    const uint8_t *row = data + (r % R) * cols;        /* hf_packed: row r in packed row r % R */
    int shift = (int)(2 * (r / R));                    /* ... at bits 2 * (r / R) */
    float y = 0.0f;
    for (int64_t c0 = 0; c0 < cols; c0 += block) {
        float acc[32] = {0};
        for (int64_t k = 0; k < block; k += 32) {
            for (int l = 0; l < 32; l++) {
                float p;
                if (k + l < block) {
                    int code = (int)((row[c0 + k + l] >> shift) & 3) - 1;
                    p = x[c0 + k + l] * (float)code;
                } else {
                    p = 0.0f * 0.0f;
                }
                MB_KEEP(p);
                acc[l] += p;
            }
        }
        float prod = mbd_tree(acc) * scale_row[c0 / block];
        MB_KEEP(prod);
        y += prod;
    }
    return y;
}

/* ---- transformers' AutoBitLinear in MKL's order (float_ternary.mkl_linear) ----------------
 * y[t, r] = F.linear(xq, W): the K products in MKL's blocks (one up to 192, two halves up to
 * 384, blocks of 192 beyond; dense.mkl_k_blocks), each block one chain from 0 in increasing k,
 * the blocks' sums added left to right.  W = code ("offline": +-xq or 0, an exact product, so
 * the chain is float adds) or code * wmul ("online": fmaf, one rounding per step).
 *
 * dt is the packed bytes transposed, [K][Rp] (byte row rr of the hf_packed matrix at
 * dt[k * Rp + rr]; Rp = R rounded up to 64, the extra bytes 0x55: code 1, weight 0), so
 * the codes of 64 neighbouring rows at one k are 64 neighbouring bytes: the j loops below
 * run over 64 outputs with independent chains, a fixed count the compiler unrolls into
 * vector adds / fused multiply-adds in registers (the same operation lane by lane, so the
 * same bits).
 * Shapes are validated by the Cython caller. */
static inline int64_t mbf_mkl_block(int64_t K) {
    return K <= 192 ? K : (K <= 384 ? K / 2 : 192);
}

#define MBF_MKL_BODY                                                                           \
    const int64_t bs = mbf_mkl_block(K), n = rr1 - rr0;                                       \
    (void)rr1;                                                                                \
    const int sh = 2 * plane;                                                                 \
    float tot[64], part[64];                                                                  \
    for (int64_t t = 0; t < T; t++) {                                                         \
        const float *x = xq + t * K;                                                          \
        for (int64_t b0 = 0; b0 < K; b0 += bs) {                                              \
            const int64_t b1 = b0 + bs < K ? b0 + bs : K;                                     \
            for (int64_t j = 0; j < 64; j++) part[j] = 0.0f;                                  \
            for (int64_t k = b0; k < b1; k++) {                                               \
                const float xk = x[k];                                                        \
                const uint8_t *d = dt + k * Rp + rr0;                                         \
                if (online)                                                                   \
                    for (int j = 0; j < 64; j++)                                              \
                        part[j] = fmaf(xk, (float)(((d[j] >> sh) & 3) - 1) * wmul, part[j]);  \
                else                                                                          \
                    for (int j = 0; j < 64; j++)                                              \
                        part[j] = part[j] + xk * (float)(((d[j] >> sh) & 3) - 1);             \
            }                                                                                 \
            for (int j = 0; j < 64; j++) tot[j] = b0 ? tot[j] + part[j] : part[j];            \
        }                                                                                     \
        for (int64_t j = 0; j < n; j++) {                                                     \
            const int64_t r = plane * R + rr0 + j;                                            \
            if (r < N) y[t * N + r] = tot[j];                                                 \
        }                                                                                     \
    }

/* outputs of plane `plane` (rows plane * R + rr) for byte rows [rr0, rr1), rr1 - rr0 <= 64
 * (rr0 a multiple of 64; the lanes past rr1 sum padding and are not written) */
static void mbf_mkl_tile_c(const float *xq, const uint8_t *dt, int64_t Rp, int64_t R, int64_t K, int64_t N,
                           int plane, int64_t rr0, int64_t rr1, int64_t T, float wmul,
                           int online, float *y) {
    MBF_MKL_BODY
}

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("avx2,fma")))
static void mbf_mkl_tile_x(const float *xq, const uint8_t *dt, int64_t Rp, int64_t R, int64_t K, int64_t N,
                           int plane, int64_t rr0, int64_t rr1, int64_t T, float wmul,
                           int online, float *y) {
    MBF_MKL_BODY
}

static int mbf_has_fma(void) {
    static int cached = -1;
    if (cached < 0) { __builtin_cpu_init(); cached = __builtin_cpu_supports("fma") ? 1 : 0; }
    return cached;
}
#  define MBF_MKL_TILE(...) ((mb_simd() && mbf_has_fma()) ? mbf_mkl_tile_x(__VA_ARGS__) \
                                                           : mbf_mkl_tile_c(__VA_ARGS__))
#else
#  define MBF_MKL_TILE(...) mbf_mkl_tile_c(__VA_ARGS__)
#endif
#undef MBF_MKL_BODY

#endif
