/* ggml_ops.c: run one ggml operation on raw float32 inputs and write its float32 output.
 *
 * A unit oracle for minibit.model.ggml: each rule there is checked against the engine's own
 * compiled function (built against the peer's libggml, see tests/test_ggml_ops.py), not
 * against a reading of its source.  Arrays are raw little-endian files, C order.
 *
 *   ggml_ops rms     NTH T n eps          x.f32 out.f32           rms_norm over rows of n
 *   ggml_ops rope    NTH T H D base       x.f32 pos.i32 out.f32   NeoX rope, x [T][H][D]
 *   ggml_ops softmax NTH T S scale        x.f32 mask.f32 out.f32  soft_max_ext, rows of S
 *   ggml_ops silu    NTH T n              x.f32 out.f32
 *   ggml_ops mulmat  NTH TYPE m n k       a.bin b.f32 out.f32 -   out [n][m] = b @ a^T,
 *                    TYPE f32|f16|tq2_0|tq1_0|i2_s, a as the type's row bytes (i2_s: the
 *                    whole tensor, scale after the codes)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml.h"

static void *slurp(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc(n > 0 ? (size_t)n : 1);
    if (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) { perror(path); exit(2); }
    fclose(f);
    *size = (size_t)n;
    return buf;
}

static void fill(struct ggml_tensor *t, const char *path) {
    size_t n;
    void *buf = slurp(path, &n);
    if (n > ggml_nbytes(t)) { fprintf(stderr, "%s: %zu bytes > tensor %zu\n", path, n, ggml_nbytes(t)); exit(2); }
    memset(t->data, 0, ggml_nbytes(t));
    memcpy(t->data, buf, n);
    free(buf);
}

static void dump(const struct ggml_tensor *t, const char *path) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(t->data, 1, ggml_nbytes(t), f) != ggml_nbytes(t)) { perror(path); exit(2); }
    fclose(f);
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: see the source\n"); return 2; }
    const char *op = argv[1];
    const int nth = atoi(argv[2]);
    struct ggml_init_params ip = { (size_t)1 << 30, NULL, false };
    struct ggml_context *ctx = ggml_init(ip);
    struct ggml_tensor *out = NULL;
    const char *outpath = NULL;

    if (!strcmp(op, "rms") && argc == 8) {
        int T = atoi(argv[3]), n = atoi(argv[4]);
        float eps = strtof(argv[5], NULL);
        struct ggml_tensor *x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n, T);
        fill(x, argv[6]);
        out = ggml_rms_norm(ctx, x, eps);
        outpath = argv[7];
    } else if (!strcmp(op, "rope") && argc == 10) {
        int T = atoi(argv[3]), H = atoi(argv[4]), D = atoi(argv[5]);
        float base = strtof(argv[6], NULL);
        struct ggml_tensor *x = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, D, H, T);
        struct ggml_tensor *pos = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, T);
        fill(x, argv[7]);
        fill(pos, argv[8]);
        out = ggml_rope_ext(ctx, x, pos, NULL, D, 2 /* NEOX */, 0, base, 1.0f, 0.0f, 1.0f,
                            32.0f, 1.0f);
        outpath = argv[9];
    } else if (!strcmp(op, "softmax") && argc == 9) {
        int T = atoi(argv[3]), S = atoi(argv[4]);
        float scale = strtof(argv[5], NULL);
        struct ggml_tensor *x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, S, T);
        struct ggml_tensor *m = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, S, T);
        fill(x, argv[6]);
        fill(m, argv[7]);
        out = ggml_soft_max_ext(ctx, x, m, scale, 0.0f);
        outpath = argv[8];
    } else if (!strcmp(op, "silu") && argc == 7) {
        int T = atoi(argv[3]), n = atoi(argv[4]);
        struct ggml_tensor *x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n, T);
        fill(x, argv[5]);
        out = ggml_silu(ctx, x);
        outpath = argv[6];
    } else if (!strcmp(op, "mulmat") && argc == 11) {
        const char *ty = argv[3];
        int m = atoi(argv[4]), n = atoi(argv[5]), k = atoi(argv[6]);
        enum ggml_type t = !strcmp(ty, "f32") ? GGML_TYPE_F32 : !strcmp(ty, "f16") ? GGML_TYPE_F16
                         : !strcmp(ty, "tq2_0") ? GGML_TYPE_TQ2_0 : !strcmp(ty, "tq1_0") ? GGML_TYPE_TQ1_0
                         : GGML_TYPE_I2_S;
        struct ggml_tensor *a = ggml_new_tensor_2d(ctx, t, k, m);
        struct ggml_tensor *b = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, n);
        fill(a, argv[7]);
        fill(b, argv[8]);
        out = ggml_mul_mat(ctx, a, b);
        outpath = argv[9];
        (void)argv[10];
    } else {
        fprintf(stderr, "bad arguments for %s\n", op);
        return 2;
    }
    struct ggml_cgraph *gf = ggml_new_graph(ctx);
    ggml_build_forward_expand(gf, out);
    ggml_graph_compute_with_ctx(ctx, gf, nth);
    dump(out, outpath);
    ggml_free(ctx);
    return 0;
}
