"""TQ x Q8_K — llama.cpp's ternary dot products, block by block.

The idea
--------
llama.cpp keeps a scale per 256 weights (TQ1_0 / TQ2_0: fp16 ``d`` per block) and
quantizes activations per 256 values too (Q8_K: float ``d`` per block, ``q = x / d``).  So
the integer product cannot run along the whole row: each 256-block gives one int32 sum,
which is scaled by both block scales and added into a float32 total, block after block.
This is ``ggml_vec_dot_tq2_0_q8_K_generic`` / ``ggml_vec_dot_tq1_0_q8_K_generic``
(facts/formats.md §5.4).

Worked example (one block, 4 of its 256 values shown, the rest zero)::

    codes (w + 1) = [2, 1, 0, 2]   q = [10, -3, 7, 1]      d_w = 0.5 (fp16), d = -0.01
    sumi = 10*(+1) + (-3)*0 + 7*(-1) + 1*(+1) = 4            int32
    sumf = 0 + (float)4 * (d * d_w) = 4 * -0.005 = -0.02     float32, d * d_w first

Widths and order
----------------
* per block: sumi = sum_k q[k] * (code[k] - 1) in int32 (|sumi| <= 256 * 2 * 128: exact);
* then, in block order, starting from 0.0f: sumf += (float)sumi * (d_act * d_w), every
  operation a float32 rounding (product of the scales first, then the product with sumi,
  then the sum; no fused multiply-add).

That is the generic C order (``linear_q8k``).  llama.cpp's x86 AVX2 build runs another
one, and the "llama.cpp" profile follows it (``linear_q8k_avx2``): ``ggml_vec_dot_tq2_0_q8_K``
and ``ggml_vec_dot_tq1_0_q8_K`` (``ggml/src/ggml-cpu/arch/x86/quants.c``; in bitnet.cpp's 2024
fork ``ggml/src/ggml-quants.c``) keep 8 float lanes per row.  In each block, int32 lane k
(k = 0..7) holds

    L_k = sum of code_e * q_e over the block's elements e with (e mod 32) // 4 == k
          - (bsums[2k] + bsums[2k+1])          (= the sum of q over elements 32k .. 32k+31)

(maddubs pairs bytes into int16 lanes, madd pairs those into int32 lanes; the bsums are
subtracted lane-wise).  The lanes sum to the block's sumi; each one goes to float alone:

    sumf_k = fl(fl((float)L_k * fl(d_act * d_w)) + sumf_k)     block after block, k = 0..7
    y = (s0 + s2) + (s1 + s3) where s = (sumf_0..3) + (sumf_4..7)     (hsum_float_8)

bitnet.cpp's 2024 fork is built with clang, which keeps the product and the add apart; the
llama.cpp that llama-cpp-python builds with gcc fuses them, sumf_k = fmaf((float)L_k, dd,
sumf_k) (both read from the built libraries).  ``fused`` picks: the "bitnet.cpp" profile on
TQ files is the fork (apart), the "llama.cpp" profile is llama.cpp (fused).

Element orders are those of the formats (see ``formats/tq2_0.py`` and ``formats/tq1_0.py``):
the codes are read straight from the bytes here, without the format's validation, so a
TQ2_0 code 3 (no packer writes one) counts as w = 2, as in llama.cpp.

Twinned functions (``_fast/tq.pyx``): ``block_sums``, ``linear_q8k``, ``lane_sums``,
``linear_q8k_avx2``, ``linear_q8k_avx2_group`` (several weights, one input: q/k/v, gate/up;
the twin runs them as one thread-pool job).
"""

from __future__ import annotations

import sys

import numpy as np

from .. import _backend
from .._errors import FormatError
from ..formats import Packed
from ..formats._packed import check_data
from .dense import fmaf

__all__ = ["block_sums", "linear_q8k", "lane_sums", "linear_q8k_avx2", "linear_q8k_avx2_group",
           "code_blocks", "weight_scales", "check_args", "apply",
           "TWINNED"]

TWINNED = ("block_sums", "linear_q8k", "lane_sums", "linear_q8k_avx2", "linear_q8k_avx2_group")
QK_K = 256
BLOCK_BYTES = {"tq2_0": 66, "tq1_0": 54}


