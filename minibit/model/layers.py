"""The layers of a BitNet block, in float32 NumPy, each the way transformers computes it.

rms_norm        x * rsqrt(mean(x^2) + eps) * weight          (float32 throughout)
rope_tables     cos/sin [positions, head_dim], "rotate_half" (NeoX) pairing: dim i with i + d/2
apply_rope      q * cos + rotate_half(q) * sin
attention       causal GQA softmax(q k^T / sqrt(d)) v over a float32 KV cache
ffn_act         squared ReLU (BitNet-2B4T) or SiLU (1bitLLM, Falcon3), gated: act(g) * u
BitLinear       a packed ternary weight + kernels.linear with the model's profile

Shapes are written [T, ...] for T tokens of one sequence; H query heads, G kv heads,
D head_dim.
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..formats import Packed

__all__ = ["rms_norm", "rope_tables", "apply_rope", "attention", "ffn_act", "BitLinear", "KVCache",
           "linear_group"]


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """[T, n] float32 -> [T, n] float32: x / sqrt(mean(x^2) + eps) * weight (transformers'
    order: normalize first, then scale)."""
    x = np.ascontiguousarray(x)       # NumPy's float32 sum order follows the memory layout
    var = np.mean(x * x, axis=-1, keepdims=True, dtype=np.float32)          # [T, 1]
    return (x * (np.float32(1) / np.sqrt(var + np.float32(eps)))) * weight  # [T, n]


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
    concat(-x[D/2:], x[:D/2]).  Dimension i pairs with i + D/2 (not with i + 1)."""
    half = x.shape[-1] // 2
    rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, None, :] + rot * sin[:, None, :]


class KVCache:
    """float32 keys and values for every layer: [layers, G, max_len, D], filled up to ``len``.

    Each kv head's positions are contiguous, so attention's products read [S, D] blocks
    directly (a [S, G, D] layout made every decode step gather strided rows)."""

    def __init__(self, num_layers: int, max_len: int, num_kv_heads: int, head_dim: int):
        self.k = np.zeros((num_layers, num_kv_heads, max_len, head_dim), dtype=np.float32)
        self.v = np.zeros_like(self.k)
        self.max_len = max_len
        self.len = 0

    def reset(self) -> None:
        self.len = 0


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, start: int) -> np.ndarray:
    """Causal grouped-query attention.

    q [T, H, D] for positions start..start+T-1; k, v [G, S, D] for positions 0..S-1
    (S = start + T).  Query head h reads kv head h // (H // G).  Returns [T, H*D] float32.
    """
    T, H, D = q.shape
    G, S, _ = k.shape
    rep = H // G
    qg = q.reshape(T, G, rep, D).transpose(1, 2, 0, 3)                     # [G, rep, T, D]
    qg = np.ascontiguousarray(qg).reshape(G, rep * T, D)
    scores = (qg @ k.transpose(0, 2, 1)) * np.float32(D ** -0.5)           # [G, rep*T, S]
    scores = scores.reshape(G, rep, T, S)
    if T > 1:                                                              # one row sees all
        mask = np.arange(S)[None, :] > (start + np.arange(T))[:, None]    # [T, S] future
        scores = np.where(mask, np.float32(-np.inf), scores)
    scores = scores - scores.max(axis=-1, keepdims=True)
    p = np.exp(scores)
    p = p / p.sum(axis=-1, keepdims=True, dtype=np.float32)                # softmax, float32
    out = p.reshape(G, rep * T, S) @ v                                     # [G, rep*T, D]
    return out.reshape(G, rep, T, D).transpose(2, 0, 1, 3).reshape(T, H * D).astype(
        np.float32, copy=False)


def ffn_act(gate: np.ndarray, up: np.ndarray, act: str) -> np.ndarray:
    """Gated activation [T, F]: relu(g)^2 * u ("relu2") or silu(g) * u ("silu")."""
    if act == "relu2":
        r = np.maximum(gate, np.float32(0))
        return r * r * up
    return gate / (np.float32(1) + np.exp(-gate)) * up


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
        from .. import _backend
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
        return self._plan()[3]

    def quantize(self, x: np.ndarray) -> dict:
        """Step 1 of kernels.linear: the profile's int8 activations and scales for x [T, in]."""
        p, prof, _, _ = self._plan()
        return kernels.quantize_acts(kernels.check_activations(x, p.shape[1]), p.fmt, prof)

    def apply(self, acts: dict) -> np.ndarray:
        """Steps 2-3 of kernels.linear on quantized activations -> float32 [T, out]."""
        p, prof, mod, _ = self._plan()
        return mod.apply(p, prof, acts)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """y = x @ W.T: [T, in] -> [T, out], exactly kernels.linear(x, packed, profile)."""
        return self.apply(self.quantize(x))


def linear_group(linears, x: np.ndarray) -> list:
    """[lin(x) for lin in linears], quantizing x once per distinct quantizer (q/k/v and
    gate/up read the same activations; the result is the same bits as separate calls)."""
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
