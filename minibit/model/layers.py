"""The layers of a BitNet block in float32 NumPy: the hf profile, transformers' formulas in
the order torch computes them on an x86 CPU, written out step by step so that a C twin
(minibit._fast.layers) gives the same bits.

rms_norm        weight * (x * rsqrt(mean(x^2) + eps))        torch's cascade sum
rope_tables     cos/sin [positions, head_dim], "rotate_half" (NeoX) pairing: dim i with i + d/2
apply_rope      q * cos + rotate_half(q) * sin
attention       causal GQA softmax(q k^T / sqrt(d)) v over the KV cache (float32 or float16),
                MKL's fused chains and torch's softmax
ffn_act         squared ReLU (BitNet-2B4T) or SiLU (1bitLLM, Falcon3), gated: act(g) * u
expf            Sleef's expf, as torch's vector kernels call it (softmax, SiLU)
BitLinear       a packed ternary weight + kernels.linear with the model's profile

torch picks some kernels by the CPU's capability: the softmax sums in 16 lanes on AVX-512
and 8 on AVX2 (torch_lanes(), which reads the CPU flags and ATEN_CPU_CAPABILITY as torch
does).  Measured against torch 2.13 + transformers 5.24 on one thread (tests/test_layers.py,
tests/test_model.py), every function is torch's to the bit except the RoPE tables (torch's
cos and sin are MKL's vector math, see rope_tables) and products too small for MKL's sgemm
(see attention).  The BitLinear product of "autobitlinear" checkpoints, which transformers
runs as a float F.linear of the dequantized activations, is MKL's order too
(minibit.kernels.float_ternary.mkl_linear).  Not copied: the order of torch's multi-threaded
splits of one tensor (SiLU over more than 32768 values).

Shapes are written [T, ...] for T tokens of one sequence; H query heads, G kv heads,
D head_dim.
"""

from __future__ import annotations

import numpy as np

from .. import _backend, kernels, profiles
from .._buffers import check_output
from ..kernels.dense import MKL_K_BLOCK, fmaf, mkl_k_blocks  # noqa: F401 (MKL_K_BLOCK: re-exported)
from ..formats import Packed

__all__ = ["rms_norm", "rope_tables", "apply_rope", "attention", "ffn_act", "expf", "BitLinear",
           "KVCache", "KV_DTYPES", "store_kv", "linear_group", "TWINNED"]

# the functions minibit._fast.layers computes in C, to the same bits
TWINNED = ("rms_norm", "apply_rope", "attention", "ffn_act", "expf", "store_kv")


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """[T, n] float32 -> [T, n] float32: weight * (x * rsqrt(mean(x^2) + eps)), as torch
    computes transformers' RMSNorm on the CPU, every step a float32 operation::

        ss  = torch_sum(x * x)               torch's cascade sum of the row (below)
        var = ss / n                         torch's mean: the sum, then one division
        inv = 1 / sqrt(var + eps)            torch.rsqrt: a square root, then a division
        y   = weight * (x * inv)
    """
    x, weight = check_norm(x, weight)
    var = torch_sum(x * x) / np.float32(x.shape[1])                          # [T]
    inv = np.float32(1) / np.sqrt(var + np.float32(eps))
    return weight * (x * inv[:, None])


# ---- torch's CPU float32 order ------------------------------------------------------------
#
# torch picks its CPU kernels by the CPU's capability (torch.backends.cpu.get_cpu_capability()):
# AVX-512 (avx512f, avx512bw, avx512vl, avx512dq) runs 16-lane vectors, AVX2 8 lanes; the
# environment variable ATEN_CPU_CAPABILITY=avx2 (or default) lowers it.  torch_lanes() makes
# the same choice, so the hf profile sums in the order torch would on this machine;
# MINIBIT_TORCH_LANES=8|16 forces one.