def check_args(data, rows, cols, fmt, q, d=None):
    """Validate the arrays a kernel reads -> (data uint8 [rows, nb*B], q int8 [T, cols], d).

    d (the Q8_K block scales) must be float32 [T, cols/256] when given.  Raises FormatError.
    """
    if fmt not in BLOCK_BYTES:
        raise FormatError(f"tq: format must be one of {tuple(BLOCK_BYTES)}, got {fmt!r}")
    rows, cols = int(rows), int(cols)
    if rows <= 0 or cols <= 0 or cols % QK_K:
        raise FormatError(f"tq: weight shape ({rows}, {cols}) needs rows > 0 and a row length "
                          f"that is a positive multiple of {QK_K}")
    nb = cols // QK_K
    a = check_data(data, fmt, rows, cols)               # the format's own byte rule
    x = np.asarray(q)
    if x.dtype != np.int8 or x.ndim != 2 or x.shape[1] != cols:
        raise FormatError(f"tq: activations must be int8 [T, {cols}], got {x.dtype} {x.shape}")
    if d is not None:
        d = np.asarray(d)
        if d.dtype != np.float32 or d.shape != (x.shape[0], nb):
            raise FormatError(f"tq: Q8_K scales must be float32 {(x.shape[0], nb)}, "
                              f"got {d.dtype} {d.shape}")
        d = np.ascontiguousarray(d)
    return a, np.ascontiguousarray(x), d


def _trits(plane: np.ndarray, count: int) -> np.ndarray:
    """TQ1_0 bytes [..., m] -> trits [..., count, m]: byte * 3^n mod 256, then (v * 3) >> 8."""
    mult = (3 ** np.arange(count)).astype(np.uint16)                        # 1, 3, 9, 27, 81
    v = (plane[..., None, :].astype(np.uint16) * mult[:, None]) & 0xFF      # wraps mod 256
    return ((v * 3) >> 8).astype(np.uint8)                                  # 0..2


def code_blocks(data, rows: int, cols: int, fmt: str) -> np.ndarray:
    """uint8 codes [rows, nb, 256] (w + 1) in element order, read straight from the bytes."""
    nb = cols // QK_K
    blk = data.reshape(rows, nb, BLOCK_BYTES[fmt])                          # [N, nb, B] uint8
    if fmt == "tq2_0":
        qs = blk[:, :, :64].reshape(rows, nb, 2, 1, 32)                     # [.., half, 1, m]
        sh = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(4, 1)
        return ((qs >> sh) & np.uint8(3)).reshape(rows, nb, QK_K)           # e = 128h + 32n + m
    a = _trits(blk[:, :, 0:32], 5).reshape(rows, nb, 160)                   # e = m + 32n
    b = _trits(blk[:, :, 32:48], 5).reshape(rows, nb, 80)                   # e = 160 + m + 16n
    h = _trits(blk[:, :, 48:52], 4).reshape(rows, nb, 16)                   # e = 240 + j + 4n
    return np.concatenate([a, b, h], axis=2)                                # [N, nb, 256]


def weight_scales(data, rows: int, cols: int, fmt: str) -> np.ndarray:
    """The fp16 block scales d_w as float32 [rows, nb] (the conversion is exact)."""
    nb, B = cols // QK_K, BLOCK_BYTES[fmt]
    raw = np.ascontiguousarray(data.reshape(rows, nb, B)[:, :, B - 2:])     # [N, nb, 2] uint8
    return raw.view("<f2")[..., 0].astype(np.float32)


def block_sums(data, rows, cols, fmt, q):
    """sumi[t, n, b] = sum over block b of q * (code - 1): int32 [T, rows, nb] (twinned)."""
    data, q, _ = check_args(data, rows, cols, fmt, q)
    T, nb = q.shape[0], cols // QK_K
    w = code_blocks(data, rows, cols, fmt).astype(np.int32) - 1             # [N, nb, 256] int32
    qb = q.reshape(T, nb, QK_K).astype(np.int32)                            # [T, nb, 256] int32
    return np.einsum("tbk,nbk->tnb", qb, w)                                 # -> [T, N, nb] int32


def linear_q8k(data, rows, cols, fmt, q, d):
    """Profile "llama.cpp": sum over blocks, in order, of (float)sumi * (d * d_w) (twinned).

    q, d: Q8_K activations (int8 [T, cols], float32 [T, nb]) -> float32 [T, rows].
    """
    data, q, d = check_args(data, rows, cols, fmt, q, d)
    sumi = block_sums(data, rows, cols, fmt, q)                             # [T, N, nb] int32
    dw = weight_scales(data, rows, cols, fmt)                               # [N, nb] float32
    return scale_blocks(sumi, d, dw)


def scale_blocks(sumi, d, dw) -> np.ndarray:
    """The float part of every TQ x Q8_K product (llama.cpp's order; v0 uses it too):
    int32 sumi [T, N, nb], float32 d [T, nb], d_w [N, nb] -> float32 [T, N]."""
    T, N, nb = sumi.shape
    sumf = np.zeros((T, N), dtype=np.float32)
    for b in range(nb):                                                     # block order
        dd = d[:, b, None] * dw[None, :, b]                                 # [T, N] float32
        sumf = sumf + sumi[:, :, b].astype(np.float32) * dd                 # [T, N] float32
    return sumf


