"""The forward pass: embedding -> blocks -> final norm -> logits, with a float32 KV cache.

One block (BitNet-2B4T; "bitnet" swaps relu2 for silu; "llama" drops the two sub-norms)::

    a = rms_norm(h, attn_norm)
    q, k, v = Wq a, Wk a, Wv a                 ternary BitLinear, the profile's numerics
    q, k = rope(q), rope(k)                    rotate_half pairing, positions from the cache
    o = attention(q, K_cache, V_cache)         causal, grouped-query
    o = rms_norm(o, attn_sub_norm)             BEFORE the output projection
    h = h + Wo o
    m = rms_norm(h, ffn_norm)
    f = relu(Wgate m)^2 * (Wup m)
    f = rms_norm(f, ffn_sub_norm)              BEFORE the down projection
    h = h + Wdown f

An optional ``trace(name, array)`` callback sees every intermediate under the names llama.cpp's
eval callback prints (``attn_norm-0``, ``ffn_out-0``, ...), which the oracle's dumps use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _backend
from ..kernels import dense
from . import ggml as _ggml
from . import layers as _layers
from .config import Config
from .layers import BitLinear, KVCache, linear_group, rope_tables

__all__ = ["Layer", "Transformer"]

def _ops():
    """The module that runs the block arithmetic: minibit._fast.layers (C, the same bits)
    when built and not forced pure, else layers itself."""
    return _backend.select("layers", _layers)


def _kv_int3(x, start):
    from .. import quant_a48
    return _backend.select("quant_a48", quant_a48).quantize_kv_int3(x, start)


def _ggml_ops():
    """The engines' block arithmetic (minibit.model.ggml, or its twin minibit._fast.ggml)."""
    return _backend.select("ggml", _ggml)


# profiles whose whole block runs in ggml's float order (minibit.model.ggml)
GGML_PROFILES = ("bitnet.cpp", "llama.cpp")


@dataclass
class Layer:
    """One block's weights: float32 norm vectors and packed ternary projections."""

    attn_norm: np.ndarray
    q: BitLinear
    k: BitLinear
    v: BitLinear
    o: BitLinear
    ffn_norm: np.ndarray
    gate: BitLinear
    up: BitLinear
    down: BitLinear
    attn_sub_norm: np.ndarray | None = None
    ffn_sub_norm: np.ndarray | None = None

    def linears(self):
        return [self.q, self.k, self.v, self.o, self.gate, self.up, self.down]


