/* mb_ggml_body.h — the functions of mb_ggml.h, included twice: portable C (MBG_FN(x) =
 * x_c) and with x86 AVX2 + FMA + F16C enabled (x_x), where the compiler turns fmaf and the
 * _Float16 conversions into single instructions.  Both give the same bits: fmaf is one
 * rounding either way, and nothing else is fused (-ffp-contract=off). */

MBG_ATTR static inline float MBG_FN(mbg_f16)(float x) { return (float)(_Float16)x; }

MBG_ATTR static inline float MBG_FN(mbg_h2f)(uint16_t h) {
    _Float16 v;
    memcpy(&v, &h, 2);
    return (float)v;
}

MBG_ATTR static inline float MBG_FN(mbg_bits)(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
MBG_ATTR static inline uint32_t MBG_FN(mbg_u32)(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* ggml_v_expf, one lane (ggml.py v_expf) */
MBG_ATTR static inline float MBG_FN(mbg_expf)(float x) {
    const float r = 0x1.8p23f;
    const float z = fmaf(x, 0x1.715476p+0f, r);
    const float n = z - r;
    const float b = fmaf(-n, 0x1.7f7d1cp-20f, fmaf(-n, 0x1.62e4p-1f, x));
    const uint32_t e = MBG_FN(mbg_u32)(z) << 23;
    const float k = MBG_FN(mbg_bits)(e + MBG_FN(mbg_u32)(1.0f));
    const float an = fabsf(n);
    const float u = b * b;
    const float j = fmaf(fmaf(fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u,
                              fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)), u, 0x1.ffffecp-1f * b);
    if (!(an > 126.0f)) return fmaf(j, k, k);
    const uint32_t g = (n <= 0.0f) ? 0x82000000u : 0u;
    const float s1 = MBG_FN(mbg_bits)(g + 0x7f000000u);
    const float s2 = MBG_FN(mbg_bits)(e - g);
    if (an > 192.0f) return s1 * s1;
    return fmaf(s2, j, s2) * s1;
}

#ifdef MBG_VECTOR
/* mbg_expf on eight lanes: every lane the same operations in the same order (the fused
 * steps fused, the rest one rounding each), both of the rare branches computed and picked
 * lane by lane, so each lane equals the scalar function's result. */
MBG_ATTR static inline __m256 MBG_FN(mbg_expf8)(__m256 x) {
    const __m256 r = _mm256_set1_ps(0x1.8p23f);
    const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), r);
    const __m256 n = _mm256_sub_ps(z, r);
    const __m256 nn = _mm256_xor_ps(n, _mm256_set1_ps(-0.0f));       /* -n: the sign flipped */
    const __m256 b = _mm256_fmadd_ps(nn, _mm256_set1_ps(0x1.7f7d1cp-20f),
                                     _mm256_fmadd_ps(nn, _mm256_set1_ps(0x1.62e4p-1f), x));
    const __m256i e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
    const __m256 k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(_mm256_set1_ps(1.0f))));
    const __m256 an = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), n);
    const __m256 u = _mm256_mul_ps(b, b);
    const __m256 j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)), u,
                        _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f))),
        u, _mm256_mul_ps(_mm256_set1_ps(0x1.ffffecp-1f), b));
    const __m256 fast = _mm256_fmadd_ps(j, k, k);
    const __m256 big = _mm256_cmp_ps(an, _mm256_set1_ps(126.0f), _CMP_GT_OQ);
    if (_mm256_testz_ps(big, big)) return fast;
    const __m256i g = _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ)),
                                       _mm256_set1_epi32((int)0x82000000u));
    const __m256 s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f000000)));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    const __m256 huge = _mm256_cmp_ps(an, _mm256_set1_ps(192.0f), _CMP_GT_OQ);
    const __m256 mid = _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1);
    return _mm256_blendv_ps(fast, _mm256_blendv_ps(mid, _mm256_mul_ps(s1, s1), huge), big);
}
#endif

