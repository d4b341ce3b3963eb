/* lut_kernels.h: the C loops behind _fast/lut.pyx (twin of minibit/kernels/lut.py).
 *
 * Every function here works on one token and one unit of output rows (a TL tile of BM rows,
 * or a 32-row T-MAC block), straight from the packed bytes, and writes int32 results.  Two
 * versions of each kernel give the same integers:
 *
 *   scalar  plain loops over the bytes; int16 tables [n][16].
 *   avx2    32 rows per register: the table's low-byte and high-byte planes are looked up
 *           with pshufb and interleaved back into int16 lanes (compiled with a target
 *           attribute, chosen at run time with __builtin_cpu_supports).
 *
 * All the integer arithmetic is exact or wraps exactly like the reference: block sums are
 * reduced modulo 2^16 (an int16 lane), the int32 totals are summed as uint32 (no signed
 * overflow in C), so the order of additions never matters.
 */
#ifndef MINIBIT_LUT_KERNELS_H
#define MINIBIT_LUT_KERNELS_H

#include <stdint.h>
#include <string.h>


/* MINIBIT_NO_SIMD leaves the AVX2 loops out (the scalar loops must then stand alone). */
#if !defined(MINIBIT_NO_SIMD) && (defined(__GNUC__) || defined(__clang__)) && \
    (defined(__x86_64__) || defined(__i386__))
#define MB_X86 1
#include <immintrin.h>
static int mb_have_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") ? 1 : 0;
}
#else
static int mb_have_avx2(void) { return 0; }
#endif

typedef int64_t mb_i64;

/* The int16 lane value of an int32 block sum (two's complement, modulo 2^16), widened. */
static inline uint32_t mb_wrap16(int32_t v) {
    return (uint32_t)(int32_t)(int16_t)(uint16_t)(uint32_t)v;
}

/* The int16 lane sum of two int16 lanes (wrapping), widened. */
static inline uint32_t mb_add16(int16_t a, int16_t b) {
    return (uint32_t)(int32_t)(int16_t)(uint16_t)((uint16_t)a + (uint16_t)b);
}

/* Block row held by byte position q (0..31) of a TL2 32-row block: chunks 0, 2, 1, 3. */
static inline int mb_tl2_row(int q) {
    int ch = q >> 3;
    return (((ch & 1) << 1) | (ch >> 1)) * 8 + (q & 7);
}

/* Tile t's BM outputs of this token, zeroed: every kernel adds its blocks into them. */
static inline uint32_t *mb_tile_out(int32_t *out, mb_i64 BM, mb_i64 t) {
    uint32_t *o = (uint32_t *)out + t * BM;
    for (mb_i64 r = 0; r < BM; r++) o[r] = 0;
    return o;
}

/* Block (kb, sb) of TL1 tile t (nkb column blocks, nsb row blocks a tile): bm rows x BK
 * columns, bm * BK / 4 bytes. */
static inline const uint8_t *mb_tl1_block(const uint8_t *data, mb_i64 nkb, mb_i64 nsb,
                                          mb_i64 BK, mb_i64 bm, mb_i64 t, mb_i64 kb, mb_i64 sb) {
    return data + ((t * nkb + kb) * nsb + sb) * (bm * BK / 4);
}

/* Where the parts of a TL2 tensor lie.  Columns [0, three_k) are triplets in BK-column blocks,
 * stored as magnitude bytes (n1 = M * three_k / 6 of them) then sign words (n2 bytes); the
 * last two_k columns are pairs in 32-column blocks, 256 bytes per 32 x 32 block. */
typedef struct {
    mb_i64 three_k, nkb, nkb2, nsb, n1, n2;   /* nkb / nkb2: column blocks, nsb: 32-row blocks */
} mb_tl2_layout;

static inline mb_tl2_layout mb_tl2_layout_of(mb_i64 M, mb_i64 K, mb_i64 BM, mb_i64 BK) {
    mb_tl2_layout y;
    y.three_k = K / BK * BK;
    y.nkb = y.three_k / BK;
    y.nkb2 = (K - y.three_k) / 32;
    y.nsb = BM / 32;
    y.n1 = M * y.three_k / 6;
    y.n2 = M * y.three_k / 24;
    return y;
}