def lane_sums(data, rows, cols, fmt, q):
    """L[t, n, b, k]: the AVX2 kernel's eight int32 lanes of block b (see the module
    docstring): int32 [T, rows, nb, 8] (twinned).  They add up to block_sums."""
    data, q, _ = check_args(data, rows, cols, fmt, q)
    T, nb = q.shape[0], cols // QK_K
    c = code_blocks(data, rows, cols, fmt).astype(np.int32)                # [N, nb, 256] code
    c = c.reshape(rows, nb, 8, 8, 4)                                        # e = 32 j + 4 k + i
    qb = q.reshape(T, nb, 8, 8, 4).astype(np.int32)                        # [T, nb, j, k, i]
    lanes = np.einsum("tbjki,nbjki->tnbk", qb, c)                          # sum code*q by lane
    chunk = qb.sum(axis=(3, 4))                                             # [T, nb, 8] q per 32
    return (lanes - chunk[:, None]).astype(np.int32)


def linear_q8k_avx2(data, rows, cols, fmt, q, d, fused=False):
    """TQ x Q8_K as the x86 AVX2 kernel adds: eight float lanes, then hsum_float_8 (module
    docstring); fused: each lane's product and add are one fmaf.  float32 [T, rows]
    (twinned)."""
    data, q, d = check_args(data, rows, cols, fmt, q, d)
    L = lane_sums(data, rows, cols, fmt, q).astype(np.float32)             # [T, N, nb, 8]
    dw = weight_scales(data, rows, cols, fmt)                               # [N, nb] float32
    T, N, nb, _ = L.shape
    sumf = np.zeros((T, N, 8), dtype=np.float32)
    for b in range(nb):                                                     # block order
        dd = d[:, b, None] * dw[None, :, b]                                 # [T, N] float32
        if fused:
            sumf = fmaf(L[:, :, b, :], dd[..., None], sumf)                # one rounding
        else:
            sumf = L[:, :, b, :] * dd[..., None] + sumf                     # mul, then add
    s = sumf[..., 4:8] + sumf[..., 0:4]
    return (s[..., 0] + s[..., 2]) + (s[..., 1] + s[..., 3])


def check_group(datas, rows) -> tuple:
    """datas, rows: sequences of the same positive length -> (tuple, tuple of int)."""
    datas, rows = tuple(datas), tuple(int(r) for r in rows)
    if not datas or len(datas) != len(rows):
        raise FormatError(f"a weight group needs as many row counts as weights (at least one), "
                          f"got {len(datas)} weights and {len(rows)} row counts")
    return datas, rows


def linear_q8k_avx2_group(datas, rows, cols, fmt, q, d, fused=False):
    """linear_q8k_avx2 of weights datas[i] ([rows[i], cols] each) on the same activations:
    a tuple of float32 [T, rows[i]], the same bits as one call per weight (twinned; the twin
    runs every weight's rows in one thread-pool job)."""
    datas, rows = check_group(datas, rows)
    return tuple(linear_q8k_avx2(a, r, cols, fmt, q, d, fused) for a, r in zip(datas, rows))


# ---- entry point ----------------------------------------------------------------------------

def _impl():
    return _backend.select("tq", sys.modules[__name__])


def apply(p: Packed, profile: str, acts: dict) -> np.ndarray:
    """Run the llama.cpp or bitnet.cpp profile on a TQ weight -> float32 [T, rows]."""
    if profile not in ("llama.cpp", "bitnet.cpp") or p.fmt not in BLOCK_BYTES:
        raise FormatError(f"tq runs the 'llama.cpp' and 'bitnet.cpp' profiles on tq1_0/tq2_0, "
                          f"not {profile!r} on {p.fmt!r}")
    rows, cols = p.shape
    return _impl().linear_q8k_avx2(p.data, rows, cols, p.fmt, acts["q"], acts["d"],
                                   profile == "llama.cpp")


def apply_group(ps, profile: str, acts: dict) -> list:
    """apply() of several TQ weights with the same format and row length on the same
    activations (one thread-pool job in the twin) -> [float32 [T, rows_i]]."""
    ps = list(ps)
    if (profile not in ("llama.cpp", "bitnet.cpp") or any(p.fmt not in BLOCK_BYTES for p in ps)
            or len({(p.fmt, p.shape[1]) for p in ps}) != 1):
        return [apply(p, profile, acts) for p in ps]
    return list(_impl().linear_q8k_avx2_group([p.data for p in ps], [p.shape[0] for p in ps],
                                              ps[0].shape[1], ps[0].fmt, acts["q"], acts["d"],
                                              profile == "llama.cpp"))