/* ggml_vec_silu_f32 on one row */
MBG_ATTR static void MBG_FN(mbg_silu_row)(const float *x, int64_t n, float *y) {
    const int64_t n8 = n & ~(int64_t)7;
    int64_t i = 0;
#ifdef MBG_VECTOR
    for (; i < n8; i += 8) {
        const __m256 xv = _mm256_loadu_ps(x + i);
        const __m256 ev = MBG_FN(mbg_expf8)(_mm256_sub_ps(_mm256_setzero_ps(), xv));
        _mm256_storeu_ps(y + i, _mm256_div_ps(xv, _mm256_add_ps(_mm256_set1_ps(1.0f), ev)));
    }
#endif
    for (; i < n8; i++) y[i] = x[i] / (1.0f + MBG_FN(mbg_expf)(0.0f - x[i]));
    for (; i < n; i++) y[i] = x[i] / (1.0f + expf(-x[i]));
}

/* ggml_compute_forward_rms_norm_f32 then ggml_mul: one row */
MBG_ATTR static void MBG_FN(mbg_rms_row)(const float *x, const float *w, int64_t n, float eps, float *y) {
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
MBG_ATTR static void MBG_FN(mbg_rope_tables)(const int64_t *pos, int64_t T, int64_t n_dims, float base,
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
MBG_ATTR static void MBG_FN(mbg_rope_head)(const float *x, const float *c, const float *s, int64_t half, float *y) {
    for (int64_t i = 0; i < half; i++) {
        const float x0 = x[i], x1 = x[i + half];
        const float p1 = x1 * s[i], p2 = x1 * c[i];
        y[i] = fmaf(x0, c[i], -p1);
        y[i + half] = fmaf(x0, s[i], p2);
    }
}

/* element e of a row read as the engine orders it: il = 1 reads minibit's halves as pairs */
MBG_ATTR static inline int64_t MBG_FN(mbg_idx)(int64_t e, int64_t half, int il) {
    return il ? (e & 1) * half + (e >> 1) : e;
}

/* a row of n values: float32, or float16 bits widened */
MBG_ATTR static inline float MBG_FN(mbg_ld)(const void *row, int half16, int64_t i) {
    return half16 ? MBG_FN(mbg_h2f)(((const uint16_t *)row)[i]) : ((const float *)row)[i];
}

/* GGML_F32x8_REDUCE on four 8-lane accumulators */
MBG_ATTR static inline float MBG_FN(mbg_reduce4x8)(float acc[4][8]) {
    float c[8], t0[4];
    for (int l = 0; l < 8; l++) {
        const float a = acc[0][l] + acc[2][l], b = acc[1][l] + acc[3][l];
        c[l] = a + b;
    }
    for (int l = 0; l < 4; l++) t0[l] = c[l] + c[l + 4];
    return (t0[0] + t0[1]) + (t0[2] + t0[3]);
}

/* ggml_vec_dot_f16 (tail in double) or ggml_vec_dot_f32 (tail fused, in float) over n
 * elements of x (stride xs) and y (stride ys); il: engine order (MBG_FN(mbg_idx), half = n / 2) */
MBG_ATTR static float MBG_FN(mbg_vec_dot)(const void *x, int xh, int64_t xs, const void *y, int yh, int64_t ys,
                         int64_t n, int f16dot, int il) {
    float acc[4][8];
    memset(acc, 0, sizeof(acc));
    const int64_t np = n & ~(int64_t)31, half = n / 2;
#ifdef MBG_VECTOR
    if (!il && xs == 1 && ys == 1) {
        /* the same lanes in registers: acc[j] is one __m256, each lane one fmaf per step;
         * F16 -> F32 is exact (vcvtph2ps) */
        __m256 a[4];
        for (int j = 0; j < 4; j++) a[j] = _mm256_setzero_ps();
        for (int64_t i = 0; i < np; i += 32)
            for (int j = 0; j < 4; j++) {
                const int64_t e = i + 8 * j;
                const __m256 xv = xh ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)x + e)))
                                     : _mm256_loadu_ps((const float *)x + e);
                const __m256 yv = yh ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)y + e)))
                                     : _mm256_loadu_ps((const float *)y + e);
                a[j] = _mm256_fmadd_ps(xv, yv, a[j]);
            }
        for (int j = 0; j < 4; j++) _mm256_storeu_ps(acc[j], a[j]);
    } else
