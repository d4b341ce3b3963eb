# cython: language_level=3
"""Twin of minibit/kernels/lut.py: TL1, TL2 and T-MAC table kernels straight from the bytes.

Per call: the arguments are checked by the reference's own check functions (same
FormatError), the tables of every token are built once (int16 [n][16], plus their low/high
byte planes for the AVX2 path), then the shared pool of ``mb_rt.h`` runs the output tiles
(TL: BM rows; T-MAC: 32 rows) through the C loops of ``lut_kernels.h`` without the GIL.
Each output row is computed by one thread from integers only, so the result is the same for
any thread count and for the scalar and AVX2 versions.  Threads:
``minibit.kernels.get_threads()``; SIMD: the twins' shared switch.
"""

import numpy as np
cimport numpy as cnp
from libc.stdint cimport int8_t, int16_t, int32_t, uint8_t, int64_t

from minibit._errors import FormatError
from minibit.formats import tl2 as _tl2
from minibit.formats._packed import Packed, check_codes
from minibit.kernels import lut as _ref
from minibit import _backend, quant as _quant

cnp.import_array()

include "mb_rt.pxi"

cdef extern from "lut_kernels.h" nogil:
    int mb_have_avx2()
    void mb_pair_table(const int8_t *q, int64_t n, int16_t *L)
    void mb_triplet_table(const int8_t *q, int64_t n, int16_t *L)
    void mb_tmac_table(const int8_t *q, int64_t K, int64_t G, int16_t *L)
    void mb_planes(const int16_t *L, int64_t n, uint8_t *P)
    void mb_planes_tl1_bm32(const int16_t *L, int64_t ngroups, uint8_t *P)
    void mb_tl1_tile(const uint8_t *data, const int16_t *L, const uint8_t *P, int64_t M,
                     int64_t K, int64_t BM, int64_t BK, int64_t bm, int64_t t, int32_t *out,
                     int simd)
    void mb_tl2_tile(const uint8_t *data, const int16_t *L3, const int16_t *L2,
                     const uint8_t *P3, const uint8_t *P2, int64_t M, int64_t K, int64_t BM,
                     int64_t BK, int64_t t, int32_t *out, int simd)
    void mb_tmac_block(const uint8_t *planes, const int16_t *L, const uint8_t *P, int64_t N,
                       int64_t KB, int32_t sumq, int64_t nb, int32_t *out, int simd)

TWINNED = _ref.TWINNED

cdef inline int _simd_on() noexcept nogil:
    """The shared switch, and the AVX2 loops compiled in (lut_kernels.h)."""
    return mb_simd() and mb_have_avx2()


def _use_simd(flag=None):
    """Query (no argument) or set whether the AVX2 loops run; False forces the scalar loops.

    The twins' shared switch (``_set_simd``); True on a CPU without AVX2 keeps the scalar
    loops.  For tests and benchmarks.
    """
    if flag is not None:
        _set_simd(bool(flag))
    return bool(_simd_on())


ctypedef struct Job:
    int kind                 # 1: TL1, 2: TL2, 3: T-MAC
    const uint8_t *d
    const int16_t *L
    const int16_t *L2
    const uint8_t *P
    const uint8_t *P2
    const int32_t *sq
    int32_t *o
    int64_t T, M, K, BM, BK, bm, nL, nL2, nP, nP2, KB
    int simd


cdef void _tiles(void *ctx, int64_t i0, int64_t i1) noexcept nogil:
    """Output tiles [i0, i1) of the job at ctx, for every token (row t of L/P at t * n)."""
    cdef const Job *j = <const Job *>ctx
    cdef int64_t tile, t
    for tile in range(i0, i1):
        for t in range(j.T):
            if j.kind == 1:
                mb_tl1_tile(j.d, j.L + t * j.nL, j.P + t * j.nP, j.M, j.K, j.BM, j.BK, j.bm,
                            tile, j.o + t * j.M, j.simd)
            elif j.kind == 2:
                mb_tl2_tile(j.d, j.L + t * j.nL, j.L2 + t * j.nL2, j.P + t * j.nP,
                            j.P2 + t * j.nP2, j.M, j.K, j.BM, j.BK, tile, j.o + t * j.M, j.simd)
            else:
                mb_tmac_block(j.d, j.L + t * j.nL, j.P + t * j.nP, j.M, j.KB, j.sq[t], tile,
                              j.o + t * j.M, j.simd)


