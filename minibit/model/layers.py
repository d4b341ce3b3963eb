"""The layers of a BitNet block in float32 NumPy: transformers' formulas in an order of
minibit's own, written out step by step so that a C twin (minibit._fast.layers) gives the
same bits.

rms_norm        x * rsqrt(mean(x^2) + eps) * weight          (float32 throughout)
rope_tables     cos/sin [positions, head_dim], "rotate_half" (NeoX) pairing: dim i with i + d/2
apply_rope      q * cos + rotate_half(q) * sin
attention       causal GQA softmax(q k^T / sqrt(d)) v over the KV cache (float32 or float16)
ffn_act         squared ReLU (BitNet-2B4T) or SiLU (1bitLLM, Falcon3), gated: act(g) * u
expf            e^x in float32 steps (softmax, SiLU)
BitLinear       a packed ternary weight + kernels.linear with the model's profile

Every reduction (RMSNorm's sum of squares, q . k, the softmax denominator) adds in the
32-lane order of minibit.kernels.dense (``lane_dot``); attention's p . v adds positions in
increasing order; exp is :func:`expf`, not NumPy's (whose last bit depends on the CPU's
SIMD level) nor libm's.  The results differ from transformers' float32 by rounding only
(tests/test_layers.py bounds each against a float64 computation).

Shapes are written [T, ...] for T tokens of one sequence; H query heads, G kv heads,
D head_dim.
"""

from __future__ import annotations

import numpy as np

from .. import _backend, kernels, profiles
from .._buffers import check_output
from ..kernels.dense import lane_dot
from ..formats import Packed

__all__ = ["rms_norm", "rope_tables", "apply_rope", "attention", "ffn_act", "expf", "BitLinear",
           "KVCache", "KV_DTYPES", "store_kv", "linear_group", "TWINNED"]

# the functions minibit._fast.layers computes in C, to the same bits
TWINNED = ("rms_norm", "apply_rope", "attention", "ffn_act", "expf", "store_kv")


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """[T, n] float32 -> [T, n] float32: x / sqrt(mean(x^2) + eps) * weight, transformers'
    order (normalize first, then scale), every step a float32 operation::

        ss  = lane_dot(x, x)                 the sum of squares in minibit's lane order
        var = ss / n
        inv = 1 / sqrt(var + eps)
        y   = (x * inv) * weight
    """
    x, weight = check_norm(x, weight)
    var = lane_dot(x, x) / np.float32(x.shape[1])                             # [T]
    inv = np.float32(1) / np.sqrt(var + np.float32(eps))
    return (x * inv[:, None]) * weight


def rope_tables(positions: np.ndarray, head_dim: int, theta: float):
    """cos, sin float32 [T, head_dim] for integer positions, as transformers builds them:

    inv_freq[i] = 1 / theta^(2i / D)      (float32, i < D/2)
    freqs = pos * inv_freq                 [T, D/2]
    emb = concat(freqs, freqs)             [T, D] -> cos(emb), sin(emb)
    """
    exponent = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    inv_freq = (np.float32(1) / (np.float32(theta) ** exponent)).astype(np.float32)    # [D/2]
    freqs = np.asarray(positions, dtype=np.float32)[:, None] * inv_freq[None, :]       # [T, D/2]
    emb = np.concatenate([freqs, freqs], axis=-1)                                       # [T, D]
    return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)


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


# expf: exp in float32, the same bits in NumPy and C.  NumPy's own float32 exp is a SIMD
# routine whose last bit depends on the CPU's instruction set, and libm's expf is another
# function again, so the softmax and SiLU use this one, written out as float32 steps:
#
#   n = rint(x * log2(e))                         ties to even
#   r = (x - n * C1) - n * C2                     C1 + C2 = ln 2, C1 exact in 9 bits
#   p = ((((P0 r + P1) r + P2) r + P3) r + P4) r + P5           Horner, each op rounded
#   y = (p * (r * r) + r) + 1                     exp(r) on [-ln2/2, ln2/2]
#   exp(x) = y * 2^n                              2^n built from its exponent bits
#
# with exp(x) = 0 below -87.5 and +inf above 88 (where 2^n would leave the normal range),
# NaN for NaN.  The coefficients are Cephes' minimax fit for expf (Moshier, 1984): ~1 ulp.
EXP_LOG2E = np.float32(1.44269504088896341)
EXP_C1 = np.float32(0.693359375)
EXP_C2 = np.float32(-2.12194440e-4)
EXP_P = tuple(np.float32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3,
                                      4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))
