/* mb_ternary.h — the C inner loops of minibit's ternary kernels (_fast/mad.pyx, _fast/tq.pyx).
 *
 * The NumPy references minibit/kernels/mad.py and minibit/kernels/tq.py are the spec; read
 * them first.  Every function here exists twice: a portable scalar version and an AVX2
 * version (GCC/clang `target("avx2")`, chosen at run time with __builtin_cpu_supports), so
 * the generic x86-64 build still runs AVX2 where the CPU has it.  Both give the same bits:
 *
 *  - integer work is exact or wraps exactly as stated (unsigned arithmetic where C would
 *    call a wrap undefined);
 *  - float work (TQ only) is one float32 operation at a time, in block order, with
 *    contraction into fused multiply-adds prevented (MB_ROUNDED).
 *
 * The hottest ones have VNNI versions (vpdpbusd: four u8 x s8 products summed into each int32
 * lane), chosen at run time by mb_vnni() (mb_rt.h: CPU support and the process-wide VNNI
 * switch, MINIBIT_NO_VNNI=1 to turn it off): TQ2_0's four-row decode and four-token prefill
 * kernels with AVX-512 VNNI or, without AVX-512, AVX-VNNI (their int32 lanes are exact
 * either way), and I2_S's GEMV / GEMM with AVX-512 VNNI for tokens whose int16 lanes
 * provably cannot wrap.  The comments above each say why the integers are the same; the
 * float work after them is unchanged.
 *
 * Nothing here checks a bound: the Cython callers validate every shape and byte count
 * before they release the GIL.
 *
 * MAD (hf_packed, i2_s).  raw = sum_k code[r, k] * q[t, k] with code = w + 1 in {0..3}.
 * Columns go in 32-column chunks, each one `maddubs` (u8 code x s8 q, adjacent pairs into
 * an int16 lane l = columns 2l, 2l + 1).  The int16 lanes add chunk after chunk and widen to
 * int32 every `gc` chunks counted from the row start:
 *     gc = 128 (32 I2_S blocks): bitnet.cpp's AVX2 kernel, int16 wrap included;
 *     gc = 32:                   exact (a lane stays within 32 * 768 < 32768).
 * The scalar version sums each lane of a widening group exactly in int32 and then wraps it
 * to int16 once: equal, because int16 addition is addition modulo 2^16.
 */
#ifndef MB_TERNARY_H
#define MB_TERNARY_H

#include <stdint.h>
#include <string.h>

#include "mb_rt.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#  define MB_X86 1
#  include <immintrin.h>
#  define MB_AVX2 __attribute__((target("avx2,f16c")))   /* every AVX2 CPU has F16C */
#else
#  define MB_X86 0
#endif

/* MB_ROUNDED(v): v is a float32 value, rounded, before the next operation uses it.  An empty
 * asm that "changes" v stops the compiler from fusing the product that made v into the next
 * add (a -march=native build has FMA and GCC contracts a*b+c by default). */
#if MB_X86
#  define MB_ROUNDED(v) __asm__("" : "+x"(v))
#else
#  define MB_ROUNDED(v) do { volatile float mb_v_ = (v); (v) = mb_v_; } while (0)
#endif

#ifndef MB_PF_BYTES
#  define MB_PF_BYTES 12288   /* software prefetch distance of the GEMV kernels */
#endif
#define MB_GC_LANES 128   /* chunks per widening: bitnet.cpp (32 blocks of 128) */
#define MB_GC_EXACT 32    /* chunks per widening: exact */

/* ---- helpers (AVX2 or portable: mb_simd(), the shared switch of mb_rt.h) ----------------- */

/* (exact lane sum) mod 2^16, read as a signed int16, sign-extended: what an int16 lane holds */
static inline int32_t mb_wrap16(int32_t v) {
    int32_t w = (int32_t)((uint32_t)v & 0xFFFFu);
    return w >= 0x8000 ? w - 0x10000 : w;
}

static inline int64_t mb_min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* ---- MAD, i2_s layout: row r = cols/4 bytes at data + r*cols/4, 32-byte blocks ----------- */

static void mb_i2s_scalar(const uint8_t *data, int64_t cols, const int8_t *q, int64_t T,
                          int64_t rows, int64_t r0, int64_t r1, int gc, int32_t *raw) {
    const int64_t nb = cols / 128, gb = gc / 4;          /* blocks per widening group */
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *w = data + r * (cols / 4);
        for (int64_t t = 0; t < T; t++) {
            const int8_t *y = q + t * cols;
            uint32_t total = 0;
            for (int64_t b0 = 0; b0 < nb; b0 += gb) {
                int32_t lane[16] = {0};
                const int64_t b1 = mb_min64(nb, b0 + gb);
                for (int64_t b = b0; b < b1; b++) {
                    const uint8_t *x = w + 32 * b;
                    const int8_t *yb = y + 128 * b;
                    for (int p = 0; p < 32; p++) {
                        const int c = x[p];
                        lane[p >> 1] += (c >> 6) * yb[p] + ((c >> 4) & 3) * yb[32 + p]
                                      + ((c >> 2) & 3) * yb[64 + p] + (c & 3) * yb[96 + p];
                    }
                }
                for (int l = 0; l < 16; l++) total += (uint32_t)mb_wrap16(lane[l]);
            }
            raw[t * rows + r] = (int32_t)total;
        }
    }
}

#if MB_X86
MB_AVX2 static inline int32_t mb_hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/* the 4 sub-block planes of one 32-byte I2_S block times the block's 128 activations:
   an int16 vector of 16 lanes (each the sum of 4 maddubs pairs, at most 3072: no wrap) */
#define MB_I2S_BLOCK(x, y0, y1, y2, y3, m3)                                                   \
    _mm256_add_epi16(                                                                         \
        _mm256_add_epi16(                                                                     \
            _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16((x), 6), (m3)), (y0)),    \
            _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16((x), 4), (m3)), (y1))),   \
        _mm256_add_epi16(                                                                     \
            _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16((x), 2), (m3)), (y2)),    \
            _mm256_maddubs_epi16(_mm256_and_si256((x), (m3)), (y3))))

/* GEMV: 4 rows x 1 token; the 4 activation loads of a block are shared by the 4 rows */
MB_AVX2 static void mb_i2s_avx2_4x1(const uint8_t *w0, const uint8_t *w1, const uint8_t *w2,
                                    const uint8_t *w3, int64_t nb, const int8_t *y, int64_t gb,
                                    int32_t out[4]) {
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi16(1);
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t b0 = 0; b0 < nb; b0 += gb) {
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;   /* int16 lanes */
        const int64_t b1 = mb_min64(nb, b0 + gb);
        for (int64_t b = b0; b < b1; b++) {
            const int8_t *yb = y + 128 * b;
            /* the bytes MB_PF_BYTES past each row's current block: over a row, the four
             * streams cover the four rows that far ahead, which later calls read */
            _mm_prefetch((const char *)(w0 + MB_PF_BYTES + 32 * b), _MM_HINT_T0);
            _mm_prefetch((const char *)(w1 + MB_PF_BYTES + 32 * b), _MM_HINT_T0);
            _mm_prefetch((const char *)(w2 + MB_PF_BYTES + 32 * b), _MM_HINT_T0);
            _mm_prefetch((const char *)(w3 + MB_PF_BYTES + 32 * b), _MM_HINT_T0);
            const __m256i y0 = _mm256_loadu_si256((const __m256i *)yb);
            const __m256i y1 = _mm256_loadu_si256((const __m256i *)(yb + 32));
            const __m256i y2 = _mm256_loadu_si256((const __m256i *)(yb + 64));
            const __m256i y3 = _mm256_loadu_si256((const __m256i *)(yb + 96));
            __m256i x;
            x = _mm256_loadu_si256((const __m256i *)(w0 + 32 * b));
            a0 = _mm256_add_epi16(a0, MB_I2S_BLOCK(x, y0, y1, y2, y3, m3));
            x = _mm256_loadu_si256((const __m256i *)(w1 + 32 * b));
            a1 = _mm256_add_epi16(a1, MB_I2S_BLOCK(x, y0, y1, y2, y3, m3));
            x = _mm256_loadu_si256((const __m256i *)(w2 + 32 * b));
            a2 = _mm256_add_epi16(a2, MB_I2S_BLOCK(x, y0, y1, y2, y3, m3));
            x = _mm256_loadu_si256((const __m256i *)(w3 + 32 * b));
            a3 = _mm256_add_epi16(a3, MB_I2S_BLOCK(x, y0, y1, y2, y3, m3));
        }
        s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(a0, one));   /* widen: lane pairs -> int32 */
        s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(a1, one));
        s2 = _mm256_add_epi32(s2, _mm256_madd_epi16(a2, one));
        s3 = _mm256_add_epi32(s3, _mm256_madd_epi16(a3, one));
    }
    out[0] = mb_hsum_epi32(s0);
    out[1] = mb_hsum_epi32(s1);
    out[2] = mb_hsum_epi32(s2);
    out[3] = mb_hsum_epi32(s3);
}

/* GEMM: 1 row x 4 tokens; the row's planes are unpacked once per block for 4 tokens */
MB_AVX2 static void mb_i2s_avx2_1x4(const uint8_t *w, int64_t nb, const int8_t *y, int64_t cols,
                                    int64_t gb, int32_t out[4]) {
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi16(1);
    __m256i s[4];
    for (int i = 0; i < 4; i++) s[i] = _mm256_setzero_si256();
    for (int64_t b0 = 0; b0 < nb; b0 += gb) {
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
        const int64_t b1 = mb_min64(nb, b0 + gb);
        for (int64_t b = b0; b < b1; b++) {
            const __m256i x = _mm256_loadu_si256((const __m256i *)(w + 32 * b));
            const __m256i x0 = _mm256_and_si256(_mm256_srli_epi16(x, 6), m3);
            const __m256i x1 = _mm256_and_si256(_mm256_srli_epi16(x, 4), m3);
            const __m256i x2 = _mm256_and_si256(_mm256_srli_epi16(x, 2), m3);
            const __m256i x3 = _mm256_and_si256(x, m3);
#define MB_TOK(a, yb)                                                                          \
    a = _mm256_add_epi16(a, _mm256_add_epi16(                                                  \
        _mm256_add_epi16(_mm256_maddubs_epi16(x0, _mm256_loadu_si256((const __m256i *)(yb))),  \
                         _mm256_maddubs_epi16(x1, _mm256_loadu_si256((const __m256i *)((yb) + 32)))), \
        _mm256_add_epi16(_mm256_maddubs_epi16(x2, _mm256_loadu_si256((const __m256i *)((yb) + 64))), \
                         _mm256_maddubs_epi16(x3, _mm256_loadu_si256((const __m256i *)((yb) + 96))))))
            MB_TOK(a0, y + 128 * b);
            MB_TOK(a1, y + cols + 128 * b);
            MB_TOK(a2, y + 2 * cols + 128 * b);
            MB_TOK(a3, y + 3 * cols + 128 * b);
#undef MB_TOK
        }
        s[0] = _mm256_add_epi32(s[0], _mm256_madd_epi16(a0, one));
        s[1] = _mm256_add_epi32(s[1], _mm256_madd_epi16(a1, one));
        s[2] = _mm256_add_epi32(s[2], _mm256_madd_epi16(a2, one));
        s[3] = _mm256_add_epi32(s[3], _mm256_madd_epi16(a3, one));
    }
    for (int i = 0; i < 4; i++) out[i] = mb_hsum_epi32(s[i]);
}

#endif