/* Triplet block (kb, sb) of tile t: its magnitude bytes (BK/6 x 32) and sign bytes (BK/24 x 32). */
static inline const uint8_t *mb_tl2_mags(const uint8_t *data, const mb_tl2_layout *y, mb_i64 BK,
                                         mb_i64 t, mb_i64 kb, mb_i64 sb) {
    return data + ((t * y->nkb + kb) * y->nsb + sb) * (BK / 6 * 32);
}

static inline const uint8_t *mb_tl2_signs(const uint8_t *data, const mb_tl2_layout *y, mb_i64 BK,
                                          mb_i64 t, mb_i64 kb, mb_i64 sb) {
    return data + y->n1 + ((t * y->nkb + kb) * y->nsb + sb) * (BK / 24 * 32);
}

/* Pair block (kb, sb) of tile t: 8 groups of 32 bytes. */
static inline const uint8_t *mb_tl2_pairs(const uint8_t *data, const mb_tl2_layout *y, mb_i64 t,
                                          mb_i64 kb, mb_i64 sb) {
    return data + y->n1 + y->n2 + ((t * y->nkb2 + kb) * y->nsb + sb) * 256;
}

/* T-MAC's last step for block nb: R = S0 + 2 S1 - sum(q) (codes c = b0 + 2 b1 = w + 1, so
 * sum c*q - sum q = sum w*q), for the rows that exist (< N). */
static inline void mb_tmac_store(uint32_t S[2][32], int32_t sumq, mb_i64 nb, mb_i64 N,
                                 int32_t *out) {
    for (int r = 0; r < 32 && 32 * nb + r < N; r++)
        out[32 * nb + r] = (int32_t)(S[0][r] + (S[1][r] << 1) - (uint32_t)sumq);
}

/* ------------------------------------------------------------------------------------------ */
/* Tables                                                                                      */

/* Pair tables, [n][16]: slot 3a + b + 4 = a*x0 + b*x1, slots 9..15 zero. */
static void mb_pair_table(const int8_t *q, mb_i64 n, int16_t *L) {
    for (mb_i64 j = 0; j < n; j++) {
        int x0 = q[2 * j], x1 = q[2 * j + 1];
        int16_t *e = L + 16 * j;
        for (int i = 0; i < 16; i++) e[i] = 0;
        for (int a = -1; a <= 1; a++)
            for (int b = -1; b <= 1; b++) e[3 * a + b + 4] = (int16_t)(a * x0 + b * x1);
    }
}

/* Triplet tables, [n][16]: slot |9a + 3b + c| for the triplets with 9a + 3b + c >= 0
 * holds a*x0 + b*x1 + c*x2; slots 14, 15 zero. */
static void mb_triplet_table(const int8_t *q, mb_i64 n, int16_t *L) {
    for (mb_i64 j = 0; j < n; j++) {
        int x0 = q[3 * j], x1 = q[3 * j + 1], x2 = q[3 * j + 2];
        int16_t *e = L + 16 * j;
        for (int v = 0; v < 16; v++) {
            if (v > 13) { e[v] = 0; continue; }
            int d = v + 13;
            e[v] = (int16_t)((d / 9 - 1) * x0 + (d / 3 % 3 - 1) * x1 + (d % 3 - 1) * x2);
        }
    }
}

/* T-MAC tables, [G][16]: slot idx = sum of q[4g + i] over the bits i of idx (0 past K). */
static void mb_tmac_table(const int8_t *q, mb_i64 K, mb_i64 G, int16_t *L) {
    for (mb_i64 g = 0; g < G; g++) {
        int x[4];
        for (int i = 0; i < 4; i++) x[i] = (4 * g + i < K) ? q[4 * g + i] : 0;
        for (int idx = 0; idx < 16; idx++) {
            int s = 0;
            for (int i = 0; i < 4; i++) if (idx >> i & 1) s += x[i];
            L[16 * g + idx] = (int16_t)s;
        }
    }
}

/* Byte planes, [n][32]: the 16 low bytes of table j, then its 16 high bytes. */
static void mb_planes(const int16_t *L, mb_i64 n, uint8_t *P) {
    for (mb_i64 j = 0; j < n; j++)
        for (int i = 0; i < 16; i++) {
            uint16_t u = (uint16_t)L[16 * j + i];
            P[32 * j + i] = (uint8_t)(u & 0xFF);
            P[32 * j + 16 + i] = (uint8_t)(u >> 8);
        }
}

