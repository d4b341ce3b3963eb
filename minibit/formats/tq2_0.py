"""tq2_0: llama.cpp's 2-bit ternary type TQ2_0 (2.0625 bits per weight).

Matches ``quantize_row_tq2_0_ref`` / ``dequantize_row_tq2_0`` in llama.cpp
``ggml/src/ggml-quants.c`` and ``class TQ2_0`` in gguf-py ``gguf/quants.py`` (the byte
oracle the tests compare against).

Layout
------
Each row (length cols, a multiple of 256) is cut into blocks of 256 values; a block is 66
bytes: ``qs[64]`` then the fp16 scale ``d`` (little-endian).  Per block::

    d    = max |x|                        float32, stored as fp16 (round to nearest even)
    code = lroundf(x * (1/d)) + 1         in {0, 1, 2}; lroundf rounds half AWAY from zero
    element e (0..255) -> byte (e // 128) * 32 + e % 32, bits 2 * ((e % 128) // 32)

so the first 32 values of each 128-value half sit in the LOW bits (the opposite of I2_S).
An all-zero block has d = 0 and every code 1.  Dequantized value: (code - 1) * fp32(d).

The scale is per block, so TQ2_0 needs no absmean ternarization: feeding it an exactly
ternary matrix codes * scale gives d = scale in every block that has a nonzero code.

Worked example: a block whose values are x[e] = +d for e < 32, 0 for 32 <= e < 64 and
-d for 64 <= e < 256::

    codes: 2 (e < 32), 1 (e < 64), 0 otherwise
    qs[m] for m < 32   = 2 << 0 | 1 << 2 | 0 << 4 | 0 << 6 = 0x06
    qs[32 + m]         = 0 (all four values of that half are -d)
"""

from __future__ import annotations

import functools
import sys

import numpy as np

from .. import _backend
from .._errors import FormatError
from ._packed import Packed, check_codes, check_matrix, no_params

__all__ = ["quantize", "dequantize", "unpack", "encode", "decode", "pack_codes", "unpack_codes",
           "block_scales", "round_away", "QK_K", "BLOCK_BYTES"]
# the functions of the minibit._fast twin: same names, signatures and bytes
TWINNED = ("quantize", "unpack", "dequantize")

FMT = "tq2_0"
QK_K = 256
BLOCK_BYTES = 66
FP16_MAX = 65504.0


def round_away(v: np.ndarray) -> np.ndarray:
    """C ``lroundf``: round half away from zero (np.rint would round half to even).

    Written with an exact fractional part: ``floor(|v| + 0.5)`` would be wrong for
    |v| = 0.49999997, where the float32 sum itself rounds up to 1.0.
    """
    a = np.abs(v)
    whole = np.floor(a)
    return np.sign(v) * (whole + (a - whole >= 0.5))


def check_shape(fmt: str, rows: int, cols: int) -> None:
    if cols % QK_K:
        raise FormatError(f"{fmt}: row length {cols} is not a multiple of {QK_K} "
                          f"(ggml's TQ blocks hold 256 values of one row)")