/* ---- I2_S with AVX-512 VNNI: only where the int16 lanes cannot wrap -------------------------
 *
 * bitnet.cpp's kernel (mb_i2s_avx2, gc = MB_GC_LANES) adds each int16 lane l -- columns
 * 128 b + 32 p + 2 l + i (planes p = 0..3, i = 0, 1) over the gc / 4 blocks b of a widening
 * group -- modulo 2^16, so the row's result is  sum over groups and lanes of wrap16(V),  V the
 * lane's exact sum.  int16 addition is addition modulo 2^16: whatever the order of the adds,
 * the lane ends as wrap16(V), and wrap16(V) = V exactly when -32768 <= V <= 32767.  Codes are
 * 0..3 (3 only in bytes no packer writes), so 3 N <= V <= 3 P, where P and N are the sums of the
 * positive and of the negative activations on the lane's columns: if 3 P <= 32767 and
 * 3 N >= -32768 for every lane of every group, no lane of that token can wrap for any
 * weights, the kernel's result is the exact dot product sum code * q (its int32 adds are
 * exact too), and any exact method gives the same int32 -- here vpdpbusd (u8 code x s8 q, four
 * products into an int32 lane, no saturation; every int32 add wraps modulo 2^32 like the
 * AVX2 kernel's, so even the total agrees bit for bit).  mb_i2s_lanes_exact decides it per
 * token from the activations alone (O(cols), once per product, not per row); a token that
 * fails (a lane near +-32768: long rows of large activations of one sign) takes the AVX2
 * kernel with its wrap.  With gc = MB_GC_EXACT a lane's bound is 8 blocks * 3072 < 32768:
 * every token passes. */

/* 1 when no int16 lane of token q (cols / 128 blocks, gc chunks per widening) can wrap */
static int mb_i2s_lanes_exact(const int8_t *q, int64_t cols, int gc) {
    const int64_t nb = cols / 128, gb = gc / 4;
    if (gb * 4 * 2 * 3 * 128 <= 32767) return 1;          /* even all -128: no wrap */
    for (int64_t b0 = 0; b0 < nb; b0 += gb) {
        int32_t pos[16] = {0}, neg[16] = {0};
        const int64_t b1 = mb_min64(nb, b0 + gb);
        for (int64_t b = b0; b < b1; b++)
            for (int p = 0; p < 4; p++) {
                const int8_t *yp = q + 128 * b + 32 * p;
                for (int m = 0; m < 32; m++) {
                    const int32_t v = yp[m];
                    pos[m >> 1] += v > 0 ? v : 0;
                    neg[m >> 1] += v < 0 ? v : 0;
                }
            }
        for (int l = 0; l < 16; l++)
            if (3 * pos[l] > 32767 || 3 * neg[l] < -32768) return 0;
    }
    return 1;
}

#if MB_X86
/* mb_i2s_lanes_exact with AVX2: per 32-byte plane, maddubs(1, max(q, 0)) and maddubs(1, min(q, 0))
 * give int16 lane l's pair of columns; over at most 32 blocks x 4 planes a lane's positive sum
 * stays within 128 * 254 and its negative sum within 128 * -256 = -32768: exact in int16.
 * 3 P <= 32767 is P <= 10922 and 3 N >= -32768 is N >= -10922. */
MB_AVX2 static int mb_i2s_lanes_exact_avx2(const int8_t *q, int64_t cols, int gc) {
    const int64_t nb = cols / 128, gb = gc / 4;
    const __m256i ones = _mm256_set1_epi8(1), zero = _mm256_setzero_si256();
    const __m256i hi = _mm256_set1_epi16(10922), lo = _mm256_set1_epi16(-10922);
    for (int64_t b0 = 0; b0 < nb; b0 += gb) {
        __m256i pos = zero, neg = zero;
        const int64_t b1 = mb_min64(nb, b0 + gb);
        for (int64_t k = 128 * b0; k < 128 * b1; k += 32) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(q + k));
            pos = _mm256_add_epi16(pos, _mm256_maddubs_epi16(ones, _mm256_max_epi8(v, zero)));
            neg = _mm256_add_epi16(neg, _mm256_maddubs_epi16(ones, _mm256_min_epi8(v, zero)));
        }
        const __m256i bad = _mm256_or_si256(_mm256_cmpgt_epi16(pos, hi), _mm256_cmpgt_epi16(lo, neg));
        if (!_mm256_testz_si256(bad, bad)) return 0;
    }
    return 1;
}
#endif

/* flags[t] = mb_i2s_lanes_exact(token t) */
static void mb_i2s_exact_flags(const int8_t *q, int64_t T, int64_t cols, int gc, uint8_t *flags) {
    for (int64_t t = 0; t < T; t++) {
#if MB_X86
        if (gc <= 128 && mb_simd()) {            /* int16 sums exact up to 32 blocks */
            flags[t] = (uint8_t)((gc / 4) * 4 * 2 * 3 * 128 <= 32767
                                 || mb_i2s_lanes_exact_avx2(q + t * cols, cols, gc));
            continue;
        }
#endif
        flags[t] = (uint8_t)mb_i2s_lanes_exact(q + t * cols, cols, gc);
    }
}

#if MB_X86 && MB_CC_AVX512VNNI
#  ifndef MB_AVX512VNNI
#    define MB_AVX512VNNI __attribute__((target("avx2,f16c,fma,avx512f,avx512bw,avx512vl,avx512vnni")))
#  endif

/* the 4 planes of 64 code bytes (two I2_S blocks) into acc: planes 0..3 are bits 6-7 .. 0-1 */
#  define MB_I2S_DP512(acc, x, y0, y1, y2, y3)                                               \
    acc = _mm512_dpbusd_epi32(acc, _mm512_and_si512(_mm512_srli_epi16((x), 6), m3), (y0));   \
    acc = _mm512_dpbusd_epi32(acc, _mm512_and_si512(_mm512_srli_epi16((x), 4), m3), (y1));   \
    acc = _mm512_dpbusd_epi32(acc, _mm512_and_si512(_mm512_srli_epi16((x), 2), m3), (y2));   \
    acc = _mm512_dpbusd_epi32(acc, _mm512_and_si512((x), m3), (y3))

#  define MB_I2S_DP256(acc, x, yb)                                                           \
    acc = _mm256_dpbusd_epi32(acc, _mm256_and_si256(_mm256_srli_epi16((x), 6), m3s),         \
                              _mm256_loadu_si256((const __m256i *)(yb)));                    \
    acc = _mm256_dpbusd_epi32(acc, _mm256_and_si256(_mm256_srli_epi16((x), 4), m3s),         \
                              _mm256_loadu_si256((const __m256i *)((yb) + 32)));             \
    acc = _mm256_dpbusd_epi32(acc, _mm256_and_si256(_mm256_srli_epi16((x), 2), m3s),         \
                              _mm256_loadu_si256((const __m256i *)((yb) + 64)));             \
    acc = _mm256_dpbusd_epi32(acc, _mm256_and_si256((x), m3s),                               \
                              _mm256_loadu_si256((const __m256i *)((yb) + 96)))

/* GEMV, 4 rows x 1 token, exact: two blocks (64 code bytes) per step; plane p of both meets
 * [q of block b, plane p | q of block b + 1, plane p], built once for the four rows */
MB_AVX512VNNI static void mb_i2s_vnni_4x1(const uint8_t *w0, const uint8_t *w1, const uint8_t *w2,
                                          const uint8_t *w3, int64_t nb, const int8_t *y,
                                          int32_t out[4]) {
    const __m512i m3 = _mm512_set1_epi8(3);
    const __m256i m3s = _mm256_set1_epi8(3);
    const uint8_t *w[4] = {w0, w1, w2, w3};
    __m512i s[4];
    for (int j = 0; j < 4; j++) s[j] = _mm512_setzero_si512();
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        const int8_t *yb = y + 128 * b;
        __m512i yp[4];
        for (int p = 0; p < 4; p++)
            yp[p] = _mm512_inserti64x4(_mm512_castsi256_si512(
                        _mm256_loadu_si256((const __m256i *)(yb + 32 * p))),
                        _mm256_loadu_si256((const __m256i *)(yb + 128 + 32 * p)), 1);
        for (int j = 0; j < 4; j++) {
            _mm_prefetch((const char *)(w[j] + MB_PF_BYTES + 32 * b), _MM_HINT_T0);
            const __m512i x = _mm512_loadu_si512((const void *)(w[j] + 32 * b));
            MB_I2S_DP512(s[j], x, yp[0], yp[1], yp[2], yp[3]);
        }
    }
    __m256i t[4];
    for (int j = 0; j < 4; j++) t[j] = _mm256_setzero_si256();
    if (b < nb)                                                /* an odd last block */
        for (int j = 0; j < 4; j++) {
            const __m256i x = _mm256_loadu_si256((const __m256i *)(w[j] + 32 * b));
            MB_I2S_DP256(t[j], x, y + 128 * b);
        }
    for (int j = 0; j < 4; j++)
        out[j] = (int32_t)((uint32_t)_mm512_reduce_add_epi32(s[j]) + (uint32_t)mb_hsum_epi32(t[j]));
}

/* GEMM, 1 row x 4 tokens, exact: a block's 32 code bytes broadcast to both 256-bit halves and
 * decoded once as [plane 0 | plane 1] and [plane 2 | plane 3], which meet each token's 64
 * contiguous activations of those planes */
MB_AVX512VNNI static void mb_i2s_vnni_1x4(const uint8_t *w, int64_t nb, const int8_t *y,
                                          int64_t cols, int32_t out[4]) {
    const __m512i m3 = _mm512_set1_epi8(3);
    const __m512i sh01 = _mm512_inserti64x4(_mm512_set1_epi16(6), _mm256_set1_epi16(4), 1);
    const __m512i sh23 = _mm512_inserti64x4(_mm512_set1_epi16(2), _mm256_setzero_si256(), 1);
    __m512i s[4];
    for (int j = 0; j < 4; j++) s[j] = _mm512_setzero_si512();
    for (int64_t b = 0; b < nb; b++) {
        const __m512i x = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(w + 32 * b)));
        const __m512i c01 = _mm512_and_si512(_mm512_srlv_epi16(x, sh01), m3);
        const __m512i c23 = _mm512_and_si512(_mm512_srlv_epi16(x, sh23), m3);
        for (int j = 0; j < 4; j++) {
            const int8_t *yb = y + j * cols + 128 * b;
            s[j] = _mm512_dpbusd_epi32(s[j], c01, _mm512_loadu_si512((const void *)yb));
            s[j] = _mm512_dpbusd_epi32(s[j], c23, _mm512_loadu_si512((const void *)(yb + 64)));
        }
    }
    for (int j = 0; j < 4; j++) out[j] = _mm512_reduce_add_epi32(s[j]);
}
#  undef MB_I2S_DP512
#  undef MB_I2S_DP256
#elif MB_X86      /* a compiler without AVX-512 VNNI: never called (mb_vnni() is never 512) */
static void mb_i2s_vnni_4x1(const uint8_t *w0, const uint8_t *w1, const uint8_t *w2,
                            const uint8_t *w3, int64_t nb, const int8_t *y, int32_t out[4]) {
    (void)w0; (void)w1; (void)w2; (void)w3; (void)nb; (void)y; (void)out;
    __builtin_trap();
}
static void mb_i2s_vnni_1x4(const uint8_t *w, int64_t nb, const int8_t *y, int64_t cols,
                            int32_t out[4]) {
    (void)w; (void)nb; (void)y; (void)cols; (void)out;
    __builtin_trap();
}
#endif

