"""The float product of the LM head: y = x @ W.T for a float32, float16 or bf16 matrix W.

Every ternary model ends in a float matrix: the LM head (or the tied embedding), vocab rows
of hidden floats, stored as the checkpoint has it (bf16 in 2B-4T's safetensors, F16 in
most GGUF files, F32 in small ones).  At decode time it is the largest single read of the
step (BitNet-2B4T: 128256 x 2560 x 2 bytes = 657 MB per token), so it gets a kernel of its
own instead of "widen the matrix to float32, then BLAS", which writes and rereads four
bytes per weight every token.

The idea: widen each weight as it is read (exact: every F16 and bf16 value is a float32),
multiply by the activation in float32 and add into one of 32 running sums, lane
``k mod 32``, in increasing ``k``.  The 32 sums then meet in a fixed tree::

    acc[l] = sum over k = l, l+32, l+64, ... of fl(x[k] * w[k])   (float32, in that order)
    a = (acc[0:8] + acc[8:16]) + (acc[16:24] + acc[24:32])       (8 sums)
    b = a[0:4] + a[4:8];  c = b[0:2] + b[2:4];  y = c[0] + c[1]

Every product and every sum is rounded to float32 separately (no fused multiply-add), so
the NumPy reference below and the compiled twin (four AVX2 registers of 8 lanes: exactly
this order) give the same bits, for any thread count.  The result is a float32 dot
product like any other; it differs from BLAS's (whose order is its own) by float32
rounding, about 1e-7 relative.

Worked example, K = 3, x = [1, 2, 3], w = [0.5, 0.25, -1] (float16): acc[0] = 0.5,
acc[1] = 0.5, acc[2] = -3, the rest 0; a = [0.5, 0.5, -3, 0, ...]; b = [0.5, 0.5, -3, 0];
c = [-2.5, 0.5]; y = -2.0.

dtype names are the files' own: "F32" (float32), "F16" (float16), "BF16" (uint16 holding
the top half of a float32).
"""

from __future__ import annotations

import sys

import numpy as np

from .. import _backend
from .._buffers import check_output
from .._errors import FormatError

__all__ = ["matmul_t", "project", "widen", "lane_dot", "fmaf", "mkl_k_blocks", "MKL_K_BLOCK", "LANES", "DTYPES"]

TWINNED = ("matmul_t",)

LANES = 32
DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}
CHUNK_ROWS = 4096          # rows of W widened at a time (bounds the reference's memory)


def widen(w: np.ndarray, dtype: str) -> np.ndarray:
    """Rows of W in their stored dtype -> float32 (exact)."""
    if dtype == "BF16":
        return (np.asarray(w).astype(np.uint32) << 16).view(np.float32)
    return np.asarray(w).astype(np.float32)


def check_args(x, W, dtype: str):
    """Validate and normalise (x float32 [T, K] C-contiguous, W [N, K] C-contiguous)."""
    if dtype not in DTYPES:
        raise FormatError(f"dense: unknown matrix dtype {dtype!r}; expected F32, F16 or BF16")
    W = np.asarray(W)
    if W.ndim != 2 or W.dtype != DTYPES[dtype]:
        raise FormatError(f"dense: a {dtype} matrix must be a 2-D {np.dtype(DTYPES[dtype]).name} "
                          f"array, got {W.dtype} {W.shape}")
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != W.shape[1]:
        raise FormatError(f"dense: activations {x.shape} do not fit a matrix {W.shape}: "
                          f"expected [T, {W.shape[1]}]")
    if x.dtype != np.float32:
        raise FormatError(f"dense: activations must be float32, got {x.dtype}")
    return np.ascontiguousarray(x), np.ascontiguousarray(W)


def _tree(acc: np.ndarray) -> np.ndarray:
    """[..., 32] lane sums -> [...]: the fixed reduction tree of the module docstring."""
    a = (acc[..., 0:8] + acc[..., 8:16]) + (acc[..., 16:24] + acc[..., 24:32])
    b = a[..., 0:4] + a[..., 4:8]
    c = b[..., 0:2] + b[..., 2:4]
    return c[..., 0] + c[..., 1]