class Transformer:
    """The model's arithmetic, independent of where the weights came from.

    embed     [vocab, hidden]: float32, float16, or bf16 held as uint16 (widened per use)
    lm_head   [vocab, hidden] in the same forms, or None when tied to embed
    """

    def __init__(self, config: Config, embed, embed_dtype: str, layers: list, final_norm,
                 lm_head=None, lm_head_dtype: str | None = None):
        self.config = config
        self.embed, self.embed_dtype = embed, embed_dtype
        self.layers = layers
        self.final_norm = final_norm
        self.lm_head = lm_head
        self.lm_head_dtype = lm_head_dtype
        # an HF checkpoint under an engine profile runs as the engine runs its conversion:
        # the converters write the output matrix as F16 (build_from_hf sets this)
        self.converted_head_f16 = False
        # the engine profiles' attention kernel: None = the engine's default (ggml.ENGINES),
        # True = llama.cpp's flash attention, False = the non-flash graph
        self.flash_attn: bool | None = None

    # ---- pieces -----------------------------------------------------------------------

    def embed_tokens(self, ids: np.ndarray) -> np.ndarray:
        """[T] int -> [T, hidden] float32."""
        return dense.widen(self.embed[ids], self.embed_dtype)

    def project_logits(self, h: np.ndarray) -> np.ndarray:
        """[T, hidden] float32 -> [T, vocab] float32: h @ W.T with W read in its stored dtype
        (minibit.kernels.dense: widened as read, a fixed float32 summation order)."""
        W, dt = (self.embed, self.embed_dtype) if self.lm_head is None else (self.lm_head, self.lm_head_dtype)
        return dense.project(np.ascontiguousarray(h, dtype=np.float32), W, dt)

    def _f16_head(self, W, dtype: str) -> np.ndarray:
        """A BF16 output matrix as the engines hold it after conversion: float16 (nearest
        even), made once and kept."""
        cached = getattr(self, "_head16", None)
        if cached is None or cached[0] is not W:
            with np.errstate(over="ignore"):
                cached = (W, dense.widen(W, dtype).astype(np.float16))
            self._head16 = cached
        return cached[1]

    # ---- forward ------------------------------------------------------------------------

    def new_cache(self, max_len: int | None = None, kv: str = "f32") -> KVCache:
        c = self.config
        return KVCache(c.num_layers, max_len or c.max_position, c.num_kv_heads, c.head_dim, kv)

    def _out(self, x, sub_norm, proj: BitLinear, norm_name: str, out_name: str, li: int, tr,
             rms_norm):
        """The end of a half-block: the sub-norm (when the architecture has one), then the
        output projection (o or down), each traced: [T, n] -> [T, hidden].  ``rms_norm`` is
        the profile's (minibit.model.layers or minibit.model.ggml)."""
        if sub_norm is not None:
            x = rms_norm(x, sub_norm, self.config.rms_norm_eps)
            tr(f"{norm_name}-{li}", x)
        x = proj(x)
        tr(f"{out_name}-{li}", x)
        return x

    def engine(self) -> str:
        """The profile of the linears ("hf", "bitnet.cpp" or "llama.cpp"): it also picks the
        float arithmetic of the rest of the block (layers for "hf", ggml for the engines)."""
        return getattr(self.layers[0].q, "profile", "hf") if self.layers else "hf"

    def forward(self, ids, cache: KVCache | None = None, trace=None, last_only: bool = False):
        """Logits float32 [T, vocab] for token ids [T] appended after the cache's contents.

        With no cache, a fresh one of length T is used (a full forward).  ``last_only``
        projects only the last position to the vocabulary (decode).

        The "hf" profile computes the block as minibit.model.layers (transformers' formulas);
        the engine profiles as minibit.model.ggml (ggml's order, batch and token-by-token
        differing where ggml's do: a call with T >= 2 tokens is ggml's batch).
        """
        c = self.config
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        T = ids.shape[0]
        if cache is None:
            cache = self.new_cache(T)
        start = cache.len
        if start + T > cache.max_len:
            raise ValueError(f"context full: {start} + {T} tokens exceed the cache of {cache.max_len}")
        H, G, D = c.num_heads, c.num_kv_heads, c.head_dim
        ops = _ops()
        engine = self.engine()
        if engine in GGML_PROFILES:
            g = _ggml_ops()
            rms_norm = g.rms_norm

            interleaved = c.arch == "llama"        # q, k rows permuted by the converter
            flash = self.flash_attn

            def attention(q, k, v, start):
                return g.attention(q, k, v, start, engine, interleaved, flash)
            apply_rope = g.rope_neox
            cos, sin = g.rope_tables(np.arange(start, start + T), D, c.rope_theta)

            def ffn_act(gate, up, act):
                if act == "silu":
                    return g.silu(gate) * up                    # ggml_silu, then ggml_mul
                return ops.ffn_act(gate, up, act)               # relu2: ggml_relu, ggml_sqr, mul

            def project(hh):
                W, dt = ((self.embed, self.embed_dtype) if self.lm_head is None
                         else (self.lm_head, self.lm_head_dtype))
                if dt not in ("F16", "F32") or (dt == "F32" and self.converted_head_f16):
                    W, dt = self._f16_head(W, dt), "F16"    # as the engines' converters write it
                return g.lm_head(np.ascontiguousarray(hh, dtype=np.float32), W, dt, engine)
        else:
            rms_norm, apply_rope, attention, ffn_act = ops.rms_norm, ops.apply_rope, ops.attention, ops.ffn_act
            cos, sin = rope_tables(np.arange(start, start + T), D, c.rope_theta)
            project = self.project_logits
        tr = trace or (lambda name, arr: None)

        h = self.embed_tokens(ids)                                           # [T, hidden]
        tr("inp_embd", h)
        for li, L in enumerate(self.layers):
            a = rms_norm(h, L.attn_norm, c.rms_norm_eps)
            tr(f"attn_norm-{li}", a)
            q, k, v = linear_group((L.q, L.k, L.v), a)                      # one quantize of a
            q, k, v = q.reshape(T, H, D), k.reshape(T, G, D), v.reshape(T, G, D)
            tr(f"Qcur-{li}", q)
            tr(f"Kcur-{li}", k)
            tr(f"Vcur-{li}", v)
            q = apply_rope(q, cos, sin)
            k = apply_rope(k, cos, sin)
            if cache.dtype == "int3":                                      # a4.8's 3-bit cache
                k, v = _kv_int3(k, start), _kv_int3(v, start)
            tr(f"Qcur_rope-{li}", q)
            tr(f"Kcur_rope-{li}", k)
            ops.store_kv(cache.k[li], start, k)                             # -> [G, S, D]
            ops.store_kv(cache.v[li], start, v)
            o = attention(q, cache.k[li, :, :start + T], cache.v[li, :, :start + T], start)
            tr(f"kqv_out-{li}", o)
            h = h + self._out(o, L.attn_sub_norm, L.o, "attn_sub_norm", "attn_out", li, tr, rms_norm)
            tr(f"ffn_inp-{li}", h)
            m = rms_norm(h, L.ffn_norm, c.rms_norm_eps)
            tr(f"ffn_norm-{li}", m)
            f = ffn_act(*linear_group((L.gate, L.up), m), c.hidden_act)
            tr(f"ffn_gate_par-{li}", f)
            h = h + self._out(f, L.ffn_sub_norm, L.down, "ffn_sub_norm", "ffn_out", li, tr, rms_norm)
            tr(f"l_out-{li}", h)
        cache.len = start + T
        h = rms_norm(h, self.final_norm, c.rms_norm_eps)
        tr("result_norm", h)
        if last_only:
            h = h[-1:]
        logits = project(h)
        tr("result_output", logits)
        return logits
