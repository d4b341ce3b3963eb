"""Kernel test vectors: inputs, packed weight bytes and the exact expected results.

``vectors(fmt, out_dir)`` writes, for one weight format (or "all"), a set of small cases an
engine's ternary matmul must reproduce bit for bit::

    out_dir/index.json            every case: file, format, shape, profiles, arrays, about
    out_dir/<fmt>-<case>.npz      the arrays of one case

Arrays of a case (``docs/oracle.md`` has the full layout and a NumPy reader)::

    x                float32 [T, K]   the activations (absent when the case gives q directly)
    codes            int8    [N, K]   the ternary weights the bytes hold (w in {-1, 0, 1})
    w_scale          float32 []       the weight multiplier (TQ: [N, K/256] block scales)
    data             uint8            the packed weight bytes exactly as the format stores them
    scale            float32 [1]      the separate scale tensor (hf_packed, tl1, tl2 only)
    <P>.q            int8    [T, K]   the quantized activations of profile P
    <P>.s            float32 [T]      activation scale (hf, bitnet.cpp)
    <P>.sums         int32   [T]      sum of q per token (bitnet.cpp on i2_s / hf_packed)
    <P>.d, <P>.bsums float32 [T, K/256], int16 [T, K/256, 16]   Q8_K scales and sums (TQ formats)
    <P>.acc          int32            the accumulator (below)
    <P>.y            float32 [T, N]   the output
    and for P = bitnet_cpp on i2_s / hf_packed: acc_codes (R' = sum (w+1) q through the
    int16 lanes), acc_exact (sum w q in int32), y_exact (the output with wide lanes).

P is the profile tag: ``hf``, ``bitnet_cpp``, ``llama_cpp``.  ``acc`` is the integer part
exactly as :func:`minibit.oracle.dump.integer_part` defines it: sum w*q in int32 [T, N]
(bitnet.cpp on i2_s: R' - sums, which differs from sum w*q when a lane wrapped; llama.cpp:
per-256-block sums [T, N, K/256]).

Every expected output is computed by every kernel ``minibit.kernels.available(fmt)`` names
and written only when all of them agree to the bit.

Edge cases: random values, the smallest and odd shapes the format allows, all-zero weight
rows and an all-zero weight, an all-zero activation token, saturated activations (q = +-127
everywhere), q = -128 / 127 given directly, exact .5 ties for the rounding, Q8_K's "first
largest magnitude is negative" rule, TQ per-block scales, TL2's pair-only remainder, and
for i2_s / hf_packed under bitnet.cpp an input that wraps the AVX2 kernel's int16 lanes and
one that reaches exactly 32767 without wrapping.
"""

from __future__ import annotations

import importlib
import json
import os

import numpy as np

from .. import formats, kernels, quant
from .._errors import FormatError
from ..formats import FORMATS
from .dump import integer_part

__all__ = ["vectors", "PROFILE_TAGS", "INDEX", "case_names"]

INDEX = "index.json"
FORMAT_NAME = "minibit-vectors"
FORMAT_VERSION = 1
PROFILE_TAGS = {"hf": "hf", "bitnet.cpp": "bitnet_cpp", "llama.cpp": "llama_cpp"}

# fmt -> shapes (rows N, cols K): "random", "minimal" and "odd" cases
SHAPES = {
    "hf_packed": {"random": (5, 256), "minimal": (1, 128), "odd": (3, 384)},
    "i2_s": {"random": (4, 256), "minimal": (1, 128), "odd": (3, 384)},
    "tl1": {"random": (64, 128), "minimal": (32, 8), "odd": (64, 12)},
    "tl2": {"random": (32, 192), "minimal": (32, 24), "odd": (32, 80)},
    "tq1_0": {"random": (4, 512), "minimal": (1, 256), "odd": (3, 768)},
    "tq2_0": {"random": (4, 512), "minimal": (1, 256), "odd": (3, 768)},
}


# ---- building cases ------------------------------------------------------------------------

def _codes(rng, n: int, k: int) -> np.ndarray:
    return rng.integers(-1, 2, size=(n, k)).astype(np.int8)        # [N, K] int8 in {-1, 0, 1}


