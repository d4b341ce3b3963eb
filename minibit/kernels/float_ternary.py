"""Weights-only ternary: y = x @ W.T with float activations (TriLM, and the "trilm" profile).

Spectra's TriLM models (Kaushal et al., "Spectra: A Comprehensive Study of Ternary,
Quantized, and FP16 Language Models", arXiv:2407.12327) keep activations in floating point;
only the weights are ternary, W = codes * scale, with one scale per model-parallel shard of
each matrix.  transformers runs them as ordinary LLaMA linears in float.  minibit keeps the
codes packed (2 bits, hf_packed layout) and the scales as a grid over column blocks::

    scales  float32 [rows, nb]      one value per (row, block of `block` columns)
    blocks  columns [j*block, (j+1)*block) for j = 0 .. nb-1   (nb * block == cols)

    S_j[t, r] = sum over k in block j of x[t, k] * code[r, k]      dense.py's lane order
    y[t, r]   = sum over j = 0, 1, ..., nb-1 of S_j[t, r] * scales[r, j]   (float32, in order)

Each S_j is the fixed-order float32 dot of minibit.kernels.dense (32 lanes by column index
within the block, then the fixed tree; products x * code are exact).  So a TriLM
column-parallel projection (q/k/v/gate/up: one scale per block of rows) is nb = 1 with a
per-row scale; a row-parallel one (o/down: one scale per block of columns) is nb = shards;
a TQ1_0/TQ2_0 weight read back from GGUF is block = 256 with its per-block d.  The result
is transformers' float32 product up to float32 rounding (its BLAS sums in its own order).

Worked example: x = [1, 2, 3, 4], codes = [1, -1, 0, 1], block 2, scales [[0.5, 2]]:
S_0 = 1 - 2 = -1, S_1 = 0 + 4 = 4; y = -1 * 0.5 + 4 * 2 = 7.5.

``_fast/float_ternary.pyx`` is the twin (same bits, any thread count).
"""

from __future__ import annotations

import sys

import numpy as np

from .. import _backend
from .._errors import FormatError
from ..formats import hf_packed
from .dense import matmul_t

__all__ = ["matmul", "check_args"]

TWINNED = ("matmul",)


def check_args(x, data, rows: int, cols: int, scales, block: int):
    """Validate and normalise: x float32 [T, cols], data uint8 [ceil(rows/4), cols] (hf_packed),
    scales float32 [rows, cols // block]."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != cols or not np.issubdtype(x.dtype, np.floating):
        raise FormatError(f"float_ternary: activations {x.dtype} {x.shape} do not fit a "
                          f"[{rows}, {cols}] weight: expected float [T, {cols}]")
    x = np.ascontiguousarray(x, dtype=np.float32)
    data = np.asarray(data)
    R = -(-rows // 4)
    if data.dtype != np.uint8 or data.shape != (R, cols):
        raise FormatError(f"float_ternary: packed codes must be uint8 [{R}, {cols}], got "
                          f"{data.dtype} {data.shape}")
    if not isinstance(block, (int, np.integer)) or block < 1 or cols % block:
        raise FormatError(f"float_ternary: block {block!r} does not divide the {cols} columns")
    nb = cols // block
    scales = np.asarray(scales)
    if scales.shape != (rows, nb) or not np.issubdtype(scales.dtype, np.floating):
        raise FormatError(f"float_ternary: scales must be float [{rows}, {nb}], got "
                          f"{scales.dtype} {scales.shape}")
    return x, np.ascontiguousarray(data), np.ascontiguousarray(scales, dtype=np.float32)


def matmul(x, data, rows: int, cols: int, scales, block: int) -> np.ndarray:
    """y float32 [T, rows] as in the module docstring (the reference: decode, then dense)."""
    x, data, scales = check_args(x, data, rows, cols, scales, block)
    p = hf_packed.Packed("hf_packed", (rows, cols), data, np.ones(1, np.float32))
    codes = hf_packed.unpack_codes(p)[0].astype(np.float32)          # [rows, cols] exact
    y = np.zeros((x.shape[0], rows), np.float32)
    for j in range(cols // block):                                  # blocks in order
        c0, c1 = j * block, (j + 1) * block
        S = matmul_t(np.ascontiguousarray(x[:, c0:c1]), np.ascontiguousarray(codes[:, c0:c1]), "F32")
        with np.errstate(over="ignore", invalid="ignore"):
            y = y + S * scales[None, :, j]                          # [T, rows] float32
    return y


def _impl():
    return _backend.select("float_ternary", sys.modules[__name__])


def run(x, data, rows, cols, scales, block) -> np.ndarray:
    """matmul through the active backend (the twin when built)."""
    return _impl().matmul(x, data, rows, cols, scales, block)
