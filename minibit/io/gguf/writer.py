"""Write a minibit Model as a GGUF file llama.cpp (TQ1_0/TQ2_0) or bitnet.cpp (I2_S, TL) runs.

Writing (``save_gguf``)
-----------------------
Tensor names and keys as llama.cpp reads them (gguf-py ``constants.py`` TENSOR_NAMES /
Keys; llama.cpp ``src/llama-arch.cpp``, ``src/llama-model.cpp``; converters
``convert_hf_to_gguf.py`` / ``conversion/bitnet.py`` and bitnet.cpp's
``utils/convert-hf-to-gguf-bitnet.py``).  Ternary projections TQ1_0/TQ2_0 (bytes of
``formats.pack_codes``, identical to ``gguf.quants.quantize``) with general.file_type 36/37,
or I2_S (type 36, n/4 + 32 bytes, general.file_type 40) exactly as bitnet.cpp's converter
lays them out (``weight_format="tl1"/"tl2"`` also writes bitnet.cpp's TL layouts, type
38/39 plus ``<name>_scale``, tiled by default_params); token_embd / output F16 (both
converters' choice); norms F32; the tokenizer
as tokenizer.ggml.* (byte-level BPE "gpt2": tokens, token types, merges, pre-tokenizer name;
SentencePiece-style "llama": tokens, token types, scores; BOS/EOS/EOT, add_bos) and
tokenizer.chat_template.  A 2B-4T-form model (relu2) is written as arch "bitnet-b1.58":
mainline llama.cpp has no relu2 BitNet graph, so such a file runs in
bitnet.cpp (or a llama.cpp patched with that arch), not in stock llama.cpp.
"""

from __future__ import annotations

import os

import numpy as np

from ... import formats
from ..._errors import FormatError
from ...kernels.fit import tensor_scale
from .names import PROJ, gguf_arch_of, permute_packed, row_permutation
from .reader import FTYPE_I2_S, FTYPE_TQ1_0, FTYPE_TQ2_0, I2_S, TL1, TL2, gguf_package
from .vocab import tokenizer_meta

__all__ = ["save_gguf", "new_writer", "WEIGHT_FORMATS", "EXTRA_WEIGHT_FORMATS"]

WEIGHT_FORMATS = ("tq2_0", "tq1_0", "i2_s")
# also writable, for bitnet.cpp's LUT kernels (tiling = formats.tl1/tl2.default_params; the
# file runs in bitnet.cpp only when its kernels were generated for these shapes and tilings)
EXTRA_WEIGHT_FORMATS = ("tl1", "tl2")


def _to_format(p, fmt: str, name: str):
    """Packed -> Packed in ``fmt`` for writing (TQ block scales are kept when already TQ)."""
    if p.fmt == fmt and (fmt not in EXTRA_WEIGHT_FORMATS or
                         dict(p.params) == formats.module(fmt).default_params(*p.shape)):
        return p              # the reader assumes default TL tilings: repack any other
    codes, scale = formats.unpack_codes(p)
    s = np.asarray(scale, dtype=np.float32)
    if fmt in ("tq1_0", "tq2_0"):
        rows, cols = p.shape
        if cols % 256:
            raise FormatError(f"{name}: row length {cols} is not a multiple of 256, which "
                              f"{fmt.upper()} needs (write i2_s, or pick another model)")
        if s.size > 1:                       # TQ -> other TQ: the same fp16 block scales
            w = (codes.reshape(rows, -1, 256).astype(np.float32) * s[:, :, None]).reshape(rows, cols)
            return formats.encode(fmt, w)
        return formats.pack_codes(fmt, codes, np.float32(s.reshape(-1)[0]))
    single = tensor_scale(codes, s)
    if single is None:
        raise FormatError(f"{name}: the {p.fmt} weight has differing block scales; {fmt} holds "
                          f"one scale per tensor, so it cannot be written losslessly")
    if fmt in EXTRA_WEIGHT_FORMATS:
        try:
            return formats.pack_codes(fmt, codes, single)
        except FormatError as e:
            raise FormatError(f"{name}: {e}") from None
    if p.shape[1] % 128:
        raise FormatError(f"{name}: row length {p.shape[1]} is not a multiple of 128, which "
                          f"I2_S needs")
    return formats.pack_codes("i2_s", codes, single)