/* TL1 with bm = 32: one 32-byte register holds the same 16 rows for pairs (0, 1) in its low
 * lane and pairs (2, 3) in its high lane, so the planes of each 4-pair group are stored as
 * [P0.lo | P2.lo] [P0.hi | P2.hi] [P1.lo | P3.lo] [P1.hi | P3.hi], 128 bytes. */
static void mb_planes_tl1_bm32(const int16_t *L, mb_i64 ngroups, uint8_t *P) {
    static const int order[4][2] = {{0, 2}, {0, 2}, {1, 3}, {1, 3}};
    for (mb_i64 g = 0; g < ngroups; g++)
        for (int v = 0; v < 4; v++)
            for (int lane = 0; lane < 2; lane++)
                for (int i = 0; i < 16; i++) {
                    uint16_t u = (uint16_t)L[16 * (4 * g + order[v][lane]) + i];
                    uint8_t byte = (uint8_t)((v & 1) ? (u >> 8) : (u & 0xFF));
                    P[128 * g + 32 * v + 16 * lane + i] = byte;
                }
}

/* ------------------------------------------------------------------------------------------ */
/* TL1: tile t of an (M, K) matrix tiled (BM, BK, bm); out[M] (this token) gets rows t*BM..  */

static void mb_tl1_tile_scalar(const uint8_t *data, const int16_t *L, mb_i64 M, mb_i64 K,
                               mb_i64 BM, mb_i64 BK, mb_i64 bm, mb_i64 t, int32_t *out) {
    const mb_i64 by = 256 / bm, nkb = K / BK, nsb = BM / bm, ng = BK / by;
    uint32_t *o = mb_tile_out(out, BM, t);
    int32_t acc[64];
    (void)M;
    for (mb_i64 kb = 0; kb < nkb; kb++)
        for (mb_i64 sb = 0; sb < nsb; sb++) {
            const uint8_t *d = mb_tl1_block(data, nkb, nsb, BK, bm, t, kb, sb);
            for (mb_i64 r = 0; r < bm; r++) acc[r] = 0;
            for (mb_i64 g = 0; g < ng; g++)
                for (mb_i64 h = 0; h < bm / 16; h++)
                    for (mb_i64 p = 0; p < by / 4; p++) {
                        const int16_t *La = L + 16 * (kb * BK / 2 + g * by / 2 + 2 * p);
                        const int16_t *Lb = La + 16;
                        int32_t *a = acc + 16 * h;
                        for (int l = 0; l < 16; l++) {
                            uint8_t b = *d++;
                            a[l] += La[b >> 4] + Lb[b & 15];
                        }
                    }
            for (mb_i64 r = 0; r < bm; r++) o[sb * bm + r] += mb_wrap16(acc[r]);
        }
}

#ifdef MB_X86
#define MB_LUT16(tlo, thi, idx, out_lo, out_hi) do {                           \
        __m256i _l = _mm256_shuffle_epi8((tlo), (idx));                          \
        __m256i _h = _mm256_shuffle_epi8((thi), (idx));                          \
        (out_lo) = _mm256_unpacklo_epi8(_l, _h);                                 \
        (out_hi) = _mm256_unpackhi_epi8(_l, _h);                                 \
    } while (0)
#define MB_BCAST(ptr) _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(ptr)))