#endif
    for (int64_t i = 0; i < np; i += 32)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 8; l++) {
                const int64_t e = MBG_FN(mbg_idx)(i + 8 * j + l, half, il);
                acc[j][l] = fmaf(MBG_FN(mbg_ld)(x, xh, e * xs), MBG_FN(mbg_ld)(y, yh, e * ys), acc[j][l]);
            }
    const float r = MBG_FN(mbg_reduce4x8)(acc);
    if (f16dot) {
        double sum = (double)r;
        for (int64_t i = np; i < n; i++) {
            const int64_t e = MBG_FN(mbg_idx)(i, half, il);
            const float p = MBG_FN(mbg_ld)(x, xh, e * xs) * MBG_FN(mbg_ld)(y, yh, e * ys);
            sum += (double)p;
        }
        return (float)sum;
    }
    float sum = r;
    for (int64_t i = np; i < n; i++) {
        const int64_t e = MBG_FN(mbg_idx)(i, half, il);
        sum = fmaf(MBG_FN(mbg_ld)(x, xh, e * xs), MBG_FN(mbg_ld)(y, yh, e * ys), sum);
    }
    return sum;
}

/* one output of tinyBLAS<8, __m256> (n % 8 == 0) */
MBG_ATTR static float MBG_FN(mbg_tinyblas)(const void *a, int ah, int64_t as, const void *b, int bh, int64_t bs,
                          int64_t n, int il) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const int64_t half = n / 2;
    for (int64_t i = 0; i < n; i += 8)
        for (int l = 0; l < 8; l++) {
            const int64_t e = MBG_FN(mbg_idx)(i + l, half, il);
            acc[l] = fmaf(MBG_FN(mbg_ld)(a, ah, e * as), MBG_FN(mbg_ld)(b, bh, e * bs), acc[l]);
        }
    float v[4];
    for (int l = 0; l < 4; l++) v[l] = acc[l + 4] + acc[l];
    return (v[0] + v[2]) + (v[1] + v[3]);
}

/* One (query t, head) of ggml.py attention.
 * q: D floats (already RoPE'd); k, v: the kv head's [S_alloc, D] rows (float16 bits when
 * half16); S = positions filled, allowed = positions <= pos; S8, S32 the padded lengths.
 * sc: scratch of S32 floats; qq: of D floats; accv: of 32 * D floats; out: D floats. */