def _f16(a, dtype: str, name: str, chunk: int = 16384) -> np.ndarray:
    """A [rows, cols] F32/F16/BF16(uint16) matrix as float16, converted chunk by chunk so a
    large embedding is never held in float32 all at once."""
    a = np.asarray(a)
    if dtype == "F16":
        return np.ascontiguousarray(a, dtype=np.float16)
    out = np.empty(a.shape, dtype=np.float16)
    for s in range(0, a.shape[0], chunk):
        r = a[s:s + chunk]
        x = (r.astype(np.uint32) << 16).view(np.float32) if dtype == "BF16" else r.astype(np.float32)
        big = np.abs(x).max(initial=0)
        if not big <= 65504:
            raise FormatError(f"{name}: a value of magnitude {float(big)} does not fit F16")
        out[s:s + chunk] = x
    return out


def new_writer(path, arch):
    """A gguf.GGUFWriter that also writes empty arrays (a byte tokenizer has no merges, and
    llama.cpp requires the tokenizer.ggml.merges key to exist)."""
    gguf = gguf_package()

    class Writer(gguf.GGUFWriter):
        def _pack_val(self, val, vtype, add_vtype, sub_type=None):
            if vtype == gguf.GGUFValueType.ARRAY and len(val) == 0 and sub_type is not None:
                out = bytearray()
                if add_vtype:
                    out += self._pack("I", vtype)
                out += self._pack("I", sub_type) + self._pack("Q", 0)
                return bytes(out)
            return super()._pack_val(val, vtype, add_vtype, sub_type)

    return Writer(path, arch)


