"""v1 — int8 multiply-add: the packed 2-bit codes times int8 activations, summed in integers.

The idea
--------
Never turn the weights into floats.  A code is w + 1 in {0, 1, 2}: an *unsigned* byte once
shifted out of the packed byte, so one instruction (x86 ``maddubs``: unsigned u8 x signed
s8, adjacent pairs added into an int16) multiplies 32 codes by 32 int8 activations.  The
sum of code * q over a row is R' = sum w*q + sum q, so the exact product is R' minus the
activation sum (computed once per token).  This is bitnet.cpp's MAD kernel
(``ggml_vec_dot_i2_i8_s``, facts/bitnet_cpp.md §3).

Worked example (one row, K = 4)::

    w = [+1, 0, -1, +1]  ->  codes = w + 1 = [2, 1, 0, 2]     q = [10, -3, 7, 1]
    maddubs pairs: 2*10 + 1*(-3) = 17,  0*7 + 2*1 = 2          (two int16 lanes)
    R' = 17 + 2 = 19;   sum q = 15;   R = R' - sum q = 4 = 10 + 0 - 7 + 1

Lanes, widths, and the wrap that only bitnet.cpp has
---------------------------------------------------
Columns go in chunks of 32; int16 lane l (0..15) of a chunk holds the pair of columns
32j + 2l, 32j + 2l + 1 (for I2_S: block b, sub-block g is chunk j = 4b + g).  A pair is at
most 2 * 3 * 128 = 768 in magnitude (code 3 never comes from a packer, but the bytes allow
it), so maddubs never saturates.  The lanes then add up chunk after chunk in int16:

* profile "bitnet.cpp" (``lane_product``): exactly as the AVX2 kernel, each lane sums the
  chunks of a group of 32 blocks (128 chunks, 4096 columns, counted from the row start)
  in int16 with wrap-around, then widens to int32 (``madd_epi16(acc, 1)``) and the groups
  add in int32.  A lane can reach 128 * 512 = 65536 in magnitude (every code 2 with every
  |q| near 128): it wraps, and bitnet.cpp gets a different number.  minibit reproduces it.
  Because int16 addition is addition modulo 2^16, the order of the adds inside a group
  does not matter: the lane ends at (exact sum of the group) mod 2^16, read as signed.
  That is how this reference computes it (``lane_sums``, then one wrap per lane), and
  why the twin may order its adds differently and still give the same bits.
* profile "hf" (``integer_product``): the exact int32 sum of w*q.  The twin widens every
  32 chunks, where no lane can wrap (32 * 768 < 32768), so it is exact.

Back to float32, one rounding per step, in this order::

    hf:          y = (float)R / s * scale
    bitnet.cpp:  y = ((float)R' - (float)sums) / s * scale         (old fork ggml.c:12490)

(bitnet.cpp converts R' and the activation sum to float before subtracting; while both are
below 2^24 in magnitude, i.e. K <= 65536, that equals (float)(R' - sums).)

Layouts: ``i2_s`` (a flat run of 32-byte blocks, first sub-block in the high bits) and
``hf_packed`` (byte [p, c] holds rows p, R+p, 2R+p, 3R+p of column c, in bits 0-1 .. 6-7).
The integer functions below read both straight from the bytes.

Twinned functions (``_fast/mad.pyx`` has the same names, signatures and bits):
``integer_product``, ``lane_product``, ``linear_hf``, ``linear_i2s``.
"""

from __future__ import annotations

import sys

import numpy as np

from .. import _backend
from .._errors import FormatError
from ..formats import Packed
from ..formats._packed import check_data

__all__ = ["integer_product", "lane_product", "linear_hf", "linear_i2s", "linear_i2s_group", "lane_sums",
           "code_matrix", "check_args", "packed_args", "apply", "wrap_int16", "TWINNED"]

TWINNED = ("integer_product", "lane_product", "linear_hf", "linear_i2s", "linear_i2s_group")
LAYOUTS = ("i2_s", "hf_packed")
QK = 128             # I2_S block: 128 codes in 32 bytes
CHUNK = 32           # columns per maddubs (one 256-bit register of codes)
LANES = 16           # int16 lanes per chunk: lane l holds columns 2l, 2l+1
GROUP_COLS = 4096    # bitnet.cpp widens its int16 lanes every 32 blocks = 128 chunks


# ---- arguments ----------------------------------------------------------------------------