def block_scales(fmt: str, w: np.ndarray):
    """Per-block d = max|x| and id = 1/d (0 for an empty block or when 1/d overflows),
    both float32 [rows, nb]."""
    rows, cols = w.shape
    d = np.abs(w.reshape(rows, cols // QK_K, QK_K)).max(axis=2)        # [rows, nb] float32
    if (d > FP16_MAX).any():
        r, b = (int(v) for v in np.argwhere(d > FP16_MAX)[0])
        raise FormatError(f"{fmt}: block {b} of row {r} has max|x| = {d[r, b]} which does not fit "
                          f"the format's fp16 scale (max {FP16_MAX})")
    with np.errstate(divide="ignore", over="ignore"):
        inv = (np.float32(1) / d).astype(np.float32)
    # d == 0: an empty block.  1/d = inf (d < 2^-128): ggml's lroundf(x * inf) is LONG_MIN
    # on x86, whose +1 leaves code 1 in the byte, and gguf-py casts a NaN (platform-defined).
    # minibit writes code 1 (value 0) for both; such a block's fp16 d is 0 anyway.
    inv = np.where(np.isfinite(inv), inv, np.float32(0)).astype(np.float32)
    return d, inv


def weight_blocks(fmt: str, w):
    """float32 [rows, cols] -> (x [rows, nb, 256] float32, d, inv): the checked matrix in
    blocks, with each block's scale and the float32 1/d it is quantized with (block_scales)."""
    w = check_matrix(w)
    rows, cols = w.shape
    check_shape(fmt, rows, cols)
    d, inv = block_scales(fmt, w)
    return w.reshape(rows, cols // QK_K, QK_K), d, inv


def byte_blocks(fmt: str, data, rows: int, cols: int, block_bytes: int) -> np.ndarray:
    """The bytes [rows, nb * block_bytes] as blocks [rows, nb, block_bytes] uint8 (the values
    are taken as bytes, as the twins take them), or FormatError for another shape."""
    check_shape(fmt, rows, cols)
    nb = cols // QK_K
    data = np.ascontiguousarray(data, dtype=np.uint8)
    if data.shape != (rows, nb * block_bytes):
        raise FormatError(f"{fmt}: data shape {data.shape}, expected {(rows, nb * block_bytes)}")
    return data.reshape(rows, nb, block_bytes)


def quantize(w):
    """float32 [rows, cols] -> uint8 [rows, cols/256 * 66], gguf-py's bytes (twinned)."""
    x, d, inv = weight_blocks(FMT, w)                                   # [rows, nb, 256] f32
    rows, nb, _ = x.shape
    codes = (round_away(x * inv[..., None]) + 1).astype(np.uint8)       # {0,1,2}
    c = codes.reshape(rows, nb, 2, 4, 32)                               # [.., half, n, m]
    qs = c[:, :, :, 0] | (c[:, :, :, 1] << 2) | (c[:, :, :, 2] << 4) | (c[:, :, :, 3] << 6)
    out = np.empty((rows, nb, BLOCK_BYTES), dtype=np.uint8)
    out[:, :, :64] = qs.reshape(rows, nb, 64)                           # byte = half*32 + m
    out[:, :, 64:] = d.astype("<f2").view(np.uint8).reshape(rows, nb, 2)
    return out.reshape(rows, nb * BLOCK_BYTES)


def unpack(data, rows, cols):
    """uint8 [rows, nb*66] -> (int8 codes [rows, cols] in {-1,0,1}, float32 d [rows, nb]) (twinned)."""
    blk = byte_blocks(FMT, data, rows, cols, BLOCK_BYTES)              # [rows, nb, 66] uint8
    nb = blk.shape[1]
    qs = blk[:, :, :64].reshape(rows, nb, 2, 1, 32)
    c = (qs >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(4, 1)) & np.uint8(3)  # [.., 2, 4, 32]
    if (c == 3).any():
        r, b = (int(v) for v in np.argwhere((c == 3).any(axis=(2, 3, 4)))[0])
        raise FormatError(f"tq2_0: invalid code 3 in block {b} of row {r}")
    d = np.ascontiguousarray(blk[:, :, 64:]).view("<f2")[..., 0].astype(np.float32)
    return c.reshape(rows, cols).view(np.int8) - np.int8(1), d          # codes 0..2 -> w


def dequantize(data, rows, cols):
    """uint8 [rows, nb*66] -> float32 [rows, cols] = (code - 1) * d (twinned)."""
    codes, d = unpack(data, rows, cols)
    nb = cols // QK_K
    return (codes.reshape(rows, nb, QK_K).astype(np.float32) * d[..., None]).reshape(rows, cols)


def packed_api(mod):
    """The Packed-level functions of a TQ format, bound to its reference module ``mod``:
    (_impl, resolve_params, data_shape, encode, pack_codes, unpack_codes, decode).  TQ1_0 and
    TQ2_0 differ only in their block bytes (mod.quantize / unpack / dequantize, BLOCK_BYTES)."""

    def impl():
        return _backend.select(mod.FMT, mod)           # the Cython twin, or mod itself

    def data_shape(rows: int, cols: int, params: dict) -> tuple:
        """uint8 [rows, cols/256 * BLOCK_BYTES]: each row its own run of blocks."""
        check_shape(mod.FMT, rows, cols)
        return (rows, cols // QK_K * mod.BLOCK_BYTES)

    def encode(w) -> Packed:
        """float32 [rows, cols] -> Packed; data.tobytes() equals gguf.quants.quantize(w, TQx_0)."""
        w = check_matrix(w)
        return Packed(mod.FMT, w.shape, impl().quantize(w), None)

    def pack_codes(codes, scale) -> Packed:
        """Ternary codes and a per-tensor scale -> Packed (each block's d = scale, as the
        converters write codes * scale and quantize that)."""
        codes = check_codes(codes)
        return encode(codes.astype(np.float32) * np.float32(scale))

    def unpack_codes(p: Packed):
        """Packed -> (int8 codes [rows, cols], float32 d [rows, nb])."""
        return impl().unpack(p.data, *p.shape)

    def decode(p: Packed) -> np.ndarray:
        """Packed -> float32 [rows, cols] = (code - 1) * d per block, as dequantize_row_tqx_0."""
        return impl().dequantize(p.data, *p.shape)

    return (impl, functools.partial(no_params, mod.FMT), data_shape, encode, pack_codes,
            unpack_codes, decode)


SCALE_OUTSIDE = False    # fp16 d closes every block

# the Packed-level functions, shared with TQ1_0
_impl, resolve_params, data_shape, encode, pack_codes, unpack_codes, decode = \
    packed_api(sys.modules[__name__])
