"""Every ternary weight layout users meet, byte-exact: encode, decode, Packed.

=========  =======================================  ===================  ===============
fmt        whose                                    scale                bits / weight
=========  =======================================  ===================  ===============
hf_packed  transformers (packed HF checkpoints)      per tensor, outside  2
i2_s       bitnet.cpp (I2_S GGUF, type 36)           per tensor, inside   2 (+32 B)
tl1        bitnet.cpp (TL1 GGUF, type 38, ARM LUT)   per tensor, outside  2
tl2        bitnet.cpp (TL2 GGUF, type 39, x86 LUT)   per tensor, outside  ~1.67
tq1_0      llama.cpp (TQ1_0, base-3)                 per 256-block, fp16  1.6875
tq2_0      llama.cpp (TQ2_0)                         per 256-block, fp16  2.0625
=========  =======================================  ===================  ===============

``encode(fmt, w)`` ternarizes a float matrix the way that format's producers do (absmean
per tensor for the per-tensor formats, block max for TQ) and packs it; ``decode(p)`` gives
the float32 matrix the peer dequantizes to.  ``pack_codes(fmt, codes, scale)`` packs an
already ternary matrix (e.g. one read from a checkpoint) and ``unpack_codes(p)`` returns
its int8 codes and scale(s).  Each format module's docstring states its layout with a
worked bit example.
"""

from __future__ import annotations

import importlib

import numpy as np

from .._errors import FormatError
from ._packed import Packed

__all__ = ["FORMATS", "Packed", "encode", "decode", "pack_codes", "unpack_codes", "module"]

FORMATS = ("hf_packed", "i2_s", "tl1", "tl2", "tq1_0", "tq2_0")


def module(fmt: str):
    """The reference module of a format (minibit.formats.<fmt>)."""
    if fmt not in FORMATS:
        raise FormatError(f"unknown weight format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return importlib.import_module(f"{__name__}.{fmt}")


def encode(fmt: str, w, **params) -> Packed:
    """float32 [rows, cols] -> Packed in layout ``fmt`` (never modifies w).

    ``params`` are layout options where a format has them (TL1/TL2 tiling: BM, BK, bm).
    A shape the format cannot hold raises FormatError saying why.
    """
    _check_params(fmt, params)
    return module(fmt).encode(w, **params)


def _check_params(fmt: str, params: dict) -> None:
    if params and fmt not in ("tl1", "tl2"):
        raise FormatError(f"{fmt}: takes no layout parameters, got {sorted(params)}")


def decode(p: Packed) -> np.ndarray:
    """Packed -> float32 [rows, cols], what the peer dequantizes to."""
    if not isinstance(p, Packed):
        raise FormatError(f"decode expects a minibit.formats.Packed, got {type(p).__name__}")
    return module(p.fmt).decode(p)


def pack_codes(fmt: str, codes, scale, **params) -> Packed:
    """int8 ternary codes [rows, cols] and the float multiplier (W = codes * scale) -> Packed."""
    _check_params(fmt, params)
    return module(fmt).pack_codes(codes, scale, **params)


def unpack_codes(p: Packed):
    """Packed -> (int8 codes [rows, cols], scale): a float32 scalar, or float32 [rows, nb]
    block scales for tq1_0 / tq2_0."""
    return module(p.fmt).unpack_codes(p)