def check_args(data, rows, cols, layout, q, lanes: bool = False):
    """Validate the arrays a kernel reads -> (data uint8 C-contiguous, q int8 [T, cols]).

    Everything the compiled twin trusts without bounds checks is checked here: layout,
    shape, dtype, byte count, contiguity.  Raises FormatError.
    """
    if layout not in LAYOUTS:
        raise FormatError(f"mad: layout must be one of {LAYOUTS}, got {layout!r}")
    rows, cols = int(rows), int(cols)
    if rows <= 0 or cols <= 0:
        raise FormatError(f"mad: empty weight shape ({rows}, {cols})")
    if (layout == "i2_s" or lanes) and cols % QK:
        what = "i2_s" if layout == "i2_s" else "the bitnet.cpp profile (I2_S blocks)"
        raise FormatError(f"mad: {what} needs a row length that is a multiple of {QK}, "
                          f"got {cols}")
    d = check_data(data, layout, rows, cols)          # the format's own byte rule
    a = np.asarray(q)
    if a.dtype != np.int8 or a.ndim != 2 or a.shape[1] != cols:
        raise FormatError(f"mad: activations must be int8 [T, {cols}], got {a.dtype} {a.shape}")
    return d, np.ascontiguousarray(a)


def check_scales(T: int, s, sums=None):
    """s float32 [T] (and sums int32 [T]) as C-contiguous arrays, or FormatError."""
    s = np.asarray(s)
    if s.dtype != np.float32 or s.shape != (T,):
        raise FormatError(f"mad: activation scales must be float32 [{T}], got {s.dtype} {s.shape}")
    if sums is None:
        return np.ascontiguousarray(s), None
    u = np.asarray(sums)
    if u.dtype != np.int32 or u.shape != (T,):
        raise FormatError(f"mad: activation sums must be int32 [{T}], got {u.dtype} {u.shape}")
    return np.ascontiguousarray(s), np.ascontiguousarray(u)