#if MB_X86
MB_AVX2 static void mb_i2s_avx2(const uint8_t *data, int64_t cols, const int8_t *q, int64_t T,
                                int64_t rows, int64_t r0, int64_t r1, int gc, const uint8_t *exact,
                                int32_t *raw) {
    const int64_t nb = cols / 128, rb = cols / 4, gb = gc / 4;
    const int vnni = exact && mb_vnni() == MB_VNNI_512;   /* exact tokens: VNNI, same ints */
    int32_t o[4];
    int64_t t = 0;
    for (; t + 4 <= T; t += 4) {                          /* GEMM: token tiles of 4 */
        const int v4 = vnni && exact[t] && exact[t + 1] && exact[t + 2] && exact[t + 3];
        for (int64_t r = r0; r < r1; r++) {
            if (v4) mb_i2s_vnni_1x4(data + r * rb, nb, q + t * cols, cols, o);
            else mb_i2s_avx2_1x4(data + r * rb, nb, q + t * cols, cols, gb, o);
            for (int i = 0; i < 4; i++) raw[(t + i) * rows + r] = o[i];
        }
    }
    for (; t < T; t++) {                                  /* GEMV: row tiles of 4 */
        const int8_t *y = q + t * cols;
        const int v1 = vnni && exact[t];
        int64_t r = r0;
        for (; r + 4 <= r1; r += 4) {
            const uint8_t *w = data + r * rb;
            if (v1) mb_i2s_vnni_4x1(w, w + rb, w + 2 * rb, w + 3 * rb, nb, y, o);
            else mb_i2s_avx2_4x1(w, w + rb, w + 2 * rb, w + 3 * rb, nb, y, gb, o);
            for (int i = 0; i < 4; i++) raw[t * rows + r + i] = o[i];
        }
        for (; r < r1; r++) {
            const uint8_t *w = data + r * rb;
            if (v1) mb_i2s_vnni_4x1(w, w, w, w, nb, y, o);
            else mb_i2s_avx2_4x1(w, w, w, w, nb, y, gb, o);
            raw[t * rows + r] = o[0];
        }
    }
}
#endif

/* raw[t, r] for rows [r0, r1) and every token; gc = MB_GC_LANES or MB_GC_EXACT; exact: NULL
 * or per token mb_i2s_lanes_exact (1: the VNNI kernels may run for it) */
static void mb_i2s(const uint8_t *data, int64_t cols, const int8_t *q, int64_t T, int64_t rows,
                   int64_t r0, int64_t r1, int gc, const uint8_t *exact, int32_t *raw) {
#if MB_X86
    if (mb_simd()) { mb_i2s_avx2(data, cols, q, T, rows, r0, r1, gc, exact, raw); return; }
#endif
    mb_i2s_scalar(data, cols, q, T, rows, r0, r1, gc, raw);
}

/* ---- MAD, hf_packed layout: byte [p, k] holds rows p, R+p, 2R+p, 3R+p in bits 0-1..6-7 ---- */

static void mb_hfp_scalar(const uint8_t *data, int64_t R, int64_t cols, const int8_t *q,
                          int64_t T, int64_t rows, int64_t p0, int64_t p1, int gc, int32_t *raw) {
    const int64_t nch = cols / 32, gcols = (int64_t)gc * 32;
    for (int64_t p = p0; p < p1; p++) {
        const uint8_t *x = data + p * cols;
        for (int64_t t = 0; t < T; t++) {
            const int8_t *y = q + t * cols;
            uint32_t total[4] = {0, 0, 0, 0};
            for (int64_t k0 = 0; k0 < nch * 32; k0 += gcols) {
                int32_t lane[4][16];
                memset(lane, 0, sizeof lane);
                const int64_t k1 = mb_min64(nch * 32, k0 + gcols);
                for (int64_t k = k0; k < k1; k++) {
                    const int c = x[k], v = y[k], l = (int)((k & 31) >> 1);
                    lane[0][l] += (c & 3) * v;
                    lane[1][l] += ((c >> 2) & 3) * v;
                    lane[2][l] += ((c >> 4) & 3) * v;
                    lane[3][l] += (c >> 6) * v;
                }
                for (int i = 0; i < 4; i++)
                    for (int l = 0; l < 16; l++) total[i] += (uint32_t)mb_wrap16(lane[i][l]);
            }
            for (int64_t k = nch * 32; k < cols; k++) {      /* tail (exact mode only) */
                const int c = x[k], v = y[k];
                for (int i = 0; i < 4; i++) total[i] += (uint32_t)(((c >> (2 * i)) & 3) * v);
            }
            for (int i = 0; i < 4; i++)
                if (i * R + p < rows) raw[t * rows + i * R + p] = (int32_t)total[i];
        }
    }
}

#if MB_X86
/* one packed row (4 output rows) x NT tokens (1 or 2): shared code planes, int16 lanes */
MB_AVX2 static void mb_hfp_avx2_row(const uint8_t *x, int64_t cols, const int8_t *y, int NT,
                                    int64_t gc, uint32_t total[2][4]) {
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi16(1);
    const int64_t nch = cols / 32;
    __m256i s[2][4];
    for (int j = 0; j < 2; j++)
        for (int i = 0; i < 4; i++) s[j][i] = _mm256_setzero_si256();
    for (int64_t c0 = 0; c0 < nch; c0 += gc) {
        const int64_t c1 = mb_min64(nch, c0 + gc);
        __m256i a00 = _mm256_setzero_si256(), a01 = a00, a02 = a00, a03 = a00;
        __m256i a10 = a00, a11 = a00, a12 = a00, a13 = a00;
        if (NT == 2) {
            for (int64_t c = c0; c < c1; c++) {
                const __m256i xx = _mm256_loadu_si256((const __m256i *)(x + 32 * c));
                const __m256i x0 = _mm256_and_si256(xx, m3);
                const __m256i x1 = _mm256_and_si256(_mm256_srli_epi16(xx, 2), m3);
                const __m256i x2 = _mm256_and_si256(_mm256_srli_epi16(xx, 4), m3);
                const __m256i x3 = _mm256_and_si256(_mm256_srli_epi16(xx, 6), m3);
                const __m256i ya = _mm256_loadu_si256((const __m256i *)(y + 32 * c));
                const __m256i yb = _mm256_loadu_si256((const __m256i *)(y + cols + 32 * c));
                a00 = _mm256_add_epi16(a00, _mm256_maddubs_epi16(x0, ya));
                a01 = _mm256_add_epi16(a01, _mm256_maddubs_epi16(x1, ya));
                a02 = _mm256_add_epi16(a02, _mm256_maddubs_epi16(x2, ya));
                a03 = _mm256_add_epi16(a03, _mm256_maddubs_epi16(x3, ya));
                a10 = _mm256_add_epi16(a10, _mm256_maddubs_epi16(x0, yb));
                a11 = _mm256_add_epi16(a11, _mm256_maddubs_epi16(x1, yb));
                a12 = _mm256_add_epi16(a12, _mm256_maddubs_epi16(x2, yb));
                a13 = _mm256_add_epi16(a13, _mm256_maddubs_epi16(x3, yb));
            }
        } else {
            for (int64_t c = c0; c < c1; c++) {
                const __m256i xx = _mm256_loadu_si256((const __m256i *)(x + 32 * c));
                const __m256i ya = _mm256_loadu_si256((const __m256i *)(y + 32 * c));
                a00 = _mm256_add_epi16(a00, _mm256_maddubs_epi16(_mm256_and_si256(xx, m3), ya));
                a01 = _mm256_add_epi16(a01, _mm256_maddubs_epi16(
                          _mm256_and_si256(_mm256_srli_epi16(xx, 2), m3), ya));
                a02 = _mm256_add_epi16(a02, _mm256_maddubs_epi16(
                          _mm256_and_si256(_mm256_srli_epi16(xx, 4), m3), ya));
                a03 = _mm256_add_epi16(a03, _mm256_maddubs_epi16(
                          _mm256_and_si256(_mm256_srli_epi16(xx, 6), m3), ya));
            }
        }
        s[0][0] = _mm256_add_epi32(s[0][0], _mm256_madd_epi16(a00, one));
        s[0][1] = _mm256_add_epi32(s[0][1], _mm256_madd_epi16(a01, one));
        s[0][2] = _mm256_add_epi32(s[0][2], _mm256_madd_epi16(a02, one));
        s[0][3] = _mm256_add_epi32(s[0][3], _mm256_madd_epi16(a03, one));
        s[1][0] = _mm256_add_epi32(s[1][0], _mm256_madd_epi16(a10, one));
        s[1][1] = _mm256_add_epi32(s[1][1], _mm256_madd_epi16(a11, one));
        s[1][2] = _mm256_add_epi32(s[1][2], _mm256_madd_epi16(a12, one));
        s[1][3] = _mm256_add_epi32(s[1][3], _mm256_madd_epi16(a13, one));
    }
    for (int j = 0; j < NT; j++) {
        const int8_t *yt = y + j * cols;
        for (int i = 0; i < 4; i++) total[j][i] = (uint32_t)mb_hsum_epi32(s[j][i]);
        for (int64_t k = nch * 32; k < cols; k++) {          /* tail (exact mode only) */
            const int c = x[k], v = yt[k];
            for (int i = 0; i < 4; i++) total[j][i] += (uint32_t)(((c >> (2 * i)) & 3) * v);
        }
    }
}

MB_AVX2 static void mb_hfp_avx2(const uint8_t *data, int64_t R, int64_t cols, const int8_t *q,
                                int64_t T, int64_t rows, int64_t p0, int64_t p1, int gc,
                                int32_t *raw) {
    uint32_t total[2][4];
    for (int64_t t = 0; t < T; t += 2) {
        const int NT = (T - t) >= 2 ? 2 : 1;
        for (int64_t p = p0; p < p1; p++) {
            mb_hfp_avx2_row(data + p * cols, cols, q + t * cols, NT, gc, total);
            for (int j = 0; j < NT; j++)
                for (int i = 0; i < 4; i++)
                    if (i * R + p < rows) raw[(t + j) * rows + i * R + p] = (int32_t)total[j][i];
        }
    }
}
#endif

/* raw[t, r] for the 4 rows of every packed row in [p0, p1) and every token */
static void mb_hfp(const uint8_t *data, int64_t R, int64_t cols, const int8_t *q, int64_t T,
                   int64_t rows, int64_t p0, int64_t p1, int gc, int32_t *raw) {
#if MB_X86
    if (mb_simd()) { mb_hfp_avx2(data, R, cols, q, T, rows, p0, p1, gc, raw); return; }
#endif
    mb_hfp_scalar(data, R, cols, q, T, rows, p0, p1, gc, raw);
}

/* ---- back to float: the MAD kernels' epilogue over a run of n outputs of one token -------- */

/* mode 2 (hf):         y = (float)(raw - qsum) / s * scale      (int32 difference, wrapping)
 * mode 3 (bitnet.cpp): y = ((float)raw - fsum) / s * scale       (fsum = (float)sums)
 * one float32 rounding per operation; the AVX2 path does the same operations 8 at a time */
static inline void mb_epilogue_scalar(const int32_t *raw, int64_t n, int mode, int32_t qsum,
                                      float fsum, float s, float scale, float *y) {
    for (int64_t i = 0; i < n; i++) {
        float v = mode == 2 ? (float)(int32_t)((uint32_t)raw[i] - (uint32_t)qsum)
                            : (float)raw[i] - fsum;
        float u = v / s;
        MB_ROUNDED(u);
        y[i] = u * scale;
    }
}

