"""Spectra TriLM checkpoints: a LLaMA directory whose linear weights are ternary per shard.

Spectra (Kaushal et al., arXiv:2407.12327) pretrains "TriLM" LLaMA models whose every
linear weight, in the forward pass, is ``sign-ternary codes * scale`` with the scale the
absmean of the matrix *computed per model-parallel shard*.  NolanoOrg/SpectraSuite releases
them "unpacked" as ordinary FP16 LlamaForCausalLM checkpoints (``SpectraSuite/TriLM_*_Unpacked``)
and says how to pack them (README, "How to compress and speedup"): there may be up to MP
scales per weight matrix, MP being the model-parallel size used in training, recorded as
``pretraining_model_parallel`` in config.json (1 up to the 830M model, 2 for 1.1B/1.5B, 3
for 2.4B, 6 for 3.9B), and every matrix holds at most 1 + MP distinct absolute values.
Megatron-style model parallelism splits the output rows of column-parallel projections
(q, k, v, gate, up) and the input columns of row-parallel ones (o, down), so:

    q/k/v/gate/up  [out, in]: MP equal blocks of rows, one scale each
    o/down         [out, in]: MP equal blocks of columns, one scale each

Detection is exact: each block must hold only {-a, 0, +a} for one a (at most three values,
symmetric).  The shard count is config.json's ``pretraining_model_parallel`` when present
(any divisor layout that fits is accepted otherwise, smallest first).  A LLaMA directory
without quantization_config whose weights fail this test is a float model: FormatError.

The weights are kept as 2-bit codes (hf_packed layout) with a scale grid, and run with
float activations (profile "trilm", minibit.kernels.float_ternary).  A matrix whose blocks
share one scale is an ordinary per-tensor ternary weight (BitLinear) and can run under the
int8 profiles too.  ``minibit.save_gguf`` writes them as TQ1_0/TQ2_0 (llama.cpp's intended
path), each 256-block's fp16 d being its shard's scale; that needs shard boundaries on
256-column blocks.
"""

from __future__ import annotations

import os

import numpy as np

from .._errors import FormatError
from ..formats import hf_packed
from ..model.layers import BitLinear

__all__ = ["is_float_llama", "load_trilm", "split_ternary", "TriLinear", "SHARD_AXIS"]

# which axis a projection's model-parallel shards split (0: rows, 1: columns)
SHARD_AXIS = {"q": 0, "k": 0, "v": 0, "gate": 0, "up": 0, "o": 1, "down": 1}
MAX_SHARDS = 64


def is_float_llama(cfg: dict) -> bool:
    """A LLaMA config.json without a quantization_config (TriLM's, or a float model's)."""
    archs = cfg.get("architectures") or []
    if not isinstance(archs, list) or any(a in ("BitnetForCausalLM", "BitNetForCausalLM") for a in archs):
        return False                    # 1bitLLM's configs say model_type "llama" too
    llama = "LlamaForCausalLM" in archs or (not archs and cfg.get("model_type") == "llama")
    return llama and not cfg.get("quantization_config")


