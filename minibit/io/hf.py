"""Load a Hugging Face snapshot directory: config.json, safetensors (one file or sharded), tokenizer.json.

``load_hf(path, profile="hf") -> Model``: the config, one LayerWeights per block read by
``HFCheckpoint`` (the tensor names below), the tokenizer and chat template, then
``io.assemble`` builds the Model, as ``io.gguf.load_gguf`` does for GGUF files.

Tensor names (prefix ``model.``)::

    embed_tokens.weight                          [vocab, hidden]     float
    layers.{i}.input_layernorm.weight            [hidden]
    layers.{i}.self_attn.{q,k,v,o}_proj.weight   packed uint8 [ceil(out/4), in] + .weight_scale [1]
                                                 or float [out, in] (online quantization)
    layers.{i}.self_attn.attn_sub_norm.weight    [hidden]       2B-4T name
    layers.{i}.self_attn.inner_attn_ln.weight    [hidden]       1bitLLM name for the same norm
    layers.{i}.post_attention_layernorm.weight   [hidden]
    layers.{i}.mlp.{gate,up,down}_proj.weight    as the attention projections
    layers.{i}.mlp.ffn_sub_norm.weight           [intermediate] 2B-4T name
    layers.{i}.mlp.ffn_layernorm.weight          [intermediate] 1bitLLM name
    norm.weight                                  [hidden]
    lm_head.weight                               [vocab, hidden] (absent when tied)

Packed weights stay packed and memory-mapped (``Packed.data`` is a view into the file).
Float weights are ternarized by absmean as they load (transformers' online AutoBitLinear,
1bitLLM's weight_quant), one tensor at a time, and only the packed result is kept.
"""

from __future__ import annotations

import dataclasses

import json
import os

import numpy as np

from .._errors import FormatError
from ..formats import hf_packed
from ..formats._packed import any_code_3
from ..model.config import Config, from_hf_config
from ..tokenizer import Tokenizer
from .assemble import LayerWeights, assemble
from .safetensors import SafetensorsFile, as_float32

__all__ = ["HFCheckpoint", "load_hf", "read_config", "read_json", "is_hf_dir"]

SUB_NORM_NAMES = {
    "attn_sub_norm": ("self_attn.attn_sub_norm.weight", "self_attn.inner_attn_ln.weight"),
    "ffn_sub_norm": ("mlp.ffn_sub_norm.weight", "mlp.ffn_layernorm.weight"),
}
PROJ = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
        "o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj",
        "down": "mlp.down_proj"}


def is_hf_dir(path: str) -> bool:
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "config.json"))


def read_json(path: str, max_bytes: int = 64 * 1024 * 1024):
    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            raise FormatError(f"{path}: {size} bytes, larger than the {max_bytes}-byte limit for JSON")
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise FormatError(f"{path}: file not found") from None
    # (json.loads raises RecursionError on deeply nested brackets)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise FormatError(f"{path}: not valid JSON ({e})") from None


def read_config(snapshot: str) -> Config:
    path = os.path.join(snapshot, "config.json")
    return from_hf_config(read_json(path), path)


def out_features(cfg: Config, key: str) -> int:
    return {"q": cfg.num_heads * cfg.head_dim, "k": cfg.num_kv_heads * cfg.head_dim,
            "v": cfg.num_kv_heads * cfg.head_dim, "o": cfg.hidden_size,
            "gate": cfg.intermediate_size, "up": cfg.intermediate_size,
            "down": cfg.hidden_size}[key]


def in_features(cfg: Config, key: str) -> int:
    return {"o": cfg.num_heads * cfg.head_dim, "down": cfg.intermediate_size}.get(key, cfg.hidden_size)