#if MB_X86
MB_AVX2 static void mb_epilogue_avx2(const int32_t *raw, int64_t n, int mode, int32_t qsum,
                                     float fsum, float s, float scale, float *y) {
    const __m256 vs = _mm256_set1_ps(s), vc = _mm256_set1_ps(scale), vf = _mm256_set1_ps(fsum);
    const __m256i vq = _mm256_set1_epi32(qsum);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i r = _mm256_loadu_si256((const __m256i *)(raw + i));
        const __m256 v = mode == 2 ? _mm256_cvtepi32_ps(_mm256_sub_epi32(r, vq))
                                   : _mm256_sub_ps(_mm256_cvtepi32_ps(r), vf);
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_div_ps(v, vs), vc));
    }
    mb_epilogue_scalar(raw + i, n - i, mode, qsum, fsum, s, scale, y + i);
}
#endif

static void mb_epilogue(const int32_t *raw, int64_t n, int mode, int32_t qsum, float fsum,
                        float s, float scale, float *y) {
#if MB_X86
    if (mb_simd()) { mb_epilogue_avx2(raw, n, mode, qsum, fsum, s, scale, y); return; }
#endif
    mb_epilogue_scalar(raw, n, mode, qsum, fsum, s, scale, y);
}

/* ---- TQ1_0 / TQ2_0 x Q8_K -------------------------------------------------------------- */

/* IEEE half -> float, exact (as NumPy's astype) */
static inline float mb_half_to_float(const uint8_t *h2) {
    const uint32_t h = (uint32_t)h2[0] | ((uint32_t)h2[1] << 8);
    const uint32_t sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
    uint32_t bits;
    float f;
    if (e == 0) {                                   /* zero or subnormal: m * 2^-24, exact */
        f = (float)m * 5.9604644775390625e-8f;
        memcpy(&bits, &f, 4);
        bits |= sign;
    } else if (e == 31) {
        bits = sign | 0x7F800000u | (m << 13);      /* inf / nan, payload kept */
    } else {
        bits = sign | ((e + 112) << 23) | (m << 13);
    }
    memcpy(&f, &bits, 4);
    return f;
}

/* sum code * y over one TQ2_0 block: element e -> byte (e/128)*32 + e%32, bits 2*((e%128)/32) */
static inline int32_t mb_tq2_block_scalar(const uint8_t *qs, const int8_t *y) {
    int32_t s = 0;
    for (int h = 0; h < 2; h++)
        for (int n = 0; n < 4; n++)
            for (int m = 0; m < 32; m++)
                s += ((qs[32 * h + m] >> (2 * n)) & 3) * y[128 * h + 32 * n + m];
    return s;
}

static inline int mb_trit(int byte, int pow3) {    /* (uint8)(byte * 3^n), then (v * 3) >> 8 */
    const int v = (byte * pow3) & 0xFF;
    return (v * 3) >> 8;
}

/* sum trit * y over one TQ1_0 block (element orders: formats/tq1_0.py) */
static inline int32_t mb_tq1_block_scalar(const uint8_t *qs, const int8_t *y) {
    static const int pow3[5] = {1, 3, 9, 27, 81};
    int32_t s = 0;
    for (int n = 0; n < 5; n++)
        for (int m = 0; m < 32; m++) s += mb_trit(qs[m], pow3[n]) * y[m + 32 * n];
    for (int n = 0; n < 5; n++)
        for (int m = 0; m < 16; m++) s += mb_trit(qs[32 + m], pow3[n]) * y[160 + m + 16 * n];
    for (int n = 0; n < 4; n++)
        for (int j = 0; j < 4; j++) s += mb_trit(qs[48 + j], pow3[n]) * y[240 + j + 4 * n];
    return s;
}

/* One row x one token: per block sumi = sum code*y - sum y (exact int32); if sumi_out, store
 * it; if da, return sumf = sum over blocks in order of (float)sumi * (da[b] * d_w[b]). */
/* one block's float step of the llama.cpp profile: sumf + fl((float)sumi * fl(da * d_w)) */
static inline float mb_tq_step(float sumf, int32_t sumi, float da, float dw) {
    const float dd = da * dw;
    float prod = (float)sumi * dd;
    MB_ROUNDED(prod);
    return sumf + prod;
}

static float mb_tq_row_scalar(int fmt2, const uint8_t *w, int64_t nb, const int8_t *y,
                              const int32_t *ysum, const float *da, int32_t *sumi_out) {
    const int B = fmt2 ? 66 : 54;
    float sumf = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = w + B * b;
        const int32_t sumi = (fmt2 ? mb_tq2_block_scalar(blk, y + 256 * b)
                                   : mb_tq1_block_scalar(blk, y + 256 * b)) - ysum[b];
        if (sumi_out) sumi_out[b] = sumi;
        if (da) sumf = mb_tq_step(sumf, sumi, da[b], mb_half_to_float(blk + B - 2));
    }
    return sumf;
}

#if MB_X86
MB_AVX2 static inline int32_t mb_tq2_block_avx2(const uint8_t *qs, const int8_t *y) {
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi16(1);
    __m256i acc = _mm256_setzero_si256();                  /* int16: at most 8*768 */
    for (int h = 0; h < 2; h++) {
        const __m256i x = _mm256_loadu_si256((const __m256i *)(qs + 32 * h));
        const int8_t *yh = y + 128 * h;
        acc = _mm256_add_epi16(acc, _mm256_maddubs_epi16(_mm256_and_si256(x, m3),
                  _mm256_loadu_si256((const __m256i *)yh)));
        acc = _mm256_add_epi16(acc, _mm256_maddubs_epi16(
                  _mm256_and_si256(_mm256_srli_epi16(x, 2), m3),
                  _mm256_loadu_si256((const __m256i *)(yh + 32))));
        acc = _mm256_add_epi16(acc, _mm256_maddubs_epi16(
                  _mm256_and_si256(_mm256_srli_epi16(x, 4), m3),
                  _mm256_loadu_si256((const __m256i *)(yh + 64))));
        acc = _mm256_add_epi16(acc, _mm256_maddubs_epi16(
                  _mm256_and_si256(_mm256_srli_epi16(x, 6), m3),
                  _mm256_loadu_si256((const __m256i *)(yh + 96))));
    }
    return mb_hsum_epi32(_mm256_madd_epi16(acc, one));
}

/* trit of every byte: v = byte * 3^n mod 256 (byte-wise adds), t = (v >= 86) + (v >= 171) */
MB_AVX2 static inline __m256i mb_trits256(__m256i v) {
    const __m256i c86 = _mm256_set1_epi8((char)86), c171 = _mm256_set1_epi8((char)171);
    const __m256i ge86 = _mm256_cmpeq_epi8(_mm256_max_epu8(v, c86), v);    /* 0xFF where v >= 86 */
    const __m256i ge171 = _mm256_cmpeq_epi8(_mm256_max_epu8(v, c171), v);
    return _mm256_sub_epi8(_mm256_sub_epi8(_mm256_setzero_si256(), ge86), ge171);
}

MB_AVX2 static inline __m128i mb_trits128(__m128i v) {
    const __m128i c86 = _mm_set1_epi8((char)86), c171 = _mm_set1_epi8((char)171);
    const __m128i ge86 = _mm_cmpeq_epi8(_mm_max_epu8(v, c86), v);
    const __m128i ge171 = _mm_cmpeq_epi8(_mm_max_epu8(v, c171), v);
    return _mm_sub_epi8(_mm_sub_epi8(_mm_setzero_si128(), ge86), ge171);
}

MB_AVX2 static inline int32_t mb_tq1_block_avx2(const uint8_t *qs, const int8_t *y) {
    const __m256i one = _mm256_set1_epi16(1);
    /* part A: 32 bytes x 5 trits, elements m + 32n */
    __m256i xa = _mm256_loadu_si256((const __m256i *)qs);
    __m256i acc = _mm256_setzero_si256();
    for (int n = 0; n < 5; n++) {
        acc = _mm256_add_epi16(acc, _mm256_maddubs_epi16(mb_trits256(xa),
                  _mm256_loadu_si256((const __m256i *)(y + 32 * n))));
        xa = _mm256_add_epi8(xa, _mm256_add_epi8(xa, xa));          /* x3, mod 256 */
    }
    /* part B: 16 bytes x 5 trits, elements 160 + m + 16n */
    __m128i xb = _mm_loadu_si128((const __m128i *)(qs + 32));
    __m128i accb = _mm_setzero_si128();
    for (int n = 0; n < 5; n++) {
        accb = _mm_add_epi16(accb, _mm_maddubs_epi16(mb_trits128(xb),
                   _mm_loadu_si128((const __m128i *)(y + 160 + 16 * n))));
        xb = _mm_add_epi8(xb, _mm_add_epi8(xb, xb));
    }
    /* part C: 4 bytes x 4 trits, elements 240 + j + 4n: 16 bytes [qh * 1, qh * 3, qh * 9, qh * 27] */
    int32_t qh;
    memcpy(&qh, qs + 48, 4);
    __m128i xc = _mm_set1_epi32(qh);
    const __m128i x3 = _mm_add_epi8(xc, _mm_add_epi8(xc, xc));
    const __m128i x9 = _mm_add_epi8(x3, _mm_add_epi8(x3, x3));
    const __m128i x27 = _mm_add_epi8(x9, _mm_add_epi8(x9, x9));
    xc = _mm_blend_epi32(_mm_blend_epi32(xc, x3, 0x2), _mm_blend_epi32(x9, x27, 0x8), 0xC);
    accb = _mm_add_epi16(accb, _mm_maddubs_epi16(mb_trits128(xc),
               _mm_loadu_si128((const __m128i *)(y + 240))));
    acc = _mm256_add_epi16(acc, _mm256_inserti128_si256(_mm256_setzero_si256(), accb, 0));
    return mb_hsum_epi32(_mm256_madd_epi16(acc, one));
}

MB_AVX2 static float mb_tq_row_avx2(int fmt2, const uint8_t *w, int64_t nb,
                                             const int8_t *y, const int32_t *ysum, const float *da,
                                             int32_t *sumi_out) {
    const int B = fmt2 ? 66 : 54;
    float sumf = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = w + B * b;
        /* the rows MB_PF_BYTES ahead (later calls read them): both lines a block spans */
        _mm_prefetch((const char *)(blk + MB_PF_BYTES), _MM_HINT_T0);
        _mm_prefetch((const char *)(blk + MB_PF_BYTES + B - 1), _MM_HINT_T0);
        const int32_t sumi = (fmt2 ? mb_tq2_block_avx2(blk, y + 256 * b)
                                   : mb_tq1_block_avx2(blk, y + 256 * b)) - ysum[b];
        if (sumi_out) sumi_out[b] = sumi;
        if (da) {
            uint16_t dh;
            memcpy(&dh, blk + B - 2, 2);
            sumf = mb_tq_step(sumf, sumi, da[b], _cvtsh_ss(dh));   /* F16C: exact */
        }
    }
    return sumf;
}

/* The end of one block in the four-wide TQ2_0 kernels: the four int16 accumulators' exact
 * sums (hadd), minus the activations' block sums, then lane by lane mb_tq_step's float
 * step: sumf + fl((float)sumi * fl(da * d_w)).  Lanes are four tokens or four rows. */
MB_AVX2 static inline __m128 mb_tq2_step4(__m128 sumf, const __m256i acc[4], __m128i ysum4,
                                          __m128 da4, __m128 dw4) {
    const __m256i one = _mm256_set1_epi16(1);
    const __m256i h01 = _mm256_hadd_epi32(_mm256_madd_epi16(acc[0], one), _mm256_madd_epi16(acc[1], one));
    const __m256i h23 = _mm256_hadd_epi32(_mm256_madd_epi16(acc[2], one), _mm256_madd_epi16(acc[3], one));
    const __m256i hh = _mm256_hadd_epi32(h01, h23);
    const __m128i code = _mm_add_epi32(_mm256_castsi256_si128(hh), _mm256_extracti128_si256(hh, 1));
    const __m128 dd = _mm_mul_ps(da4, dw4);
    __m128 prod = _mm_mul_ps(_mm_cvtepi32_ps(_mm_sub_epi32(code, ysum4)), dd);
    MB_ROUNDED(prod);
    return _mm_add_ps(sumf, prod);
}