cdef object _empty16(Py_ssize_t T, Py_ssize_t n):
    return np.zeros((max(T, 1), max(n, 1), 16), dtype=np.int16)


cdef object _empty_planes(Py_ssize_t T, Py_ssize_t n):
    return np.zeros((max(T, 1), max(n, 1), 32), dtype=np.uint8)


def tl1_integer(q, p):
    """int8 q [T, K] and a "tl1" Packed [M, K] -> int32 R [T, M]; see minibit.kernels.lut."""
    M_, K_, BM_, BK_, bm_, data_ = _ref._check_tl(p, "tl1")
    q = _ref._check_q(q, K_)
    cdef Py_ssize_t T = q.shape[0], M = M_, K = K_, BM = BM_, BK = BK_, bm = bm_
    cdef Py_ssize_t npair = K // 2, ntile = M // BM, t, tile
    R = np.zeros((T, M), dtype=np.int32)
    if T == 0:
        return R
    L_ = _empty16(T, npair)
    P_ = _empty_planes(T, npair)
    cdef const int8_t[:, ::1] qv = q
    cdef const uint8_t[::1] d = data_
    cdef int16_t[:, :, ::1] L = L_
    cdef uint8_t[:, :, ::1] P = P_
    cdef int32_t[:, ::1] o = R
    cdef int simd = _simd_on(), nth = _threads()
    cdef Job job
    with nogil:
        for t in range(T):
            mb_pair_table(&qv[t, 0], npair, &L[t, 0, 0])
            if simd:
                if bm == 32:
                    mb_planes_tl1_bm32(&L[t, 0, 0], npair // 4, &P[t, 0, 0])
                else:
                    mb_planes(&L[t, 0, 0], npair, &P[t, 0, 0])
        job.kind, job.d, job.L, job.P, job.o = 1, &d[0], &L[0, 0, 0], &P[0, 0, 0], &o[0, 0]
        job.T, job.M, job.K, job.BM, job.BK, job.bm = T, M, K, BM, BK, bm
        job.nL, job.nP, job.simd = L.shape[1] * 16, P.shape[1] * 32, simd
        mb_parallel(_tiles, &job, ntile, nth)
    return R


def tl2_integer(q, p):
    """int8 q [T, K] and a "tl2" Packed [M, K] -> int32 R [T, M]; see minibit.kernels.lut."""
    M_, K_, BM_, BK_, bm_, data_ = _ref._check_tl(p, "tl2")
    q = _ref._check_q(q, K_)
    three_k_, two_k_ = _tl2.split_k(K_, BK_)
    cdef Py_ssize_t T = q.shape[0], M = M_, K = K_, BM = BM_, BK = BK_
    cdef Py_ssize_t three_k = three_k_, ntrip = three_k_ // 3, npair = two_k_ // 2
    cdef Py_ssize_t ntile = M // BM, t, tile
    R = np.zeros((T, M), dtype=np.int32)
    if T == 0:
        return R
    L3_, L2_ = _empty16(T, ntrip), _empty16(T, npair)
    P3_, P2_ = _empty_planes(T, ntrip), _empty_planes(T, npair)
    cdef const int8_t[:, ::1] qv = q
    cdef const uint8_t[::1] d = data_
    cdef int16_t[:, :, ::1] L3 = L3_
    cdef int16_t[:, :, ::1] L2 = L2_
    cdef uint8_t[:, :, ::1] P3 = P3_
    cdef uint8_t[:, :, ::1] P2 = P2_
    cdef int32_t[:, ::1] o = R
    cdef int simd = _simd_on(), nth = _threads()
    cdef Job job
    with nogil:
        for t in range(T):
            mb_triplet_table(&qv[t, 0], ntrip, &L3[t, 0, 0])
            if npair:
                mb_pair_table(&qv[t, three_k], npair, &L2[t, 0, 0])
            if simd:
                mb_planes(&L3[t, 0, 0], ntrip, &P3[t, 0, 0])
                mb_planes(&L2[t, 0, 0], npair, &P2[t, 0, 0])
        job.kind, job.d, job.o = 2, &d[0], &o[0, 0]
        job.L, job.L2, job.P, job.P2 = &L3[0, 0, 0], &L2[0, 0, 0], &P3[0, 0, 0], &P2[0, 0, 0]
        job.nL, job.nL2 = L3.shape[1] * 16, L2.shape[1] * 16
        job.nP, job.nP2 = P3.shape[1] * 32, P2.shape[1] * 32
        job.T, job.M, job.K, job.BM, job.BK, job.simd = T, M, K, BM, BK, simd
        mb_parallel(_tiles, &job, ntile, nth)
    return R


def tl_integer(q, p):
    """tl1_integer or tl2_integer, by p.fmt."""
    fmt = getattr(p, "fmt", None)
    if fmt == "tl1":
        return tl1_integer(q, p)
    if fmt == "tl2":
        return tl2_integer(q, p)
    raise FormatError(f"lut: the TL kernels run 'tl1' or 'tl2' tensors, got {fmt!r}")


def tl_output(R, s, scale):
    """y = (float)R / s * scale in float32 (the reference's NumPy ops are already the C ops)."""
    return _ref.tl_output(R, s, scale)


def linear_tl(x, p):
    """float32 x [T, K] and a "tl1"/"tl2" Packed -> float32 y [T, M]; see minibit.kernels.lut."""
    if not isinstance(p, Packed):
        raise FormatError(f"linear_tl: expected a minibit.formats.Packed, got {type(p).__name__}")
    scale = _ref._weight_scale(p)
    qmod = _backend.fast_module("quant") or _quant
    q, s = qmod.quantize_act_tl(x)                     # [T, K] int8, [T] float32
    return tl_output(tl_integer(q, p), s, scale)


def tmac_pack(codes):
    """int8 ternary codes [N, K] -> uint8 planes [ceil(N/32), 2, ceil(K/8), 32]."""
    c = check_codes(codes)
    cdef const int8_t[:, ::1] cv = c
    cdef Py_ssize_t N = c.shape[0], K = c.shape[1]
    cdef Py_ssize_t NB = (N + 31) // 32, KB = (K + 7) // 8
    out = np.empty((NB, 2, KB, 32), dtype=np.uint8)
    cdef uint8_t[:, :, :, ::1] o = out
    cdef Py_ssize_t nb, j, r, i, n, k
    cdef int code, b0, b1
    with nogil:
        for nb in range(NB):
            for j in range(KB):
                for r in range(32):
                    n = 32 * nb + r
                    b0 = 0
                    b1 = 0
                    for i in range(8):
                        k = 8 * j + i
                        code = (cv[n, k] + 1) if (n < N and k < K) else 1
                        b0 = b0 | ((code & 1) << i)
                        b1 = b1 | ((code >> 1) << i)
                    o[nb, 0, j, r] = <uint8_t>b0
                    o[nb, 1, j, r] = <uint8_t>b1
    return out


def tmac_integer(q, planes, rows):
    """int8 q [T, K], tmac_pack planes, rows N -> int32 [T, N] = codes @ q.T exactly."""
    q = _ref._check_q(q)
    P_in = _ref._check_planes(planes, rows, q.shape[1])
    cdef Py_ssize_t T = q.shape[0], K = q.shape[1], N = int(rows)
    cdef Py_ssize_t NB = P_in.shape[0], KB = P_in.shape[2], G = 2 * KB, t, nb
    R = np.zeros((T, N), dtype=np.int32)
    if T == 0:
        return R
    sums = q.sum(axis=1, dtype=np.int32)
    L_, P_ = _empty16(T, G), _empty_planes(T, G)
    cdef const int8_t[:, ::1] qv = q
    cdef const uint8_t[:, :, :, ::1] W = P_in
    cdef const int32_t[::1] sq = sums
    cdef int16_t[:, :, ::1] L = L_
    cdef uint8_t[:, :, ::1] P = P_
    cdef int32_t[:, ::1] o = R
    cdef int simd = _simd_on(), nth = _threads()
    cdef Job job
    with nogil:
        for t in range(T):
            mb_tmac_table(&qv[t, 0], K, G, &L[t, 0, 0])
            if simd:
                mb_planes(&L[t, 0, 0], G, &P[t, 0, 0])
        job.kind, job.d, job.L, job.P, job.sq, job.o = 3, &W[0, 0, 0, 0], &L[0, 0, 0], &P[0, 0, 0], &sq[0], &o[0, 0]
        job.T, job.M, job.KB, job.simd = T, N, KB, simd
        job.nL, job.nP = L.shape[1] * 16, P.shape[1] * 32
        mb_parallel(_tiles, &job, NB, nth)
    return R