def save_gguf(model, path, weight_format: str = "tq2_0", progress: bool = True,
              model_name: str | None = None) -> str:
    """Write ``model`` as a GGUF file llama.cpp (TQ) or bitnet.cpp (I2_S) runs; returns path.

    weight_format "tq2_0" | "tq1_0" | "i2_s".  Lossless for the ternary codes; the scale is
    kept in float32 by I2_S and rounded to fp16 per 256-block by TQ (as llama.cpp's converter
    does).  Embedding and output are written F16 (as both converters do).
    """
    gguf = gguf_package()
    if weight_format not in WEIGHT_FORMATS + EXTRA_WEIGHT_FORMATS:
        raise FormatError(f"weight_format must be one of "
                          f"{', '.join(WEIGHT_FORMATS + EXTRA_WEIGHT_FORMATS)}, got {weight_format!r}")
    cfg = model.config
    t = model.transformer
    arch = gguf_arch_of(cfg)
    if arch == "bitnet" and t.lm_head is not None:
        raise FormatError("llama.cpp's 'bitnet' graph has no output tensor (logits come from "
                          "token_embd); this model has an untied lm_head")
    tm = tokenizer_meta(model)
    path = os.fspath(path)
    w = new_writer(path, arch)
    K = gguf.Keys
    a = lambda s: s.format(arch=arch)                              # noqa: E731
    w.add_name(model_name or os.path.splitext(os.path.basename(path))[0])
    # bitnet.cpp's converter writes its ftype = the GGML type id for TL1/TL2 (38/39)
    w.add_uint32(K.General.FILE_TYPE, {"tq1_0": FTYPE_TQ1_0, "tq2_0": FTYPE_TQ2_0,
                                       "i2_s": FTYPE_I2_S, "tl1": TL1, "tl2": TL2}[weight_format])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_uint32(a(K.LLM.VOCAB_SIZE), cfg.vocab_size)
    w.add_uint32(a(K.LLM.CONTEXT_LENGTH), cfg.max_position)
    w.add_uint32(a(K.LLM.EMBEDDING_LENGTH), cfg.hidden_size)
    w.add_uint32(a(K.LLM.BLOCK_COUNT), cfg.num_layers)
    w.add_uint32(a(K.LLM.FEED_FORWARD_LENGTH), cfg.intermediate_size)
    w.add_uint32(a(K.Attention.HEAD_COUNT), cfg.num_heads)
    w.add_uint32(a(K.Attention.HEAD_COUNT_KV), cfg.num_kv_heads)
    if cfg.head_dim * cfg.num_heads != cfg.hidden_size:
        w.add_uint32(a(K.Attention.KEY_LENGTH), cfg.head_dim)
        w.add_uint32(a(K.Attention.VALUE_LENGTH), cfg.head_dim)
    w.add_uint32(a(K.Rope.DIMENSION_COUNT), cfg.head_dim)
    w.add_float32(a(K.Rope.FREQ_BASE), float(cfg.rope_theta))
    w.add_float32(a(K.Attention.LAYERNORM_RMS_EPS), float(cfg.rms_norm_eps))
    # tokenizer (gguf-py Keys.Tokenizer; llama.cpp src/llama-vocab.cpp llama_vocab::load)
    w.add_tokenizer_model(tm["model"])
    w.add_token_list(tm["tokens"])
    w.add_token_types(tm["types"])
    if tm["model"] == "gpt2":
        w.add_tokenizer_pre(tm["pre"])
        # llama.cpp refuses a "gpt2" vocab without this key, even when there are no merges
        w.add_key_value(K.Tokenizer.MERGES, tm["merges"], gguf.GGUFValueType.ARRAY,
                        sub_type=gguf.GGUFValueType.STRING)
    else:
        w.add_token_scores(tm["scores"])
        w.add_add_space_prefix(bool(tm["add_space_prefix"]))
    if tm["bos"] is not None:
        w.add_bos_token_id(int(tm["bos"]))
    if tm["eos"] is not None:
        w.add_eos_token_id(int(tm["eos"]))
    if tm["eot"] is not None:
        w.add_eot_token_id(int(tm["eot"]))
    w.add_add_bos_token(tm["add_bos"])
    if model.chat_template:
        w.add_chat_template(model.chat_template)

    # tensors: token_embd, output_norm, output, then blk.N.* (order is free for llama.cpp)
    w.add_tensor("token_embd.weight", _f16(t.embed, t.embed_dtype, "token_embd"))
    w.add_tensor("output_norm.weight", np.ascontiguousarray(t.final_norm, np.float32))
    if t.lm_head is not None:
        w.add_tensor("output.weight", _f16(t.lm_head, t.lm_head_dtype, "output"))
    jobs = [(i, g) for i in range(cfg.num_layers) for g in PROJ]
    bar = _bar(len(jobs), progress, f"packing {weight_format}")
    for i, L in enumerate(t.layers):
        pre = f"blk.{i}."
        w.add_tensor(pre + "attn_norm.weight", np.ascontiguousarray(L.attn_norm, np.float32))
        w.add_tensor(pre + "ffn_norm.weight", np.ascontiguousarray(L.ffn_norm, np.float32))
        if cfg.sub_norms:
            w.add_tensor(pre + "attn_sub_norm.weight", np.ascontiguousarray(L.attn_sub_norm, np.float32))
            w.add_tensor(pre + "ffn_sub_norm.weight", np.ascontiguousarray(L.ffn_sub_norm, np.float32))
        for gname, field in PROJ.items():
            name = pre + gname + ".weight"
            lin = getattr(L, field)     # a TriLM weight with shard scales gives its TQ form
            p = lin.gguf_packed() if hasattr(lin, "gguf_packed") else lin.packed
            if arch == "llama" and gname in ("attn_q", "attn_k"):
                nh = cfg.num_heads if gname == "attn_q" else cfg.num_kv_heads
                p = permute_packed(p, row_permutation(p.shape[0], nh, inverse=False))
            q = _to_format(p, weight_format, name)
            rows, cols = q.shape
            if weight_format == "i2_s":
                # bitnet.cpp's converter: add_tensor(name, bytes, raw_shape=(M, K), raw_dtype=I2_S);
                # a non-uint8 dtype keeps gguf-py from converting the byte shape with a block size
                # it does not have for id 36.
                w.add_tensor(name, np.asarray(q.data).reshape(-1).view(np.int8),
                             raw_shape=(rows, cols), raw_dtype=I2_S)
            elif weight_format in EXTRA_WEIGHT_FORMATS:
                # bitnet.cpp's converter: the TL bytes, then a separate F32 "<name>_scale"
                w.add_tensor(name, np.asarray(q.data).reshape(-1).view(np.int8),
                             raw_shape=(rows, cols), raw_dtype=TL1 if weight_format == "tl1" else TL2)
                w.add_tensor(name + "_scale", np.asarray(q.scale, np.float32).reshape(1))
            else:
                w.add_tensor(name, np.ascontiguousarray(q.data),
                             raw_dtype=getattr(gguf.GGMLQuantizationType, weight_format.upper()))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=progress and _has_tqdm())
    w.close()
    return path


def _has_tqdm() -> bool:
    import importlib.util
    return importlib.util.find_spec("tqdm") is not None


def _bar(total: int, progress: bool, desc: str):
    if not progress or not _has_tqdm():
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="tensor")