/* TQ2_0 x four tokens at once (prefill): one row's block is unpacked once and met by the
 * activations of tokens t..t+3 (y: token t's row; the next at +cols), so the 2-bit codes
 * are decoded a quarter as often as token by token.  The four exact block sums are reduced
 * together (hadd) and the float epilogue runs lane by lane on the four tokens -- the same
 * operations, in the same order, as mb_tq_row_avx2 on each token: fl(da * d_w), then
 * fl((float)sumi * dd) added in block order.  ysum, da: token t's row of [T, nb]. */
MB_AVX2 static void mb_tq2_row4_avx2(const uint8_t *w, int64_t nb, const int8_t *y,
                                     int64_t cols, const int32_t *ysum, const float *da,
                                     float *f4) {
    const __m256i m3 = _mm256_set1_epi8(3);
    __m128 sumf = _mm_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = w + 66 * b;
        __m256i acc[4];
        for (int j = 0; j < 4; j++) acc[j] = _mm256_setzero_si256();   /* int16: <= 8*512 */
        for (int h = 0; h < 2; h++) {
            const __m256i x = _mm256_loadu_si256((const __m256i *)(blk + 32 * h));
            const __m256i c0 = _mm256_and_si256(x, m3);
            const __m256i c1 = _mm256_and_si256(_mm256_srli_epi16(x, 2), m3);
            const __m256i c2 = _mm256_and_si256(_mm256_srli_epi16(x, 4), m3);
            const __m256i c3 = _mm256_and_si256(_mm256_srli_epi16(x, 6), m3);
            for (int j = 0; j < 4; j++) {
                const int8_t *yh = y + j * cols + 256 * b + 128 * h;
                acc[j] = _mm256_add_epi16(acc[j], _mm256_maddubs_epi16(c0, _mm256_loadu_si256((const __m256i *)yh)));
                acc[j] = _mm256_add_epi16(acc[j], _mm256_maddubs_epi16(c1, _mm256_loadu_si256((const __m256i *)(yh + 32))));
                acc[j] = _mm256_add_epi16(acc[j], _mm256_maddubs_epi16(c2, _mm256_loadu_si256((const __m256i *)(yh + 64))));
                acc[j] = _mm256_add_epi16(acc[j], _mm256_maddubs_epi16(c3, _mm256_loadu_si256((const __m256i *)(yh + 96))));
            }
        }
        uint16_t dh;
        memcpy(&dh, blk + 64, 2);
        sumf = mb_tq2_step4(sumf, acc, _mm_set_epi32(ysum[3 * nb + b], ysum[2 * nb + b], ysum[nb + b], ysum[b]),
                            _mm_set_ps(da[3 * nb + b], da[2 * nb + b], da[nb + b], da[b]),
                            _mm_set1_ps(_cvtsh_ss(dh)));
    }
    _mm_storeu_ps(f4, sumf);
}
#endif

#if MB_X86
/* TQ2_0, one token x four rows (decode): the token's activations meet four rows' codes per
 * block, the four exact block sums are reduced together (hadd) and the float epilogue runs
 * lane by lane on the four rows -- per row the same operations in the same order as
 * mb_tq_row_avx2: fl(da * d_w), then fl((float)sumi * dd) added in block order.
 * w: row r's bytes, the next rows at +rb. */
MB_AVX2 static void mb_tq2_rows4_avx2(const uint8_t *w, int64_t rb, int64_t nb, const int8_t *y,
                                      const int32_t *ysum, const float *da, float *f4) {
    const __m256i m3 = _mm256_set1_epi8(3);
    __m128 sumf = _mm_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m256i acc[4];
        for (int j = 0; j < 4; j++) {
            acc[j] = _mm256_setzero_si256();                           /* int16: <= 8*512 */
            _mm_prefetch((const char *)(w + j * rb + 66 * b + MB_PF_BYTES), _MM_HINT_T0);
            _mm_prefetch((const char *)(w + j * rb + 66 * b + MB_PF_BYTES + 65), _MM_HINT_T0);
        }
        for (int h = 0; h < 2; h++) {
            const int8_t *yh = y + 256 * b + 128 * h;
            const __m256i y0 = _mm256_loadu_si256((const __m256i *)yh);
            const __m256i y1 = _mm256_loadu_si256((const __m256i *)(yh + 32));
            const __m256i y2 = _mm256_loadu_si256((const __m256i *)(yh + 64));
            const __m256i y3 = _mm256_loadu_si256((const __m256i *)(yh + 96));
            for (int j = 0; j < 4; j++) {
                const __m256i x = _mm256_loadu_si256((const __m256i *)(w + j * rb + 66 * b + 32 * h));
                acc[j] = _mm256_add_epi16(acc[j], _mm256_maddubs_epi16(_mm256_and_si256(x, m3), y0));
                acc[j] = _mm256_add_epi16(acc[j], _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(x, 2), m3), y1));
                acc[j] = _mm256_add_epi16(acc[j], _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(x, 4), m3), y2));
                acc[j] = _mm256_add_epi16(acc[j], _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(x, 6), m3), y3));
            }
        }
        uint16_t dh[4];
        for (int j = 0; j < 4; j++) memcpy(&dh[j], w + j * rb + 66 * b + 64, 2);
        const __m128 dw = _mm_cvtph_ps(_mm_set_epi16(0, 0, 0, 0, (short)dh[3], (short)dh[2],
                                                     (short)dh[1], (short)dh[0]));
        sumf = mb_tq2_step4(sumf, acc, _mm_set1_epi32(ysum[b]), _mm_set1_ps(da[b]), dw);
    }
    _mm_storeu_ps(f4, sumf);
}
#endif

/* Rows [r0, r1) x every token, token tiles of 4 outside so their activations stay in L1.
 * sumi: [T, rows, nb] int32 or NULL; y: [T, rows] float32 or NULL (then da is unused). */
static void mb_tq(int fmt2, const uint8_t *data, int64_t cols, const int8_t *q,
                  const int32_t *ysum, const float *da, int64_t T, int64_t rows, int64_t r0,
                  int64_t r1, int32_t *sumi, float *out) {
    const int64_t nb = cols / 256, rb = nb * (fmt2 ? 66 : 54);
#if MB_X86
    const int avx2 = mb_simd();
#endif
    for (int64_t t0 = 0; t0 < T; t0 += 4) {
        const int64_t t1 = mb_min64(T, t0 + 4);
#if MB_X86
        if (avx2 && fmt2 && out && !sumi && t1 - t0 == 4) {     /* four tokens, codes decoded once */
            for (int64_t r = r0; r < r1; r++) {
                float f4[4];
                mb_tq2_row4_avx2(data + r * rb, nb, q + t0 * cols, cols, ysum + t0 * nb,
                                 da + t0 * nb, f4);
                for (int j = 0; j < 4; j++) out[(t0 + j) * rows + r] = f4[j];
            }
            continue;
        }
#endif
#if MB_X86
        if (avx2 && fmt2 && out && !sumi) {         /* fewer than four tokens: four rows at once */
            for (int64_t t = t0; t < t1; t++) {
                int64_t r = r0;
                for (; r + 4 <= r1; r += 4) {
                    float f4[4];
                    mb_tq2_rows4_avx2(data + r * rb, rb, nb, q + t * cols, ysum + t * nb,
                                      da + t * nb, f4);
                    for (int j = 0; j < 4; j++) out[t * rows + r + j] = f4[j];
                }
                for (; r < r1; r++)
                    out[t * rows + r] = mb_tq_row_avx2(1, data + r * rb, nb, q + t * cols,
                                                       ysum + t * nb, da + t * nb, 0);
            }
            continue;
        }
#endif
        for (int64_t r = r0; r < r1; r++) {
            for (int64_t t = t0; t < t1; t++) {
                const uint8_t *w = data + r * rb;
                const int8_t *y = q + t * cols;
                const int32_t *ys = ysum + t * nb;
                const float *d = out ? da + t * nb : 0;
                int32_t *so = sumi ? sumi + (t * rows + r) * nb : 0;
                float f;
#if MB_X86
                if (avx2) f = mb_tq_row_avx2(fmt2, w, nb, y, ys, d, so);
                else
#endif
                f = mb_tq_row_scalar(fmt2, w, nb, y, ys, d, so);
                if (out) out[t * rows + r] = f;
            }
        }
    }
}

/* ---- TQ in the order of llama.cpp's AVX2 kernel (kernels/tq.py, linear_q8k_avx2) ----------
 * Per block eight int32 lanes: L[k] = sum of code*y over elements e with (e % 32) / 4 == k,
 * minus the sum of y over elements 32k .. 32k+31 (csum); float lane k then takes
 * fl(fl((float)L[k] * fl(da * dw)) + sumf[k]) (fused: one fmaf); the lanes meet as
 * hsum_float_8. */

static inline void mb_tq2_lanes_scalar(const uint8_t *qs, const int8_t *y, int32_t L[8]) {
    for (int k = 0; k < 8; k++) L[k] = 0;
    for (int h = 0; h < 2; h++)
        for (int n = 0; n < 4; n++)
            for (int m = 0; m < 32; m++)
                L[m >> 2] += ((qs[32 * h + m] >> (2 * n)) & 3) * y[128 * h + 32 * n + m];
}

static inline void mb_tq1_lanes_scalar(const uint8_t *qs, const int8_t *y, int32_t L[8]) {
    static const int pow3[5] = {1, 3, 9, 27, 81};
    for (int k = 0; k < 8; k++) L[k] = 0;
    for (int n = 0; n < 5; n++)
        for (int m = 0; m < 32; m++) L[m >> 2] += mb_trit(qs[m], pow3[n]) * y[m + 32 * n];
    for (int n = 0; n < 5; n++)
        for (int m = 0; m < 16; m++) {
            const int e = 160 + m + 16 * n;
            L[(e & 31) >> 2] += mb_trit(qs[32 + m], pow3[n]) * y[e];
        }
    for (int n = 0; n < 4; n++)
        for (int j = 0; j < 4; j++) {
            const int e = 240 + j + 4 * n;
            L[(e & 31) >> 2] += mb_trit(qs[48 + j], pow3[n]) * y[e];
        }
}

#if MB_X86
/* TQ2_0's lanes with the AVX2 maddubs chain: int32 lane k of madd(acc16, 1) holds bytes
 * 4k .. 4k+3 of every 32-byte step, as in llama.cpp's kernel */
MB_AVX2 static inline void mb_tq2_lanes_avx2(const uint8_t *qs, const int8_t *y, int32_t L[8]) {
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi16(1);
    __m256i acc = _mm256_setzero_si256();
    for (int h = 0; h < 2; h++) {
        const __m256i x = _mm256_loadu_si256((const __m256i *)(qs + 32 * h));
        const int8_t *yh = y + 128 * h;
        for (int n = 0; n < 4; n++)
            acc = _mm256_add_epi16(acc, _mm256_maddubs_epi16(
                      _mm256_and_si256(_mm256_srli_epi16(x, 2 * n), m3),
                      _mm256_loadu_si256((const __m256i *)(yh + 32 * n))));
    }
    _mm256_storeu_si256((__m256i *)L, _mm256_madd_epi16(acc, one));
}
#endif