/* P: planes in the layout of the tile's bm (mb_planes_tl1_bm32 for 32, mb_planes for 64). */
__attribute__((target("avx2")))
static void mb_tl1_tile_avx2(const uint8_t *data, const uint8_t *P, mb_i64 M, mb_i64 K,
                             mb_i64 BM, mb_i64 BK, mb_i64 bm, mb_i64 t, int32_t *out) {
    const mb_i64 by = 256 / bm, nkb = K / BK, nsb = BM / bm, ng = BK / by;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    uint32_t *o = mb_tile_out(out, BM, t);
    int16_t tmp[64];
    (void)M;
    for (mb_i64 kb = 0; kb < nkb; kb++)
        for (mb_i64 sb = 0; sb < nsb; sb++) {
            const uint8_t *d = mb_tl1_block(data, nkb, nsb, BK, bm, t, kb, sb);
            __m256i c0 = _mm256_setzero_si256(), c1 = _mm256_setzero_si256();
            __m256i c2 = _mm256_setzero_si256(), c3 = _mm256_setzero_si256();
            for (mb_i64 g = 0; g < ng; g++, d += 64) {
                __m256i ta_lo, ta_hi, tb_lo, tb_hi, v, top, bot, xl, xh;
                if (bm == 32) {      /* lanes: the same 16 rows, pairs (0,1) | (2,3) */
                    const uint8_t *Pg = P + 128 * (kb * BK / 8 + g);
                    ta_lo = _mm256_loadu_si256((const __m256i *)Pg);
                    ta_hi = _mm256_loadu_si256((const __m256i *)(Pg + 32));
                    tb_lo = _mm256_loadu_si256((const __m256i *)(Pg + 64));
                    tb_hi = _mm256_loadu_si256((const __m256i *)(Pg + 96));
                } else {             /* bm == 64, lanes: strips 2i | 2i + 1, pairs (0,1) */
                    const uint8_t *Pa = P + 32 * (kb * BK / 2 + 2 * g);
                    ta_lo = MB_BCAST(Pa); ta_hi = MB_BCAST(Pa + 16);
                    tb_lo = MB_BCAST(Pa + 32); tb_hi = MB_BCAST(Pa + 48);
                }
                v = _mm256_loadu_si256((const __m256i *)d);
                top = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                bot = _mm256_and_si256(v, m4);
                MB_LUT16(ta_lo, ta_hi, top, xl, xh);
                c0 = _mm256_add_epi16(c0, xl); c1 = _mm256_add_epi16(c1, xh);
                MB_LUT16(tb_lo, tb_hi, bot, xl, xh);
                c0 = _mm256_add_epi16(c0, xl); c1 = _mm256_add_epi16(c1, xh);
                v = _mm256_loadu_si256((const __m256i *)(d + 32));
                top = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                bot = _mm256_and_si256(v, m4);
                MB_LUT16(ta_lo, ta_hi, top, xl, xh);
                c2 = _mm256_add_epi16(c2, xl); c3 = _mm256_add_epi16(c3, xh);
                MB_LUT16(tb_lo, tb_hi, bot, xl, xh);
                c2 = _mm256_add_epi16(c2, xl); c3 = _mm256_add_epi16(c3, xh);
            }
            _mm256_storeu_si256((__m256i *)tmp, c0);
            _mm256_storeu_si256((__m256i *)(tmp + 16), c1);
            _mm256_storeu_si256((__m256i *)(tmp + 32), c2);
            _mm256_storeu_si256((__m256i *)(tmp + 48), c3);
            uint32_t *os = o + sb * bm;
            if (bm == 32) {
                /* c0/c2: rows 16h + 0..7 of both lanes; c1/c3: rows 16h + 8..15; add the lanes */
                for (int h = 0; h < 2; h++)
                    for (int i = 0; i < 8; i++) {
                        const int16_t *lo = tmp + 32 * h, *hi = tmp + 32 * h + 16;
                        os[16 * h + i] += mb_add16(lo[i], lo[8 + i]);
                        os[16 * h + 8 + i] += mb_add16(hi[i], hi[8 + i]);
                    }
            } else {
                /* c[2s]: rows 32s + 0..7 | 32s + 16..23; c[2s+1]: 32s + 8..15 | 32s + 24..31 */
                for (int s = 0; s < 2; s++)
                    for (int i = 0; i < 8; i++) {
                        const int16_t *lo = tmp + 32 * s, *hi = tmp + 32 * s + 16;
                        os[32 * s + i] += (uint32_t)(int32_t)lo[i];
                        os[32 * s + 16 + i] += (uint32_t)(int32_t)lo[8 + i];
                        os[32 * s + 8 + i] += (uint32_t)(int32_t)hi[i];
                        os[32 * s + 24 + i] += (uint32_t)(int32_t)hi[8 + i];
                    }
            }
        }
}
#endif

/* ------------------------------------------------------------------------------------------ */
/* TL2: tile t; L3/P3 triplet tables of the first three_k columns, L2/P2 pair tables of the   */
/* rest.                                                                                       */

