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
#include "mb_dense.h"

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

#endif