def _scale(rng) -> np.float32:
    return np.float32(rng.uniform(0.01, 0.1))


def _x(rng, t: int, k: int) -> np.ndarray:
    return (2.0 * rng.standard_normal((t, k))).astype(np.float32)   # [T, K] float32


def _ties(rng, t: int, k: int) -> np.ndarray:
    """k + 0.5 everywhere and 127 at the start of every 256-block: every quantizer's scale is
    exactly 1 (Q8_K: -1), so every other element rounds a tie (half to even)."""
    x = (rng.integers(-126, 126, size=(t, k)) + 0.5).astype(np.float32)
    x[:, ::256] = 127.0
    return x


def _saturated(t: int, k: int) -> np.ndarray:
    """Token 0: all equal (q = 127); token 1: alternating +-3 (q = +-127); token 2: one large
    value and the rest tiny (q = 127 once, 0 elsewhere)."""
    x = np.empty((t, k), dtype=np.float32)
    x[0] = 3.0
    x[1] = np.where(np.arange(k) % 2 == 0, 3.0, -3.0)
    x[2] = 1e-3
    x[2, k // 2] = 1000.0
    return x[:t]


def _boundary_q(k: int) -> np.ndarray:
    """int8 [1, K]: 64 everywhere, 127 on columns 0, 2, ..., 30 (the first column of each
    int16 lane in the first 32-column chunk)."""
    q = np.full((1, k), 64, dtype=np.int8)
    q[0, 0:32:2] = 127
    return q


def _case_specs(fmt: str, rng) -> list[dict]:
    """The cases of one format: name, about, weight (codes + scale, or float w), input."""
    sh = SHAPES[fmt]
    N, K = sh["random"]
    tq = fmt in ("tq1_0", "tq2_0")
    out = []

    def add(case, about, codes=None, scale=None, w=None, x=None, q=None):
        out.append(dict(case=case, about=about, codes=codes, scale=scale, w=w, x=x, q=q))

    add("random", "random ternary weights and normal activations, 3 tokens",
        _codes(rng, N, K), _scale(rng), x=_x(rng, 3, K))
    n, k = sh["minimal"]
    add("minimal", f"the smallest shape {fmt} allows ({n} x {k}), one token",
        _codes(rng, n, k), _scale(rng), x=_x(rng, 1, k))
    n, k = sh["odd"]
    add("odd", f"an odd shape {fmt} allows ({n} x {k}), 2 tokens",
        _codes(rng, n, k), _scale(rng), x=_x(rng, 2, k))
    c = _codes(rng, N, K)
    c[0] = 0
    c[-1] = 0
    add("zero_rows", "weight rows 0 and N-1 all zero", c, _scale(rng), x=_x(rng, 2, K))
    add("zero_weight", "every weight zero (scale 0 where the format stores max|W|)",
        np.zeros((N, K), np.int8), np.float32(0), x=_x(rng, 1, K))
    x = _x(rng, 3, K)
    x[1] = 0
    add("zero_acts", "token 1 is all zeros (TL: s = inf and y = 0; bitnet.cpp writes NaN)",
        _codes(rng, N, K), _scale(rng), x=x)
    c = _codes(rng, N, K)
    c[0] = 1
    c[1 % N] = -1 if N > 1 else 1
    add("saturation", "activations at +-127 after quantization; rows of all +1 and all -1",
        c, _scale(rng), x=_saturated(3, K))
    add("ties", "activations on exact .5 ties after scaling (round half to even)",
        _codes(rng, N, K), _scale(rng), x=_ties(rng, 2, K))
    q = rng.choice(np.array([-128, 127, -127, 0, 1], np.int8), size=(2, K)).astype(np.int8)
    q[0, : K // 2] = -128
    add("int8_extremes", "q given directly with -128 and 127 (no float input): the integer "
        "kernel's extremes", _codes(rng, N, K), _scale(rng), q=q)
    if tq:
        x = _x(rng, 2, K)
        big = np.abs(x).max() + 1
        x[:, 3::256] = -big                                      # first largest |x| is negative
        x[:, 7::256] = big
        add("q8k_sign", "every block's largest magnitude appears first as a negative value "
            "(Q8_K takes the signed first maximum: iscale > 0)", _codes(rng, N, K),
            _scale(rng), x=x)
        add("block_scales", "a float weight packed by the format itself (per-block fp16 "
            "scales differ)", w=(rng.standard_normal((N, K)) * 0.05).astype(np.float32),
            x=_x(rng, 2, K))
    if fmt == "tl2":
        add("pairs_only", "K = 32: no triplet blocks, only TL2's pair remainder",
            _codes(rng, 32, 32), _scale(rng), x=_x(rng, 2, 32))
    if fmt in ("i2_s", "hf_packed"):
        c = _codes(rng, 2, 4096)
        c[0] = 1
        x = _x(rng, 2, 4096)
        x[0] = 1.0
        add("int16_wrap", "bitnet.cpp's AVX2 int16 lanes wrap: row 0 all +1 times q = 127 "
            "everywhere sums 65024 in each lane; y is what bitnet.cpp computes, y_exact the "
            "true product", c, _scale(rng), x=x)
        c = np.ones((4, 4096), np.int8)
        c[1, 0:32:2] = 0
        c[2] = -1
        c[3] = 0
        add("int16_boundary", "lane sums at the int16 edge: row 1 reaches exactly 32767 in "
            "every lane (no wrap), row 0 reaches 32894 (wraps)", c, _scale(rng),
            x=_boundary_q(4096).astype(np.float32))
    return out


# ---- expected results ----------------------------------------------------------------------

def _acts_from_q(q: np.ndarray, fmt: str, profile: str, rng) -> dict:
    """Activation dict for a case that gives q directly: made-up scales, exact sums."""
    T, K = q.shape
    name = kernels.PAIRS[(fmt, profile)]
    if name == "quantize_q8_k":
        d = rng.uniform(0.001, 0.02, size=(T, K // 256)).astype(np.float32)
        return {"q": q, "d": d}
    s = rng.uniform(10.0, 200.0, size=T).astype(np.float32)
    if name == "quantize_act_i2s":
        return {"q": q, "s": s, "sums": q.sum(axis=1, dtype=np.int32)}
    return {"q": q, "s": s}


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and \
        np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def expected(p, profile: str, acts: dict) -> dict:
    """Every expected array of one profile, the output checked across all kernels."""
    from ..kernels import mad

    ys = {}
    for k in kernels.available(p.fmt):
        mod = importlib.import_module(kernels.KERNELS[k][0])
        with np.errstate(invalid="ignore", divide="ignore"):
            ys[k] = np.ascontiguousarray(mod.apply(p, profile, acts), dtype=np.float32)
    names = list(ys)
    for k in names[1:]:
        if not _same_bits(ys[names[0]], ys[k]):
            raise RuntimeError(f"minibit kernels disagree on {p.fmt} x {profile}: "
                               f"{names[0]} vs {k}")
    out = {part: np.asarray(v) for part, v in acts.items()}
    out["acc"] = integer_part(p, profile, acts)
    out["y"] = ys[names[0]]
    if profile == "bitnet.cpp" and p.fmt in ("i2_s", "hf_packed"):
        data, scale = mad.packed_args(p, profile)
        rows, cols = p.shape
        out["acc_codes"] = mad.lane_product(data, rows, cols, p.fmt, acts["q"])
        exact = mad.integer_product(data, rows, cols, p.fmt, acts["q"])
        out["acc_exact"] = exact
        wide = (exact.astype(np.int64) + acts["sums"].astype(np.int64)[:, None]).astype(np.int32)
        diff = wide.astype(np.float32) - acts["sums"].astype(np.float32)[:, None]
        out["y_exact"] = diff / acts["s"][:, None] * np.float32(scale)        # [T, N] float32
    return out


def _lane_wraps(p, q) -> bool:
    from ..kernels import mad

    data, _ = mad.packed_args(p, "bitnet.cpp")
    lanes = mad.lane_sums(data, p.shape[0], p.shape[1], p.fmt, q)
    return bool(((lanes < -32768) | (lanes > 32767)).any())


def _profiles(fmt: str, K: int) -> list[str]:
    ps = kernels.profiles(fmt)
    if fmt == "hf_packed" and K % 128:
        ps = [p for p in ps if p != "bitnet.cpp"]
    return ps


def _build(fmt: str, spec: dict, rng) -> tuple[dict, dict]:
    """(arrays, index entry) of one case."""
    if spec["w"] is not None:
        p = formats.encode(fmt, spec["w"])
    else:
        p = formats.pack_codes(fmt, spec["codes"], spec["scale"])
    codes, w_scale = formats.unpack_codes(p)
    N, K = p.shape
    arrays = {"codes": codes, "w_scale": np.asarray(w_scale, dtype=np.float32),
              "data": np.asarray(p.data, dtype=np.uint8)}
    if p.scale is not None:
        arrays["scale"] = np.asarray(p.scale, dtype=np.float32)
    if spec["x"] is not None:
        arrays["x"] = spec["x"]
    wraps = None
    profs = _profiles(fmt, K)
    q8k = fmt in ("tq1_0", "tq2_0")          # Q8_K activations (llama.cpp's and the 2024 fork's)
    for prof in profs:
        if spec["x"] is not None:
            acts = kernels.quantize_acts(spec["x"], fmt, prof)
            if q8k:
                acts["bsums"] = quant.quantize_q8_k(spec["x"])[2]
        else:
            acts = _acts_from_q(spec["q"], fmt, prof, rng)
            if q8k:
                T = acts["q"].shape[0]
                acts["bsums"] = acts["q"].reshape(T, K // 256, 16, 16).sum(
                    axis=3, dtype=np.int32).astype(np.int16)
        kern = {k: v for k, v in acts.items() if k != "bsums"}
        res = expected(p, prof, kern)
        if "bsums" in acts:
            res["bsums"] = acts["bsums"]
        if q8k:
            res = {k: res[k] for k in ("q", "d", "bsums", "acc", "y")}
        tag = PROFILE_TAGS[prof]
        for k, v in res.items():
            arrays[f"{tag}.{k}"] = v
        if prof == "bitnet.cpp" and fmt in ("i2_s", "hf_packed"):
            wraps = _lane_wraps(p, acts["q"])
    T = (spec["x"] if spec["x"] is not None else spec["q"]).shape[0]
    entry = {"file": f"{fmt}-{spec['case']}.npz", "format": fmt, "case": spec["case"],
             "about": spec["about"], "rows": N, "cols": K, "tokens": int(T),
             "input": "x" if spec["x"] is not None else "q", "params": dict(p.params),
             "profiles": profs,
             "arrays": {k: [str(v.dtype), list(v.shape)] for k, v in arrays.items()}}
    if wraps is not None:
        entry["int16_wrap"] = wraps
    return arrays, entry


def case_names(fmt: str) -> list[str]:
    """The case names vectors() writes for fmt."""
    return [s["case"] for s in _case_specs(fmt, np.random.default_rng(0))]


# ---- entry point ---------------------------------------------------------------------------

def vectors(fmt: str, out_dir: str, seed: int = 0) -> dict:
    """Write the test vectors of ``fmt`` ("all" for every format) to out_dir; returns the index.

    An existing out_dir/index.json keeps the cases of other formats (so several calls, one
    per format, build one index).  Deterministic for a given seed.
    """
    fmts = list(FORMATS) if fmt == "all" else [fmt]
    for f in fmts:
        if f not in FORMATS:
            raise FormatError(f"unknown weight format {f!r}; expected one of "
                              f"{', '.join(FORMATS)} or 'all'")
    from .._version import __version__

    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, INDEX)
    cases = []
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as fh:
                old = json.load(fh)
            if isinstance(old, dict) and old.get("format") == FORMAT_NAME:
                cases = [c for c in old.get("cases", []) if c.get("format") not in fmts]
        except (OSError, ValueError):
            cases = []
    for f in fmts:
        rng = np.random.default_rng([seed, FORMATS.index(f)])
        for spec in _case_specs(f, rng):
            arrays, entry = _build(f, spec, rng)
            np.savez(os.path.join(out_dir, entry["file"]), **arrays)
            cases.append(entry)
    index = {"format": FORMAT_NAME, "version": FORMAT_VERSION,
             "producer": f"minibit {__version__}", "seed": seed,
             "profile_tags": PROFILE_TAGS, "cases": cases}
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(index, fh, indent=1)
    return index