class HFCheckpoint:
    """The tensors of a snapshot directory, across shards, by name."""

    def __init__(self, snapshot: str, config: Config | None = None):
        self.dir = snapshot
        self.config = config if config is not None else read_config(snapshot)   # (io/trilm.py passes one)
        index = os.path.join(snapshot, "model.safetensors.index.json")
        single = os.path.join(snapshot, "model.safetensors")
        self.files: dict[str, SafetensorsFile] = {}
        self.where: dict[str, str] = {}
        if os.path.exists(single):
            f = SafetensorsFile(single)
            self.files[single] = f
            self.where = {n: single for n in f.names}
        elif os.path.exists(index):
            wm = read_json(index).get("weight_map")
            if not isinstance(wm, dict):
                raise FormatError(f"{index}: missing or bad 'weight_map'")
            for name, shard in wm.items():
                if not isinstance(shard, str) or os.path.basename(shard) != shard:
                    raise FormatError(f"{index}: bad shard file name {shard!r} for {name!r}")
                p = os.path.join(snapshot, shard)
                if p not in self.files:
                    self.files[p] = SafetensorsFile(p)
                if name not in self.files[p]:
                    raise FormatError(f"{index}: {name!r} is mapped to {shard} but {shard} has no such tensor")
                self.where[name] = p
        else:
            raise FormatError(f"{snapshot}: no model.safetensors or model.safetensors.index.json")

    def has(self, name: str) -> bool:
        return name in self.where

    def raw(self, name: str):
        """(array view, dtype string, shape)."""
        if name not in self.where:
            raise FormatError(f"{self.dir}: missing tensor {name!r}")
        f = self.files[self.where[name]]
        dtype, shape, _ = f.info(name)
        return f.get(name), dtype, shape

    def float_tensor(self, name: str, shape: tuple) -> np.ndarray:
        arr, dtype, got = self.raw(name)
        if tuple(got) != tuple(shape):
            raise FormatError(f"{self.dir}: tensor {name!r} has shape {list(got)}, "
                              f"config says {list(shape)}")
        try:
            return np.ascontiguousarray(as_float32(arr, dtype))
        except FormatError:
            raise FormatError(f"{self.dir}: tensor {name!r} has dtype {dtype}, expected a float type") from None

    def matrix(self, name: str, shape: tuple):
        """A [rows, cols] float matrix left in its stored dtype (embeddings, lm_head)."""
        arr, dtype, got = self.raw(name)
        if tuple(got) != tuple(shape):
            raise FormatError(f"{self.dir}: tensor {name!r} has shape {list(got)}, "
                              f"config says {list(shape)}")
        if dtype not in ("F32", "F16", "BF16"):
            raise FormatError(f"{self.dir}: tensor {name!r} has dtype {dtype}, expected F32/F16/BF16")
        return arr, dtype

    def ternary(self, name: str, rows: int, cols: int):
        """The packed ternary weight of projection ``name`` (without '.weight') as hf_packed."""
        cfg = self.config
        wname, sname = name + ".weight", name + ".weight_scale"
        arr, dtype, shape = self.raw(wname)
        if self.has(sname):                           # offline: packed uint8 + weight_scale
            R = -(-rows // 4)
            if dtype != "U8" or tuple(shape) != (R, cols):
                raise FormatError(f"{self.dir}: packed tensor {wname!r} is {dtype} {list(shape)}, "
                                  f"expected U8 [{R}, {cols}] for a [{rows}, {cols}] projection")
            s_arr, s_dtype, s_shape = self.raw(sname)
            if s_dtype not in ("F32", "F16", "BF16") or int(np.prod(s_shape)) != 1:
                raise FormatError(f"{self.dir}: {sname!r} must be one float, got {s_dtype} {list(s_shape)}")
            ws = as_float32(np.asarray(s_arr).reshape(1), s_dtype)
            try:
                scale = hf_packed.multiplier_from_weight_scale(ws, cfg.linear_class)
            except FormatError as e:
                raise FormatError(f"{self.dir}: {sname!r}: {e}") from None
            div = float(np.float32(ws.reshape(-1)[0])) if cfg.linear_class == "bitlinear" else None
            p = hf_packed.Packed("hf_packed", (rows, cols), arr, np.array([scale], np.float32),
                                 divisor=div,          # the hf profile divides as transformers
                                 hf_linear=None if div is not None else "offline")
            # check every code once: a byte with code 3 is a damaged file (a bit test; the
            # full decoder runs only to name the damage, or when padding rows exist)
            if rows % 4 or any_code_3(arr):
                try:
                    hf_packed.unpack_codes(p)
                except FormatError as e:
                    raise FormatError(f"{self.dir}: tensor {wname!r}: {e}") from None
            return p
        w = self.float_tensor(wname, (rows, cols))    # online: float masters, absmean now
        if cfg.linear_class == "bitlinear":
            return hf_packed.encode(w)
        # transformers' WeightQuant, to the bit: gamma = torch's mean|W| (its summation
        # order, not NumPy's), s = 1 / gamma, codes = clamp(rint(W * s)), W_q = codes / s;
        # the hf profile then runs F.linear(q / s_x, W_q) in MKL's order (hf_linear)
        from ..model.layers import torch_absmean
        s = np.float32(1) / torch_absmean(w)
        codes = np.clip(np.rint(w * s), -1, 1).astype(np.int8)
        p = hf_packed.pack_codes(codes, np.float32(np.float32(1) / s))
        return dataclasses.replace(p, hf_linear="online")


def _layer(ckpt: HFCheckpoint, i: int) -> LayerWeights:
    """Block i's projections (packed) and norms (float32), shapes checked against the config."""
    cfg = ckpt.config
    hid = cfg.hidden_size
    pre = f"model.layers.{i}."
    lw = LayerWeights()
    for k, name in PROJ.items():
        lw.linears[k] = (pre + name, ckpt.ternary(pre + name, out_features(cfg, k),
                                                  in_features(cfg, k)))
    if cfg.sub_norms:
        widths = {"attn_sub_norm": cfg.num_heads * cfg.head_dim,
                  "ffn_sub_norm": cfg.intermediate_size}
        for key, names in SUB_NORM_NAMES.items():
            found = [n for n in names if ckpt.has(pre + n)]
            if not found:
                raise FormatError(f"{ckpt.dir}: missing {pre + names[0]!r} "
                                  f"(or {pre + names[1]!r}) for architecture {cfg.arch}")
            lw.norms[key] = ckpt.float_tensor(pre + found[0], (widths[key],))
    lw.norms["attn_norm"] = ckpt.float_tensor(pre + "input_layernorm.weight", (hid,))
    lw.norms["ffn_norm"] = ckpt.float_tensor(pre + "post_attention_layernorm.weight", (hid,))
    return lw


def load_hf(path: str, profile: str | None = None, ckpt: HFCheckpoint | None = None):
    """A minibit Model from a HF snapshot directory.

    profile None: the profile config.json names as ``minibit_profile`` (data/demo-a4.8 says
    "a4.8"), else "hf".  A LLaMA directory without quantization_config goes to io/trilm.py
    (TriLM's per-shard ternary weights, or a FormatError for a float model).  ``ckpt``: a
    checkpoint prepared by such a loader (its ``ternary`` already checked).
    """
    cfg_path = os.path.join(path, "config.json")
    raw = read_json(cfg_path)
    if ckpt is None and isinstance(raw, dict):
        from .trilm import is_float_llama, load_trilm
        if is_float_llama(raw):
            return load_trilm(path, raw, profile)
    named = raw.get("minibit_profile") if isinstance(raw, dict) else None
    if named is not None and not isinstance(named, str):
        raise FormatError(f"{cfg_path}: minibit_profile must be a string, got {named!r}")
    ckpt = ckpt if ckpt is not None else HFCheckpoint(path)
    cfg = ckpt.config
    hid = cfg.hidden_size
    embed, edt = ckpt.matrix("model.embed_tokens.weight", (cfg.vocab_size, hid))
    layers = [_layer(ckpt, i) for i in range(cfg.num_layers)]
    final = ckpt.float_tensor("model.norm.weight", (hid,))
    lm_head, ldt = None, None
    if ckpt.has("lm_head.weight") and not cfg.tie_word_embeddings:
        lm_head, ldt = ckpt.matrix("lm_head.weight", (cfg.vocab_size, hid))
    elif not cfg.tie_word_embeddings:
        raise FormatError(f"{ckpt.dir}: tie_word_embeddings is false but there is no lm_head.weight")
    tok = None
    tj = os.path.join(path, "tokenizer.json")
    if os.path.exists(tj):
        tok = Tokenizer.from_file(tj, bos_id=cfg.bos_token_id, eos_ids=cfg.eos_token_ids)
    template = None
    tc = os.path.join(path, "tokenizer_config.json")
    if os.path.exists(tc):
        t = read_json(tc).get("chat_template")
        template = t if isinstance(t, str) else None
    model = assemble(cfg, layers, embed, edt, final, lm_head, ldt, tok, profile or named or "hf",
                     path, template)
    model.transformer.converted_head_f16 = True   # engine profiles: the head as their GGUF holds it
    return model
