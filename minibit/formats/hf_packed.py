"""hf_packed: the layout of packed BitNet checkpoints in HF safetensors.

Used by microsoft/bitnet-b1.58-2B-4T (``quantization_config.linear_class = "autobitlinear"``,
``quantization_mode = "offline"``) and by Falcon3-*-1.58bit (``linear_class = "bitlinear"``).
Matches ``pack_weights`` / ``unpack_weights`` in transformers
``src/transformers/integrations/bitnet.py``.

Layout
------
A ternary matrix W [rows, cols] (rows = out_features) becomes uint8 P [R, cols] with
R = ceil(rows / 4).  The rows are cut into four contiguous chunks of R rows; chunk i lives
in bits 2i..2i+1 of every byte::

    code = W + 1                     (-1 -> 0, 0 -> 1, +1 -> 2; 3 never occurs)
    P[p, c] = sum_i code[i*R + p, c] << 2i       for the i with i*R + p < rows

Rows past ``rows`` (when rows is not a multiple of 4) leave their bits 0: they would decode
to -1, so a reader must drop them (``unpack`` keeps exactly ``rows`` rows).

The scale stays outside the bytes: a ``weight_scale`` tensor of shape [1].  For
"autobitlinear" W ~ codes * weight_scale; for "bitlinear" W ~ codes / weight_scale.
minibit's ``Packed.scale`` is always the multiplier (``multiplier_from_weight_scale``).

Worked example: rows = 8, cols = 1, W[:, 0] = [1, 0, -1, 1, 0, 0, 1, -1] -> R = 2::

    codes = [2, 1, 0, 2, 1, 1, 2, 0]
    chunks (i = 0..3) of 2 rows: [2, 1], [0, 2], [1, 1], [2, 0]
    P[0] = 2<<0 | 0<<2 | 1<<4 | 2<<6 = 0b10_01_00_10 = 0x92
    P[1] = 1<<0 | 2<<2 | 1<<4 | 0<<6 = 0b00_01_10_01 = 0x19
"""

from __future__ import annotations

import functools
import sys

import numpy as np

from .. import _backend
from .._errors import FormatError
from ..quant import absmean_ternarize
from ._packed import Packed, check_codes, check_matrix, no_params, single_scale

__all__ = ["pack", "unpack", "encode", "decode", "pack_codes", "unpack_codes",
           "multiplier_from_weight_scale"]
# the functions of the minibit._fast twin: same names, signatures and bytes
TWINNED = ("pack", "unpack")

FMT = "hf_packed"


SCALE_OUTSIDE = True     # weight_scale is its own tensor
resolve_params = functools.partial(no_params, FMT)


def data_shape(rows: int, cols: int, params: dict) -> tuple:
    """uint8 [ceil(rows/4), cols]: four rows per byte."""
    return (-(-rows // 4), cols)


def pack(codes):
    """int8 codes [rows, cols] in {-1, 0, 1} -> uint8 [ceil(rows/4), cols] (twinned)."""
    codes = check_codes(codes)
    rows, cols = codes.shape
    R = -(-rows // 4)
    padded = np.zeros((4 * R, cols), dtype=np.uint8)         # [4R, cols] uint8, pad rows = 0
    padded[:rows] = (codes + 1).astype(np.uint8)             # codes 0..2
    chunks = padded.reshape(4, R, cols)                      # [4, R, cols]: chunk i = rows iR..iR+R-1
    out = np.zeros((R, cols), dtype=np.uint8)
    for i in range(4):
        out |= chunks[i] << np.uint8(2 * i)                  # chunk i -> bits 2i..2i+1
    return out


def unpack(data, rows):
    """uint8 [R, cols] -> int8 codes [rows, cols] (twinned).  Code 3 is an error."""
    data = np.ascontiguousarray(data, dtype=np.uint8)
    if data.ndim != 2 or rows <= 0 or -(-rows // 4) != data.shape[0]:
        raise FormatError(f"hf_packed: packed shape {data.shape} cannot hold {rows} rows "
                          f"(needs ceil(rows/4) packed rows)")
    R, cols = data.shape
    planes = np.stack([(data >> np.uint8(2 * i)) & np.uint8(3) for i in range(4)])  # [4, R, cols]
    codes = planes.reshape(4 * R, cols)[:rows]
    if (codes == 3).any():
        r, c = (int(v) for v in np.argwhere(codes == 3)[0])
        raise FormatError(f"hf_packed: invalid code 3 (not ternary) at row {r}, column {c}")
    return codes.astype(np.int8) - np.int8(1)


def _impl():
    return _backend.select("hf_packed", sys.modules[__name__])


def multiplier_from_weight_scale(weight_scale, linear_class: str) -> np.float32:
    """The factor W = codes * factor for a checkpoint's weight_scale and linear_class.

    transformers multiplies for "autobitlinear" (BitNet-2B4T) and divides for "bitlinear"
    (Falcon3-1.58bit).  llama.cpp's converter always divides, which is wrong for 2B4T.
    """
    ws = np.asarray(weight_scale, dtype=np.float32).reshape(-1)
    if ws.size != 1 or not np.isfinite(ws[0]) or ws[0] == 0:
        raise FormatError(f"hf_packed: weight_scale must be one finite non-zero value, got {ws}")
    if linear_class == "autobitlinear":
        return np.float32(ws[0])
    if linear_class == "bitlinear":
        return np.float32(np.float32(1) / ws[0])
    raise FormatError(f"hf_packed: unknown linear_class {linear_class!r} "
                      f"(expected 'autobitlinear' or 'bitlinear')")


def hf_scales(p: Packed, s: np.ndarray):
    """(activation scales, multiplier) that make ``(float)R / s * multiplier`` what
    transformers computes for p: R / (ws * s) for a "bitlinear" weight (ws * s rounded once,
    times 1 exact), R / s * ws for "autobitlinear"."""
    div = p.divisor                 # transformers' BitLinear: R / (weight_scale * s)
    if div is None:
        return s, np.float32(np.asarray(p.scale, np.float32).reshape(-1)[0])
    return (np.float32(div) * np.asarray(s, np.float32)).astype(np.float32), np.float32(1)


def pack_codes(codes, scale) -> Packed:
    """Ternary codes and a multiplier scale -> Packed (scale stored as weight_scale [1])."""
    codes = check_codes(codes)
    return Packed(FMT, codes.shape, _impl().pack(codes), np.array([scale], dtype=np.float32))


def unpack_codes(p: Packed):
    """Packed -> (int8 codes [rows, cols], float32 multiplier)."""
    return _impl().unpack(p.data, p.shape[0]), single_scale(p)


def encode(w) -> Packed:
    """float32 [rows, cols] -> Packed: absmean ternarization, then pack."""
    codes, scale = absmean_ternarize(check_matrix(w))
    return pack_codes(codes, scale)


def decode(p: Packed) -> np.ndarray:
    """Packed -> float32 [rows, cols] = codes * scale."""
    codes, scale = unpack_codes(p)
    return codes.astype(np.float32) * scale