MBG_ATTR static void MBG_FN(mbg_attend)(const float *q, const void *k, const void *v, int half16, int64_t D,
                       int64_t S, int64_t pos, int batch, int f16_rhs, int il, float *sc,
                       float *qq, float *accv, float *out) {
    const int64_t S8 = (S + 7) & ~(int64_t)7, S32 = (S + 31) & ~(int64_t)31;
    for (int64_t d = 0; d < D; d++) qq[d] = half16 ? MBG_FN(mbg_f16)(q[d]) : q[d];
    const float scale = 1.0f / sqrtf((float)D);
    float m = -INFINITY;
    for (int64_t s = 0; s < S8; s++) {
        if (s > pos || s >= S) { sc[s] = -INFINITY; continue; }
        const char *kr = (const char *)k + s * D * (half16 ? 2 : 4);
        float dot;
        if (half16 && f16_rhs && batch && D % 8 == 0)
            dot = MBG_FN(mbg_tinyblas)(qq, 0, 1, kr, 1, 1, D, il);
        else
            dot = MBG_FN(mbg_vec_dot)(qq, 0, 1, kr, half16, 1, D, half16, il);
        sc[s] = dot * scale;
        if (sc[s] > m) m = sc[s];
    }
    double total = 0.0;
    for (int64_t g = 0; g < S8; g += 8) {
        float ev[8];
#ifdef MBG_VECTOR
        _mm256_storeu_ps(ev, MBG_FN(mbg_expf8)(_mm256_sub_ps(_mm256_loadu_ps(sc + g), _mm256_set1_ps(m))));
        memcpy(sc + g, ev, sizeof ev);
#else
        for (int l = 0; l < 8; l++) {
            ev[l] = MBG_FN(mbg_expf)(sc[g + l] - m);
            sc[g + l] = ev[l];
        }
#endif
        float v4[4];
        for (int l = 0; l < 4; l++) v4[l] = ev[l + 4] + ev[l];
        const float hs = (v4[0] + v4[2]) + (v4[1] + v4[3]);
        total += (double)hs;
    }
    const float inv = (float)(1.0 / total);
    for (int64_t s = 0; s < S32; s++) {
        const float p = s < S8 ? sc[s] * inv : 0.0f;
        sc[s] = ((half16 && (!batch || f16_rhs)) ? MBG_FN(mbg_f16)(p) : p);
    }
    /* p . V over S32 positions, accumulators [lane][D] (each (d, lane) adds its positions in
     * increasing order, as the spec); V rows past S would add fmaf(0, 0, acc) = acc */
    const int lanes = batch ? 8 : 32;
    memset(accv, 0, sizeof(float) * lanes * D);
    for (int64_t i = 0; i < S; i++) {
        float *a = accv + (i % lanes) * D;
        const float p = sc[i];
        int64_t d = 0;
#ifdef MBG_VECTOR
        const __m256 pv = _mm256_set1_ps(p);       /* eight lanes of the same fmaf */
        for (; d + 8 <= D; d += 8) {
            const __m256 x = half16 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)v + i * D + d)))
                                    : _mm256_loadu_ps((const float *)v + i * D + d);
            _mm256_storeu_ps(a + d, _mm256_fmadd_ps(x, pv, _mm256_loadu_ps(a + d)));
        }
#endif
        if (half16) {
            const uint16_t *vr = (const uint16_t *)v + i * D;
            for (; d < D; d++) a[d] = fmaf(MBG_FN(mbg_h2f)(vr[d]), p, a[d]);
        } else {
            const float *vr = (const float *)v + i * D;
            for (; d < D; d++) a[d] = fmaf(vr[d], p, a[d]);
        }
    }
    for (int64_t d = 0; d < D; d++) {
        if (batch) {
            float v4[4];
            for (int l = 0; l < 4; l++) v4[l] = accv[(l + 4) * D + d] + accv[l * D + d];
            out[d] = (v4[0] + v4[2]) + (v4[1] + v4[3]);
        } else {
            float acc[4][8];
            for (int j = 0; j < 4; j++)
                for (int l = 0; l < 8; l++) acc[j][l] = accv[(8 * j + l) * D + d];
            out[d] = MBG_FN(mbg_reduce4x8)(acc);         /* S32 % 32 == 0: no tail */
        }
    }
}


/* One (query, head) row of ggml.py flash_attn, T < 64 (_fa_rows: one row at a time, the
 * online softmax with the accumulator rounded to float16 after every step).
 * q: D floats; k, v: the kv head's rows as float16 bits; n: the positions the query sees
 * (0 .. n-1); qq, acc: scratch of D floats; out: D floats. */