#if MB_X86
/* One TQ2_0 row x one token in the AVX2 kernel's order, all in registers: the lanes of
 * mb_tq2_lanes_avx2 minus csum, widened to float, then per lane fl(L * dd) + sumf (fused:
 * one fmaf per lane, _mm256_fmadd_ps); the same steps as the scalar loop below, lane by lane,
 * so the same bits.  Needs FMA for the fused order (mb_cpu_has_fma). */
#  define MB_TQ_LANE_BODY(FUSE)                                                              \
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi16(1);                       \
    __m256 sumf = _mm256_setzero_ps();                                                       \
    for (int64_t b = 0; b < nb; b++) {                                                       \
        const uint8_t *qs = w + 66 * b;                                                      \
        const int8_t *yb = y + 256 * b;                                                      \
        __m256i acc = _mm256_setzero_si256();                                                \
        for (int h = 0; h < 2; h++) {                                                        \
            const __m256i x = _mm256_loadu_si256((const __m256i *)(qs + 32 * h));            \
            for (int n = 0; n < 4; n++)                                                      \
                acc = _mm256_add_epi16(acc, _mm256_maddubs_epi16(                            \
                          _mm256_and_si256(_mm256_srli_epi16(x, 2 * n), m3),                 \
                          _mm256_loadu_si256((const __m256i *)(yb + 128 * h + 32 * n))));    \
        }                                                                                    \
        const __m256i L = _mm256_sub_epi32(_mm256_madd_epi16(acc, one),                      \
                                           _mm256_loadu_si256((const __m256i *)(cs + 8 * b)));\
        const __m256 dd = _mm256_set1_ps(da[b] * mb_half_to_float(qs + 64));                 \
        sumf = FUSE;                                                                         \
    }                                                                                        \
    float s[8];                                                                              \
    _mm256_storeu_ps(s, sumf);                                                               \
    float s4[4];                                                                             \
    for (int i = 0; i < 4; i++) s4[i] = s[4 + i] + s[i];                                     \
    return (s4[0] + s4[2]) + (s4[1] + s4[3]);

__attribute__((target("avx2,f16c,fma")))
static float mb_tq2_lanes_row_fused(const uint8_t *w, int64_t nb, const int8_t *y,
                                    const int32_t *cs, const float *da) {
    MB_TQ_LANE_BODY(_mm256_fmadd_ps(_mm256_cvtepi32_ps(L), dd, sumf))
}

MB_AVX2 static float mb_tq2_lanes_row(const uint8_t *w, int64_t nb, const int8_t *y,
                                      const int32_t *cs, const float *da) {
    MB_TQ_LANE_BODY(_mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(L), dd), sumf))
}
#  undef MB_TQ_LANE_BODY

static int mb_cpu_has_fma(void) {
    static int cached = -1;
    if (cached < 0) { __builtin_cpu_init(); cached = __builtin_cpu_supports("fma") ? 1 : 0; }
    return cached;
}
#endif

#if MB_X86
/* The same lane-order product, blocked: four rows x one token (decode) and one row x four
 * tokens (prefill).  Per output everything is as in mb_tq2_lanes_row[_fused]: the block's
 * int32 lanes (exact, so the int16 adds may come in any order), minus csum, widened, then
 * per lane fl(L * fl(da * dw)) + sumf (or the fmaf), block after block, and hsum_float_8 at
 * the end -- four outputs' eight lanes side by side in four __m256, reduced together by a
 * 4x4 transpose that adds the same pairs in the same order.  What is shared: the token's
 * activations are loaded once for four rows' codes; a row's codes are decoded once for four
 * tokens. */

/* hsum_float_8 of s[0..3], output j in lane j: (a0 + a2) + (a1 + a3), a_i = s[4 + i] + s[i] */
MB_AVX2 static inline __m128 mb_hsum8_x4(const __m256 s[4]) {
    __m128 v0 = _mm_add_ps(_mm256_extractf128_ps(s[0], 1), _mm256_castps256_ps128(s[0]));
    __m128 v1 = _mm_add_ps(_mm256_extractf128_ps(s[1], 1), _mm256_castps256_ps128(s[1]));
    __m128 v2 = _mm_add_ps(_mm256_extractf128_ps(s[2], 1), _mm256_castps256_ps128(s[2]));
    __m128 v3 = _mm_add_ps(_mm256_extractf128_ps(s[3], 1), _mm256_castps256_ps128(s[3]));
    _MM_TRANSPOSE4_PS(v0, v1, v2, v3);                  /* v_i: a_i of the four outputs */
    return _mm_add_ps(_mm_add_ps(v0, v2), _mm_add_ps(v1, v3));
}

/* acc += the 4 maddubs of one 32-byte code vector x (bit planes 0, 2, 4, 6) with y0..y3 */
#  define MB_TQ2_PLANES(acc, x, y0, y1, y2, y3)                                             \
    acc = _mm256_add_epi16(acc, _mm256_add_epi16(                                            \
        _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_and_si256((x), m3), (y0)),              \
                         _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16((x), 2), m3), (y1))), \
        _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16((x), 4), m3), (y2)), \
                         _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16((x), 6), m3), (y3)))))

/* rows r .. r+3 (w: row r, the next at +rb) x one token -> o4[0..3] */
#  define MB_TQ2_ROWS4_BODY(EPI, PLANES, WIDEN)                                                       \
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi16(1);                       \
    (void)one;                                     /* WIDEN may not need it */              \
    __m256 s[4];                                                                             \
    for (int j = 0; j < 4; j++) s[j] = _mm256_setzero_ps();                                  \
    for (int64_t b = 0; b < nb; b++) {                                                       \
        const uint8_t *x = w + 66 * b;                                                       \
        const int8_t *yb = y + 256 * b;                                                      \
        __m256i a[4];                                                                        \
        for (int j = 0; j < 4; j++) {                                                        \
            a[j] = _mm256_setzero_si256();                                                   \
            _mm_prefetch((const char *)(x + j * rb + MB_PF_BYTES), _MM_HINT_T0);             \
            _mm_prefetch((const char *)(x + j * rb + MB_PF_BYTES + 65), _MM_HINT_T0);        \
        }                                                                                    \
        for (int h = 0; h < 2; h++) {                                                        \
            const __m256i y0 = _mm256_loadu_si256((const __m256i *)(yb + 128 * h));          \
            const __m256i y1 = _mm256_loadu_si256((const __m256i *)(yb + 128 * h + 32));     \
            const __m256i y2 = _mm256_loadu_si256((const __m256i *)(yb + 128 * h + 64));     \
            const __m256i y3 = _mm256_loadu_si256((const __m256i *)(yb + 128 * h + 96));     \
            for (int j = 0; j < 4; j++) {                                                    \
                const __m256i xx = _mm256_loadu_si256((const __m256i *)(x + j * rb + 32 * h)); \
                PLANES(a[j], xx, y0, y1, y2, y3);                                            \
            }                                                                                \
        }                                                                                    \
        const __m256i c = _mm256_loadu_si256((const __m256i *)(cs + 8 * b));                 \
        uint16_t dh[4];                                                                      \
        for (int j = 0; j < 4; j++) memcpy(&dh[j], x + j * rb + 64, 2);                      \
        float dd[4];                                                                         \
        _mm_storeu_ps(dd, _mm_mul_ps(_mm_set1_ps(da[b]), _mm_cvtph_ps(_mm_set_epi16(         \
            0, 0, 0, 0, (short)dh[3], (short)dh[2], (short)dh[1], (short)dh[0]))));          \
        for (int j = 0; j < 4; j++) {                                                        \
            const __m256i L = _mm256_sub_epi32(WIDEN(a[j]), c);                              \
            s[j] = EPI(L, _mm256_set1_ps(dd[j]), s[j]);                                      \
        }                                                                                    \
    }                                                                                        \
    _mm_storeu_ps(o4, mb_hsum8_x4(s));

/* one row x tokens t .. t+3 (y, cs, da: token t's; the next at +cols, +8 nb, +nb) -> o4 */
#  define MB_TQ2_TOK4_BODY(EPI, TOKPLANES, WIDEN)                                                       \
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi16(1);                       \
    (void)one;                                     /* WIDEN may not need it */              \
    __m256 s[4];                                                                             \
    for (int j = 0; j < 4; j++) s[j] = _mm256_setzero_ps();                                  \
    for (int64_t b = 0; b < nb; b++) {                                                       \
        const uint8_t *x = w + 66 * b;                                                       \
        __m256i a[4];                                                                        \
        for (int j = 0; j < 4; j++) a[j] = _mm256_setzero_si256();                           \
        for (int h = 0; h < 2; h++) {                                                        \
            const __m256i xx = _mm256_loadu_si256((const __m256i *)(x + 32 * h));            \
            const __m256i c0 = _mm256_and_si256(xx, m3);                                     \
            const __m256i c1 = _mm256_and_si256(_mm256_srli_epi16(xx, 2), m3);               \
            const __m256i c2 = _mm256_and_si256(_mm256_srli_epi16(xx, 4), m3);               \
            const __m256i c3 = _mm256_and_si256(_mm256_srli_epi16(xx, 6), m3);               \
            for (int j = 0; j < 4; j++) {                                                    \
                const int8_t *yh = y + j * cols + 256 * b + 128 * h;                         \
                TOKPLANES(a[j], c0, c1, c2, c3, yh);                                         \
            }                                                                                \
        }                                                                                    \
        const float dw = mb_half_to_float(x + 64);                                           \
        for (int j = 0; j < 4; j++) {                                                        \
            const __m256i L = _mm256_sub_epi32(WIDEN(a[j]),                                  \
                _mm256_loadu_si256((const __m256i *)(cs + j * 8 * nb + 8 * b)));             \
            s[j] = EPI(L, _mm256_set1_ps(da[j * nb + b] * dw), s[j]);                        \
        }                                                                                    \
    }                                                                                        \
    _mm_storeu_ps(o4, mb_hsum8_x4(s));

/* acc += the 4 maddubs of decoded planes c0..c3 with a token's 4 x 32 activations at yh */
#  define MB_TQ2_TOKPLANES(acc, c0, c1, c2, c3, yh)                                          \
    acc = _mm256_add_epi16(acc, _mm256_add_epi16(                                            \
        _mm256_add_epi16(_mm256_maddubs_epi16((c0), _mm256_loadu_si256((const __m256i *)(yh))), \
                         _mm256_maddubs_epi16((c1), _mm256_loadu_si256((const __m256i *)((yh) + 32)))), \
        _mm256_add_epi16(_mm256_maddubs_epi16((c2), _mm256_loadu_si256((const __m256i *)((yh) + 64))), \
                         _mm256_maddubs_epi16((c3), _mm256_loadu_si256((const __m256i *)((yh) + 96))))))
#  define MB_WIDEN16(a) _mm256_madd_epi16((a), one)       /* int16 pairs -> the int32 lanes */

#  define MB_EPI_FUSED(L, dd, s) _mm256_fmadd_ps(_mm256_cvtepi32_ps(L), (dd), (s))
#  define MB_EPI_APART(L, dd, s) _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(L), (dd)), (s))

__attribute__((target("avx2,f16c,fma")))
static void mb_tq2_lanes_rows4_fused(const uint8_t *w, int64_t rb, int64_t nb, const int8_t *y,
                                     const int32_t *cs, const float *da, float *o4) {
    MB_TQ2_ROWS4_BODY(MB_EPI_FUSED, MB_TQ2_PLANES, MB_WIDEN16)
}

MB_AVX2 static void mb_tq2_lanes_rows4(const uint8_t *w, int64_t rb, int64_t nb, const int8_t *y,
                                       const int32_t *cs, const float *da, float *o4) {
    MB_TQ2_ROWS4_BODY(MB_EPI_APART, MB_TQ2_PLANES, MB_WIDEN16)
}

