"""v0 — decode, then a float matmul: the yardstick every other kernel is checked against.

The idea
--------
Unpack the ternary codes with the format's own decoder (``formats.unpack_codes``), turn the
codes and the int8 activations into float32, and let BLAS multiply.  Every number involved
is a small integer and every partial sum is an integer below 2^24, which float32 holds
exactly, so the float matmul *is* the integer product, whatever order BLAS adds in.

Worked example (one row, K = 4)::

    w = [+1, 0, -1, +1] -> [1., 0., -1., 1.]     q = [10, -3, 7, 1] -> [10., -3., 7., 1.]
    w . q = 10 - 0 - 7 + 1 = 4.0  (exact in float32)  ->  R = 4 (int32)

Exactness bound: |partial sum| <= 128 * K (|w| <= 1, |q| <= 128), so float32 is exact for
K < 2^17; longer rows use float64 (exact up to 2^45).

The profile then decides what is multiplied and how R goes back to float (see
``minibit.kernels``):

* "hf", and "bitnet.cpp" on tl1/tl2:  y = (float)R / s * scale
* "bitnet.cpp" on i2_s / hf_packed: bitnet.cpp's AVX2 kernel keeps partial sums of
  code * q (code = w + 1) in int16 lanes that wrap (mad.py explains).  v0 reproduces that
  with the same float matmul against activations spread over lanes: lane l of 4096-column
  group g sums columns 2l, 2l + 1 of every 32-column chunk of the group, so each token's
  q goes into 16 G columns, one per (group, lane), zero elsewhere.  The matmul gives every
  lane's exact sum (|sum| <= 65536, exact in float32), which is wrapped to int16 as the
  kernel's adds leave it; y = ((float)R' - (float)sums) / s * scale.
* "llama.cpp" on tq1_0/tq2_0: one float matmul per (256-block, AVX2 lane) gives the eight
  lane sums of llama.cpp's AVX2 kernel (kernels/tq.py), code * q over the lane's elements
  minus the block's 32-element chunk sums of q; each lane is scaled and added in block
  order (fused into one fmaf for "llama.cpp", apart for "bitnet.cpp": tq.py), and the lanes
  meet in hsum_float_8's order.
"""

from __future__ import annotations

import numpy as np

from .._errors import FormatError
from ..formats import Packed, unpack_codes
from .mad import wrap_int16
from .dense import fmaf

__all__ = ["integer_product", "lane_product", "block_sums", "apply"]

LANES, GROUP_COLS = 16, 4096


def _float_for(K: int):
    """float32 when every partial sum of K products (|.| <= 128 each) is exact in it."""
    return np.float32 if 128 * K < 2 ** 24 else np.float64


def integer_product(codes: np.ndarray, q: np.ndarray) -> np.ndarray:
    """R = q . w exactly, through a float matmul: int8 [T, K] x int8 [N, K] -> int32 [T, N]."""
    f = _float_for(codes.shape[1])
    R = q.astype(f) @ codes.astype(f).T                                   # [T, K] · [K, N] -> [T, N] float
    return R.astype(np.int32)