MBG_ATTR static void MBG_FN(mbg_fa_row)(const float *q, const uint16_t *k, const uint16_t *v,
                       int64_t D, int64_t n, float scale, int il, float *qq, float *acc,
                       float *out) {
    for (int64_t d = 0; d < D; d++) { qq[d] = MBG_FN(mbg_f16)(q[d]); acc[d] = 0.0f; }
    float M = -INFINITY, S = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        const float s = MBG_FN(mbg_vec_dot)(k + i * D, 1, 1, qq, 0, 1, D, 1, il) * scale;
        float ms = 1.0f, vs = 1.0f;
        int64_t d = 0;
        if (s > M) {
            ms = expf(M - s);
            M = s;
#ifdef MBG_VECTOR
            /* eight lanes at a time, each the scalar loop's two roundings (product, then
             * float16: vcvtps2ph in the current rounding mode, as the scalar conversion) */
            const __m256 vm = _mm256_set1_ps(ms);
            for (; d + 8 <= D; d += 8)
                _mm256_storeu_ps(acc + d, _mm256_cvtph_ps(_mm256_cvtps_ph(
                    _mm256_mul_ps(_mm256_loadu_ps(acc + d), vm), _MM_FROUND_CUR_DIRECTION)));
#endif
            for (; d < D; d++) acc[d] = MBG_FN(mbg_f16)(acc[d] * ms);
        } else {
            vs = expf(s - M);
        }
        const uint16_t *vr = v + i * D;
        d = 0;
#ifdef MBG_VECTOR
        const __m256 vv = _mm256_set1_ps(vs);
        for (; d + 8 <= D; d += 8) {                /* fmaf then float16, lane by lane */
            const __m256 x = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(vr + d)));
            _mm256_storeu_ps(acc + d, _mm256_cvtph_ps(_mm256_cvtps_ph(
                _mm256_fmadd_ps(x, vv, _mm256_loadu_ps(acc + d)), _MM_FROUND_CUR_DIRECTION)));
        }
#endif
        for (; d < D; d++)
            acc[d] = MBG_FN(mbg_f16)(fmaf(MBG_FN(mbg_h2f)(vr[d]), vs, acc[d]));
        S = fmaf(S, ms, vs);
    }
    const float inv = S == 0.0f ? 0.0f : 1.0f / S;
    for (int64_t d = 0; d < D; d++) out[d] = acc[d] * inv;
}

/* One 64-position tile of _fa_tiled for one row: kq [64] holds the row's scaled scores
 * for the m positions it sees (the rest are set to -inf here); M, S and acc [D] carry the
 * row's online softmax from tile to tile. */
MBG_ATTR static inline void MBG_FN(mbg_fa_tile)(float *kq, int64_t m, const uint16_t *v,
                                                int64_t D, float *M, float *S, float *acc) {
    float top = -INFINITY;
    for (int64_t j = 0; j < 64; j++) {
        if (j >= m) kq[j] = -INFINITY;
        if (kq[j] > top) top = kq[j];
    }
    if (top == -INFINITY) return;
    const float Mnew = fmaxf(*M, top);
    if (Mnew > *M) {
        const float ms = expf(*M - Mnew);
        for (int64_t d = 0; d < D; d++) acc[d] = acc[d] * ms;
        *S = *S * ms;
    }
    *M = Mnew;
    double tile = 0.0;
    for (int g = 0; g < 64; g += 8) {
        float ev[8], h4[4];
#ifdef MBG_VECTOR
        _mm256_storeu_ps(ev, MBG_FN(mbg_expf8)(_mm256_sub_ps(_mm256_loadu_ps(kq + g), _mm256_set1_ps(Mnew))));
        memcpy(kq + g, ev, sizeof ev);
#else
        for (int l = 0; l < 8; l++) {
            ev[l] = MBG_FN(mbg_expf)(kq[g + l] - Mnew);
            kq[g + l] = ev[l];
        }
#endif
        for (int l = 0; l < 4; l++) h4[l] = ev[l + 4] + ev[l];
        tile += (double)((h4[0] + h4[2]) + (h4[1] + h4[3]));
    }
    *S = (float)((double)*S + tile);
    for (int64_t j = 0; j < m; j++) {
        const uint16_t *vr = v + j * D;
        int64_t d = 0;
#ifdef MBG_VECTOR
        const __m256 pj = _mm256_set1_ps(kq[j]);        /* fmaf lane by lane, d in lanes */
        for (; d + 8 <= D; d += 8)
            _mm256_storeu_ps(acc + d, _mm256_fmadd_ps(pj, _mm256_cvtph_ps(
                _mm_loadu_si128((const __m128i *)(vr + d))), _mm256_loadu_ps(acc + d)));
#endif
        for (; d < D; d++) acc[d] = fmaf(kq[j], MBG_FN(mbg_h2f)(vr[d]), acc[d]);
    }
}

