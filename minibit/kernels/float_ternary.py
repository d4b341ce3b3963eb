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

**transformers' AutoBitLinear in MKL's order** (:func:`mkl_linear`, the hf profile on an
"autobitlinear" weight, ``Packed.hf_linear``).  transformers does not take the integer
product: it dequantizes the int8 activations and runs a float ``F.linear``::

    xq[t, k] = q[t, k] / s[t]                    float32 division (ActQuant's ``/ scale``)
    W[r, k]  = code[r, k]          ("offline": packed codes; the output times weight_scale)
             = code[r, k] * scale  ("online": float masters, WeightQuant's codes / (1/scale))
    y[t, r]  = F.linear(xq, W)     torch's CPU sgemm: MKL

and MKL sums the K products in blocks (minibit.kernels.dense.mkl_k_blocks: one block up to
192 terms, two halves up to 384, blocks of 192 beyond), each block one chain of fused
multiply-adds from 0 in increasing k, the blocks' sums added left to right::

    part_b[t, r] = fma(xq[t, k1-1], W[r, k1-1], ... fma(xq[t, k0], W[r, k0], 0))
    y[t, r]      = ((part_0 + part_1) + part_2) + ...        ("offline": then * weight_scale)

With W = -1, 0 or 1 the fused product is exact and the chain is plain float32 adds of +-xq;
with W = +-scale the fusion matters (one rounding per step).  Measured against torch 2.13's
``F.linear`` on one thread (tests/test_model.py): the same bits for products of at least 4
rows (tokens) and 16 columns (outputs).  Fewer tokens (a decode step, a prompt of 1 to 3
tokens) or fewer than 16 outputs take MKL's small-matrix kernels, whose order differs; minibit
keeps the order above for them too, so such a step differs from transformers by float32
rounding.  The products differ from the exact integer product R / s by float32 rounding, and
that rounding moves an int8 code of a later layer now and then: the reason the hf profile
copies it (docs/oracle.md).
"""

from __future__ import annotations

import sys

import numpy as np

from .. import _backend
from .._errors import FormatError
from ..formats import hf_packed
from .dense import fmaf, matmul_t, mkl_k_blocks

__all__ = ["matmul", "check_args", "mkl_linear", "check_mkl_args", "hf_linear", "transpose_codes"]

TWINNED = ("matmul", "mkl_linear")


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


def check_mkl_args(xq, data, rows: int, cols: int, wmul):
    """Validate and normalise mkl_linear's arguments: xq float32 [T, cols], data uint8
    [ceil(rows/4), cols] (hf_packed), wmul None or one finite float."""
    xq = np.asarray(xq)
    if xq.ndim != 2 or xq.shape[1] != cols or not np.issubdtype(xq.dtype, np.floating):
        raise FormatError(f"float_ternary: activations {xq.dtype} {xq.shape} do not fit a "
                          f"[{rows}, {cols}] weight: expected float [T, {cols}]")
    data = np.asarray(data)
    R = -(-rows // 4)
    if data.dtype != np.uint8 or data.shape != (R, cols):
        raise FormatError(f"float_ternary: packed codes must be uint8 [{R}, {cols}], got "
                          f"{data.dtype} {data.shape}")
    if wmul is not None:
        w = np.asarray(wmul, np.float32).reshape(-1)
        if w.size != 1 or not np.isfinite(w[0]):
            raise FormatError(f"float_ternary: the weight multiplier must be one finite float, "
                              f"got {wmul!r}")
        wmul = np.float32(w[0])
    return np.ascontiguousarray(xq, dtype=np.float32), np.ascontiguousarray(data), wmul


def mkl_linear(xq, data, rows: int, cols: int, wmul=None, data_t=None) -> np.ndarray:
    """y float32 [T, rows] = F.linear(xq, W) in MKL's block order (module docstring), with
    W = codes (wmul None) or codes * wmul: the reference, one k at a time.  ``data_t`` (the
    bytes transposed, :func:`transposed`) is the twin's fast layout; the reference reads
    ``data``."""
    xq, data, wmul = check_mkl_args(xq, data, rows, cols, wmul)
    p = hf_packed.Packed("hf_packed", (rows, cols), data, np.ones(1, np.float32))
    W = hf_packed.unpack_codes(p)[0].astype(np.float32)              # [rows, cols] exact
    if wmul is not None:
        W = W * wmul                                                 # +-wmul or 0: exact
    T = xq.shape[0]
    y = np.zeros((T, rows), np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        for i, (k0, k1) in enumerate(mkl_k_blocks(cols)):
            part = np.zeros((T, rows), np.float32)
            for k in range(k0, k1):
                if wmul is None:                        # +-xq or 0 exactly: the fma is one add
                    part = part + xq[:, k, None] * W[None, :, k]
                else:
                    part = fmaf(xq[:, k, None], W[None, :, k], part)
            y = part if i == 0 else y + part
    return y


def transpose_codes(data) -> np.ndarray:
    """hf_packed bytes [R, cols] -> uint8 [cols, Rp]: transposed, R padded up to a multiple
    of 64 with 0x55 (code 1 in every plane: weight 0).  The twin's layout for mkl_linear."""
    R, cols = data.shape
    out = np.full((cols, -(-R // 64) * 64), 0x55, np.uint8)
    out[:, :R] = data.T
    return out


def transposed(p) -> np.ndarray | None:
    """transpose_codes(p.data), made once per weight and kept on it
    (the twin reads the codes of 64 neighbouring rows at one column as 64 neighbouring
    bytes); None on the NumPy backend, which does not use it.  It costs one more copy of
    the packed bytes (2 bits a weight) for each "autobitlinear" weight the hf profile runs."""
    if _impl() is sys.modules[__name__]:
        return None
    t = p.__dict__.get("_data_t")
    if t is None:
        t = transpose_codes(p.data)
        object.__setattr__(p, "_data_t", t)          # a cache on the frozen Packed
    return t


def hf_linear(p, q, s) -> np.ndarray:
    """The hf profile on an "autobitlinear" weight p (p.hf_linear set): transformers'
    AutoBitLinear for int8 activations q [T, K] with scales s [T] -> float32 [T, rows]."""
    if p.hf_linear not in ("offline", "online"):
        raise FormatError(f"float_ternary: weight has no transformers float form "
                          f"(hf_linear={p.hf_linear!r})")
    rows, cols = p.shape
    s = np.asarray(s, np.float32).reshape(-1)
    xq = np.asarray(q).astype(np.float32) / s[:, None]              # ActQuant: q / scale
    scale = np.float32(np.asarray(p.scale, np.float32).reshape(-1)[0])
    y = _impl().mkl_linear(xq, p.data, rows, cols, scale if p.hf_linear == "online" else None,
                           transposed(p))
    return y * scale if p.hf_linear == "offline" else y              # output * weight_scale


def _impl():
    return _backend.select("float_ternary", sys.modules[__name__])


def run(x, data, rows, cols, scales, block) -> np.ndarray:
    """matmul through the active backend (the twin when built)."""
    return _impl().matmul(x, data, rows, cols, scales, block)
