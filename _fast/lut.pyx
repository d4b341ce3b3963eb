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
from libc.string cimport memset

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


cdef enum:                      # the three kernels a Job runs
    TL1 = 1
    TL2 = 2
    TMAC = 3


ctypedef struct Tables:         # one kind of lookup table, for every token of a call
    int16_t *L                  # int16 entries [T][n][16]
    uint8_t *P                  # their low/high byte planes [T][n][32] (the AVX2 loops)
    int64_t n, nL, nP           # tables per token; elements from one token's L / P to the next


ctypedef struct Job:
    int kind                    # TL1, TL2 or TMAC
    const uint8_t *d            # the packed weights (TMAC: its bit planes)
    const int8_t *q             # activations [T][K]
    const int32_t *sq           # TMAC: sum of each token's q
    Tables A                    # TL1 pairs, TL2 triplets, TMAC 4-bit groups
    Tables B                    # TL2 pairs of the last two_k columns (else none: n = 0)
    int32_t *o                  # R [T][M]
    int64_t T, M, K, BM, BK, bm, KB
    int simd


cdef object _tables(Py_ssize_t T, Py_ssize_t n, Tables *tab):
    """Zeroed tables and planes for T tokens of n tables each, pointed to by tab; returns the
    arrays, which the caller keeps alive while tab is in use."""
    L = np.zeros((max(T, 1), max(n, 1), 16), dtype=np.int16)
    P = np.zeros((max(T, 1), max(n, 1), 32), dtype=np.uint8)
    tab.L, tab.P = <int16_t *>cnp.PyArray_DATA(L), <uint8_t *>cnp.PyArray_DATA(P)
    tab.n, tab.nL, tab.nP = n, L.shape[1] * 16, P.shape[1] * 32
    return L, P


cdef void _build(const Job *j) noexcept nogil:
    """Every token's tables for the job's kernel, and their byte planes when the AVX2 loops
    run (TL1 with bm = 32 wants its planes in the lane order of mb_planes_tl1_bm32)."""
    cdef int64_t t
    cdef const int8_t *q
    cdef int16_t *LA
    cdef uint8_t *PA
    for t in range(j.T):
        q, LA, PA = j.q + t * j.K, j.A.L + t * j.A.nL, j.A.P + t * j.A.nP
        if j.kind == TL1:
            mb_pair_table(q, j.A.n, LA)
        elif j.kind == TL2:
            mb_triplet_table(q, j.A.n, LA)
            if j.B.n:
                mb_pair_table(q + 3 * j.A.n, j.B.n, j.B.L + t * j.B.nL)
        else:
            mb_tmac_table(q, j.K, j.A.n, LA)
        if not j.simd:
            continue
        if j.kind == TL1 and j.bm == 32:
            mb_planes_tl1_bm32(LA, j.A.n // 4, PA)
        else:
            mb_planes(LA, j.A.n, PA)
        if j.kind == TL2:
            mb_planes(j.B.L + t * j.B.nL, j.B.n, j.B.P + t * j.B.nP)


cdef void _tiles(void *ctx, int64_t i0, int64_t i1) noexcept nogil:
    """Output tiles [i0, i1) of the job at ctx, for every token."""
    cdef const Job *j = <const Job *>ctx
    cdef const Tables *A = &j.A
    cdef const Tables *B = &j.B
    cdef int64_t tile, t
    for tile in range(i0, i1):
        for t in range(j.T):
            if j.kind == TL1:
                mb_tl1_tile(j.d, A.L + t * A.nL, A.P + t * A.nP, j.M, j.K, j.BM, j.BK, j.bm,
                            tile, j.o + t * j.M, j.simd)
            elif j.kind == TL2:
                mb_tl2_tile(j.d, A.L + t * A.nL, B.L + t * B.nL, A.P + t * A.nP,
                            B.P + t * B.nP, j.M, j.K, j.BM, j.BK, tile, j.o + t * j.M, j.simd)
            else:
                mb_tmac_block(j.d, A.L + t * A.nL, A.P + t * A.nP, j.M, j.KB, j.sq[t], tile,
                              j.o + t * j.M, j.simd)


cdef object _run(Job *job, q, Py_ssize_t na, Py_ssize_t nb, Py_ssize_t nitems):
    """The steps every kernel shares, once its job holds the weights and the shape: int32 R
    [T, M] for q [T, K]; na tables A and nb tables B per token (_build); the shared pool
    over nitems output units (_tiles).  Each output row is one thread's integers."""
    cdef Py_ssize_t T = q.shape[0]
    R = np.zeros((T, job.M), dtype=np.int32)
    if T == 0:
        return R
    keep = _tables(T, na, &job.A)
    if job.kind == TL2:
        keep_b = _tables(T, nb, &job.B)
    else:
        memset(&job.B, 0, sizeof(Tables))
    cdef const int8_t[:, ::1] qv = q
    cdef int32_t[:, ::1] o = R
    job.q, job.o, job.T, job.simd = &qv[0, 0], &o[0, 0], T, _simd_on()
    cdef int nth = _threads()
    with nogil:
        _build(job)
        mb_parallel(_tiles, job, nitems, nth)
    return R


def tl1_integer(q, p):
    """int8 q [T, K] and a "tl1" Packed [M, K] -> int32 R [T, M]; see minibit.kernels.lut."""
    M, K, BM, BK, bm, data = _ref._check_tl(p, "tl1")
    q = _ref._check_q(q, K)
    cdef const uint8_t[::1] d = data
    cdef Job job
    job.kind, job.d, job.M, job.K, job.BM, job.BK, job.bm = TL1, &d[0], M, K, BM, BK, bm
    return _run(&job, q, K // 2, 0, M // BM)


def tl2_integer(q, p):
    """int8 q [T, K] and a "tl2" Packed [M, K] -> int32 R [T, M]; see minibit.kernels.lut."""
    M, K, BM, BK, bm, data = _ref._check_tl(p, "tl2")
    q = _ref._check_q(q, K)
    three_k, two_k = _tl2.split_k(K, BK)
    cdef const uint8_t[::1] d = data
    cdef Job job
    job.kind, job.d, job.M, job.K, job.BM, job.BK = TL2, &d[0], M, K, BM, BK
    return _run(&job, q, three_k // 3, two_k // 2, M // BM)


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
    sums = q.sum(axis=1, dtype=np.int32)
    cdef const uint8_t[:, :, :, ::1] W = P_in
    cdef const int32_t[::1] sq = sums
    cdef Job job
    job.kind, job.d, job.sq = TMAC, &W[0, 0, 0, 0], &sq[0]
    job.M, job.K, job.KB = int(rows), q.shape[1], P_in.shape[2]
    return _run(&job, q, 2 * P_in.shape[2], 0, P_in.shape[0])
