"""Model configuration: one dataclass for the three ternary architectures minibit runs.

============== ====================================== ========== ========= ===============
arch           checkpoints                            FFN act    sub-norms weights on disk
============== ====================================== ========== ========= ===============
bitnet-b1.58   microsoft/bitnet-b1.58-2B-4T           relu2      yes       packed or bf16
               (transformers BitNetForCausalLM)
bitnet         1bitLLM/bitnet_b1_58-large, -3B        silu       yes       float masters
               (remote-code BitnetForCausalLM)
llama          tiiuae/Falcon3-*-1.58bit               silu       no        packed
               (LlamaForCausalLM + BitLinear)
============== ====================================== ========== ========= ===============

The names are the GGUF architecture names llama.cpp and bitnet.cpp use for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, asdict

from .._errors import FormatError

__all__ = ["Config", "from_hf_config"]


@dataclass
class Config:
    """Everything the forward pass needs; every field is a plain Python value.

    arch                 "bitnet-b1.58" | "bitnet" | "llama" (see the module table)
    vocab_size           rows of the embedding / logits width
    hidden_size          d_model
    intermediate_size    FFN width (the ffn_sub_norm width)
    num_layers           transformer blocks
    num_heads            query heads
    num_kv_heads         key/value heads (GQA: num_heads % num_kv_heads == 0)
    head_dim             per-head width (config's head_dim, else hidden_size // num_heads)
    rope_theta           RoPE base
    rms_norm_eps         epsilon inside every RMSNorm
    max_position         context length the model was trained for
    hidden_act           "relu2" (squared ReLU) | "silu"
    sub_norms            attn_sub_norm before o_proj and ffn_sub_norm before down_proj
    tie_word_embeddings  logits from the embedding matrix (no lm_head tensor)
    linear_class         "autobitlinear" | "bitlinear": how a packed weight_scale is applied
    quantization_mode    "offline" (packed uint8 + weight_scale) | "online" (float masters)
    bos_token_id         prepended by the tokenizer when the model wants it (or None)
    eos_token_ids        generation stops on any of these
    """

    arch: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    max_position: int = 2048
    hidden_act: str = "silu"
    sub_norms: bool = True
    tie_word_embeddings: bool = True
    linear_class: str = "autobitlinear"
    quantization_mode: str = "online"
    bos_token_id: int | None = None
    eos_token_ids: list = field(default_factory=list)

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads", "head_dim", "max_position"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 < v <= 1 << 24:
                raise FormatError(f"config: {name} must be a positive integer, got {v!r}")
        if self.num_heads % self.num_kv_heads:
            raise FormatError(f"config: num_attention_heads {self.num_heads} is not a multiple of "
                              f"num_key_value_heads {self.num_kv_heads}")
        if self.head_dim % 2:
            raise FormatError(f"config: head_dim {self.head_dim} must be even for RoPE")
        if self.arch not in ("bitnet-b1.58", "bitnet", "llama"):
            raise FormatError(f"config: unknown architecture {self.arch!r}")
        if self.hidden_act not in ("relu2", "silu"):
            raise FormatError(f"config: unsupported hidden_act {self.hidden_act!r} "
                              f"(expected 'relu2' or 'silu')")
        if self.linear_class not in ("autobitlinear", "bitlinear"):
            raise FormatError(f"config: unknown linear_class {self.linear_class!r}")
        import math
        if not (math.isfinite(self.rope_theta) and 1.0 < self.rope_theta <= 1e12):
            raise FormatError(f"config: rope_theta must be in (1, 1e12], got {self.rope_theta!r}")
        if not (math.isfinite(self.rms_norm_eps) and 0 < self.rms_norm_eps < 1):
            raise FormatError(f"config: rms_norm_eps must be in (0, 1), got {self.rms_norm_eps!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def _get(cfg: dict, key: str, kind, default=None, required=True, path="config.json"):
    v = cfg.get(key)
    if v is None:                 # absent or JSON null: the default
        v = default
    if v is None:
        if required:
            raise FormatError(f"{path}: missing field {key!r}")
        return None
    if kind is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if not isinstance(v, kind) or isinstance(v, bool) and kind is not bool:
        raise FormatError(f"{path}: field {key!r} must be {kind.__name__}, got {v!r}")
    return v


def from_hf_config(cfg: dict, path: str = "config.json") -> Config:
    """Map a transformers config.json to a Config, deciding the architecture.

    BitNetForCausalLM / model_type "bitnet"        -> "bitnet-b1.58" (2B-4T)
    BitnetForCausalLM (lower-case n, 1bitLLM code)  -> "bitnet"
    LlamaForCausalLM with quant_method "bitnet"    -> "llama" (Falcon3-1.58bit)

    Every field is type-checked; anything malformed raises FormatError naming the field.
    """
    if not isinstance(cfg, dict):
        raise FormatError(f"{path}: expected a JSON object")
    try:
        return _from_hf_config(cfg, path)
    except FormatError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as e:
        # a combination the explicit checks below did not foresee: still a clean error
        raise FormatError(f"{path}: invalid configuration ({type(e).__name__}: {e})") from None


def _typed(cfg: dict, key: str, kinds, path: str, default=None):
    v = cfg.get(key)
    if v is None:
        return default
    if not isinstance(v, kinds) or (isinstance(v, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,))):
        raise FormatError(f"{path}: field {key!r} has the wrong type: {v!r}")
    return v


def _from_hf_config(cfg: dict, path: str) -> Config:
    archs = _typed(cfg, "architectures", list, path, [])
    if not all(isinstance(a, str) for a in archs):
        raise FormatError(f"{path}: 'architectures' must be a list of strings, got {archs!r}")
    model_type = _typed(cfg, "model_type", str, path)
    qc = _typed(cfg, "quantization_config", dict, path, {})
    if "BitNetForCausalLM" in archs or model_type == "bitnet":
        arch, act_default, sub = "bitnet-b1.58", "relu2", True
    elif "BitnetForCausalLM" in archs:
        arch, act_default, sub = "bitnet", "silu", True
    elif model_type == "llama" or "LlamaForCausalLM" in archs:
        if qc.get("quant_method") != "bitnet":
            raise FormatError(f"{path}: a llama model without quantization_config.quant_method "
                              f"'bitnet' is not ternary; minibit runs only ternary models")
        arch, act_default, sub = "llama", "silu", False
    else:
        raise FormatError(f"{path}: unsupported architecture {archs or model_type!r} "
                          f"(expected BitNetForCausalLM, BitnetForCausalLM or a 1.58-bit Llama)")
    hidden = _get(cfg, "hidden_size", int, path=path)
    heads = _get(cfg, "num_attention_heads", int, path=path)
    if heads <= 0 or hidden <= 0:
        raise FormatError(f"{path}: hidden_size and num_attention_heads must be positive, "
                          f"got {hidden}, {heads}")
    kv = _get(cfg, "num_key_value_heads", int, default=heads, required=False, path=path)
    if hidden % heads and cfg.get("head_dim") is None:
        raise FormatError(f"{path}: hidden_size {hidden} is not divisible by num_attention_heads "
                          f"{heads} and no head_dim is given")
    head_dim = _get(cfg, "head_dim", int, default=hidden // heads, required=False, path=path)
    theta = cfg.get("rope_theta")
    rp = _typed(cfg, "rope_parameters", dict, path, {})
    if theta is None:
        theta = rp.get("rope_theta")
    if theta is None:
        theta = 500000.0 if arch == "bitnet-b1.58" else 10000.0
    if not isinstance(theta, (int, float)) or isinstance(theta, bool):
        raise FormatError(f"{path}: rope_theta must be a number, got {theta!r}")
    rs = _typed(cfg, "rope_scaling", dict, path)
    if rs and (rs.get("rope_type", rs.get("type")) not in (None, "default", "linear")
               or rs.get("factor", 1.0) not in (1, 1.0)):
        raise FormatError(f"{path}: rope_scaling {rs!r} is not supported")
    eos = cfg.get("eos_token_id")
    if eos is None:
        eos_ids = []
    elif isinstance(eos, int) and not isinstance(eos, bool):
        eos_ids = [eos]
    elif isinstance(eos, list) and all(isinstance(e, int) and not isinstance(e, bool) for e in eos):
        eos_ids = list(eos)
    else:
        raise FormatError(f"{path}: eos_token_id must be an integer or a list of integers, got {eos!r}")
    bos = _typed(cfg, "bos_token_id", int, path)
    mode = qc.get("quantization_mode")
    if mode is None:
        mode = "offline" if arch == "llama" else ("online" if arch == "bitnet" or not qc else "offline")
    linear_class = qc.get("linear_class", "bitlinear" if arch == "llama" else "autobitlinear")
    if mode not in ("online", "offline") or not isinstance(linear_class, str):
        raise FormatError(f"{path}: quantization_config has quantization_mode {mode!r}, "
                          f"linear_class {linear_class!r}")
    tie = _typed(cfg, "tie_word_embeddings", bool, path, False)   # transformers' default
    return Config(
        arch=arch,
        vocab_size=_get(cfg, "vocab_size", int, path=path),
        hidden_size=hidden,
        intermediate_size=_get(cfg, "intermediate_size", int, path=path),
        num_layers=_get(cfg, "num_hidden_layers", int, path=path),
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=head_dim,
        rope_theta=float(theta),
        rms_norm_eps=_get(cfg, "rms_norm_eps", float, default=1e-5, required=False, path=path),
        max_position=_get(cfg, "max_position_embeddings", int, default=2048, required=False, path=path),
        hidden_act=_get(cfg, "hidden_act", str, default=act_default, required=False, path=path),
        sub_norms=sub,
        tie_word_embeddings=tie,
        linear_class=linear_class,
        quantization_mode=mode,
        bos_token_id=bos,
        eos_token_ids=eos_ids,
    )
