"""Random-weight checkpoints in the real on-disk forms, for tests and benchmarks.

``write_checkpoint(dir, arch, ...)`` writes config.json, model.safetensors and a byte-level
tokenizer.json exactly as the real checkpoints of that architecture lay them out:

arch "bitnet-b1.58"  transformers BitNetForCausalLM (2B-4T): packed uint8 + weight_scale
                     (autobitlinear, offline) or float weights (online)
arch "bitnet"        1bitLLM BitnetForCausalLM: float weights, inner_attn_ln / ffn_layernorm
arch "llama"         Falcon3-1.58bit: LlamaForCausalLM, packed + weight_scale (bitlinear)

Shapes of the published models are in SHAPES ("2b4t", "large").
"""

from __future__ import annotations

import json
import os

import numpy as np

from ..formats import hf_packed

__all__ = ["write_checkpoint", "write_trilm_checkpoint", "byte_tokenizer_json", "SHAPES"]

SHAPES = {
    # BitNet-b1.58-2B-4T
    "2b4t": dict(arch="bitnet-b1.58", hidden=2560, intermediate=6912, layers=30, heads=20,
                 kv_heads=5, vocab=128256, rope_theta=500000.0),
    # 1bitLLM/bitnet_b1_58-large
    "large": dict(arch="bitnet", hidden=1536, intermediate=4096, layers=24, heads=16,
                  kv_heads=16, vocab=32002, rope_theta=10000.0),
}