def torch_lanes() -> int:
    """16 where torch runs its AVX-512 kernels, else 8 (AVX2, and the generic 32-byte
    vectors of ATEN_CPU_CAPABILITY=default)."""
    global _LANES
    if _LANES is None:
        import os
        forced = os.environ.get("MINIBIT_TORCH_LANES", "")
        if forced in ("8", "16"):
            _LANES = int(forced)
        elif os.environ.get("ATEN_CPU_CAPABILITY", "").lower() in ("avx2", "default"):
            _LANES = 8
        else:
            _LANES = 16 if _cpu_has_avx512() else 8
    return _LANES


_LANES = None


def _cpu_has_avx512() -> bool:
    """The CPU flags torch requires for its AVX-512 kernels (Linux /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return {"avx512f", "avx512bw", "avx512vl", "avx512dq", "fma"} <= flags
    except OSError:
        pass
    return False


def _row_sum(items: list) -> np.ndarray:
    """torch's row_sum (SumKernel.cpp) of the float32 arrays ``items`` in order, each step
    elementwise: four interleaved partial sums (item 4i + k goes to partial k) accumulated
    in the cascade of _multi_row_sum, the items left over after the last full four added to
    partial 0, then partial 0 + 1, + 2, + 3."""
    m = len(items)
    rows = m // 4
    parts = [_multi_row_sum(items[k:4 * rows:4]) for k in range(4)]
    for i in range(4 * rows, m):
        parts[0] = parts[0] + items[i]
    return ((parts[0] + parts[1]) + parts[2]) + parts[3]


def _multi_row_sum(items: list):
    """torch's multi_row_sum for one partial: four levels of accumulators; items go to level 0
    in runs of 2^p (p = max(4, ceil(log2(len)) // 4)); after each run level j - 1 is added into
    level j and cleared, climbing while the count of items is a multiple of the next level's
    run; at the end level 0 + 1, + 2, + 3."""
    size = len(items)
    zero = np.zeros_like(items[0]) if size else np.float32(0)
    power = max(4, (max(size - 1, 1).bit_length() if size > 2 else 1) // 4)
    step, mask = 1 << power, (1 << power) - 1
    acc = [zero] * 4
    i = 0
    while i + step <= size:
        for _ in range(step):
            acc[0] = acc[0] + items[i]
            i += 1
        for j in range(1, 4):
            acc[j] = acc[j] + acc[j - 1]
            acc[j - 1] = zero
            if i & (mask << (j * power)):
                break
    for i in range(i, size):
        acc[0] = acc[0] + items[i]
    return ((acc[0] + acc[1]) + acc[2]) + acc[3]


# torch registers its sum kernel for AVX2 only (not AVX-512): an AVX-512 machine runs the AVX2
# one, and ATEN_CPU_CAPABILITY=default the generic 32-byte vectors -- 8 float lanes in all
# three (measured against torch 2.13: 0 mismatches over rows of 1 to 70000, all three)
SUM_LANES = 8


def torch_sum(x: np.ndarray) -> np.ndarray:
    """[..., n] float32 -> [...]: x.sum(-1) in torch's CPU order for a contiguous row
    (cascade_sum in SumKernel.cpp), with W = SUM_LANES:

    n >= W:  the n // W full vectors of W lanes are summed as vectors by _row_sum; then
             from +0 the n % W leftover elements in order, then the W lanes in order
    n <  W:  _row_sum of the elements themselves
    """
    x = np.asarray(x, dtype=np.float32)
    n, W = x.shape[-1], SUM_LANES
    if n < W:
        return _row_sum([x[..., k] for k in range(n)]) if n else np.zeros(x.shape[:-1], np.float32)
    nv = n // W
    vec = _row_sum([x[..., j * W:(j + 1) * W] for j in range(nv)])          # [..., W]
    acc = np.zeros(x.shape[:-1], np.float32)
    for k in range(nv * W, n):
        acc = acc + x[..., k]
    for lane in range(W):
        acc = acc + vec[..., lane]
    return acc


def torch_absmean(w: np.ndarray) -> np.float32:
    """max(mean|W|, 1e-5) as torch computes transformers' WeightQuant scale
    ``weight.abs().mean().clamp_(min=1e-5)`` on one thread: the whole tensor is one
    contiguous row for torch's reduction, so the sum is torch_sum of the flattened |W| in
    float32 (8 lanes, the cascade of _row_sum), then one division by the element count.

    The same steps as torch_sum, the runs of the cascade summed with np.cumsum (a sequential
    float32 sum, as torch's level-0 accumulator) so that a matrix of millions of weights
    takes a fraction of a second."""
    a = np.abs(np.ascontiguousarray(w, dtype=np.float32)).reshape(-1)
    n, W = a.size, SUM_LANES
    if n < W:
        total = torch_sum(a[None])[0] if n else np.float32(0)
    else:
        nv = n // W
        vec = a[:nv * W].reshape(nv, W)
        rows = nv // 4
        parts = [_multi_row_sum_array(vec[k:4 * rows:4]) for k in range(4)]
        for i in range(4 * rows, nv):
            parts[0] = parts[0] + vec[i]
        lanes = ((parts[0] + parts[1]) + parts[2]) + parts[3]                  # [W]
        total = np.float32(0)
        for k in range(nv * W, n):
            total = np.float32(total + a[k])
        for lane in range(W):
            total = np.float32(total + lanes[lane])
    mean = np.float32(np.float32(total) / np.float32(n)) if n else np.float32(0)
    return max(mean, np.float32(1e-5))


def _multi_row_sum_array(items: np.ndarray) -> np.ndarray:
    """_multi_row_sum of the rows of ``items`` [size, W], each run of 2^p rows summed by
    np.cumsum (in order, as the level-0 accumulator adds them from 0)."""
    size, W = items.shape
    zero = np.zeros(W, np.float32)
    power = max(4, (max(size - 1, 1).bit_length() if size > 2 else 1) // 4)
    step, mask = 1 << power, (1 << power) - 1
    full = size // step
    runs = (np.cumsum(items[:full * step].reshape(full, step, W), axis=1, dtype=np.float32)[:, -1]
            if full else np.zeros((0, W), np.float32))
    acc = [zero] * 4
    i = 0
    for r in range(full):
        acc[0] = runs[r]
        i += step
        for j in range(1, 4):
            acc[j] = acc[j] + acc[j - 1]
            acc[j - 1] = zero
            if i & (mask << (j * power)):
                break
    for i in range(full * step, size):
        acc[0] = acc[0] + items[i]
    return ((acc[0] + acc[1]) + acc[2]) + acc[3]


def rope_tables(positions: np.ndarray, head_dim: int, theta: float):
    """cos, sin float32 [T, head_dim] for integer positions, as transformers builds them:

    e[i]       = 2i / D                    float32 division (i < D/2)
    inv_freq   = 1 / theta^e               theta^e correctly rounded to float32, then 1 / it
    freqs      = pos * inv_freq            [T, D/2]
    emb        = concat(freqs, freqs)      [T, D] -> cos(emb), sin(emb), correctly rounded

    torch takes theta^e, cos and sin from its vector math (MKL's vmsPow / vmsCos / vmsSin,
    closed source, within an ulp but not correctly rounded); minibit rounds the float64
    value instead.  Measured against torch 2.13: theta^e equal for all but 0 to 2 of the D/2
    frequencies of the usual head sizes (0 of 8, 18, 64; 2 of 128 for D = 256), and
    cos/sin equal for ~95 % of angles and 1 ulp off for the rest -- the one step of the hf
    profile not copied to the bit (tests/test_model.py).
    """
    exponent = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    power = np.power(np.float64(np.float32(theta)), exponent.astype(np.float64)).astype(np.float32)
    inv_freq = np.float32(1) / power                                                    # [D/2]
    freqs = np.asarray(positions, dtype=np.float32)[:, None] * inv_freq[None, :]       # [T, D/2]
    emb = np.concatenate([freqs, freqs], axis=-1)                                       # [T, D]
    e64 = emb.astype(np.float64)
    return np.cos(e64).astype(np.float32), np.sin(e64).astype(np.float32)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """[T, heads, D] -> [T, heads, D]: x*cos + rotate_half(x)*sin, rotate_half(x) =
    concat(-x[D/2:], x[:D/2]).  Dimension i pairs with i + D/2 (not with i + 1).  Each
    output is fl(fl(x*cos) + fl(r*sin)): two rounded products, one rounded add."""
    x, cos, sin = check_rope(x, cos, sin)
    half = x.shape[2] // 2
    rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, None, :] + rot * sin[:, None, :]


# "int3": BitNet a4.8's 3-bit cache, held as float32 values (u - h) / s (transformer.forward
# quantizes k and v with minibit.quant_a48.quantize_kv_int3 before storing them)
KV_DTYPES = {"f32": np.float32, "f16": np.float16, "int3": np.float32}


class KVCache:
    """Keys and values for every layer: [layers, G, max_len, D], filled up to ``len``.

    Each kv head's positions are contiguous, so attention's products read [S, D] blocks
    directly.  ``dtype`` "f32" keeps the float32 values (transformers); "f16" rounds each
    stored key and value to float16 (round to nearest even), as llama.cpp and bitnet.cpp keep
    their caches by default -- half the bytes each decode step reads.  Attention widens
    float16 exactly, so the two differ only by that one rounding of k and v."""

    def __init__(self, num_layers: int, max_len: int, num_kv_heads: int, head_dim: int,
                 dtype: str = "f32"):
        if dtype not in KV_DTYPES:
            raise ValueError(f"KV cache dtype must be one of {', '.join(KV_DTYPES)}, got {dtype!r}")
        self.dtype = dtype
        self.k = np.zeros((num_layers, num_kv_heads, max_len, head_dim), dtype=KV_DTYPES[dtype])
        self.v = np.zeros_like(self.k)
        self.max_len = max_len
        self.len = 0

    def reset(self) -> None:
        self.len = 0


def store_kv(cache: np.ndarray, start: int, x: np.ndarray) -> None:
    """Write x float32 [T, G, D] into one layer of a KVCache, cache [G, max_len, D], at
    positions start..start+T-1.  A float16 cache holds each value rounded to nearest even
    (NumPy's conversion; the twin's F16C conversion is the same rounding)."""
    cache, x = check_store(cache, start, x)
    with np.errstate(over="ignore"):              # beyond float16's range: inf, by definition
        cache[:, start:start + x.shape[0]] = x.transpose(1, 0, 2)


def check_store(cache, start, x):
    check_output(cache, "store_kv: the cache layer [G, max_len, D]", (np.float32, np.float16), 3)
    x = _f32(x, "store_kv: x", 3)
    T, G, D = x.shape
    if (G, D) != (cache.shape[0], cache.shape[2]) or not 0 <= start <= cache.shape[1] - T:
        raise ValueError(f"store_kv: {T} positions of {(G, D)} at {start} do not fit a cache "
                         f"layer {cache.shape}")
    return cache, x


# expf: Sleef's expf (the u10 routine torch's Vectorized<float>::exp calls on AVX2 and
# AVX-512 CPUs, and so its softmax and SiLU), in float32 steps; fma is one rounding
# (minibit.kernels.dense.fmaf), every other operation one rounding each:
#
#   q = rint(x * R_LN2)                           ties to even
#   s = fma(q, -L2U, x);  s = fma(q, -L2L, s)     L2U + L2L = ln 2, L2U exact in 16 bits
#   u = P0; u = fma(u, s, P1) ... fma(u, s, P5)   Horner with fused steps
#   y = 1 + fma(s * s, u, s)
#   exp(x) = (y * 2^(q >> 1)) * 2^(q - (q >> 1))   two exact powers of two
#
# with exp(x) = 0 below -104 and +inf above 100, NaN for NaN.  Measured against torch 2.13's
# SiLU (which calls it) over 400000 arguments in [-110, 0]: 0 mismatches.
EXP_R_LN2 = np.float32(1.442695040888963407359924681001892137426645954152985934135449406931)
EXP_L2U = np.float32(0.693145751953125)
EXP_L2L = np.float32(1.428606765330187045e-06)
EXP_P = tuple(np.float32(c) for c in (0.000198527617612853646278381, 0.00139304355252534151077271,
                                      0.00833336077630519866943359, 0.0416664853692054748535156,
                                      0.166666671633720397949219, 0.5))
EXP_LO, EXP_HI = np.float32(-104), np.float32(100)


def expf(x: np.ndarray) -> np.ndarray:
    """e^x for float32 x, elementwise, in the steps written above (float32)."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        xc = np.clip(x, np.float32(-128), np.float32(128))        # q stays a small integer
        q = np.rint(xc * EXP_R_LN2)
        q = np.where(np.isnan(q), np.float32(0), q)
        s = fmaf(q, -EXP_L2U, xc)
        s = fmaf(q, -EXP_L2L, s)
        u = np.full_like(s, EXP_P[0])
        for c in EXP_P[1:]:
            u = fmaf(u, s, c)
        y = np.float32(1) + fmaf(s * s, u, s)
        qi = q.astype(np.int32)
        h = qi >> 1
        p1 = ((h + 127).astype(np.uint32) << 23).view(np.float32)
        p2 = ((qi - h + 127).astype(np.uint32) << 23).view(np.float32)
        out = (y * p1) * p2
    out = np.where(x < EXP_LO, np.float32(0), out)
    out = np.where(x > EXP_HI, np.float32(np.inf), out)
    return np.where(np.isnan(x), x, out).astype(np.float32, copy=False)


def libm_expf(x: np.ndarray) -> np.ndarray:
    """The C library's expf on every element (torch's scalar loops call std::exp)."""
    from .ggml import _libm_map
    return _libm_map("expf", x)


def softmax_sum(e: np.ndarray, S: int, W: int) -> np.ndarray:
    """[..., n] float32 -> [...]: torch's vec::reduce_all(+) of a softmax row of S values
    whose first n are e and the rest exact zeros (masked), W = torch_lanes():

    S <  W:  e[0] + e[1] + ... in order
    S >= W:  lane l accumulates e[l], e[l + W], e[l + 2W], ... in order (the vectors of the
             row, the last one partial); then the lanes are added in halves, W/2 apart, then
             W/4, ..., 1 (the butterfly of shuffles): (a[:W/2] + a[W/2:]), and so on
    """
    n = e.shape[-1]
    if S < W:
        acc = e[..., 0]
        for i in range(1, n):
            acc = acc + e[..., i]
        return acc
    nv = -(-n // W)
    pad = np.zeros(e.shape[:-1] + (nv * W - n,), np.float32)
    v = np.concatenate([e, pad], axis=-1).reshape(e.shape[:-1] + (nv, W))
    acc = v[..., 0, :]
    for j in range(1, nv):                   # zeros in a partial vector leave a lane as it is
        acc = acc + v[..., j, :]
    while acc.shape[-1] > 1:
        h = acc.shape[-1] // 2
        acc = acc[..., :h] + acc[..., h:]
    return acc[..., 0]


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, start: int) -> np.ndarray:
    """Causal grouped-query attention as transformers' eager attention runs in torch.

    q [T, H, D] for positions start..start+T-1; k, v [G, S, D] for positions 0..S-1
    (S = start + T), float32, or float16 from an "f16" KVCache (widened exactly first).
    Query head h reads kv head h // (H // G).  Returns [T, H*D] float32.

    For query t (position start + t), n = start + t + 1 allowed positions s < n::

        dot[s]   = mkl_dot(q, k[s])                      (over the D values, below)
        score[s] = dot[s] * (1/sqrt(D))                  (the scale rounded to float32)
        e[s]     = expf(score[s] - max score)            (Sleef's exp, above)
        p[s]     = e[s] * (1 / softmax_sum(e, S))        (a reciprocal, then a product)
        out      = mkl_dot(p, v)                         (over the S positions; p = 0 after n)

    mkl_dot(a, b) over K terms is MKL's sgemm as torch.matmul calls it for a prefill of a
    dozen tokens or more: the K terms cut into the blocks of mkl_k_blocks(K); in each block
    one chain of fused multiply-adds in increasing k from 0, fma(a[k], b[k], acc); the
    blocks' results added left to right (measured with torch 2.13: 0 mismatches for K from
    16 to 1000 and products of 5 to 256 rows by 12 to 256 columns).  Not copied: MKL's
    kernel for products of 8 columns or fewer (a head_dim of 8),
    torch's own unfused loop for heads of fewer than 400 multiply-adds, and the orders of
    MKL's small-matrix and single-row kernels (a few queries, or one decode step), which
    differ from both.  The softmax is torch's kernel (max, exp, vec::reduce_all, multiply by
    the reciprocal) in torch_lanes() lanes.  Positions after start + t get probability 0
    and add nothing (the causal mask).
    """
    q, k, v = check_attention(q, k, v, start)
    k, v = k.astype(np.float32, copy=False), v.astype(np.float32, copy=False)   # f16: exact
    T, H, D = q.shape
    G, S, _ = k.shape
    rep = H // G
    W = torch_lanes()
    scale = np.float32(D ** -0.5)
    out = np.zeros((T, G, rep, D), np.float32)
    kk, vv = k[None, :, None], v[None, :, None]                       # [1, G, 1, S, D]
    step = max(1, (1 << 20) // max(1, H * S))               # query rows per chunk (memory)
    # All S positions are computed for every query; the masked ones count as exact zeros in
    # the softmax sum (a zero changes neither softmax_sum's lanes nor its plain order) and are
    # skipped in p . v (MKL adds their fma(0, v, acc) = acc) -- the same bits as stopping at n.
    with np.errstate(invalid="ignore", over="ignore"):
        for c0 in range(0, T, step):
            c1 = min(T, c0 + step)
            qc = q[c0:c1].reshape(c1 - c0, G, rep, 1, D)
            allowed = (np.arange(S)[None, :] <= (start + np.arange(c0, c1))[:, None])[:, None, None]
            dot = None
            for b0, b1 in mkl_k_blocks(D):
                part = np.zeros((c1 - c0, G, rep, S), np.float32)
                for d in range(b0, b1):
                    part = fmaf(qc[..., d], kk[..., d], part)
                dot = part if dot is None else dot + part
            scores = np.where(allowed, dot * scale, np.float32(-np.inf))  # [t, G, rep, S]
            e = np.where(allowed, expf(scores - scores.max(axis=-1, keepdims=True)), np.float32(0))
            p = e * (np.float32(1) / softmax_sum(e, S, W))[..., None]
            o = None
            for b0, b1 in mkl_k_blocks(S):
                part = np.zeros((c1 - c0, G, rep, D), np.float32)
                for s in range(b0, b1):              # (a masked v may be NaN: left out)
                    part = np.where(allowed[..., s, None], fmaf(p[..., s, None], vv[..., s, :], part), part)
                o = part if o is None else o + part
            out[c0:c1] = o
    return out.reshape(T, H * D)


def ffn_act(gate: np.ndarray, up: np.ndarray, act: str) -> np.ndarray:
    """Gated activation [T, F] as torch computes it: relu(g)^2 * u ("relu2") or
    silu(g) * u ("silu").

    relu2: r = g if g > 0 else +0;  (r * r) * u
    silu:  (g / (1 + expf(-g))) * u, torch's SiLU kernel over the T*F values in a row: runs
           of 2 * torch_lanes() use Sleef's exp (expf above), the last T*F mod 2W values the
           C library's expf (torch's scalar loop).  torch splits a tensor of more than 32768
           values between its threads, each part with its own tail: one thread is copied.
    """
    gate, up = check_act(gate, up, act)
    if act == "relu2":
        r = np.where(gate > 0, gate, np.float32(0))
        return r * r * up
    if act == "silu":
        g = gate.reshape(-1)
        cut = g.size - g.size % (2 * torch_lanes())
        e = np.concatenate([expf(-g[:cut]), libm_expf(-g[cut:])]).reshape(gate.shape)
        with np.errstate(over="ignore"):
            return gate / (np.float32(1) + e) * up
    raise AssertionError(act)                                  # check_act refused it


# ---- argument checks, shared with the compiled twin (minibit._fast.layers) ---------------

def check_norm(x, weight):
    x, weight = _f32(x, "rms_norm: x", 2), _f32(weight, "rms_norm: weight", 1)
    if weight.shape[0] != x.shape[1]:
        raise ValueError(f"rms_norm: weight of {weight.shape[0]} for rows of {x.shape[1]}")
    return x, weight


def check_rope(x, cos, sin):
    x = _f32(x, "apply_rope: x", 3)
    T, _, D = x.shape
    cos, sin = _f32(cos, "apply_rope: cos", 2), _f32(sin, "apply_rope: sin", 2)
    if D % 2 or cos.shape != (T, D) or sin.shape != (T, D):
        raise ValueError(f"apply_rope: x {x.shape} needs an even D and cos/sin of {(T, D)}, "
                         f"got {cos.shape} and {sin.shape}")
    return x, cos, sin


def check_attention(q, k, v, start):
    q = _f32(q, "attention: q", 3)
    k = _f32(k, "attention: k", 3, rows=True, half=True)
    v = _f32(v, "attention: v", 3, rows=True, half=True)
    if k.dtype != v.dtype:
        raise ValueError(f"attention: k is {k.dtype} but v is {v.dtype}")
    T, H, D = q.shape
    G, S, _ = k.shape
    if (k.shape[2] != D or v.shape != k.shape or G == 0 or H % G or start < 0
            or S != start + T):
        raise ValueError(f"attention: q {q.shape}, k {k.shape}, v {v.shape}, start {start}: "
                         f"need k, v [G, start + T, D] with G dividing H")
    return q, k, v


def check_act(gate, up, act):
    gate, up = _f32(gate, "ffn_act: gate", 2), _f32(up, "ffn_act: up", 2)
    if gate.shape != up.shape:
        raise ValueError(f"ffn_act: gate {gate.shape} and up {up.shape} differ")
    if act not in ("relu2", "silu"):
        raise ValueError(f"ffn_act: unknown activation {act!r}; expected 'relu2' or 'silu'")
    return gate, up


def _f32(a, what: str, ndim: int, rows: bool = False, half: bool = False) -> np.ndarray:
    """a as a C-contiguous float32 array of ndim dimensions (ValueError naming it otherwise).
    half=True also takes float16.  rows=True: a [G, S, D] array whose [S, D] blocks are
    contiguous is taken as it is (a slice of the KV cache), without a copy."""
    a = np.asarray(a)
    if a.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} dimensions, got shape {a.shape}")
    if a.dtype != np.float32 and not (half and a.dtype == np.float16):
        raise ValueError(f"{what} must be float32{' or float16' if half else ''}, got {a.dtype}")
    e = a.itemsize
    if rows and a.strides[-1] == e and a.strides[-2] == e * a.shape[-1] and a.strides[0] % e == 0:
        return a
    return np.ascontiguousarray(a)


class BitLinear:
    """y = x @ W.T for a packed ternary W, through minibit.kernels.linear.

    The profile decides the activation quantizer and the float order (DESIGN §3); the
    weight stays packed (Packed.data), never expanded to a float matrix.  When the profile
    has no kernel for the stored format (e.g. the llama.cpp profile on an HF checkpoint), the
    codes are repacked once into the format that peer runs, as its converter would
    (minibit.kernels.fit): TQ2_0 for llama.cpp, I2_S for bitnet.cpp.
    """

    def __init__(self, name: str, packed: Packed, profile: str):
        self.name = name
        self.packed = packed          # as stored in the file
        self.profile = profile
        self._derived: dict = {}
        self._plans: dict = {}

    @property
    def shape(self):
        return self.packed.shape

    def packed_for(self, profile: str) -> Packed:
        """The weight in a format the profile's kernels run (the stored one when possible;
        else repacked once, as that peer's converter would: see minibit.kernels.fit)."""
        if profile not in self._derived:
            from ..kernels.fit import fit_profile
            self._derived[profile] = fit_profile(self.packed, profile, self.name)
        return self._derived[profile]

    def _plan(self):
        """(weight, profile, kernel module, quantizer name), resolved once per profile and
        backend: the per-call lookups of kernels.linear, done ahead for the decode loop."""
        key = (self.profile, _backend.backend())
        plan = self._plans.get(key)
        if plan is None:
            p = self.packed_for(self.profile)
            prof, kern = kernels.resolve(p, self.profile, None)
            plan = self._plans[key] = (p, prof, kernels.kernel_module(kern),
                                       kernels.PAIRS[(p.fmt, prof)])
        return plan

    def quantizer(self) -> str:
        """The name of the activation quantizer this weight's profile uses: two BitLinears
        with the same quantizer can share one quantize() of the same input."""
        if self.profile in profiles.EXTRA:              # "a4.8", "trilm": minibit/profiles.py
            return profiles.quantizer(self)
        return self._plan()[3]

    def quantize(self, x: np.ndarray) -> dict:
        """Step 1 of kernels.linear: the profile's int8 activations and scales for x [T, in]."""
        if self.profile in profiles.EXTRA:
            return profiles.quantize(self, x)
        p, prof, _, _ = self._plan()
        return kernels.quantize_acts(kernels.check_activations(x, p.shape[1]), p.fmt, prof)

    def apply(self, acts: dict) -> np.ndarray:
        """Steps 2-3 of kernels.linear on quantized activations -> float32 [T, out]."""
        if self.profile in profiles.EXTRA:
            return profiles.apply(self, acts)
        p, prof, mod, _ = self._plan()
        return mod.apply(p, prof, acts)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """y = x @ W.T: [T, in] -> [T, out], exactly kernels.linear(x, packed, profile)."""
        return self.apply(self.quantize(x))


def linear_group(linears, x: np.ndarray) -> list:
    """[lin(x) for lin in linears], quantizing x once per distinct quantizer (q/k/v and
    gate/up read the same activations; the result is the same bits as separate calls)."""
    grouped = _apply_grouped(linears, x)
    if grouped is not None:
        return grouped
    acts: dict = {}
    out = []
    for lin in linears:
        if not isinstance(lin, BitLinear):         # a stand-in (the oracle's taps): call it
            out.append(lin(x))
            continue
        name = lin.quantizer()
        if name not in acts:
            acts[name] = lin.quantize(x)
        out.append(lin.apply(acts[name]))
    return out


def _apply_grouped(linears, x: np.ndarray):
    """One quantize and one kernel call (the twin: one thread-pool job) for BitLinears with
    the same profile, kernel and quantizer whose kernel module has ``apply_group`` -> the
    outputs, or None when the group does not qualify (then each runs alone; same bits)."""
    if len(linears) < 2 or not all(type(lin) is BitLinear for lin in linears):
        return None
    if any(lin.profile in profiles.EXTRA for lin in linears):
        return None
    plans = [lin._plan() for lin in linears]
    p0, prof, mod, quantizer = plans[0]
    if not hasattr(mod, "apply_group") or any(
            (pl[1], pl[2], pl[3]) != (prof, mod, quantizer) for pl in plans[1:]):
        return None
    acts = linears[0].quantize(x)
    return mod.apply_group([pl[0] for pl in plans], prof, acts)