/* Rows t0 .. t0 + nq - 1 (nq <= 8) of one head, T >= 64 (_fa_tiled: blocks of 64
 * positions, q not rounded, float32 accumulator).  Row r reads q + r * qs, sees positions
 * 0 .. n0 + r - 1 and writes out + r * os.  Each row is exactly the one-row computation:
 * its score for a position is one chain fmaf(q[x], k[x], a) over the D values in the
 * engine's order; the eight rows' chains run side by side, one row in each vector lane
 * (qT holds q transposed, [D][8]), so a key is read once for eight queries.  Scratch: qT
 * 8 D floats, kq 8 x 64, acc 8 D. */
MBG_ATTR static void MBG_FN(mbg_fa_tiled_rows)(const float *q, int64_t qs, int nq,
                            const uint16_t *k, const uint16_t *v, int64_t D, int64_t n0,
                            float scale, int il, float *qT, float *kq, float *acc,
                            float *out, int64_t os) {
    const int64_t half = D / 2;
    float M[8], S[8];
    for (int r = 0; r < 8; r++) { M[r] = -INFINITY; S[r] = 0.0f; }
    for (int64_t i = 0; i < 8 * D; i++) acc[i] = 0.0f;
    for (int64_t e = 0; e < D; e++) {
        const int64_t x = MBG_FN(mbg_idx)(e, half, il);
        for (int r = 0; r < 8; r++) qT[8 * e + r] = r < nq ? q[r * qs + x] : 0.0f;
    }
    const int64_t nmax = n0 + nq - 1;                     /* the last row's positions */
    for (int64_t c0 = 0; c0 < nmax; c0 += 64) {
        const int64_t mmax = nmax - c0 < 64 ? nmax - c0 : 64;
        for (int64_t j = 0; j < mmax; j++) {
            const uint16_t *kr = k + (c0 + j) * D;
            float a[8];
#ifdef MBG_VECTOR
            __m256 av = _mm256_setzero_ps();
            for (int64_t e = 0; e < D; e++)
                av = _mm256_fmadd_ps(_mm256_loadu_ps(qT + 8 * e),
                                     _mm256_set1_ps(MBG_FN(mbg_h2f)(kr[MBG_FN(mbg_idx)(e, half, il)])), av);
            _mm256_storeu_ps(a, _mm256_mul_ps(av, _mm256_set1_ps(scale)));
#else
            for (int r = 0; r < 8; r++) a[r] = 0.0f;
            for (int64_t e = 0; e < D; e++) {
                const float kv = MBG_FN(mbg_h2f)(kr[MBG_FN(mbg_idx)(e, half, il)]);
                for (int r = 0; r < 8; r++) a[r] = fmaf(qT[8 * e + r], kv, a[r]);
            }
            for (int r = 0; r < 8; r++) a[r] = a[r] * scale;
#endif
            for (int r = 0; r < nq; r++) kq[64 * r + j] = a[r];
        }
        for (int r = 0; r < nq; r++) {
            const int64_t n = n0 + r;
            if (c0 >= n) continue;
            MBG_FN(mbg_fa_tile)(kq + 64 * r, n - c0 < 64 ? n - c0 : 64, v + c0 * D, D,
                                &M[r], &S[r], acc + r * D);
        }
    }
    for (int r = 0; r < nq; r++) {
        const float inv = S[r] == 0.0f ? 0.0f : 1.0f / S[r];
        for (int64_t d = 0; d < D; d++) out[r * os + d] = acc[r * D + d] * inv;
    }
}