def _bytes_to_unicode() -> dict:
    """GPT-2's byte -> printable character map (the ByteLevel alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def byte_tokenizer_json(bos="<s>", eos="</s>") -> str:
    """A tokenizer.json with the 256 byte tokens (ids 0..255), BOS 256 and EOS 257, no merges."""
    vocab = {ch: b for b, ch in sorted(_bytes_to_unicode().items())}
    tok = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [
            {"id": 256, "content": bos, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True},
            {"id": 257, "content": eos, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True},
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": vocab, "merges": []},
    }
    return json.dumps(tok)


def write_checkpoint(path: str, arch: str = "bitnet-b1.58", hidden: int = 64, intermediate: int = 128,
                     layers: int = 2, heads: int = 4, kv_heads: int = 2, vocab: int = 300,
                     head_dim: int | None = None, packed: bool = True, tied: bool = True,
                     rope_theta: float = 10000.0, seed: int = 0,
                     max_position: int = 256, eps: float = 1e-5, hidden_act: str | None = None,
                     embed_dtype: str = "float32") -> str:
    """Write a random checkpoint of ``arch`` to ``path`` and return path.

    embed_dtype "float32" or "float16" for the embedding and lm_head (the published
    checkpoints hold bf16, their GGUF conversions F16; either keeps a 2B-4T-sized
    embedding at 0.66 GB instead of 1.3 GB)."""
    if embed_dtype not in ("float32", "float16"):
        raise ValueError(f"embed_dtype must be float32 or float16, got {embed_dtype!r}")
    os.makedirs(path, exist_ok=True)
    rng = np.random.default_rng(seed)
    hd = head_dim or hidden // heads
    act = hidden_act or ("relu2" if arch == "bitnet-b1.58" else "silu")
    cfg = {"hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": layers,
           "num_attention_heads": heads, "num_key_value_heads": kv_heads, "vocab_size": vocab,
           "head_dim": hd, "rope_theta": rope_theta, "rms_norm_eps": eps, "hidden_act": act,
           "max_position_embeddings": max_position, "tie_word_embeddings": tied,
           "bos_token_id": 256, "eos_token_id": 257, "torch_dtype": "float32",
           "attention_bias": False, "mlp_bias": False}
    if arch == "bitnet-b1.58":
        cfg.update(architectures=["BitNetForCausalLM"], model_type="bitnet",
                   quantization_config={"quant_method": "bitnet", "linear_class": "autobitlinear",
                                        "quantization_mode": "offline" if packed else "online"})
        subs = ("self_attn.attn_sub_norm.weight", "mlp.ffn_sub_norm.weight")
    elif arch == "bitnet":
        cfg.update(architectures=["BitnetForCausalLM"], model_type="llama", input_bits=8, weight_bits=1)
        subs = ("self_attn.inner_attn_ln.weight", "mlp.ffn_layernorm.weight")
        packed = False
    elif arch == "llama":
        cfg.update(architectures=["LlamaForCausalLM"], model_type="llama",
                   quantization_config={"quant_method": "bitnet", "linear_class": "bitlinear",
                                        "quantization_mode": "offline",
                                        "modules_to_not_convert": ["lm_head"]})
        subs = None
        packed = True
    else:
        raise ValueError(f"unknown arch {arch!r}")

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    t = {}
    emb = (0.5 * rng.standard_normal((vocab, hidden))).astype(embed_dtype)
    t["model.embed_tokens.weight"] = emb
    dims = {"self_attn.q_proj": (heads * hd, hidden), "self_attn.k_proj": (kv_heads * hd, hidden),
            "self_attn.v_proj": (kv_heads * hd, hidden), "self_attn.o_proj": (hidden, heads * hd),
            "mlp.gate_proj": (intermediate, hidden), "mlp.up_proj": (intermediate, hidden),
            "mlp.down_proj": (hidden, intermediate)}
    for i in range(layers):
        pre = f"model.layers.{i}."
        t[pre + "input_layernorm.weight"] = norm(hidden)
        t[pre + "post_attention_layernorm.weight"] = norm(hidden)
        if subs:
            t[pre + subs[0]] = norm(heads * hd)
            t[pre + subs[1]] = norm(intermediate)
        for name, (o, k) in dims.items():
            if packed:
                codes = rng.integers(-1, 2, size=(o, k)).astype(np.int8)
                gamma = np.float32(rng.uniform(0.5, 2.0) / np.sqrt(k))
                ws = gamma if arch != "llama" else np.float32(1) / gamma    # bitlinear stores 1/gamma
                t[pre + name + ".weight"] = hf_packed.pack(codes)
                t[pre + name + ".weight_scale"] = np.array([ws], np.float32)
            else:
                t[pre + name + ".weight"] = (rng.standard_normal((o, k)) / np.sqrt(k)).astype(np.float32)
    t["model.norm.weight"] = norm(hidden)
    if not tied:
        t["lm_head.weight"] = (0.5 * rng.standard_normal((vocab, hidden))).astype(embed_dtype)
    return _save_snapshot(path, t, cfg)


def _save_snapshot(path: str, tensors: dict, cfg: dict) -> str:
    """Write a snapshot directory: model.safetensors, config.json and the byte tokenizer."""
    from safetensors.numpy import save_file

    save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=1)
    with open(os.path.join(path, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(byte_tokenizer_json())
    return path


def write_trilm_checkpoint(path: str, shards: int = 2, hidden: int = 64, intermediate: int = 128,
                           layers: int = 2, heads: int = 4, kv_heads: int = 2, vocab: int = 300,
                           tied: bool = False, dtype: str = "float16", seed: int = 0,
                           ternary: bool = True, rope_theta: float = 10000.0) -> str:
    """A random Spectra-TriLM-form checkpoint: a plain LlamaForCausalLM directory (no
    quantization_config) whose every projection is ternary codes times one scale per
    model-parallel shard -- row blocks for q/k/v/gate/up, column blocks for o/down (see
    minibit.io.trilm) -- stored unpacked in ``dtype`` ("float16" as the released
    checkpoints, or "float32"); ``pretraining_model_parallel`` = shards in config.json.
    ternary=False writes ordinary float weights instead (a float LLaMA, not ternary)."""
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be float16 or float32, got {dtype!r}")
    os.makedirs(path, exist_ok=True)
    rng = np.random.default_rng(seed)
    hd = hidden // heads
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
           "hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": layers,
           "num_attention_heads": heads, "num_key_value_heads": kv_heads, "vocab_size": vocab,
           "rope_theta": rope_theta, "rms_norm_eps": 1e-5, "hidden_act": "silu",
           "max_position_embeddings": 256, "tie_word_embeddings": tied, "bos_token_id": 256,
           "eos_token_id": 257, "torch_dtype": dtype, "attention_bias": False, "mlp_bias": False,
           "pretraining_model_parallel": shards}
    dims = {"self_attn.q_proj": (heads * hd, hidden, 0), "self_attn.k_proj": (kv_heads * hd, hidden, 0),
            "self_attn.v_proj": (kv_heads * hd, hidden, 0), "self_attn.o_proj": (hidden, heads * hd, 1),
            "mlp.gate_proj": (intermediate, hidden, 0), "mlp.up_proj": (intermediate, hidden, 0),
            "mlp.down_proj": (hidden, intermediate, 1)}
    t = {"model.embed_tokens.weight": (0.5 * rng.standard_normal((vocab, hidden))).astype(dtype)}
    for i in range(layers):
        pre = f"model.layers.{i}."
        for n in ("input_layernorm.weight", "post_attention_layernorm.weight"):
            t[pre + n] = (1.0 + 0.1 * rng.standard_normal(hidden)).astype(dtype)
        for name, (o, k, axis) in dims.items():
            if not ternary:
                t[pre + name + ".weight"] = (rng.standard_normal((o, k)) / np.sqrt(k)).astype(dtype)
                continue
            codes = rng.integers(-1, 2, size=(o, k)).astype(np.float32)
            scales = (rng.uniform(0.5, 2.0, size=shards) / np.sqrt(k)).astype(dtype).astype(np.float32)
            if axis == 0:
                w = codes * np.repeat(scales, o // shards)[:, None]
            else:
                w = codes * np.repeat(scales, k // shards)[None, :]
            t[pre + name + ".weight"] = w.astype(dtype)             # exact: scales are dtype values
    t["model.norm.weight"] = (1.0 + 0.1 * rng.standard_normal(hidden)).astype(dtype)
    if not tied:
        t["lm_head.weight"] = (0.5 * rng.standard_normal((vocab, hidden))).astype(dtype)
    return _save_snapshot(path, t, cfg)
