# Shared by the layers and ggml twins (include "rms_rows.pxi"): the RMSNorm loop over tokens.
# Each twin checks its arguments its own way (layers.check_norm takes float32 only; ggml's
# reference converts any dtype) and passes its own C row function: mbl_rms_row (mb_layers.h,
# transformers' order) or mbg_rms_row (mb_ggml.h, ggml's double sum).

from libc.stdint cimport int64_t as _rr_int64_t

ctypedef void (*rms_row_fn)(const float *x, const float *w, _rr_int64_t n, float eps,
                            float *y) noexcept nogil


cdef object _rms_rows(x, weight, eps, rms_row_fn row):
    """Checked float32 x [T, n] and weight [n] -> y [T, n], y[t] = row(x[t], weight, eps)."""
    out = np.empty_like(x)
    cdef const float[:, ::1] X = x
    cdef const float[::1] W = weight
    cdef float[:, ::1] Y = out
    cdef _rr_int64_t T = X.shape[0], n = X.shape[1], t
    cdef float e = <float>np.float32(eps)
    if T and n:
        with nogil:
            for t in range(T):
                row(&X[t, 0], &W[0], n, e, &Y[t, 0])
    return out