def split_ternary(w: np.ndarray, axis: int, shards: int | None, name: str):
    """float [rows, cols] -> (int8 codes, scales float32 [n], n) with n blocks along ``axis``,
    each block holding only {-a, 0, +a}; FormatError naming ``name`` when no block layout fits."""
    w = np.asarray(w, dtype=np.float32)
    if not np.isfinite(w).all():
        raise FormatError(f"{name}: non-finite weight values; not a ternary matrix")
    a = np.abs(w)
    lines = a if axis == 0 else a.T                              # [lines, n] one line per row/col
    mag = lines.max(axis=1)                                      # the line's only non-zero |w|
    bad = ~((lines == mag[:, None]) | (lines == 0)).all(axis=1)
    distinct = np.unique(mag[mag > 0])
    nmag = np.unique(a[a > 0]).size if bad.any() else distinct.size
    if bad.any() and nmag <= MAX_SHARDS:
        raise FormatError(f"{name}: its {nmag} magnitudes do not fall into equal "
                          f"{'row' if axis == 0 else 'column'} blocks (one scale per model-parallel "
                          f"shard); not a TriLM ternary matrix")
    if bad.any() or distinct.size > MAX_SHARDS:
        raise FormatError(f"{name}: not ternary: {nmag} distinct magnitudes (a TriLM matrix has "
                          f"one per model-parallel shard); a float LLaMA without "
                          f"quantization_config is not a ternary model, and minibit runs only "
                          f"ternary models")
    L = lines.shape[0]
    cands = [n for n in range(1, min(L, MAX_SHARDS) + 1) if L % n == 0]
    if shards and shards in cands:
        cands.remove(shards)
        cands.insert(0, shards)
    for n in cands:
        blocks = mag.reshape(n, L // n)
        scales = np.zeros(n, np.float32)
        ok = True
        for j in range(n):
            nz = np.unique(blocks[j][blocks[j] > 0])
            if nz.size > 1:
                ok = False
                break
            scales[j] = nz[0] if nz.size else 0
        if ok:
            return np.sign(w).astype(np.int8), scales, n
    raise FormatError(f"{name}: its {distinct.size} magnitudes do not fall into equal "
                      f"{'row' if axis == 0 else 'column'} blocks (one scale per model-parallel "
                      f"shard); not a TriLM ternary matrix")


class TriLinear(BitLinear):
    """A TriLM projection with several shard scales: codes packed 2-bit (hf_packed, scale 1)
    plus a scale grid [rows, nb] over blocks of ``block`` columns.  It runs only under
    profile "trilm" (no single tensor scale exists for the int8 profiles)."""

    def __init__(self, name: str, codes: np.ndarray, grid: np.ndarray, block: int):
        packed = hf_packed.Packed("hf_packed", codes.shape, hf_packed.pack(codes),
                                  np.ones(1, np.float32))
        self.grid, self.block = np.ascontiguousarray(grid, np.float32), int(block)
        super().__init__(name, packed, "trilm")

    @property
    def profile(self) -> str:
        return "trilm"

    @profile.setter
    def profile(self, value: str) -> None:
        if value != "trilm":
            raise FormatError(f"{self.name}: a TriLM weight with one scale per model-parallel "
                              f"shard runs under profile 'trilm' only (float activations), "
                              f"not {value!r}")

    def float_parts(self):
        return self.packed.data, self.grid, self.block

    def gguf_packed(self, fmt: str = "tq2_0"):
        """The weight as TQ2_0 (each 256-block's d = its shard's scale), for save_gguf."""
        from .. import formats
        rows, cols = self.shape
        if cols % 256 or self.block % 256:
            raise FormatError(f"{self.name}: shard blocks of {self.block} columns in rows of "
                              f"{cols}: TQ1_0/TQ2_0 need both to be multiples of 256")
        codes = hf_packed.unpack_codes(self.packed)[0].astype(np.float32)
        scale = np.repeat(self.grid, self.block, axis=1)            # [rows, cols]
        return formats.encode("tq2_0", codes * scale)


class _TriLMCheckpoint:
    """Wraps io.hf.HFCheckpoint: ``ternary`` detects the shard layout exactly."""

    def __init__(self, ckpt, shards):
        self.ck, self.shards, self.split = ckpt, shards, {}

    def __getattr__(self, item):
        return getattr(self.ck, item)

    def ternary(self, name: str, rows: int, cols: int):
        key = next(k for k, v in _proj().items() if name.endswith(v))
        wname = name + ".weight"
        w = self.ck.float_tensor(wname, (rows, cols))
        where = self.ck.where.get(wname, self.ck.dir)
        codes, scales, n = split_ternary(w, SHARD_AXIS[key], self.shards, f"{where}: tensor {wname!r}")
        used = np.unique(scales[scales > 0])
        if used.size <= 1:                                        # one scale: plain ternary
            s = np.float32(used[0]) if used.size else np.float32(0)
            return hf_packed.Packed("hf_packed", (rows, cols), hf_packed.pack(codes),
                                    np.array([s], np.float32))
        if SHARD_AXIS[key] == 0:
            grid, block = np.repeat(scales, rows // n)[:, None], cols
        else:
            grid, block = np.broadcast_to(scales[None, :], (rows, n)), cols // n
        self.split[name] = (codes, grid, block)
        return hf_packed.Packed("hf_packed", (rows, cols), hf_packed.pack(codes),
                                np.ones(1, np.float32))


def _proj():
    from .hf import PROJ
    return PROJ


def load_trilm(path: str, raw_cfg: dict, profile: str | None = None):
    """A Model from a TriLM directory (see the module docstring); profile None -> "trilm"."""
    from ..model.config import from_hf_config
    from .hf import HFCheckpoint, load_hf

    cfg_path = os.path.join(path, "config.json")
    shards = raw_cfg.get("pretraining_model_parallel")
    if shards is not None and (not isinstance(shards, int) or isinstance(shards, bool) or shards < 1):
        raise FormatError(f"{cfg_path}: pretraining_model_parallel must be a positive integer, "
                          f"got {shards!r}")
    marked = dict(raw_cfg, quantization_config={"quant_method": "bitnet",
                                                "linear_class": "autobitlinear",
                                                "quantization_mode": "online"})
    config = from_hf_config(marked, cfg_path)
    ck = _TriLMCheckpoint(HFCheckpoint(path, config=config), shards)
    prof = profile or "trilm"
    model = load_hf(path, "trilm", ckpt=ck)
    for i, L in enumerate(model.transformer.layers):
        for key, proj in _proj().items():
            name = f"model.layers.{i}.{proj}"
            if name in ck.split:
                setattr(L, key, TriLinear(name, *ck.split[name]))
    model.profile = prof        # a weight with several shard scales refuses an int8 profile
    return model
