"""BitNet a4.8's activation quantizers: the spec (NumPy); ``_fast/quant_a48.pyx`` is the twin.

BitNet a4.8 (H. Wang, S. Ma, F. Wei, "BitNet a4.8: 4-bit Activations for 1-bit LLMs",
arXiv:2411.04965, 2024, §2) keeps BitNet b1.58's ternary absmean weights and changes only
what the projections' *inputs* become, by where they sit in the block:

====================  ==========================================  =========================
input of              paper                                       here
====================  ==========================================  =========================
q, k, v, gate, up     INT4, absmean scale (Gaussian-like inputs)  :func:`quantize_act_a4`
o_proj                TopK sparsification, then INT8 absmax       :func:`topk_sparsify` +
                      (sharp distribution with outliers)          :func:`quantize_act_a8`
down_proj             INT8 absmax; the input is already sparse    :func:`quantize_act_a8`
                      (squared ReLU + GLU)
K and V heads         optional 3-bit cache (post-RoPE, unsigned   :func:`quantize_kv_int3`
                      absmax; the BOS token's heads at 4 bits)
====================  ==========================================  =========================

The formulas, per token (one row of x), with RoundClip(y, a, b) = min(max(round(y), a), b)::

    INT8 (absmax):   gamma = max|x|                 Q(x) = gamma/127 * RoundClip(127 x / (gamma + eps), -128, 127)
    INT4 (absmean):  beta  = mean|x|                Q(x) = beta/sqrt(7) * RoundClip(sqrt(7) x / (beta + eps), -8, 7)
    TopK:            keep the K entries of largest |x|, zero the rest; K = 50% of the row
    KV, b bits:      gamma = max|x| over one head   Q(x) = (u - h) / s,  s = h / (gamma + eps),  h = (2^b - 1) / 2,
                                                   u = RoundClip(s x + h, 0, 2^b - 1)   (b = 3; 4 for the BOS token)

(INT8 and INT4 are the paper's equations (3) and (7) for Q_INT8 and Q_INT4, checked against the
paper's text; TopK 50% on the o_proj input is its equation (1) with the K of its §3.  The paper
says of the cache only that the heads are quantized after RoPE "to unsigned integers using the
absmax function", with the BOS token's heads kept at 4 bits for a 3-bit cache (§3.1, "Low-bit
Attention"); the unsigned absmax form above, h = (2^b - 1) / 2 so that -max|x| and +max|x| are
the end codes, is minibit's reading of that sentence.  Training runs with these in the forward
pass and straight-through gradients; the paper trains with INT8 activations first and switches
to this hybrid scheme for the last 5% of the tokens (95B + 5B), reusing the optimizer states.
Dequantization: the paper writes gamma/127 (and beta/sqrt(7)); minibit divides by s, i.e.
multiplies by (gamma + eps)/127, the order the b1.58 "hf" profile uses: a relative
difference of 1e-5 / max|x| in the dequantized value, the same on both backends.)

minibit's arithmetic, every step float32 and rounded once, in this order:

* ``s = C / (scale + 1e-5)`` with C = 127 or sqrt(7) rounded to float32 (2.6457512);
  ``q = clip(rint(x * s), lo, hi)``: the product in float32, then round half to even
  (``np.rint``, as torch.round).  The integer product with the ternary codes then goes
  back to float as ``(float)R / s * weight_scale``, the "hf" profile's order.
* mean|x| = (sum of |x| in the lane order of minibit.kernels.dense) / K, so the twin's C
  loop gives the same bits; max|x| is exact in any order.
* TopK ties: entries are ranked by |x| (largest first), equal magnitudes by position (the
  earlier one wins), and exactly K = max(1, floor(ratio * K_row)) survive.

Worked example (INT4)::

    x = [0.5, -1.0, 0.25, 0.0]     mean|x| = 1.75 / 4 = 0.4375
    s = 2.6457512 / 0.43751 = 6.047...     x * s = [3.02, -6.05, 1.51, 0]
    q = [3, -6, 2, 0]              (dequantized: q / s = [0.496, -0.992, 0.331, 0])

Worked example (3-bit cache, a head of a token after the first)::

    x = [1.0, -0.5, 0.2, 0.0]      max|x| = 1, h = 3.5, s = 3.5 / 1.00001 = 3.49997
    x * s + h = [7.0, 1.75, 4.2, 3.5]     u = [7, 2, 4, 4]   (3.5 rounds half to even)
    (u - h) / s = [1.00001, -0.42857, 0.14286, 0.14286]
"""

from __future__ import annotations

import numpy as np

from .kernels.dense import lane_dot
from .quant import _activations