__attribute__((target("avx2,f16c,fma")))
static void mb_tq2_lanes_tok4_fused(const uint8_t *w, int64_t nb, const int8_t *y, int64_t cols,
                                    const int32_t *cs, const float *da, float *o4) {
    MB_TQ2_TOK4_BODY(MB_EPI_FUSED, MB_TQ2_TOKPLANES, MB_WIDEN16)
}

MB_AVX2 static void mb_tq2_lanes_tok4(const uint8_t *w, int64_t nb, const int8_t *y, int64_t cols,
                                      const int32_t *cs, const float *da, float *o4) {
    MB_TQ2_TOK4_BODY(MB_EPI_APART, MB_TQ2_TOKPLANES, MB_WIDEN16)
}

/* Stand-ins for the VNNI kernels where the compiler lacks the extension: mb_vnni() never
 * picks them there, so they trap if ever reached (the four-row and four-token signatures). */
#  define MB_TQ2_STUB_ROWS4(name)                                                            \
    static void name(const uint8_t *w, int64_t a, int64_t b, const int8_t *y,               \
                     const int32_t *cs, const float *da, float *o4) {                       \
        (void)w; (void)a; (void)b; (void)y; (void)cs; (void)da; (void)o4;                  \
        __builtin_trap();                                                                   \
    }
#  define MB_TQ2_STUB_TOK4(name)                                                            \
    static void name(const uint8_t *w, int64_t nb, const int8_t *y, int64_t cols,           \
                     const int32_t *cs, const float *da, float *o4) {                       \
        (void)w; (void)nb; (void)y; (void)cols; (void)cs; (void)da; (void)o4;              \
        __builtin_trap();                                                                   \
    }

/* ---- the same bodies with AVX-VNNI (VEX vpdpbusd on 256 bits; mb_vnni() == MB_VNNI_256) ----
 * For CPUs with AVX-VNNI but no AVX-512.  vpdpbusd adds code[4k + i] * y[4k + i], i = 0..3,
 * into int32 lane k with no saturation: the exact lane of madd(maddubs(..), 1) (see the
 * AVX-512 section below for why that lane is exact), accumulated over the eight 32-byte
 * steps directly in int32, so no widening is needed; everything else is the AVX2 body. */
#if MB_CC_AVXVNNI
#  define MB_AVXVNNI __attribute__((target("avx2,f16c,fma,avxvnni")))
#  define MB_TQ2_PLANES_DP(acc, x, y0, y1, y2, y3)                                          \
    acc = _mm256_dpbusd_avx_epi32(acc, _mm256_and_si256((x), m3), (y0));                     \
    acc = _mm256_dpbusd_avx_epi32(acc, _mm256_and_si256(_mm256_srli_epi16((x), 2), m3), (y1)); \
    acc = _mm256_dpbusd_avx_epi32(acc, _mm256_and_si256(_mm256_srli_epi16((x), 4), m3), (y2)); \
    acc = _mm256_dpbusd_avx_epi32(acc, _mm256_and_si256(_mm256_srli_epi16((x), 6), m3), (y3))
#  define MB_TQ2_TOKPLANES_DP(acc, c0, c1, c2, c3, yh)                                       \
    acc = _mm256_dpbusd_avx_epi32(acc, (c0), _mm256_loadu_si256((const __m256i *)(yh)));     \
    acc = _mm256_dpbusd_avx_epi32(acc, (c1), _mm256_loadu_si256((const __m256i *)((yh) + 32))); \
    acc = _mm256_dpbusd_avx_epi32(acc, (c2), _mm256_loadu_si256((const __m256i *)((yh) + 64))); \
    acc = _mm256_dpbusd_avx_epi32(acc, (c3), _mm256_loadu_si256((const __m256i *)((yh) + 96)))
#  define MB_WIDEN32(a) (a)

MB_AVXVNNI static void mb_tq2_lanes_rows4_avxvnni_fused(const uint8_t *w, int64_t rb, int64_t nb,
                                                        const int8_t *y, const int32_t *cs,
                                                        const float *da, float *o4) {
    MB_TQ2_ROWS4_BODY(MB_EPI_FUSED, MB_TQ2_PLANES_DP, MB_WIDEN32)
}

MB_AVXVNNI static void mb_tq2_lanes_rows4_avxvnni(const uint8_t *w, int64_t rb, int64_t nb,
                                                  const int8_t *y, const int32_t *cs,
                                                  const float *da, float *o4) {
    MB_TQ2_ROWS4_BODY(MB_EPI_APART, MB_TQ2_PLANES_DP, MB_WIDEN32)
}

MB_AVXVNNI static void mb_tq2_lanes_tok4_avxvnni_fused(const uint8_t *w, int64_t nb, const int8_t *y,
                                                       int64_t cols, const int32_t *cs,
                                                       const float *da, float *o4) {
    MB_TQ2_TOK4_BODY(MB_EPI_FUSED, MB_TQ2_TOKPLANES_DP, MB_WIDEN32)
}

MB_AVXVNNI static void mb_tq2_lanes_tok4_avxvnni(const uint8_t *w, int64_t nb, const int8_t *y,
                                                 int64_t cols, const int32_t *cs,
                                                 const float *da, float *o4) {
    MB_TQ2_TOK4_BODY(MB_EPI_APART, MB_TQ2_TOKPLANES_DP, MB_WIDEN32)
}
#  undef MB_TQ2_PLANES_DP
#  undef MB_TQ2_TOKPLANES_DP
#  undef MB_WIDEN32
#else             /* a compiler without AVX-VNNI: never called (mb_vnni() is never 256) */
MB_TQ2_STUB_ROWS4(mb_tq2_lanes_rows4_avxvnni_fused)
MB_TQ2_STUB_ROWS4(mb_tq2_lanes_rows4_avxvnni)
MB_TQ2_STUB_TOK4(mb_tq2_lanes_tok4_avxvnni_fused)
MB_TQ2_STUB_TOK4(mb_tq2_lanes_tok4_avxvnni)
#endif

/* ---- the same four-wide TQ2_0 kernels with AVX-512 VNNI (mb_vnni(): run-time choice) -----
 *
 * Why the lanes are the same integers.  In the AVX2 bodies above, int32 lane k of a block is
 * madd(acc16, 1)[k], where acc16 is the int16 sum of eight maddubs (two 32-byte halves h x
 * four bit planes n).  maddubs lane l is code[2l] * y[2l] + code[2l + 1] * y[2l + 1], at most
 * 2 * 3 * 128 = 768 in size (codes 0..3, y -128..127): no saturation; eight of them stay
 * within 6144: no int16 wrap.  So madd(acc16, 1)[k] = acc16[2k] + acc16[2k + 1] is the exact
 * integer  sum over h, n and i = 0..3 of code[4k + i] * y[4k + i]  in step (h, n): the four
 * bytes 4k .. 4k+3 of every 32-byte step, summed exactly.
 * vpdpbusd (u8 x s8) adds exactly those four products of bytes 4k .. 4k+3 into int32 lane k
 * of its accumulator, without saturation; 64 such products per lane stay within
 * 64 * 384 < 2^31.  A 512-bit vpdpbusd takes two 32-byte steps at once, one per 256-bit half
 * (lanes 0-7 and 8-15), and adding the two halves of the accumulator at the block's end gives
 * lane k of all eight steps: the same exact integer, whatever the order of the adds.
 * Everything after the integer lanes -- csum, the conversion, fl(L * dd) + sumf or the fma,
 * block order, mb_hsum8_x4 -- is the AVX2 body's, one float operation per lane; two outputs
 * share one 512-bit vector (lanes 0-7 and 8-15) but every lane sees the same operations on
 * the same values, so the bits are the AVX2 kernels' bits. */
#if MB_CC_AVX512VNNI
#  define MB_AVX512VNNI __attribute__((target("avx2,f16c,fma,avx512f,avx512bw,avx512vl,avx512vnni")))

/* [a.lo256 + a.hi256 | b.lo256 + b.hi256]: two outputs' eight exact int32 lanes, side by side */
#  define MB_FOLD2(a, b) _mm512_add_epi32(_mm512_shuffle_i64x2((a), (b), 0x44),              \
                                          _mm512_shuffle_i64x2((a), (b), 0xEE))

/* the upper eight floats of a 512-bit vector (AVX-512F only, no DQ) */
#  define MB_HI256_PS(v) _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))

/* [lo | hi]: two 256-bit vectors as one 512-bit vector */
#  define MB_CAT256(lo, hi) _mm512_inserti64x4(_mm512_castsi256_si512(lo), (hi), 1)

/* rows r .. r+3 x one token -> o4.  The 64 code bytes of a row's block (both halves) are one
 * 512-bit load; plane n meets [y of half 0, plane n | y of half 1, plane n], built once per
 * block for the four rows. */
#  define MB_TQ2_ROWS4_VNNI_BODY(EPI)                                                       \
    const __m512i m3 = _mm512_set1_epi8(3);                                                  \
    const __m512i i01 = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);   \
    const __m512i i23 = _mm512_set_epi32(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2);   \
    __m512 s01 = _mm512_setzero_ps(), s23 = _mm512_setzero_ps();  /* rows 0|1, rows 2|3 */  \
    for (int64_t b = 0; b < nb; b++) {                                                       \
        const uint8_t *x = w + 66 * b;                                                       \
        const int8_t *yb = y + 256 * b;                                                      \
        __m512i yp[4];                                                                       \
        for (int n = 0; n < 4; n++)                                                          \
            yp[n] = MB_CAT256(_mm256_loadu_si256((const __m256i *)(yb + 32 * n)),            \
                              _mm256_loadu_si256((const __m256i *)(yb + 128 + 32 * n)));     \
        __m512i a[4];                                                                        \
        for (int j = 0; j < 4; j++) {                                                        \
            _mm_prefetch((const char *)(x + j * rb + MB_PF_BYTES), _MM_HINT_T0);             \
            _mm_prefetch((const char *)(x + j * rb + MB_PF_BYTES + 65), _MM_HINT_T0);        \
            const __m512i xx = _mm512_loadu_si512((const void *)(x + j * rb));               \
            __m512i acc = _mm512_dpbusd_epi32(_mm512_setzero_si512(),                        \
                                              _mm512_and_si512(xx, m3), yp[0]);              \
            acc = _mm512_dpbusd_epi32(acc, _mm512_and_si512(_mm512_srli_epi16(xx, 2), m3), yp[1]); \
            acc = _mm512_dpbusd_epi32(acc, _mm512_and_si512(_mm512_srli_epi16(xx, 4), m3), yp[2]); \
            acc = _mm512_dpbusd_epi32(acc, _mm512_and_si512(_mm512_srli_epi16(xx, 6), m3), yp[3]); \
            a[j] = acc;                                                                      \
        }                                                                                    \
        const __m256i c = _mm256_loadu_si256((const __m256i *)(cs + 8 * b));                 \
        const __m512i cc = MB_CAT256(c, c);                                                  \
        uint16_t dh[4];                                                                      \
        for (int j = 0; j < 4; j++) memcpy(&dh[j], x + j * rb + 64, 2);                      \
        const __m128 dd4 = _mm_mul_ps(_mm_set1_ps(da[b]), _mm_cvtph_ps(_mm_set_epi16(        \
            0, 0, 0, 0, (short)dh[3], (short)dh[2], (short)dh[1], (short)dh[0])));           \
        const __m512 dd = _mm512_castps128_ps512(dd4);                                       \
        s01 = EPI(_mm512_sub_epi32(MB_FOLD2(a[0], a[1]), cc), _mm512_permutexvar_ps(i01, dd), s01); \
        s23 = EPI(_mm512_sub_epi32(MB_FOLD2(a[2], a[3]), cc), _mm512_permutexvar_ps(i23, dd), s23); \
    }                                                                                        \
    const __m256 s[4] = {_mm512_castps512_ps256(s01), MB_HI256_PS(s01),                    \
                         _mm512_castps512_ps256(s23), MB_HI256_PS(s23)};                    \
    _mm_storeu_ps(o4, mb_hsum8_x4(s));

