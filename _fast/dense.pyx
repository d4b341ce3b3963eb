# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Twin of minibit/kernels/dense.py: the LM head's float product in C, same bits.

The arrays are validated by the reference's ``check_args`` (FormatError) before the GIL is
released; the loop lives in ``mb_dense.h`` (AVX2 + F16C at run time, portable C otherwise).
Threads: OpenMP over tiles of output rows; each output is one thread's fixed-order dot
product, so the thread count never changes a bit.
"""

import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdint cimport int64_t

from minibit.kernels import dense as _ref

cnp.import_array()

cdef extern from "mb_dense.h" nogil:
    int mbd_simd_allowed
    int mbd_use_simd()
    void mbd_rows(const float *x, int64_t T, int64_t K, const void *W, int dtype,
                  int64_t N, int64_t n0, int64_t n1, float *y)

cdef enum:
    MIN_PARALLEL_MAC = 1 << 18
    TILE = 64

_CODES = {"F32": 0, "F16": 1, "BF16": 2}


def _set_simd(on):
    """Allow (True) or forbid (False) the AVX2 code; returns the previous setting (tests)."""
    global mbd_simd_allowed
    old = bool(mbd_simd_allowed)
    mbd_simd_allowed = 1 if on else 0
    return old


def _simd():
    return "avx2" if mbd_use_simd() else "scalar"


def matmul_t(x, W, dtype, out=None):
    """y = x @ W.T in dense.py's lane order: float32 [T, N] (see minibit.kernels.dense).

    ``out``, when given, is a float32 C-contiguous [T, N] array written in place (the decode
    loop reuses one)."""
    x, W = _ref.check_args(x, W, dtype)
    cdef int64_t T = x.shape[0], K = x.shape[1], N = W.shape[0]
    out = _ref.check_out(out, T, N)
    if T == 0 or N == 0:
        return out
    cdef int code = _CODES[dtype]
    cdef const float[:, ::1] X = x
    cdef float[:, ::1] Y = out
    cdef cnp.ndarray Wa = W
    cdef const void *wp = <const void *>cnp.PyArray_DATA(Wa)
    cdef const float *xp = &X[0, 0]
    cdef float *yp = &Y[0, 0]
    import minibit.kernels as kernels
    cdef int64_t ntiles = (N + TILE - 1) // TILE
    cdef int nth = max(1, min(kernels.get_threads(), ntiles)) if T * N * K >= MIN_PARALLEL_MAC else 1
    cdef int64_t chunk = max(1, ntiles // (8 * nth))
    cdef int64_t i, n1
    if K == 0:
        out[...] = 0
        return out
    if nth == 1:        # no parallel region: entering one costs microseconds per call
        with nogil:
            mbd_rows(xp, T, K, wp, code, N, 0, N, yp)
        return out
    for i in prange(ntiles, nogil=True, num_threads=nth, schedule="dynamic", chunksize=chunk):
        n1 = (i + 1) * TILE
        if n1 > N:
            n1 = N
        mbd_rows(xp, T, K, wp, code, N, i * TILE, n1, yp)
    return out