def lane_product(codes: np.ndarray, q: np.ndarray) -> np.ndarray:
    """R' = sum (w + 1) * q through bitnet.cpp's wrapping int16 lanes, via one float matmul.

    int8 w [N, K] (K % 128 == 0), int8 q [T, K] -> int32 [T, N].  Column k feeds lane
    (k % 32) // 2 of group k // 4096; spreading each token's activations over those 16 G
    (group, lane) columns turns one float matmul into every lane's exact sum.
    """
    N, K = codes.shape
    T = q.shape[0]
    G = -(-K // GROUP_COLS)
    k = np.arange(K)
    col = (k // GROUP_COLS) * LANES + (k % 32) // 2                        # [K] (group, lane) of k
    w = codes.astype(np.float32)                                           # [N, K] float32 w
    out = np.empty((T, N), dtype=np.int32)
    # A token none of whose lanes can leave int16 needs no lanes: |lane| <= 2 * sum |q| over
    # the lane's columns (codes <= 2), so below 2^15 the wrap is the identity and R' is one
    # plain product (exact: partial sums below 256 K < 2^24).  This is most decode steps.
    bound = np.zeros((T, G * LANES), dtype=np.int64)
    np.add.at(bound, (slice(None), col), np.abs(q.astype(np.int64)))
    safe = (2 * bound.max(axis=1) < 2 ** 15) & (256 * K < 2 ** 24)
    if safe.any():                                      # sum (w + 1) q = sum w q + sum q
        qs = q[safe]
        R = (qs.astype(np.float32) @ w.T).astype(np.int32)                 # [t, K] · [K, N] exact
        out[safe] = R + qs.sum(axis=1, dtype=np.int32)[:, None]
    rest = np.flatnonzero(~safe)
    if rest.size:
        Tr = rest.size
        spread = np.zeros((K, Tr, G * LANES), dtype=np.float32)            # [K, t, 16G] float32
        spread[k, :, col] = q[rest].T                                      # q[t, k] -> its lane
        lanes = (w + 1) @ spread.reshape(K, Tr * G * LANES)                # [N, K] · [K, t·16G] -> exact
        lanes = lanes.reshape(N, Tr, G * LANES).transpose(1, 0, 2)         # [t, N, 16G] float32
        wrapped = wrap_int16(lanes)                                        # int16 wrap, as the kernel
        out[rest] = wrapped.sum(axis=2, dtype=np.int64).astype(np.int32)   # [t, N] int32
    return out


def block_sums(codes: np.ndarray, q: np.ndarray) -> np.ndarray:
    """sumi per 256-block via one float matmul per block: -> int32 [T, N, K/256]."""
    N, K = codes.shape
    T, nb = q.shape[0], K // 256
    c = codes.astype(np.float32).reshape(N, nb, 256).transpose(1, 2, 0)   # [nb, 256, N]
    x = q.astype(np.float32).reshape(T, nb, 256).transpose(1, 0, 2)       # [nb, T, 256]
    return (x @ c).transpose(1, 2, 0).astype(np.int32)                     # [nb, T, N] -> [T, N, nb]


def apply(p: Packed, profile: str, acts: dict) -> np.ndarray:
    """Decode p, multiply in float, scale as the profile says -> float32 [T, rows]."""
    rows, cols = p.shape
    codes, scale = unpack_codes(p)                                         # int8 [N, K], scale(s)
    q = acts["q"]                                                          # int8 [T, K]
    if p.fmt in ("tq1_0", "tq2_0"):
        if profile not in ("llama.cpp", "bitnet.cpp"):
            raise FormatError(f"v0: {p.fmt} runs the 'llama.cpp' or 'bitnet.cpp' profile, "
                              f"not {profile!r}")
        T, nb = q.shape[0], cols // 256
        qf = q.astype(np.float32).reshape(T, nb, 8, 8, 4)                  # e = 32 j + 4 k + i
        cf = (codes.astype(np.float32) + 1).reshape(rows, nb, 8, 8, 4)     # code = w + 1
        chunk = qf.sum(axis=(3, 4))                                        # [T, nb, 8]: exact
        d = acts["d"]                                                      # [T, nb] float32
        sumf = np.zeros((T, rows, 8), dtype=np.float32)
        for b in range(nb):                                                # block order
            lanes = np.stack([qf[:, b, :, k, :].reshape(T, -1) @ cf[:, b, :, k, :].reshape(rows, -1).T
                              for k in range(8)], axis=-1) - chunk[:, None, b, :]   # [T, N, 8]
            dd = d[:, b, None] * scale[None, :, b]                         # [T, N] d_act * d_w
            if profile == "llama.cpp":                                     # gcc fuses (tq.py)
                sumf = fmaf(lanes, dd[..., None], sumf)
            else:
                sumf = lanes * dd[..., None] + sumf                        # mul, then add
        s4 = sumf[..., 4:8] + sumf[..., 0:4]                               # hsum_float_8
        return (s4[..., 0] + s4[..., 2]) + (s4[..., 1] + s4[..., 3])
    s = acts["s"]                                                          # [T] float32
    if profile == "bitnet.cpp" and p.fmt in ("i2_s", "hf_packed"):
        if cols % 128:
            raise FormatError(f"{p.fmt}: the bitnet.cpp profile runs I2_S's 128-column blocks; "
                              f"a row length of {cols} is not a multiple of 128")
        Rc = lane_product(codes, q)                                        # [T, N] int32
        diff = Rc.astype(np.float32) - acts["sums"].astype(np.float32)[:, None]
        return diff / s[:, None] * np.float32(scale)                       # [T, N] float32
    if profile == "hf" and p.hf_linear:               # "autobitlinear": transformers' float F.linear
        from .float_ternary import hf_linear
        return hf_linear(p, q, s)
    if profile == "hf" and p.fmt == "hf_packed":      # "bitlinear": R / (weight_scale * s)
        from ..formats.hf_packed import hf_scales
        s, scale = hf_scales(p, s)
    if profile in ("hf", "bitnet.cpp"):
        R = integer_product(codes, q)                                      # [T, N] int32
        with np.errstate(invalid="ignore"):                                # TL: s = inf on zero rows
            return R.astype(np.float32) / s[:, None] * np.float32(scale)   # [T, N] float32
    raise FormatError(f"v0: profile {profile!r} is not supported on {p.fmt!r}")
