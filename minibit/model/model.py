"""Model: what ``minibit.load`` returns — config, tokenizer, the transformer and a profile."""

from __future__ import annotations

import numpy as np

from .._errors import FormatError
from .config import Config
from .transformer import Transformer

__all__ = ["Model", "PROFILES"]

PROFILES = ("hf", "bitnet.cpp", "llama.cpp", "a4.8", "trilm")   # the last two: minibit/profiles.py


class Model:
    """A loaded ternary model.

    config      minibit.model.Config
    tokenizer   minibit.tokenizer.Tokenizer (or None for a bare checkpoint without one)
    profile     "hf" | "bitnet.cpp" | "llama.cpp" | "a4.8" | "trilm": the numerics every
                BitLinear uses (the last two: minibit/profiles.py)
    source      where it was loaded from
    kv_cache    "f32" (default) or "f16": the type of the caches new_cache makes.  "f16"
                stores keys and values rounded to float16, as llama.cpp and bitnet.cpp do by
                default: half the memory and half the bytes a decode step reads.  Under
                "hf" that is the one extra rounding; under the engine profiles attention
                then also rounds q and (where the engine does) the softmax weights to
                float16, as the engine with an F16 cache does (minibit.model.ggml).  "int3":
                BitNet a4.8's 3-bit cache (minibit.quant_a48.quantize_kv_int3), held as float32.
    flash_attn  None (default): the engine profile's own default, as the engine runs
                without options: "llama.cpp" computes attention with llama.cpp's
                flash-attention kernels (its "auto" is on for the CPU), "bitnet.cpp" with the
                non-flash graph.  True / False: llama.cpp's flash kernels / the non-flash
                graph, as the engine with ``flash_attn`` on / off (minibit.model.ggml).  The
                other profiles ignore it.
    """

    def __init__(self, transformer: Transformer, tokenizer, profile: str, source: str,
                 chat_template: str | None = None):
        self.transformer = transformer
        self.config: Config = transformer.config
        self.tokenizer = tokenizer
        self.source = source
        self.chat_template = chat_template
        self._profile = None
        self.profile = profile
        self.kv_cache = "f32"

    @property
    def flash_attn(self) -> bool | None:
        return self.transformer.flash_attn

    @flash_attn.setter
    def flash_attn(self, value) -> None:
        if value not in (None, True, False):
            raise FormatError(f"flash_attn must be None, True or False, not {value!r}")
        self.transformer.flash_attn = None if value is None else bool(value)

    @property
    def profile(self) -> str:
        return self._profile

    @profile.setter
    def profile(self, value: str) -> None:
        if value not in PROFILES:
            raise FormatError(f"unknown profile {value!r}; expected one of {', '.join(PROFILES)}")
        self._profile = value
        for layer in self.transformer.layers:
            for lin in layer.linears():
                lin.profile = value

    def logits(self, ids) -> np.ndarray:
        """float32 [len(ids), vocab]: a fresh forward over ids (a new cache of len(ids))."""
        ids = self._check_ids(ids)
        return self.transformer.forward(ids, self.new_cache(len(ids)))

    def new_cache(self, max_len: int | None = None, kv: str | None = None):
        """A KV cache for up to max_len positions (default: the model's context).  kv: "f32"
        or "f16" (see layers.KVCache); None takes ``self.kv_cache``."""
        return self.transformer.new_cache(max_len, kv or self.kv_cache)

    def forward(self, ids, cache, last_only: bool = False, trace=None) -> np.ndarray:
        """Logits for ids appended to ``cache`` (incremental decode)."""
        return self.transformer.forward(self._check_ids(ids), cache, trace=trace, last_only=last_only)

    def _check_ids(self, ids) -> np.ndarray:
        a = np.asarray(ids)
        if a.ndim != 1 or a.size == 0 or not np.issubdtype(a.dtype, np.integer):
            raise FormatError(f"token ids must be a non-empty 1-D integer sequence, got {a.dtype} {a.shape}")
        if a.min() < 0 or a.max() >= self.config.vocab_size:
            raise FormatError(f"token id out of range [0, {self.config.vocab_size}): "
                              f"{int(a.min()) if a.min() < 0 else int(a.max())}")
        return a.astype(np.int64)

    def generate(self, prompt: str, max_new_tokens: int = 128, temperature: float = 0.8,
                 top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0,
                 repeat_penalty: float = 1.0, seed=None, stop=(), stream: bool = False, **kw):
        """Continue ``prompt``: the text, or an iterator of text pieces with stream=True.
        See minibit.generate for the loop, stop strings and the context limit."""
        from ..generate import generate
        return generate(self, prompt, max_new_tokens=max_new_tokens, temperature=temperature,
                        top_k=top_k, top_p=top_p, min_p=min_p, repeat_penalty=repeat_penalty,
                        seed=seed, stop=stop, stream=stream, **kw)

    def chat(self, messages, **kw):
        """Reply to ``messages`` ([{"role", "content"}, ...]) through the model's chat template
        (a "Role: content<eos>" fallback for models without one); same options as generate."""
        from ..generate import render_chat
        return self.generate(render_chat(self, messages), **kw)

    @property
    def packed_bytes(self) -> int:
        """Bytes of every weight as held: packed ternary + norms + embeddings."""
        t = self.transformer
        n = t.embed.nbytes + (0 if t.lm_head is None else t.lm_head.nbytes) + t.final_norm.nbytes
        for L in t.layers:
            n += sum(lin.packed.nbytes for lin in L.linears())
            n += sum(a.nbytes for a in (L.attn_norm, L.ffn_norm, L.attn_sub_norm, L.ffn_sub_norm)
                     if a is not None)
        return int(n)

    def __repr__(self) -> str:
        c = self.config
        return (f"Model({c.arch}, {c.num_layers} layers, hidden {c.hidden_size}, vocab {c.vocab_size}, "
                f"profile {self.profile!r}, backend {kernels_backend()!r}, from {self.source!r})")


def kernels_backend() -> str:
    from .._backend import backend
    return backend()