def packed_args(p: Packed, profile: str):
    """(data, float32 scale) of a (valid) hf_packed or i2_s weight, for the profile."""
    rows, cols = p.shape
    if p.fmt == "i2_s":
        d = p.data
        scale = d[rows * cols // 4:rows * cols // 4 + 4].view("<f4")[0]
    elif p.fmt == "hf_packed":
        d = p.data
        scale = p.scale[0]
        if profile == "bitnet.cpp" and cols % QK:
            raise FormatError(f"hf_packed: the bitnet.cpp profile runs I2_S's 128-column blocks; "
                              f"a row length of {cols} is not a multiple of {QK}")
    else:
        raise FormatError(f"mad runs on hf_packed and i2_s weights, not {p.fmt!r}")
    return d, np.float32(scale)


# ---- the integer part -----------------------------------------------------------------------

def code_matrix(data, rows: int, cols: int, layout: str) -> np.ndarray:
    """uint8 codes [rows, cols] (w + 1, 0..3) exactly as the kernels read the bits."""
    if layout == "i2_s":
        body = data[:rows * cols // 4].reshape(-1, 32)                      # [n/128, 32] uint8
        planes = [(body >> np.uint8(sh)) & np.uint8(3) for sh in (6, 4, 2, 0)]   # sub-block g
        return np.stack(planes, axis=1).reshape(rows, cols)                 # [n/128, 4, 32]
    planes = [(data >> np.uint8(2 * i)) & np.uint8(3) for i in range(4)]    # chunk i: rows iR+p
    return np.concatenate(planes, axis=0)[:rows]                            # [4R, cols] -> [rows, cols]


def integer_product(data, rows, cols, layout, q):
    """R = sum_k w[n, k] * q[t, k], exact: int8 [T, cols] x packed -> int32 [T, rows] (twinned)."""
    data, q = check_args(data, rows, cols, layout, q)
    w = code_matrix(data, rows, cols, layout).astype(np.int32) - 1         # [N, K] int32 (w)
    return q.astype(np.int32) @ w.T                                        # [T, K] · [K, N] -> [T, N] int32


def lane_sums(data, rows, cols, layout, q):
    """Exact sum of code * q per (token, row, 32-block group, int16 lane): int32 [T, N, G, 16].

    Group g covers columns [4096 g, 4096 g + 4096) of a row (the last one may be shorter);
    lane l of every 32-column chunk holds columns 2l and 2l + 1.  These are the sums that
    bitnet.cpp's AVX2 kernel keeps in int16: any outside [-32768, 32767] wraps there.
    """
    data, q = check_args(data, rows, cols, layout, q, lanes=True)
    c = code_matrix(data, rows, cols, layout)                               # [N, K] uint8
    T, N, G = q.shape[0], rows, -(-cols // GROUP_COLS)
    out = np.empty((T, N, G, LANES), dtype=np.int32)
    for g in range(G):
        k0, k1 = g * GROUP_COLS, min(cols, (g + 1) * GROUP_COLS)
        nch = (k1 - k0) // CHUNK
        cg = c[:, k0:k1].reshape(N, nch, LANES, 2).astype(np.int32)        # [N, chunk, lane, pair]
        qg = q[:, k0:k1].reshape(T, nch, LANES, 2).astype(np.int32)        # [T, chunk, lane, pair]
        out[:, :, g] = np.einsum("tjle,njle->tnl", qg, cg)                 # -> [T, N, 16] int32
    return out


def wrap_int16(x) -> np.ndarray:
    """What an int16 lane holds after adding up exact integer sums ``x`` (ints, or floats that
    are whole numbers): x modulo 2^16 read as signed, widened to int32.  NumPy's astype wraps
    exactly as the C lanes do.  The one place minibit emulates an int16 lane (mad, lut, v0)."""
    return np.asarray(x).astype(np.int32).astype(np.int16).astype(np.int32)


def lane_product(data, rows, cols, layout, q):
    """R' = sum code * q through bitnet.cpp's AVX2 int16 lanes -> int32 [T, rows] (twinned).

    Each lane's group total wraps to int16 (modulo 2^16, signed), as the kernel's
    ``_mm256_add_epi16`` chain leaves it; then everything adds in int32 (wrapping too).
    """
    lanes = lane_sums(data, rows, cols, layout, q)                          # [T, N, G, 16] int32
    wrapped = wrap_int16(lanes)                                            # mod 2^16, sign-extended
    return wrapped.sum(axis=(2, 3), dtype=np.int64).astype(np.int32)       # [T, N] (int32 wrap)


# ---- back to float ------------------------------------------------------------------------

def linear_hf(data, rows, cols, layout, q, s, scale):
    """Profile "hf": y = (float)R / s * scale, float32 [T, rows] (twinned)."""
    R = integer_product(data, rows, cols, layout, q)                       # [T, N] int32
    s, _ = check_scales(R.shape[0], s)
    return R.astype(np.float32) / s[:, None] * np.float32(scale)           # [T, N] float32


def linear_i2s(data, rows, cols, layout, q, s, sums, scale):
    """Profile "bitnet.cpp": y = ((float)R' - (float)sums) / s * scale, float32 [T, rows] (twinned)."""
    Rc = lane_product(data, rows, cols, layout, q)                         # [T, N] int32
    s, sums = check_scales(Rc.shape[0], s, sums)
    diff = Rc.astype(np.float32) - sums.astype(np.float32)[:, None]        # [T, N] float32
    return diff / s[:, None] * np.float32(scale)                           # [T, N] float32


def linear_i2s_group(datas, rows, cols, layout, q, s, sums, scales):
    """linear_i2s of weights datas[i] ([rows[i], cols], scale scales[i]) on the same
    activations: a tuple of float32 [T, rows[i]], the same bits as one call per weight
    (twinned; the twin runs every weight's rows in one thread-pool job)."""
    from .tq import check_group
    datas, rows = check_group(datas, rows)
    scales = tuple(scales)
    if len(scales) != len(datas):
        raise FormatError(f"mad: {len(datas)} weights need as many scales, got {len(scales)}")
    return tuple(linear_i2s(a, r, cols, layout, q, s, sums, c)
                 for a, r, c in zip(datas, rows, scales))


# ---- entry point ----------------------------------------------------------------------------

def _impl():
    return _backend.select("mad", sys.modules[__name__])


def apply(p: Packed, profile: str, acts: dict) -> np.ndarray:
    """Run profile ``profile`` on weight p with quantized activations -> float32 [T, rows]."""
    if profile == "hf" and p.hf_linear:             # "autobitlinear": transformers' float F.linear
        from .float_ternary import hf_linear
        return hf_linear(p, acts["q"], acts["s"])
    data, scale = packed_args(p, profile)
    rows, cols = p.shape
    if profile == "hf":
        s = acts["s"]
        if p.fmt == "hf_packed":                    # "bitlinear": R / (weight_scale * s)
            from ..formats.hf_packed import hf_scales
            s, scale = hf_scales(p, s)
        return _impl().linear_hf(data, rows, cols, p.fmt, acts["q"], s, scale)
    if profile == "bitnet.cpp":
        return _impl().linear_i2s(data, rows, cols, p.fmt, acts["q"], acts["s"], acts["sums"],
                                  scale)
    raise FormatError(f"mad: profile {profile!r} is not one of 'hf', 'bitnet.cpp'")


def apply_group(ps, profile: str, acts: dict) -> list:
    """apply() of several weights with the same layout and row length on the same
    activations; the "bitnet.cpp" profile runs them as one thread-pool job in the twin
    (the same bits) -> [float32 [T, rows_i]]."""
    ps = list(ps)
    if profile != "bitnet.cpp" or len({(p.fmt, p.shape[1]) for p in ps}) != 1:
        return [apply(p, profile, acts) for p in ps]
    args = [packed_args(p, profile) for p in ps]
    return list(_impl().linear_i2s_group([a[0] for a in args], [p.shape[0] for p in ps],
                                         ps[0].shape[1], ps[0].fmt, acts["q"], acts["s"],
                                         acts["sums"], [a[1] for a in args]))