/* one row x tokens t .. t+3 -> o4.  A 32-byte half of the row's codes is broadcast to both
 * 256-bit halves and decoded as [plane 0 | plane 1] and [plane 2 | plane 3], which meet the
 * token's 64 contiguous activations of those planes; decoded once for the four tokens. */
#  define MB_TQ2_TOK4_VNNI_BODY(EPI)                                                        \
    const __m512i m3 = _mm512_set1_epi8(3);                                                  \
    const __m512i sh01 = MB_CAT256(_mm256_setzero_si256(), _mm256_set1_epi16(2));           \
    const __m512i sh23 = MB_CAT256(_mm256_set1_epi16(4), _mm256_set1_epi16(6));             \
    __m512 s01 = _mm512_setzero_ps(), s23 = _mm512_setzero_ps();  /* tokens 0|1, 2|3 */     \
    for (int64_t b = 0; b < nb; b++) {                                                       \
        const uint8_t *x = w + 66 * b;                                                       \
        __m512i a[4];                                                                        \
        for (int j = 0; j < 4; j++) a[j] = _mm512_setzero_si512();                           \
        for (int h = 0; h < 2; h++) {                                                        \
            const __m512i xx = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(x + 32 * h))); \
            const __m512i c01 = _mm512_and_si512(_mm512_srlv_epi16(xx, sh01), m3);           \
            const __m512i c23 = _mm512_and_si512(_mm512_srlv_epi16(xx, sh23), m3);           \
            for (int j = 0; j < 4; j++) {                                                    \
                const int8_t *yh = y + j * cols + 256 * b + 128 * h;                         \
                a[j] = _mm512_dpbusd_epi32(a[j], c01, _mm512_loadu_si512((const void *)yh)); \
                a[j] = _mm512_dpbusd_epi32(a[j], c23, _mm512_loadu_si512((const void *)(yh + 64))); \
            }                                                                                \
        }                                                                                    \
        const int32_t *c = cs + 8 * b;                                                       \
        const __m512i c01 = MB_CAT256(_mm256_loadu_si256((const __m256i *)c),                \
                                      _mm256_loadu_si256((const __m256i *)(c + 8 * nb)));    \
        const __m512i c23 = MB_CAT256(_mm256_loadu_si256((const __m256i *)(c + 16 * nb)),    \
                                      _mm256_loadu_si256((const __m256i *)(c + 24 * nb)));   \
        const float dw = mb_half_to_float(x + 64);                                           \
        const __m512 d01 = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(da[b] * dw),          \
                                                _mm512_set1_ps(da[nb + b] * dw));            \
        const __m512 d23 = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(da[2 * nb + b] * dw), \
                                                _mm512_set1_ps(da[3 * nb + b] * dw));        \
        s01 = EPI(_mm512_sub_epi32(MB_FOLD2(a[0], a[1]), c01), d01, s01);                    \
        s23 = EPI(_mm512_sub_epi32(MB_FOLD2(a[2], a[3]), c23), d23, s23);                    \
    }                                                                                        \
    const __m256 s[4] = {_mm512_castps512_ps256(s01), MB_HI256_PS(s01),                    \
                         _mm512_castps512_ps256(s23), MB_HI256_PS(s23)};                    \
    _mm_storeu_ps(o4, mb_hsum8_x4(s));

#  define MB_EPI512_FUSED(L, dd, s) _mm512_fmadd_ps(_mm512_cvtepi32_ps(L), (dd), (s))
#  define MB_EPI512_APART(L, dd, s) _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(L), (dd)), (s))

MB_AVX512VNNI static void mb_tq2_lanes_rows4_vnni_fused(const uint8_t *w, int64_t rb, int64_t nb,
                                                        const int8_t *y, const int32_t *cs,
                                                        const float *da, float *o4) {
    MB_TQ2_ROWS4_VNNI_BODY(MB_EPI512_FUSED)
}

MB_AVX512VNNI static void mb_tq2_lanes_rows4_vnni(const uint8_t *w, int64_t rb, int64_t nb,
                                                  const int8_t *y, const int32_t *cs,
                                                  const float *da, float *o4) {
    MB_TQ2_ROWS4_VNNI_BODY(MB_EPI512_APART)
}

MB_AVX512VNNI static void mb_tq2_lanes_tok4_vnni_fused(const uint8_t *w, int64_t nb, const int8_t *y,
                                                       int64_t cols, const int32_t *cs,
                                                       const float *da, float *o4) {
    MB_TQ2_TOK4_VNNI_BODY(MB_EPI512_FUSED)
}

MB_AVX512VNNI static void mb_tq2_lanes_tok4_vnni(const uint8_t *w, int64_t nb, const int8_t *y,
                                                 int64_t cols, const int32_t *cs,
                                                 const float *da, float *o4) {
    MB_TQ2_TOK4_VNNI_BODY(MB_EPI512_APART)
}
#  undef MB_TQ2_ROWS4_VNNI_BODY
#  undef MB_TQ2_TOK4_VNNI_BODY
#  undef MB_EPI512_FUSED
#  undef MB_EPI512_APART
#  undef MB_HI256_PS
#  undef MB_FOLD2
#  undef MB_CAT256
#else             /* a compiler without AVX-512 VNNI: never called (mb_vnni() is never 512) */
MB_TQ2_STUB_ROWS4(mb_tq2_lanes_rows4_vnni_fused)
MB_TQ2_STUB_ROWS4(mb_tq2_lanes_rows4_vnni)
MB_TQ2_STUB_TOK4(mb_tq2_lanes_tok4_vnni_fused)
MB_TQ2_STUB_TOK4(mb_tq2_lanes_tok4_vnni)
#endif
#  undef MB_TQ2_STUB_ROWS4
#  undef MB_TQ2_STUB_TOK4
#  undef MB_TQ2_ROWS4_BODY
#  undef MB_TQ2_TOK4_BODY
#  undef MB_TQ2_PLANES
#  undef MB_TQ2_TOKPLANES
#  undef MB_WIDEN16
#  undef MB_EPI_FUSED
#  undef MB_EPI_APART
#endif

/* rows [r0, r1) x T tokens; csum [T, nb, 8]; lanes_out [T, rows, nb, 8] or out [T, rows] */
static void mb_tq_lanes(int fmt2, const uint8_t *data, int64_t cols, const int8_t *q,
                        const int32_t *csum, const float *da, int64_t T, int64_t rows,
                        int64_t r0, int64_t r1, int fused, int32_t *lanes_out, float *out) {
    const int64_t nb = cols / 256;
    const int B = fmt2 ? 66 : 54;
    const int64_t rb = nb * B;
#if MB_X86
    const int avx2 = mb_simd();
#endif
#if MB_X86
    if (avx2 && fmt2 && out && !lanes_out && (!fused || mb_cpu_has_fma())) {
        const int vnni = mb_vnni();                   /* VNNI: the same bits, fewer steps */
        float o4[4];
        int64_t t = 0;
        for (; t + 4 <= T; t += 4)                    /* tiles of four tokens: each row once */
            for (int64_t r = r0; r < r1; r++) {
                const uint8_t *w = data + r * rb;
                const int8_t *yt = q + t * cols;
                const int32_t *cst = csum + t * nb * 8;
                const float *dt = da + t * nb;
                if (vnni == MB_VNNI_512) {
                    if (fused) mb_tq2_lanes_tok4_vnni_fused(w, nb, yt, cols, cst, dt, o4);
                    else mb_tq2_lanes_tok4_vnni(w, nb, yt, cols, cst, dt, o4);
                } else if (vnni == MB_VNNI_256) {
                    if (fused) mb_tq2_lanes_tok4_avxvnni_fused(w, nb, yt, cols, cst, dt, o4);
                    else mb_tq2_lanes_tok4_avxvnni(w, nb, yt, cols, cst, dt, o4);
                } else if (fused) mb_tq2_lanes_tok4_fused(w, nb, yt, cols, cst, dt, o4);
                else mb_tq2_lanes_tok4(w, nb, yt, cols, cst, dt, o4);
                for (int j = 0; j < 4; j++) out[(t + j) * rows + r] = o4[j];
            }
        for (; t < T; t++) {                          /* the rest token by token, four rows at once */
            const int8_t *y = q + t * cols;
            const int32_t *cs = csum + t * nb * 8;
            const float *d = da + t * nb;
            int64_t r = r0;
            for (; r + 4 <= r1; r += 4) {
                if (vnni == MB_VNNI_512) {
                    if (fused) mb_tq2_lanes_rows4_vnni_fused(data + r * rb, rb, nb, y, cs, d, o4);
                    else mb_tq2_lanes_rows4_vnni(data + r * rb, rb, nb, y, cs, d, o4);
                } else if (vnni == MB_VNNI_256) {
                    if (fused) mb_tq2_lanes_rows4_avxvnni_fused(data + r * rb, rb, nb, y, cs, d, o4);
                    else mb_tq2_lanes_rows4_avxvnni(data + r * rb, rb, nb, y, cs, d, o4);
                } else if (fused) mb_tq2_lanes_rows4_fused(data + r * rb, rb, nb, y, cs, d, o4);
                else mb_tq2_lanes_rows4(data + r * rb, rb, nb, y, cs, d, o4);
                memcpy(out + t * rows + r, o4, sizeof o4);
            }
            for (; r < r1; r++)
                out[t * rows + r] = fused ? mb_tq2_lanes_row_fused(data + r * rb, nb, y, cs, d)
                                          : mb_tq2_lanes_row(data + r * rb, nb, y, cs, d);
        }
        return;
    }
#endif
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *w = data + r * rb;
        for (int64_t t = 0; t < T; t++) {
            const int8_t *y = q + t * cols;
            float sumf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = w + B * b;
                int32_t L[8];
#if MB_X86
                if (avx2 && fmt2) mb_tq2_lanes_avx2(blk, y + 256 * b, L);
                else
#endif
                if (fmt2) mb_tq2_lanes_scalar(blk, y + 256 * b, L);
                else mb_tq1_lanes_scalar(blk, y + 256 * b, L);
                const int32_t *cs = csum + (t * nb + b) * 8;
                for (int k = 0; k < 8; k++) L[k] -= cs[k];
                if (lanes_out) {
                    memcpy(lanes_out + ((t * rows + r) * nb + b) * 8, L, sizeof(L));
                    continue;
                }
                const float dd = da[t * nb + b] * mb_half_to_float(blk + B - 2);
                for (int k = 0; k < 8; k++) {
                    if (fused) {                    /* gcc's build: one rounding (C99 fmaf) */
                        sumf[k] = fmaf((float)L[k], dd, sumf[k]);
                        continue;
                    }
                    float prod = (float)L[k] * dd;
                    MB_ROUNDED(prod);
                    sumf[k] = prod + sumf[k];
                }
            }
            if (out) {
                float s4[4];
                for (int i = 0; i < 4; i++) s4[i] = sumf[4 + i] + sumf[i];
                out[t * rows + r] = (s4[0] + s4[2]) + (s4[1] + s4[3]);
            }
        }
    }
}

#endif /* MB_TERNARY_H */
