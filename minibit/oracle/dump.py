"""Per-layer dumps: every intermediate tensor of one forward pass, one .npy file each.

An engine developer runs the same token ids through minibit and through their engine,
writes both dumps in this format, and lets :mod:`minibit.oracle.compare` find the first
tensor where they part.  The format (``docs/oracle.md`` has the full specification)::

    DIR/manifest.json       what the dump holds, in forward order (below)
    DIR/<name>.npy          one tensor per entry, float32 / int8 / int32 as computed

Entry names are the names llama.cpp's eval callback prints (``attn_norm-0``, ``l_out-3``,
``result_output``), plus, for every ternary projection, its integer inputs under the GGUF
tensor name of the weight: ``attn_q.q-0`` (int8 activations), ``attn_q.s-0`` (activation
scale), ``attn_q.sums-0`` / ``attn_q.d-0`` (profile-specific) and ``attn_q.acc-0`` (the
int32 accumulator).  Each manifest entry also names the transformers module whose input or
output the tensor is, so a forward hook on the HF model gives the same tensor.

How the tensors are collected
-----------------------------
``Transformer.forward(ids, trace=...)`` reports the float stages.  The projections' integer
inputs are not traced there, so :func:`dump` runs the forward on a shallow copy of the
transformer whose projections are :class:`_Tap` objects: each quantizes its input with
``kernels.quantize_acts`` (the same quantizer ``kernels.linear`` runs), records it,
computes the integer accumulator, and returns ``kernels.linear(x, weight, profile)`` --
the very call ``BitLinear`` makes, so the logits are those of ``Model.logits``, bit for
bit.  The model itself is never modified.  Three entries come from the forward's
trace (the profile's own arithmetic): ``Qcur_rope-i`` / ``Kcur_rope-i`` and ``ffn_gate_par-i``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os

import numpy as np

from .. import kernels
from .._errors import FormatError

__all__ = ["dump", "read_manifest", "load_entry", "entry_order_key", "MANIFEST", "FORMAT_NAME",
           "GGUF_NAMES", "HF_PROJ"]

MANIFEST = "manifest.json"
FORMAT_NAME = "minibit-dump"
FORMAT_VERSION = 1

# Layer attribute -> GGUF tensor name (blk.N.<name>.weight) and transformers module suffix.
GGUF_NAMES = {"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output",
              "gate": "ffn_gate", "up": "ffn_up", "down": "ffn_down"}
HF_PROJ = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
           "o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj",
           "down": "mlp.down_proj"}

# Forward order of the stages inside one block; used to sort a dump that has no manifest
# (a directory of NAME.npy files written by another engine).
_STAGES = ["attn_norm", "attn_q", "attn_k", "attn_v", "Qcur", "Kcur", "Vcur", "Qcur_rope",
           "Kcur_rope", "kqv_out", "attn_sub_norm", "attn_output", "attn_out", "ffn_inp",
           "ffn_norm", "ffn_gate", "ffn_up", "ffn_gate_par", "ffn_sub_norm", "ffn_down",
           "ffn_out", "l_out"]
_PARTS = ["q", "s", "sums", "d", "acc", ""]        # inside one projection: inputs first, output


def entry_order_key(name: str) -> tuple:
    """A sort key putting entry names in forward order: inp_embd, layer 0 stages, ...,
    result_norm, result_output; unknown names last (alphabetically within their layer)."""
    if name == "inp_embd":
        return (-1, 0, 0, name)
    if name in ("result_norm", "result_output"):
        return (1 << 30, 0 if name == "result_norm" else 1, 0, name)
    base, sep, layer = name.rpartition("-")
    if not sep or not layer.isdigit():
        return (1 << 31, 0, 0, name)
    stage, _, part = base.partition(".")
    rank = _STAGES.index(stage) if stage in _STAGES else len(_STAGES)
    prank = _PARTS.index(part) if part in _PARTS else len(_PARTS)
    return (int(layer), rank, prank, name)


# ---- collecting ------------------------------------------------------------------------

class _Recorder:
    """Collects (name, array, metadata) in the order the forward produces them."""

    def __init__(self, config):
        self.config = config
        self.entries: list[tuple[str, np.ndarray, dict]] = []
        self.saved: dict[str, np.ndarray] = {}

    def add(self, name: str, arr, **meta) -> None:
        a = np.array(arr, copy=True)                           # never alias the forward's arrays
        self.entries.append((name, a, meta))
        self.saved[name] = a


def _sub_norm_modules(arch: str) -> tuple[str, str]:
    """transformers module names of the two sub-norms (1bitLLM's remote code differs)."""
    if arch == "bitnet":
        return "self_attn.inner_attn_ln", "mlp.ffn_layernorm"
    return "self_attn.attn_sub_norm", "mlp.ffn_sub_norm"


def integer_part(p, profile: str, acts: dict) -> np.ndarray:
    """The int32 accumulator of one projection, as the profile's kernel forms it.

    hf_packed / i2_s  x "hf"          R = sum w*q                  int32 [T, rows]
    hf_packed / i2_s  x "bitnet.cpp"  R' - sums: R' = sum (w+1)*q through the AVX2 kernel's
                                      int16 lanes (wrapping), minus the activation sum
                                      int32 [T, rows]; equals sum w*q unless a lane wrapped
    tl1 / tl2         x "bitnet.cpp"  R = sum w*q through the int16 table sums   [T, rows]
    tq1_0 / tq2_0     x "llama.cpp",  sumi per 256-block                 int32 [T, rows, nb]
                        "bitnet.cpp"
    """
    from ..kernels import lut, mad, tq

    rows, cols = p.shape
    q = acts["q"]
    if p.fmt in ("hf_packed", "i2_s"):
        data, _ = mad.packed_args(p, profile)
        if profile == "hf":
            return mad._impl().integer_product(data, rows, cols, p.fmt, q)
        Rc = mad._impl().lane_product(data, rows, cols, p.fmt, q)          # [T, N] int32
        return (Rc.astype(np.int64) - acts["sums"].astype(np.int64)[:, None]).astype(np.int32)
    if p.fmt in ("tl1", "tl2"):
        return lut._impl().tl_integer(q, p)                                  # [T, N] int32
    return tq._impl().block_sums(p.data, rows, cols, p.fmt, q)               # [T, N, nb] int32


class _Tap:
    """Stands in for one BitLinear during a dump: records the integer inputs, then runs
    exactly ``kernels.linear(x, packed, profile)`` as BitLinear does."""

    def __init__(self, lin, packed, profile: str, layer: int, key: str, rec: _Recorder,
                 accumulators: bool):
        self.name = getattr(lin, "name", None)
        self.packed = packed
        self.profile = profile
        self.layer, self.key, self.rec = layer, key, rec
        self.accumulators = accumulators

    @property
    def shape(self):
        return self.packed.shape

    def __call__(self, x: np.ndarray) -> np.ndarray:
        i, g = self.layer, GGUF_NAMES[self.key]
        hf = f"model.layers.{i}.{HF_PROJ[self.key]}"
        acts = kernels.quantize_acts(x, self.packed.fmt, self.profile)      # q int8 [T, K], scales
        for part in ("q", "s", "sums", "d"):
            if part in acts:
                self.rec.add(f"{g}.{part}-{i}", acts[part], layer=i, kind=f"act_{part}",
                             hf=hf, hf_io="input", llama_cpp=None)
        if self.accumulators:
            acc = integer_part(self.packed, self.profile, acts)
            self.rec.add(f"{g}.acc-{i}", acc, layer=i, kind="accumulator", hf=hf,
                         hf_io=None, llama_cpp=None)
        y = kernels.linear(x, self.packed, profile=self.profile)            # [T, K] -> [T, N] f32
        if self.key in ("gate", "up"):                                       # not traced otherwise
            self.rec.add(f"{g}-{i}", y, layer=i, kind="activation", hf=hf, hf_io="output",
                         llama_cpp=f"{g}-{i}")
        return y


def _fit(p, profile: str, name: str):
    """The weight as the profile's kernels run it (kernels.fit: repacked as the peer would)."""
    from ..kernels.fit import fit_profile
    return fit_profile(p, profile, name)


def _trace_meta(name: str, config) -> dict:
    """layer, kind, transformers module (and whether its input or output), llama.cpp name."""
    if name == "inp_embd":
        return dict(layer=-1, kind="activation", hf="model.embed_tokens", hf_io="output",
                    llama_cpp="inp_embd")
    if name == "result_norm":
        return dict(layer=-1, kind="activation", hf="model.norm", hf_io="output",
                    llama_cpp="result_norm")
    if name == "result_output":
        return dict(layer=-1, kind="logits", hf="lm_head", hf_io="output",
                    llama_cpp="result_output")
    stage, _, li = name.rpartition("-")
    i = int(li)
    pre = f"model.layers.{i}."
    attn_sub, ffn_sub = _sub_norm_modules(config.arch)
    hf = {
        "attn_norm": (pre + "input_layernorm", "output"),
        "Qcur": (pre + HF_PROJ["q"], "output"),
        "Kcur": (pre + HF_PROJ["k"], "output"),
        "Vcur": (pre + HF_PROJ["v"], "output"),
        "kqv_out": (pre + (attn_sub if config.sub_norms else HF_PROJ["o"]), "input"),
        "attn_sub_norm": (pre + attn_sub, "output"),
        "attn_out": (pre + HF_PROJ["o"], "output"),
        "ffn_inp": (pre + "post_attention_layernorm", "input"),
        "ffn_norm": (pre + "post_attention_layernorm", "output"),
        "ffn_sub_norm": (pre + ffn_sub, "output"),
        "ffn_out": (pre + HF_PROJ["down"], "output"),
        "l_out": (pre[:-1], "output"),
    }.get(stage, (None, None))
    # llama.cpp's bitnet graph prints the down projection as ffn_down; build_llama as ffn_out
    llama = f"ffn_down-{i}" if stage == "ffn_out" and config.arch != "llama" else name
    return dict(layer=i, kind="activation", hf=hf[0], hf_io=hf[1], llama_cpp=llama)


def _ids_of(model, prompt_or_ids) -> list:
    """Token ids of a prompt (the model's tokenizer, BOS as it adds it) or of given ids."""
    if isinstance(prompt_or_ids, str):
        if model.tokenizer is None:
            raise FormatError("this model has no tokenizer: pass token ids instead of a prompt")
        return model.tokenizer.encode(prompt_or_ids)
    try:
        return [int(i) for i in prompt_or_ids]
    except (TypeError, ValueError):
        raise FormatError(f"dump: expected a prompt string or a sequence of token ids, got "
                          f"{type(prompt_or_ids).__name__}") from None


def _clear_previous(out_dir: str) -> None:
    """Remove the tensor files an earlier dump in out_dir listed (nothing else)."""
    path = os.path.join(out_dir, MANIFEST)
    if not os.path.exists(path):
        return
    try:
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        files = [e["file"] for e in old.get("entries", [])]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return
    for fn in files:
        full = os.path.join(out_dir, fn)
        if isinstance(fn, str) and os.path.basename(fn) == fn and fn.endswith(".npy") \
                and os.path.isfile(full):
            os.remove(full)


def dump(model, prompt_or_ids, out_dir: str, profile: str | None = None,
         accumulators: bool = True) -> dict:
    """Run one forward pass over a prompt (or token ids) and write every stage to out_dir.

    profile None: the model's own.  accumulators: also write each projection's int32
    accumulator (costs one more integer product per projection).  Returns the manifest
    (also written as out_dir/manifest.json).  The model is not modified.
    """
    from .._backend import backend
    from .._version import __version__
    from ..model.model import PROFILES

    prof = model.profile if profile is None else profile
    if prof not in PROFILES:
        raise FormatError(f"unknown profile {prof!r}; expected one of {', '.join(PROFILES)}")
    prompt = prompt_or_ids if isinstance(prompt_or_ids, str) else None
    ids = _ids_of(model, prompt_or_ids)
    ids = model._check_ids(ids)                                  # FormatError on bad ids
    cfg = model.config
    rec = _Recorder(cfg)

    src = model.transformer
    t = copy.copy(src)                                           # shares every weight array
    layers = []
    fmts = set()
    for i, L in enumerate(src.layers):
        taps = {}
        for key in GGUF_NAMES:
            lin = getattr(L, key)
            p = _fit(lin.packed, prof, f"model.layers.{i}.{HF_PROJ[key]}")
            fmts.add(p.fmt)
            taps[key] = _Tap(lin, p, prof, i, key, rec, accumulators)
        layers.append(dataclasses.replace(L, **taps))
    t.layers = layers

    T = len(ids)

    def trace(name, arr):
        if name.startswith(("Qcur_rope-", "Kcur_rope-")):       # RoPE'd q, k (the profile's)
            what, _, i = name.partition("_rope-")
            rec.add(name, arr, layer=int(i), kind="activation", hf=None, hf_io=None,
                    llama_cpp=f"{what}-{i}")
            return
        if name.startswith("ffn_gate_par-"):                     # act(gate) * up
            i = int(name.rpartition("-")[2])
            nxt = _sub_norm_modules(cfg.arch)[1] if cfg.sub_norms else HF_PROJ["down"]
            rec.add(name, arr, layer=i, kind="activation", hf=f"model.layers.{i}.{nxt}",
                    hf_io="input", llama_cpp=name)
            return
        rec.add(name, arr, **_trace_meta(name, cfg))

    t.forward(ids, trace=trace)

    os.makedirs(out_dir, exist_ok=True)
    _clear_previous(out_dir)
    entries = []
    for name, arr, meta in rec.entries:
        fn = name + ".npy"
        np.save(os.path.join(out_dir, fn), arr)
        entries.append({"name": name, "file": fn, "shape": list(arr.shape), "dtype": str(arr.dtype),
                        **meta})
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "producer": f"minibit {__version__} ({backend()} backend)",
        "model": {"source": str(getattr(model, "source", "")), "arch": cfg.arch,
                  "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
                  "intermediate_size": cfg.intermediate_size, "num_layers": cfg.num_layers,
                  "num_heads": cfg.num_heads, "num_kv_heads": cfg.num_kv_heads,
                  "head_dim": cfg.head_dim, "rope_theta": cfg.rope_theta,
                  "rms_norm_eps": cfg.rms_norm_eps, "hidden_act": cfg.hidden_act,
                  "weight_formats": sorted(fmts)},
        "profile": prof,
        "prompt": prompt,
        "token_ids": [int(i) for i in ids],
        "n_tokens": T,
        "entries": entries,
    }
    with open(os.path.join(out_dir, MANIFEST), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    return manifest


# ---- reading ---------------------------------------------------------------------------

def read_manifest(path: str) -> dict:
    """The manifest of a dump directory.

    A directory without manifest.json but with NAME.npy files (another engine's quick
    dump) gets a manifest made from the file names, in forward order (entry_order_key).
    Raises FormatError for a missing directory, bad JSON or a listed file that is absent.
    """
    if not os.path.isdir(path):
        raise FormatError(f"{path}: not a dump directory (no such directory)")
    mpath = os.path.join(path, MANIFEST)
    if not os.path.exists(mpath):
        names = sorted((fn[:-4] for fn in os.listdir(path) if fn.endswith(".npy")),
                       key=entry_order_key)
        if not names:
            raise FormatError(f"{path}: no {MANIFEST} and no .npy files: not a dump")
        return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "entries":
                [{"name": n, "file": n + ".npy"} for n in names]}
    try:
        with open(mpath, encoding="utf-8") as f:
            m = json.load(f)
    except (OSError, ValueError) as e:
        raise FormatError(f"{mpath}: not a readable JSON manifest ({e})") from None
    if not isinstance(m, dict) or not isinstance(m.get("entries"), list):
        raise FormatError(f"{mpath}: expected an object with an 'entries' list")
    seen = set()
    for k, e in enumerate(m["entries"]):
        if not isinstance(e, dict) or not isinstance(e.get("name"), str):
            raise FormatError(f"{mpath}: entry {k} has no 'name'")
        e.setdefault("file", e["name"] + ".npy")
        fn = e["file"]
        if not isinstance(fn, str) or os.path.basename(fn) != fn:
            raise FormatError(f"{mpath}: entry {e['name']!r}: 'file' must be a plain file name")
        if e["name"] in seen:
            raise FormatError(f"{mpath}: entry name {e['name']!r} appears twice")
        seen.add(e["name"])
        if not os.path.isfile(os.path.join(path, fn)):
            raise FormatError(f"{path}: entry {e['name']!r}: file {fn} is missing")
    return m


def load_entry(path: str, entry: dict) -> np.ndarray:
    """One tensor of a dump (never unpickles objects)."""
    fn = os.path.join(path, entry["file"])
    try:
        return np.load(fn, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise FormatError(f"{fn}: not a readable .npy file ({e})") from None
