"""Assemble a minibit Model from a GGUF file (llama.cpp's or bitnet.cpp's).

``load_gguf(path, profile=None) -> Model``: the config from the file's metadata, every
projection as a Packed weight in its file format (``Packed.data`` a view of the mapped
file), norms and embeddings, and the tokenizer rebuilt from ``tokenizer.ggml.*``.

Weights and profiles
--------------------
Ternary projections stay packed in their file format (Packed.data is a view of the mapped
file).  The default profile is the file's engine (DESIGN §3): any TQ projection ->
"llama.cpp", else I2_S/TL -> "bitnet.cpp".  When ``kernels`` has no (format, profile) pair
for a requested profile, the codes are repacked *losslessly* into a format that has one, or
FormatError says why that is impossible:

* I2_S / TL / float under "llama.cpp": -> TQ2_0 when the row length is a multiple of 256 and
  the tensor scale is exact in fp16 (TQ's block scale);
* TQ under "hf" / "bitnet.cpp": -> I2_S (row length % 128 == 0) else hf_packed, when every
  non-zero block has the same scale (true for files converted from absmean models, whose
  fp16 block scales are all fp16(scale));
* TL under "hf": -> I2_S or hf_packed (always possible).

Projections stored as F32/F16/BF16 (pre-quantization files) are ternarized on load: exactly
when their values are {0, +-a} (what the converters' weight_quant writes), else by absmean.
Embeddings and ``output`` stay F32/F16/BF16 views, other types are dequantized to float32
once.  Norms are float32.

"""

from __future__ import annotations

import warnings

import numpy as np

from ... import formats
from ..._errors import FormatError
from ...formats._packed import any_code_3
from ...kernels.fit import fit_profile
from ...model.config import Config
from ...model.model import PROFILES
from ...quant import absmean_ternarize
from ..assemble import LayerWeights, assemble
from .names import ARCHS, PROJ, permute_packed, row_permutation
from .reader import GGUFFile
from .vocab import read_tokenizer

__all__ = ["load_gguf", "natural_profile_of"]


def _ternary_from_float(w: np.ndarray):
    """Codes and scale of a float projection: exact when its values are {0, +-a}, else absmean."""
    a = np.abs(w)
    nz = a[a > 0]
    if nz.size == 0:
        return np.zeros(w.shape, np.int8), np.float32(0)
    if nz.min() == nz.max():
        return np.sign(w).astype(np.int8), np.float32(nz[0])
    return absmean_ternarize(w)


def _scalar(g: GGUFFile, key: str, kind, default=None, required=True):
    if key not in g.fields:
        if required:
            raise FormatError(f"{g.path}: missing metadata key {key!r}")
        return default
    v = g.fields[key]
    t = g.field_types[key]
    if kind is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise FormatError(f"{g.path}: metadata {key!r} must be an integer, got {t} {v!r}")
    elif kind is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise FormatError(f"{g.path}: metadata {key!r} must be a number, got {t} {v!r}")
        v = float(v)
    elif kind is str:
        if not isinstance(v, str):
            raise FormatError(f"{g.path}: metadata {key!r} must be a string, got {t}")
    elif kind is bool:
        if not isinstance(v, bool):
            raise FormatError(f"{g.path}: metadata {key!r} must be a bool, got {t} {v!r}")
    return v


def _norm(g: GGUFFile, name: str, width: int) -> np.ndarray:
    t = g.info(name)
    if t.shape != (width,):
        raise FormatError(f"{g.path}: tensor {name!r} has shape {list(t.shape)}, expected [{width}]")
    if t.type_name not in ("F32", "F16", "BF16"):
        raise FormatError(f"{g.path}: norm {name!r} has type {t.type_name}, expected F32/F16/BF16")
    w = np.ascontiguousarray(g.float32(name))
    # a norm is small: check every value (a damaged type id rereads the bytes as NaN/inf)
    if not np.isfinite(w).all():
        raise FormatError(f"{g.path}: norm {name!r} holds non-finite values")
    return w