EXP_LO, EXP_HI = np.float32(-87.5), np.float32(88.0)


def expf(x: np.ndarray) -> np.ndarray:
    """e^x for float32 x, elementwise, in the steps written above (float32)."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        xc = np.clip(x, EXP_LO, EXP_HI)
        n = np.rint(xc * EXP_LOG2E)
        r = (xc - n * EXP_C1) - n * EXP_C2
        p = np.full_like(r, EXP_P[0])
        for c in EXP_P[1:]:
            p = p * r + c
        y = (p * (r * r) + r) + np.float32(1)
        ni = np.where(np.isnan(n), np.float32(0), n).astype(np.int32)
        scale = ((ni + 127).astype(np.uint32) << 23).view(np.float32)
        out = y * scale
    out = np.where(x < EXP_LO, np.float32(0), out)
    out = np.where(x > EXP_HI, np.float32(np.inf), out)
    return np.where(np.isnan(x), x, out).astype(np.float32, copy=False)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, start: int) -> np.ndarray:
    """Causal grouped-query attention.

    q [T, H, D] for positions start..start+T-1; k, v [G, S, D] for positions 0..S-1
    (S = start + T), float32, or float16 from an "f16" KVCache (widened exactly first).
    Query head h reads kv head h // (H // G).  Returns [T, H*D] float32.

    For query t (position start + t) and each allowed position s <= start + t::

        score[s] = lane_dot(q, k[s]) * (1/sqrt(D))        (the scale rounded to float32)
        e[s]     = expf(score[s] - max score)
        p[s]     = e[s] / lane_dot(e, 1)
        out      = sum over s = 0, 1, ..., start + t of p[s] * v[s]   (float32, in that order)

    Positions after start + t take no part (the causal mask).
    """
    q, k, v = check_attention(q, k, v, start)
    k, v = k.astype(np.float32, copy=False), v.astype(np.float32, copy=False)   # f16: exact
    T, H, D = q.shape
    G, S, _ = k.shape
    rep = H // G
    scale = np.float32(D ** -0.5)
    out = np.zeros((T, G, rep, D), np.float32)
    ones = np.ones(S, np.float32)
    kk, vv = k[None, :, None], v[None, :, None]                       # [1, G, 1, S, D]
    step = max(1, (1 << 22) // max(1, H * S * 32))          # query rows per chunk (memory)
    with np.errstate(invalid="ignore", over="ignore"):
        for c0 in range(0, T, step):
            c1 = min(T, c0 + step)
            qc = q[c0:c1].reshape(c1 - c0, G, rep, 1, D)
            allowed = (np.arange(S)[None, :] <= (start + np.arange(c0, c1))[:, None])[:, None, None]
            scores = lane_dot(qc, kk) * scale                                   # [t, G, rep, S]
            scores = np.where(allowed, scores, np.float32(-np.inf))
            e = expf(scores - scores.max(axis=-1, keepdims=True))
            e = np.where(allowed, e, np.float32(0))
            p = e / lane_dot(e, ones)[..., None]
            o = out[c0:c1]
            for s in range(S):                        # rows t with s <= start + t, in order
                t0 = max(0, s - start - c0)
                o[t0:] += p[t0:, :, :, s, None] * vv[:, :, :, s]
    return out.reshape(T, H * D)


def ffn_act(gate: np.ndarray, up: np.ndarray, act: str) -> np.ndarray:
    """Gated activation [T, F]: relu(g)^2 * u ("relu2") or silu(g) * u ("silu").

    relu2: r = g if g > 0 else +0;  (r * r) * u
    silu:  (g / (1 + expf(-g))) * u
    """
    gate, up = check_act(gate, up, act)
    if act == "relu2":
        r = np.where(gate > 0, gate, np.float32(0))
        return r * r * up
    if act == "silu":
        with np.errstate(over="ignore"):
            return gate / (np.float32(1) + expf(-gate)) * up
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