static void mb_tl2_tile_scalar(const uint8_t *data, const int16_t *L3, const int16_t *L2,
                               mb_i64 M, mb_i64 K, mb_i64 BM, mb_i64 BK, mb_i64 t, int32_t *out) {
    const mb_tl2_layout y = mb_tl2_layout_of(M, K, BM, BK);
    uint32_t *o = mb_tile_out(out, BM, t);
    int32_t acc[32];
    for (mb_i64 kb = 0; kb < y.nkb; kb++)
        for (mb_i64 sb = 0; sb < y.nsb; sb++) {
            const uint8_t *a = mb_tl2_mags(data, &y, BK, t, kb, sb);
            const uint8_t *sg = mb_tl2_signs(data, &y, BK, t, kb, sb);
            for (int r = 0; r < 32; r++) acc[r] = 0;
            for (mb_i64 G = 0; G < BK / 24; G++) {
                uint16_t w[16];
                for (int u = 0; u < 16; u++)   /* little-endian words */
                    w[u] = (uint16_t)(sg[32 * G + 2 * u] | (sg[32 * G + 2 * u + 1] << 8));
                for (int j = 0; j < 4; j++) {
                    const mb_i64 g = 4 * G + j;
                    const int16_t *La = L3 + 16 * (kb * BK / 3 + 2 * g), *Lb = La + 16;
                    for (int q = 0; q < 32; q++) {
                        uint8_t b = a[32 * g + q];
                        int r = mb_tl2_row(q), u = r & 15, half = r >> 4;
                        int16_t sa = (int16_t)-((w[u] >> (15 - (4 * j + half))) & 1);
                        int16_t sb_ = (int16_t)-((w[u] >> (15 - (4 * j + 2 + half))) & 1);
                        int16_t va = (int16_t)((La[b >> 4] + sa) ^ sa);
                        int16_t vb = (int16_t)((Lb[b & 15] + sb_) ^ sb_);
                        acc[r] += va + vb;
                    }
                }
            }
            for (int r = 0; r < 32; r++) o[sb * 32 + r] += mb_wrap16(acc[r]);
        }
    for (mb_i64 kb = 0; kb < y.nkb2; kb++)
        for (mb_i64 sb = 0; sb < y.nsb; sb++) {
            const uint8_t *a = mb_tl2_pairs(data, &y, t, kb, sb);
            for (int r = 0; r < 32; r++) acc[r] = 0;
            for (int g = 0; g < 8; g++) {
                const int16_t *La = L2 + 16 * (kb * 16 + 2 * g), *Lb = La + 16;
                for (int q = 0; q < 32; q++) {
                    uint8_t b = a[32 * g + q];
                    acc[mb_tl2_row(q)] += La[b >> 4] + Lb[b & 15];
                }
            }
            for (int r = 0; r < 32; r++) o[sb * 32 + r] += mb_wrap16(acc[r]);
        }
}

#ifdef MB_X86
/* Widen the int16 block sums of rows 0..15 (c0) and 16..31 (c1) and add them into o[0..31]. */
__attribute__((target("avx2")))
static inline void mb_add_rows32(__m256i c0, __m256i c1, uint32_t *o) {
    int16_t tmp[32];
    _mm256_storeu_si256((__m256i *)tmp, c0);
    _mm256_storeu_si256((__m256i *)(tmp + 16), c1);
    for (int r = 0; r < 32; r++) o[r] += (uint32_t)(int32_t)tmp[r];
}

/* One register of two triplets (top nibble = triplet 2j, bottom = 2j + 1 of an 8-triplet sign
 * group): look up, negate by the sign bits 15 - (4j + 0..3), add into c0 (rows 0..15, the
 * even sign bits) and c1 (rows 16..31, the odd ones).  J must be a constant.
 * The negation: shifting sign bit 15 - n to the top makes the word negative exactly when the
 * bit is set; OR-ing in a 1 makes it nonzero, so sign_epi16 negates or keeps the entry
 * (the same int16 as bitnet.cpp's (x + s) ^ s with s = 0 or -1). */
#define MB_SIGNED(x, n) _mm256_sign_epi16((x), _mm256_or_si256(_mm256_slli_epi16(sv, (n)), one))
#define MB_TL2_STEP(J) do {                                                               \
        const mb_i64 g_ = 4 * G + (J);                                                    \
        const uint8_t *Pa_ = P3 + 32 * (kb * BK / 3 + 2 * g_);                            \
        __m256i v_ = _mm256_loadu_si256((const __m256i *)(a + 32 * g_));                  \
        __m256i top_ = _mm256_and_si256(_mm256_srli_epi16(v_, 4), m4);                    \
        __m256i bot_ = _mm256_and_si256(v_, m4);                                          \
        __m256i xl_, xh_;                                                                 \
        MB_LUT16(MB_BCAST(Pa_), MB_BCAST(Pa_ + 16), top_, xl_, xh_);                      \
        c0 = _mm256_add_epi16(c0, MB_SIGNED(xl_, 4 * (J)));                               \
        c1 = _mm256_add_epi16(c1, MB_SIGNED(xh_, 4 * (J) + 1));                           \
        MB_LUT16(MB_BCAST(Pa_ + 32), MB_BCAST(Pa_ + 48), bot_, xl_, xh_);                 \
        c0 = _mm256_add_epi16(c0, MB_SIGNED(xl_, 4 * (J) + 2));                           \
        c1 = _mm256_add_epi16(c1, MB_SIGNED(xh_, 4 * (J) + 3));                           \
    } while (0)