def _matrix(g: GGUFFile, name: str, rows: int, cols: int):
    """(array, dtype) of an embedding-like matrix: F32/F16/BF16 views, others to float32."""
    t = g.info(name)
    if t.shape != (rows, cols):
        raise FormatError(f"{g.path}: tensor {name!r} has shape {list(t.shape)}, "
                          f"expected [{rows}, {cols}]")
    if t.type_name in ("F32", "F16", "BF16"):
        return g.view(name), t.type_name
    return g.float32(name), "F32"


def _projection(g: GGUFFile, name: str, rows: int, cols: int):
    """The Packed weight of projection tensor ``name`` in the file's own format."""
    t = g.info(name)
    if t.shape != (rows, cols):
        raise FormatError(f"{g.path}: tensor {name!r} has shape {list(t.shape)} "
                          f"(ggml ne {list(t.ne)}), expected [{rows}, {cols}]")
    where = f"{g.path}: tensor {name!r}"
    if t.type_name in ("TQ1_0", "TQ2_0"):
        fmt = t.type_name.lower()
        bs = 54 if fmt == "tq1_0" else 66
        data = g.raw(name).reshape(rows, cols // 256 * bs)
        # the fp16 block scales d (the last 2 bytes of each block) must be finite
        d = np.ascontiguousarray(data.reshape(rows, -1, bs)[:, :, bs - 2:]).view("<f2")
        if not np.isfinite(d).all():
            raise FormatError(f"{where}: a {t.type_name} block scale is not finite")
        return formats.Packed(fmt, (rows, cols), data, None)
    if t.type_name == "I2_S":
        if cols % 128:
            raise FormatError(f"{where}: I2_S row length {cols} is not a multiple of 128")
        p = formats.Packed("i2_s", (rows, cols), g.raw(name), None)
        body = p.data[:rows * cols // 4] if p.data.size >= rows * cols // 4 else p.data
        try:
            if p.data.size != rows * cols // 4 + 32 or any_code_3(body):
                formats.unpack_codes(p)               # the full decoder names the damage
            scale = np.asarray(p.data[rows * cols // 4:rows * cols // 4 + 4]).view("<f4")[0]
        except FormatError as e:
            raise FormatError(f"{where}: {e}") from None
        if not np.isfinite(scale):
            raise FormatError(f"{where}: I2_S scale {scale!r} is not finite")
        return p
    if t.type_name in ("TL1", "TL2"):
        sname = name + "_scale"
        s = g.info(sname)
        if s.type_name != "F32" or s.n_elements != 1:
            raise FormatError(f"{g.path}: {sname!r} must be one F32 value, got {s.type_name} "
                              f"ne={list(s.ne)}")
        scale = np.float32(g.view(sname).reshape(-1)[0])
        if not np.isfinite(scale):
            raise FormatError(f"{g.path}: {sname!r} = {scale!r} is not finite")
        mod = formats.module(t.type_name.lower())
        try:
            params = mod.default_params(rows, cols)
        except FormatError as e:
            raise FormatError(f"{where}: {e}") from None
        return formats.Packed(t.type_name.lower(), (rows, cols), g.raw(name),
                              np.array([scale], np.float32), params)
    if t.type_name in ("F32", "F16", "BF16"):
        codes, scale = _ternary_from_float(g.float32(name))
        return formats.pack_codes("i2_s" if cols % 128 == 0 else "hf_packed", codes, scale)
    raise FormatError(f"{where}: type {t.type_name} is not a ternary weight type minibit reads "
                      f"(TQ1_0, TQ2_0, I2_S, TL1, TL2, or F32/F16/BF16)")


def _config_from_gguf(g: GGUFFile):
    arch = _scalar(g, "general.architecture", str)
    if arch not in ARCHS:
        raise FormatError(f"{g.path}: architecture {arch!r} is not a ternary model minibit runs "
                          f"(expected one of {', '.join(ARCHS)})")
    march, act, sub = ARCHS[arch]
    k = lambda s: f"{arch}.{s}"                                    # noqa: E731
    hidden = _scalar(g, k("embedding_length"), int)
    heads = _scalar(g, k("attention.head_count"), int)
    kv = _scalar(g, k("attention.head_count_kv"), int, heads, required=False)
    if not heads or not kv:
        raise FormatError(f"{g.path}: head counts must be positive, got {heads}, {kv}")
    head_dim = _scalar(g, k("attention.key_length"), int, None, required=False)
    if head_dim is None:
        if hidden % heads:
            raise FormatError(f"{g.path}: embedding_length {hidden} is not a multiple of "
                              f"head_count {heads} and no attention.key_length is given")
        head_dim = hidden // heads
    vl = _scalar(g, k("attention.value_length"), int, head_dim, required=False)
    if vl != head_dim:
        raise FormatError(f"{g.path}: attention.value_length {vl} differs from key_length {head_dim}")
    rot = _scalar(g, k("rope.dimension_count"), int, head_dim, required=False)
    if rot != head_dim:
        raise FormatError(f"{g.path}: partial RoPE (rope.dimension_count {rot} < head dim "
                          f"{head_dim}) is not supported")
    st = _scalar(g, k("rope.scaling.type"), str, "none", required=False)
    sf = _scalar(g, k("rope.scaling.factor"), float, 1.0, required=False)
    if st not in ("none", "linear") or sf not in (0.0, 1.0):
        raise FormatError(f"{g.path}: rope scaling {st!r} x {sf} is not supported")
    if "token_embd.weight" not in g.tensors:
        raise FormatError(f"{g.path}: missing tensor 'token_embd.weight'")
    emb = g.info("token_embd.weight")
    if len(emb.ne) != 2 or emb.ne[0] != hidden:
        raise FormatError(f"{g.path}: token_embd.weight has ne {list(emb.ne)}, expected "
                          f"[{hidden}, vocab]")
    vocab = emb.ne[1]
    bos = _scalar(g, "tokenizer.ggml.bos_token_id", int, None, required=False)
    eos = _scalar(g, "tokenizer.ggml.eos_token_id", int, None, required=False)
    eot = _scalar(g, "tokenizer.ggml.eot_token_id", int, None, required=False)
    eos_ids = [e for e in (eos, eot) if e is not None]
    ff = _scalar(g, k("feed_forward_length"), int)
    return Config(
        arch=march, vocab_size=vocab, hidden_size=hidden, intermediate_size=ff,
        num_layers=_scalar(g, k("block_count"), int), num_heads=heads, num_kv_heads=kv,
        head_dim=head_dim,
        rope_theta=_scalar(g, k("rope.freq_base"), float, 10000.0, required=False),
        rms_norm_eps=_scalar(g, k("attention.layer_norm_rms_epsilon"), float),
        max_position=_scalar(g, k("context_length"), int, 2048, required=False),
        hidden_act=act, sub_norms=sub,
        tie_word_embeddings="output.weight" not in g.tensors,
        linear_class="autobitlinear", quantization_mode="offline",
        bos_token_id=bos, eos_token_ids=eos_ids), arch


def natural_profile_of(fmts) -> str:
    """The engine of a file whose projections are in ``fmts`` (DESIGN §3)."""
    fmts = set(fmts)
    if fmts & {"tq1_0", "tq2_0"}:
        return "llama.cpp"
    return "bitnet.cpp"


def load_gguf(path, profile: str | None = None):
    """A minibit Model from a GGUF file (llama.cpp's or bitnet.cpp's); see the module docstring.

    profile None: "llama.cpp" for TQ files, "bitnet.cpp" for I2_S/TL (and float) files.
    """
    if profile is not None and profile not in PROFILES:
        raise FormatError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    g = GGUFFile(path)
    try:
        return _build(g, profile)
    finally:
        g.close()                        # the mapping lives on in the tensor views


def _build(g: GGUFFile, profile):
    cfg, arch = _config_from_gguf(g)
    hid, ff = cfg.hidden_size, cfg.intermediate_size
    qd, kvd = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    dims = {"attn_q": (qd, hid), "attn_k": (kvd, hid), "attn_v": (kvd, hid),
            "attn_output": (hid, qd), "ffn_gate": (ff, hid), "ffn_up": (ff, hid),
            "ffn_down": (hid, ff)}
    if "rope_freqs.weight" in g.tensors:
        rf = g.float32("rope_freqs.weight")
        if not np.all(rf == 1):
            raise FormatError(f"{g.path}: rope_freqs (RoPE frequency factors) are not supported")
    raw_layers = []
    for i in range(cfg.num_layers):
        pre = f"blk.{i}."
        lin = {}
        for gname, (r, c) in dims.items():
            tname = pre + gname + ".weight"
            if pre + gname + ".scale" in g.tensors:
                s = g.float32(pre + gname + ".scale").reshape(-1)
                if s.size != 1 or s[0] != 1:
                    raise FormatError(f"{g.path}: tensor {pre + gname + '.scale'!r}: separate "
                                      f"output scales other than 1 are not supported")
            p = _projection(g, tname, r, c)
            if arch == "llama" and gname in ("attn_q", "attn_k"):
                nh = cfg.num_heads if gname == "attn_q" else cfg.num_kv_heads
                p = permute_packed(p, row_permutation(r, nh, inverse=True))
            lin[gname] = p
        norms = {"attn_norm": _norm(g, pre + "attn_norm.weight", hid),
                 "ffn_norm": _norm(g, pre + "ffn_norm.weight", hid)}
        if cfg.sub_norms:
            norms["attn_sub_norm"] = _norm(g, pre + "attn_sub_norm.weight", qd)
            norms["ffn_sub_norm"] = _norm(g, pre + "ffn_sub_norm.weight", ff)
        raw_layers.append((lin, norms))
    prof = profile or natural_profile_of(p.fmt for lin, _ in raw_layers for p in lin.values())
    layers = []
    for i, (lin, norms) in enumerate(raw_layers):
        names = {k: f"blk.{i}.{k}.weight" for k in lin}
        # repacked here, not on first use: a weight this profile cannot run fails the load
        layers.append(LayerWeights(
            {PROJ[k]: (names[k], fit_profile(p, prof, f"{g.path}: {names[k]}"))
             for k, p in lin.items()}, norms))
    embed, edt = _matrix(g, "token_embd.weight", cfg.vocab_size, hid)
    lm_head, ldt = None, None
    if "output.weight" in g.tensors:
        lm_head, ldt = _matrix(g, "output.weight", cfg.vocab_size, hid)
    final = _norm(g, "output_norm.weight", hid)
    tok = None
    if "tokenizer.ggml.model" in g.fields:
        # only a list of strings is a token list; anything else fails in tokenizer_from_meta
        toks = g.fields.get("tokenizer.ggml.tokens")
        n_tok = len(toks) if isinstance(toks, list) else 0
        if n_tok > cfg.vocab_size:
            raise FormatError(f"{g.path}: {n_tok} tokens but token_embd has only "
                              f"{cfg.vocab_size} rows")
        try:
            tok = read_tokenizer(g.fields, source=g.path)
        except FormatError as e:        # the weights are still usable with token ids
            warnings.warn(f"{e}; the model is loaded without a tokenizer", stacklevel=3)
    template = g.fields.get("tokenizer.chat_template")
    return assemble(cfg, layers, embed, edt, final, lm_head, ldt, tok, prof, g.path,
                    template if isinstance(template, str) else None)