__all__ = ["quantize_act_a4", "quantize_act_a8", "topk_sparsify", "topk_count",
           "quantize_kv_int3", "SQRT7", "EPS", "TOPK_RATIO"]

TWINNED = ("quantize_act_a4", "quantize_act_a8", "topk_sparsify", "quantize_kv_int3")

SQRT7 = np.float32(np.sqrt(7.0))     # 2.6457512 in float32
EPS = np.float32(1e-5)
TOPK_RATIO = 0.5


def quantize_act_a4(x):
    """Per-token INT4 with the absmean scale: float32 [T, K] -> (int8 q in [-8, 7], float32 s [T]).

    beta = lane_sum(|x|) / K;  s = sqrt(7) / (beta + 1e-5);  q = clip(rint(x * s), -8, 7).
    """
    x = _activations(x)
    ax = np.abs(x)
    beta = lane_dot(ax, np.ones(x.shape[1], np.float32)) / np.float32(x.shape[1])   # [T]
    s = (SQRT7 / (beta + EPS)).astype(np.float32)                                    # [T]
    q = np.clip(np.rint(x * s[:, None]), -8, 7).astype(np.int8)
    return q, s


def quantize_act_a8(x):
    """Per-token INT8 with the absmax scale: float32 [T, K] -> (int8 q, float32 s [T]).

    gamma = max|x|;  s = 127 / (gamma + 1e-5);  q = clip(rint(x * s), -128, 127).
    (transformers' b1.58 ActQuant floors gamma at 1e-5 instead of adding it; the two differ
    only for rows whose max|x| is near 1e-5.)
    """
    x = _activations(x)
    gamma = np.abs(x).max(axis=1)
    s = (np.float32(127) / (gamma + EPS)).astype(np.float32)
    q = np.clip(np.rint(x * s[:, None]), -128, 127).astype(np.int8)
    return q, s


def topk_count(K: int, ratio: float = TOPK_RATIO) -> int:
    """How many entries of a row of K survive TopK: max(1, floor(ratio * K))."""
    if not 0 < ratio <= 1:
        raise ValueError(f"top-K ratio must be in (0, 1], got {ratio!r}")
    return max(1, int(np.floor(ratio * K)))


def topk_sparsify(x, ratio: float = TOPK_RATIO):
    """float32 [T, K] -> float32 [T, K]: per row, the topk_count(K) entries of largest |x|
    kept (ties: the earlier position first), every other entry set to +0.0."""
    x = _activations(x)
    T, K = x.shape
    k = topk_count(K, ratio)
    order = np.argsort(-np.abs(x), axis=1, kind="stable")[:, :k]       # [T, k] kept positions
    out = np.zeros_like(x)
    np.put_along_axis(out, order, np.take_along_axis(x, order, axis=1), axis=1)
    return out


def quantize_kv_int3(x, start: int = 0):
    """The 3-bit cache: float32 [T, G, D] -> float32 [T, G, D], each (token, head) vector
    replaced by the value its unsigned absmax code stands for (see the module's table).

    ``x`` holds the tokens at positions start, start+1, ...; the token at position 0 (the
    sequence's first, BOS when the tokenizer adds one) keeps 4 bits, as in the paper.  Per
    (token, head), with b bits, L = 2^b - 1 and h = L / 2 (3.5 or 7.5)::

        s = h / (max|x| + 1e-5);   u = clip(rint(x * s + h), 0, L);   value = (u - h) / s

    each step in float32 (x * s, + h and u - h rounded once each; u - h is exact).  The
    levels (u - h) / s are symmetric, +-0.5/s ... +-h/s: all 2^b codes are used, and zero
    is not a level.  minibit keeps the values as float32: what a 3-bit cache holds, not its
    memory layout.
    """
    a = np.ascontiguousarray(x, dtype=np.float32)
    if a.ndim != 3:
        raise ValueError(f"quantize_kv_int3: expected [T, G, D], got shape {a.shape}")
    start = int(start)
    if start < 0:
        raise ValueError(f"quantize_kv_int3: start must be >= 0, got {start}")
    bits = np.full((a.shape[0], 1, 1), 3)
    if start == 0 and a.shape[0]:
        bits[0] = 4                                             # the first token: 4 bits
    L = (np.float32(1) * (2 ** bits - 1)).astype(np.float32)      # 7 or 15
    h = (L / np.float32(2)).astype(np.float32)                    # 3.5 or 7.5 (exact)
    gamma = np.abs(a).max(axis=2, keepdims=True)
    s = (h / (gamma + EPS)).astype(np.float32)
    u = np.clip(np.rint((a * s).astype(np.float32) + h), 0, L).astype(np.float32)
    return ((u - h) / s).astype(np.float32)
