"""i2_s: bitnet.cpp's 2-bit ternary layout (GGML type 36 in its llama.cpp fork).

Matches ``quantize_i2_s`` in microsoft/BitNet ``src/ggml-bitnet-mad.cpp`` (x86 branch,
ACT_PARALLEL, ``QK_I2_S = 128``) and ``quantize_to_i2_s`` in
``utils/convert-hf-to-gguf-bitnet.py``: the layout of every official I2_S GGUF.

Layout
------
The whole tensor is one flat row-major array of n = rows * cols codes, code = w + 1
(-1 -> 0, 0 -> 1, +1 -> 2).  Blocks of 128 codes become 32 bytes; inside block b the four
32-code sub-blocks share the bytes, the FIRST sub-block in the HIGH bits::

    byte[32b + p] = c[128b + p] << 6 | c[128b + 32 + p] << 4
                  | c[128b + 64 + p] << 2 | c[128b + 96 + p]          (p = 0..31)

After the n/4 code bytes: one little-endian float32 scale (max |W| of the ternarized
tensor; W = (code - 1) * scale), then 28 bytes of padding (written as zeros, as bitnet.cpp's
Python converter does): n/4 + 32 bytes in all.  One scale per tensor, so a reader of a row
slice must find it at the tensor base + n/4.

The x86 kernels need cols % 128 == 0 (rows never straddle a block).  ARM builds of
bitnet.cpp after Nov 2025 use 64-code blocks and misread these files (facts §1.5).

Worked example: one block whose codes are c[j] = (j // 32) for sub-block j // 32 in 0..2
and 2 for the last sub-block, i.e. sub-blocks coded 0, 1, 2, 2::

    byte[p] = 0 << 6 | 1 << 4 | 2 << 2 | 2 = 0b00_01_10_10 = 0x1A   for every p
"""

from __future__ import annotations

import struct
import functools
import sys

import numpy as np

from .. import _backend
from .._errors import FormatError
from ..quant import absmean_ternarize
from ._packed import Packed, check_codes, check_matrix, no_params

__all__ = ["pack", "unpack", "encode", "decode", "pack_codes", "unpack_codes", "nbytes", "QK_I2_S"]
# the functions of the minibit._fast twin: same names, signatures and bytes
TWINNED = ("pack", "unpack")

FMT = "i2_s"
QK_I2_S = 128      # codes per block (x86 / on-disk layout)
TAIL = 32          # scale (4 bytes) + 28 padding bytes


def nbytes(rows: int, cols: int) -> int:
    """Tensor payload in bytes: n/4 codes + 32 (scale and padding)."""
    return rows * cols // 4 + TAIL


def check_shape(rows: int, cols: int) -> None:
    if cols % QK_I2_S:
        raise FormatError(f"i2_s: row length {cols} is not a multiple of {QK_I2_S} "
                          f"(bitnet.cpp's I2_S blocks hold 128 codes of one row)")


SCALE_OUTSIDE = False    # the float32 scale sits at byte n/4
resolve_params = functools.partial(no_params, FMT)


def data_shape(rows: int, cols: int, params: dict) -> tuple:
    """uint8 [n/4 + 32], one flat array; rows of whole 128-code blocks."""
    check_shape(rows, cols)
    return (nbytes(rows, cols),)


def pack(codes, scale):
    """int8 codes [rows, cols] and a float scale -> uint8 [n/4 + 32] (twinned)."""
    codes = check_codes(codes)
    rows, cols = codes.shape
    check_shape(rows, cols)
    c = (codes.reshape(-1, 4, 32) + 1).astype(np.uint8)       # [n/128, 4 sub-blocks, 32] uint8
    body = (c[:, 0] << 6) | (c[:, 1] << 4) | (c[:, 2] << 2) | c[:, 3]   # [n/128, 32] uint8
    tail = np.zeros(TAIL, dtype=np.uint8)
    tail[:4] = np.frombuffer(struct.pack("<f", float(np.float32(scale))), dtype=np.uint8)
    return np.concatenate([body.reshape(-1), tail])


def unpack(data, rows, cols):
    """uint8 [n/4 + 32] -> (int8 codes [rows, cols], float32 scale) (twinned)."""
    check_shape(rows, cols)
    data = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    if data.size != nbytes(rows, cols):
        raise FormatError(f"i2_s: {data.size} bytes, expected {nbytes(rows, cols)} for "
                          f"a ({rows}, {cols}) tensor")
    n4 = rows * cols // 4
    body = data[:n4].reshape(-1, 32)                                 # [n/128, 32] uint8
    c = np.stack([(body >> np.uint8(s)) & np.uint8(3) for s in (6, 4, 2, 0)], axis=1)
    if (c == 3).any():
        flat = int(np.argwhere(c.reshape(-1) == 3)[0][0])
        raise FormatError(f"i2_s: invalid code 3 at element {flat} (row {flat // cols}, "
                          f"column {flat % cols})")
    scale = data[n4:n4 + 4].view("<f4")[0]
    return (c.reshape(rows, cols).astype(np.int8) - np.int8(1)), np.float32(scale)


def _impl():
    return _backend.select("i2_s", sys.modules[__name__])


def pack_codes(codes, scale) -> Packed:
    """Ternary codes and the tensor scale -> Packed (scale inside the bytes)."""
    return Packed(FMT, tuple(np.shape(codes)), _impl().pack(codes, np.float32(scale)), None)


def unpack_codes(p: Packed):
    """Packed -> (int8 codes [rows, cols], float32 scale read from byte n/4)."""
    return _impl().unpack(p.data, *p.shape)


def encode(w) -> Packed:
    """float32 [rows, cols] -> Packed: absmean ternarization (minibit.quant).

    The stored scale is max|W_q| of the ternarized tensor, as llama-quantize computes it
    from bitnet.cpp's converter output: 1 / (1 / gamma) in float32, or 0 when every code
    is 0.
    """
    w = check_matrix(w)
    check_shape(*w.shape)
    codes, scale = absmean_ternarize(w)
    if not codes.any():          # bitnet.cpp stores max|W| of the ternarized tensor: 0 here
        scale = np.float32(0)
    return pack_codes(codes, scale)


def decode(p: Packed) -> np.ndarray:
    """Packed -> float32 [rows, cols] = (code - 1) * scale, as dequantize_row_i2_s."""
    codes, scale = unpack_codes(p)
    return codes.astype(np.float32) * scale