__attribute__((target("avx2")))
static void mb_tl2_tile_avx2(const uint8_t *data, const uint8_t *P3, const uint8_t *P2,
                             mb_i64 M, mb_i64 K, mb_i64 BM, mb_i64 BK, mb_i64 t, int32_t *out) {
    const mb_tl2_layout y = mb_tl2_layout_of(M, K, BM, BK);
    const __m256i m4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi16(1);
    uint32_t *o = mb_tile_out(out, BM, t);
    /* unpacklo gives byte positions 0..7 | 16..23 = rows 0..15 and unpackhi 8..15 | 24..31
     * = rows 16..31 (the stored chunk order 0, 2, 1, 3 undone), so tmp is in row order. */
    for (mb_i64 kb = 0; kb < y.nkb; kb++)
        for (mb_i64 sb = 0; sb < y.nsb; sb++) {
            const uint8_t *a = mb_tl2_mags(data, &y, BK, t, kb, sb);
            const uint8_t *sg = mb_tl2_signs(data, &y, BK, t, kb, sb);
            __m256i c0 = _mm256_setzero_si256(), c1 = _mm256_setzero_si256();
            for (mb_i64 G = 0; G < BK / 24; G++) {
                const __m256i sv = _mm256_loadu_si256((const __m256i *)(sg + 32 * G));
                MB_TL2_STEP(0);
                MB_TL2_STEP(1);
                MB_TL2_STEP(2);
                MB_TL2_STEP(3);
            }
            mb_add_rows32(c0, c1, o + sb * 32);
        }
    for (mb_i64 kb = 0; kb < y.nkb2; kb++)
        for (mb_i64 sb = 0; sb < y.nsb; sb++) {
            const uint8_t *a = mb_tl2_pairs(data, &y, t, kb, sb);
            __m256i c0 = _mm256_setzero_si256(), c1 = _mm256_setzero_si256();
            for (int g = 0; g < 8; g++) {
                const uint8_t *Pa = P2 + 32 * (kb * 16 + 2 * g);
                __m256i v = _mm256_loadu_si256((const __m256i *)(a + 32 * g));
                __m256i top = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                __m256i bot = _mm256_and_si256(v, m4);
                __m256i xl, xh;
                MB_LUT16(MB_BCAST(Pa), MB_BCAST(Pa + 16), top, xl, xh);
                c0 = _mm256_add_epi16(c0, xl); c1 = _mm256_add_epi16(c1, xh);
                MB_LUT16(MB_BCAST(Pa + 32), MB_BCAST(Pa + 48), bot, xl, xh);
                c0 = _mm256_add_epi16(c0, xl); c1 = _mm256_add_epi16(c1, xh);
            }
            mb_add_rows32(c0, c1, o + sb * 32);
        }
}
#endif

/* ------------------------------------------------------------------------------------------ */
/* T-MAC: 32-row block nb of planes [NB][2][KB][32]; writes out[32*nb + r] for rows < N.      */

static void mb_tmac_block_scalar(const uint8_t *planes, const int16_t *L, mb_i64 N, mb_i64 KB,
                                 int32_t sumq, mb_i64 nb, int32_t *out) {
    uint32_t S[2][32];
    for (int b = 0; b < 2; b++) {
        const uint8_t *p = planes + (nb * 2 + b) * KB * 32;
        for (int r = 0; r < 32; r++) S[b][r] = 0;
        for (mb_i64 j = 0; j < KB; j++, p += 32) {
            const int16_t *L0 = L + 16 * (2 * j), *L1 = L0 + 16;
            for (int r = 0; r < 32; r++)
                S[b][r] += (uint32_t)(int32_t)(L0[p[r] & 15] + L1[p[r] >> 4]);
        }
    }
    mb_tmac_store(S, sumq, nb, N, out);
}

