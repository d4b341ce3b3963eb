"""The two profiles beyond the three peer engines: "a4.8" and "trilm" (DESIGN §3).

The peer profiles ("hf", "bitnet.cpp", "llama.cpp") are (format, profile) pairs of
``minibit.kernels``: one int8 activation quantizer per pair.  These two change *which* input
gets *which* treatment, so ``layers.BitLinear`` hands its three steps (quantizer name,
quantize, apply) to this module when its profile is one of them:

a4.8   BitNet a4.8 (arXiv:2411.04965): the projection's role picks the quantizer
       (minibit.quant_a48): q/k/v/gate/up inputs -> INT4 absmean; o_proj input -> TopK 50%
       then INT8 absmax; down_proj input -> INT8 absmax.  The integer product and the way
       back to float are the "hf" profile's: y = (float)R / s * weight_scale.  Optionally a
       3-bit KV cache (``model.kv_cache = "int3"``).
trilm  weights-only ternary, float activations (Spectra's TriLM, arXiv:2407.12327): no
       activation quantization at all; y = x @ (codes * scales).T in the fixed float order
       of minibit.kernels.float_ternary.  Runs TriLM checkpoints (per-shard scales) and any
       other ternary model (one scale per tensor, or TQ's per-block scales).
"""

from __future__ import annotations

import numpy as np

from . import _backend, kernels
from ._errors import FormatError

__all__ = ["EXTRA", "role", "quantizer", "quantize", "apply", "float_weight"]

EXTRA = ("a4.8", "trilm")


def role(name: str) -> str:
    """a4.8's treatment of a projection's input, from its tensor name: "a8k" (o_proj: TopK +
    INT8), "a8" (down_proj: INT8), "a4" (q, k, v, gate, up: INT4)."""
    base = name[:-len(".weight")] if name.endswith(".weight") else name
    if base.endswith("o_proj") or base.endswith("attn_output"):      # HF / GGUF names
        return "a8k"
    if base.endswith("down_proj") or base.endswith("ffn_down"):
        return "a8"
    return "a4"


def quantizer(lin) -> str:
    """The name under which linear_group shares one quantization between projections."""
    if lin.profile == "trilm":
        return "float"
    return "a4.8:" + role(lin.name)


def quantize(lin, x) -> dict:
    """Step 1: the activations this profile feeds the product (a dict like kernels' acts)."""
    x = kernels.check_activations(x, lin.shape[1])
    if lin.profile == "trilm":
        return {"x": np.ascontiguousarray(x, dtype=np.float32)}
    from . import quant_a48
    qm = _backend.select("quant_a48", quant_a48)
    r = role(lin.name)
    if r == "a4":
        q, s = qm.quantize_act_a4(x)
    elif r == "a8k":
        q, s = qm.quantize_act_a8(qm.topk_sparsify(x))
    else:
        q, s = qm.quantize_act_a8(x)
    return {"q": q, "s": s}


def apply(lin, acts: dict) -> np.ndarray:
    """Steps 2-3: the product and the scales -> float32 [T, rows]."""
    if lin.profile == "trilm":
        from .kernels import float_ternary
        data, grid, block = float_weight(lin)
        return float_ternary.run(acts["x"], data, lin.shape[0], lin.shape[1], grid, block)
    p = lin.packed_for("hf")
    prof, kern = kernels.resolve(p, "hf", None)
    return kernels.kernel_module(kern).apply(p, prof, acts)


def float_weight(lin):
    """(hf_packed bytes, scale grid [rows, nb], block) of a linear for the float kernel,
    derived once: a TriLM weight brings its own; a per-tensor scale is a [rows, 1] grid; a
    TQ1_0/TQ2_0 weight keeps its fp16 block scales (block 256)."""
    cached = lin._derived.get("trilm")
    if cached is not None:
        return cached
    own = getattr(lin, "float_parts", None)
    if own is not None:
        out = own()
    else:
        from .formats import hf_packed, unpack_codes
        codes, scale = unpack_codes(lin.packed)
        rows, cols = lin.shape
        s = np.asarray(scale, dtype=np.float32)
        if s.size == 1:
            grid, block = np.full((rows, 1), s.reshape(-1)[0], np.float32), cols
        elif s.ndim == 2 and s.shape[0] == rows and cols % s.shape[1] == 0:
            grid, block = np.ascontiguousarray(s), cols // s.shape[1]
        else:
            raise FormatError(f"{lin.name}: cannot run a {lin.packed.fmt} weight with scales "
                              f"{s.shape} under profile 'trilm'")
        out = (hf_packed.pack(codes), grid, block)
    lin._derived["trilm"] = out
    return out