def lane_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sum_k a[..., k] * b[..., k] for float32 arrays that broadcast: [...] float32, in the
    lane order above (the same bits as one output of matmul_t).  The layers use it for every
    float32 reduction of the block: RMSNorm's sum of squares, attention's q . k, the softmax
    denominator (as a dot with ones)."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    K = a.shape[-1]
    lead = np.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    acc = np.zeros(lead + (LANES,), np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(0, K, LANES):                        # k = 32 j + l, increasing
            pa, pb = a[..., k:k + LANES], b[..., k:k + LANES]
            if pa.shape[-1] < LANES:                        # the zero-padded last step
                padw = [(0, 0)] * (pa.ndim - 1) + [(0, LANES - pa.shape[-1])]
                pa, pb = np.pad(pa, padw), np.pad(pb, [(0, 0)] * (pb.ndim - 1) + padw[-1:])
            acc += pa * pb                                  # product rounded, then the add
    return _tree(acc)


def fmaf(a, b, c) -> np.ndarray:
    """C's fmaf(a, b, c) for float32 arrays (the engines' fused multiply-adds): a * b + c rounded once to float32.

    a * b is exact in double; the double sum is made round-to-odd (when it was inexact
    and its last bit is even, step it one ulp toward the exact value), and round-to-odd
    in double followed by one rounding to float32 is the correctly rounded result.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    c = np.asarray(c, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        p = a * b                                               # exact
        s = p + c
        bb = s - p
        err = (p - (s - bb)) + (c - bb)                         # TwoSum: s + err = p + c
        even = (s.view(np.int64) & 1) == 0
        fix = (err != 0) & even & np.isfinite(s)
        if np.any(fix):
            s = np.where(fix, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)
        return s.astype(np.float32)


# MKL's sgemm (as torch 2.13's bundled oneMKL 2024.2 runs it on an AVX-512 CPU) cuts the
# summed dimension K of a product into blocks: one block up to 192, two halves up to 384
# (floor(K / 2) each, an odd K's last term a third block), blocks of 192 beyond; measured
# the same for every output shape tried (5 to 256 rows and columns) when the product has
# at least 4 rows and 16 columns (torch's F.linear and matmul alike; smaller products take
# MKL's small-matrix kernels, whose order differs).  Used by the hf profile: attention
# (minibit.model.layers) and "autobitlinear" projections (minibit.kernels.float_ternary).
MKL_K_BLOCK = 192


def mkl_k_blocks(K: int) -> list:
    """[(start, stop), ...]: the blocks of K terms MKL's sgemm chains one by one."""
    size = K if K <= MKL_K_BLOCK else (K // 2 if K <= 2 * MKL_K_BLOCK else MKL_K_BLOCK)
    return [(b, min(K, b + size)) for b in range(0, K, size)] if K else []


def check_out(out, T: int, N: int):
    if out is None:
        return np.empty((T, N), dtype=np.float32)
    return check_output(out, "dense: out", (np.float32,), shape=(T, N))


def matmul_t(x, W, dtype, out=None):
    """y[t, n] = sum_k x[t, k] * W[n, k] in the lane order above: float32 [T, N] (twinned).

    ``out``: an optional float32 [T, N] C-contiguous array to write (and return)."""
    x, W = check_args(x, W, dtype)
    T, K = x.shape
    N = W.shape[0]
    out = check_out(out, T, N)
    pad = -K % LANES                                        # zeros add nothing: +0.0 is exact
    xp = np.concatenate([x, np.zeros((T, pad), np.float32)], axis=1).reshape(T, -1, LANES)
    for s in range(0, N, CHUNK_ROWS):
        w = widen(W[s:s + CHUNK_ROWS], dtype)               # [n, K] float32
        w = np.concatenate([w, np.zeros((w.shape[0], pad), np.float32)], axis=1)
        w = w.reshape(w.shape[0], -1, LANES)                # [n, K/32, 32]
        acc = np.zeros((T, w.shape[0], LANES), np.float32)  # [T, n, 32]
        with np.errstate(over="ignore", invalid="ignore"):  # inf / NaN weights: IEEE results
            for j in range(w.shape[1]):                     # k = 32 j + l, increasing
                acc += xp[:, None, j, :] * w[None, :, j, :]  # product rounded, then the add
            out[:, s:s + w.shape[0]] = _tree(acc)
    return out


def _impl():
    return _backend.select("dense", sys.modules[__name__])


def project(x, W, dtype: str) -> np.ndarray:
    """y = x @ W.T through the active backend (the twin when built)."""
    return _impl().matmul_t(x, W, dtype)