#ifdef MB_X86
__attribute__((target("avx2")))
static void mb_tmac_block_avx2(const uint8_t *planes, const uint8_t *P, mb_i64 N, mb_i64 KB,
                               int32_t sumq, mb_i64 nb, int32_t *out) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    uint32_t S[2][32];
    int16_t tmp[32];
    for (int b = 0; b < 2; b++) {
        const uint8_t *p = planes + (nb * 2 + b) * KB * 32;
        for (int r = 0; r < 32; r++) S[b][r] = 0;
        /* at most 32 lookups of |T| <= 512 per int16 lane before widening: no wrap */
        for (mb_i64 j0 = 0; j0 < KB; j0 += 16) {
            const mb_i64 j1 = (j0 + 16 < KB) ? j0 + 16 : KB;
            __m256i c0 = _mm256_setzero_si256(), c1 = _mm256_setzero_si256();
            for (mb_i64 j = j0; j < j1; j++) {
                const uint8_t *Pa = P + 32 * (2 * j);
                __m256i v = _mm256_loadu_si256((const __m256i *)(p + 32 * j));
                __m256i lo = _mm256_and_si256(v, m4);
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                __m256i xl, xh;
                MB_LUT16(MB_BCAST(Pa), MB_BCAST(Pa + 16), lo, xl, xh);
                c0 = _mm256_add_epi16(c0, xl); c1 = _mm256_add_epi16(c1, xh);
                MB_LUT16(MB_BCAST(Pa + 32), MB_BCAST(Pa + 48), hi, xl, xh);
                c0 = _mm256_add_epi16(c0, xl); c1 = _mm256_add_epi16(c1, xh);
            }
            _mm256_storeu_si256((__m256i *)tmp, c0);
            _mm256_storeu_si256((__m256i *)(tmp + 16), c1);
            /* c0: rows 0..7 | 16..23, c1: rows 8..15 | 24..31 */
            for (int i = 0; i < 8; i++) {
                S[b][i] += (uint32_t)(int32_t)tmp[i];
                S[b][16 + i] += (uint32_t)(int32_t)tmp[8 + i];
                S[b][8 + i] += (uint32_t)(int32_t)tmp[16 + i];
                S[b][24 + i] += (uint32_t)(int32_t)tmp[24 + i];
            }
        }
    }
    mb_tmac_store(S, sumq, nb, N, out);
}
#endif

/* ------------------------------------------------------------------------------------------ */
/* Dispatch (simd = 1 asks for AVX2; it is used only when compiled in)                        */

static void mb_tl1_tile(const uint8_t *data, const int16_t *L, const uint8_t *P, mb_i64 M,
                        mb_i64 K, mb_i64 BM, mb_i64 BK, mb_i64 bm, mb_i64 t, int32_t *out,
                        int simd) {
#ifdef MB_X86
    if (simd) { mb_tl1_tile_avx2(data, P, M, K, BM, BK, bm, t, out); return; }
#endif
    (void)P; (void)simd;
    mb_tl1_tile_scalar(data, L, M, K, BM, BK, bm, t, out);
}

static void mb_tl2_tile(const uint8_t *data, const int16_t *L3, const int16_t *L2,
                        const uint8_t *P3, const uint8_t *P2, mb_i64 M, mb_i64 K, mb_i64 BM,
                        mb_i64 BK, mb_i64 t, int32_t *out, int simd) {
#ifdef MB_X86
    if (simd) { mb_tl2_tile_avx2(data, P3, P2, M, K, BM, BK, t, out); return; }
#endif
    (void)P3; (void)P2; (void)simd;
    mb_tl2_tile_scalar(data, L3, L2, M, K, BM, BK, t, out);
}

static void mb_tmac_block(const uint8_t *planes, const int16_t *L, const uint8_t *P, mb_i64 N,
                          mb_i64 KB, int32_t sumq, mb_i64 nb, int32_t *out, int simd) {
#ifdef MB_X86
    if (simd) { mb_tmac_block_avx2(planes, P, N, KB, sumq, nb, out); return; }
#endif
    (void)P; (void)simd;
    mb_tmac_block_scalar(planes, L, N, KB, sumq, nb, out);
}

#endif /* MINIBIT_LUT_KERNELS_H */
