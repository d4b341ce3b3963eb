"""Ternary mpGEMM: y = x @ W.T for a packed ternary W, the way each peer engine computes it.

A linear layer is three steps, and the *profile* (DESIGN §3) fixes all three:

1. quantize the float activations x [T, K] to int8 (``minibit.quant``, one quantizer per
   profile);
2. the integer product of the int8 activations with the ternary codes (the *kernel*);
3. back to float32 with the activation and weight scales, in the peer's order.

Kernels are interchangeable ways of doing step 2; each one named by :func:`available`
gives the same bits for the same (format, profile)::

    v0   decode the codes, float matmul (exact: small integers)   every format; the yardstick
    mad  int8 multiply-add on the packed bytes (bitnet.cpp's MAD) hf_packed, i2_s
    tq   per-256-block dot products (llama.cpp's TQ x Q8_K)       tq1_0, tq2_0
    lut  lookup tables (bitnet.cpp's TL1/TL2)                     tl1, tl2

(format, profile) pairs and what they compute (R = integer part, s = activation scale)::

    hf_packed, i2_s  x "hf"          q = quantize_act_hf(x);  R = sum w*q (int32)
                                     y = (float)R / s * scale
                                     ("autobitlinear" weights, Packed.hf_linear: transformers'
                                     float F.linear(q / s, W) in MKL's order instead,
                                     float_ternary.mkl_linear; every kernel gives it)
    hf_packed, i2_s  x "bitnet.cpp"  q, s, sums = quantize_act_i2s(x);  R' = sum (w+1)*q
                                     through the AVX2 kernel's int16 lanes (mad.py)
                                     y = ((float)R' - (float)sums) / s * scale
    tl1, tl2         x "bitnet.cpp"  q, s = quantize_act_tl(x);  R = sum w*q (int32)
                                     y = (float)R / s * scale
    tq1_0, tq2_0     x "llama.cpp"   q, d = quantize_q8_k(x);  per 256-block, eight int32 lane
                     x "bitnet.cpp"  sums; each lane adds (float)L * (d * d_w) block after
                                     block (fused for llama.cpp's gcc build), then the eight
                                     lanes meet (llama.cpp's AVX2 order: tq.py)

Every float step is float32, one rounding per operation, in the order written.

A kernel is a module with ``apply(p, profile, acts) -> float32 [T, rows]`` where ``acts`` is
the dict the profile's quantizer produced (keys ``q``, ``s``, ``sums``, ``d``); it is found
through :data:`KERNELS` (name -> module path and formats).  Each module picks its Cython
twin through ``minibit._backend`` for the heavy array functions.

Threads: :func:`set_threads` / :func:`get_threads`; the default is MINIBIT_THREADS, else
every core this process may use.  Every output element is summed by one thread in one
order, so the result does not depend on the thread count.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

import numpy as np

from .. import _backend, quant
from .._errors import FormatError
from ..formats import FORMATS, Packed

__all__ = ["available", "linear", "resolve", "kernel_module", "check_activations", "quantize_acts",
           "int16_lane_overflow", "LaneOverflow", "set_threads", "get_threads", "profiles",
           "natural_profile", "KERNELS", "PAIRS"]

# name -> (module, formats it runs on)
KERNELS = {
    "v0": ("minibit.kernels.v0", FORMATS),
    "mad": ("minibit.kernels.mad", ("hf_packed", "i2_s")),
    "tq": ("minibit.kernels.tq", ("tq1_0", "tq2_0")),
    "lut": ("minibit.kernels.lut", ("tl1", "tl2")),
}

# (format, profile) -> the activation quantizer of that pair
PAIRS = {
    ("hf_packed", "hf"): "quantize_act_hf",
    ("i2_s", "hf"): "quantize_act_hf",
    ("hf_packed", "bitnet.cpp"): "quantize_act_i2s",
    ("i2_s", "bitnet.cpp"): "quantize_act_i2s",
    ("tl1", "bitnet.cpp"): "quantize_act_tl",
    ("tl2", "bitnet.cpp"): "quantize_act_tl",
    ("tq1_0", "llama.cpp"): "quantize_q8_k",
    ("tq2_0", "llama.cpp"): "quantize_q8_k",
    ("tq1_0", "bitnet.cpp"): "quantize_q8_k",     # the 2024 fork runs llama.cpp's TQ kernels
    ("tq2_0", "bitnet.cpp"): "quantize_q8_k",
}

_NATURAL = {"hf_packed": "hf", "i2_s": "bitnet.cpp", "tl1": "bitnet.cpp", "tl2": "bitnet.cpp",
            "tq1_0": "llama.cpp", "tq2_0": "llama.cpp"}


# ---- threads ------------------------------------------------------------------------------

def _default_threads() -> int:
    env = os.environ.get("MINIBIT_THREADS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            raise FormatError(f"MINIBIT_THREADS must be a positive integer, got {env!r}") from None
        if n < 1:
            raise FormatError(f"MINIBIT_THREADS must be a positive integer, got {env!r}")
        return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_threads: int | None = None


def set_threads(n: int | None) -> None:
    """Threads for the compiled kernels (None: back to the default).  No effect on results."""
    global _threads
    if n is None:
        _threads = None
        return
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise FormatError(f"threads must be a positive integer or None, got {n!r}")
    _threads = int(n)


def get_threads() -> int:
    """Threads the compiled kernels use: set_threads(), else MINIBIT_THREADS, else all cores."""
    return _threads if _threads is not None else _default_threads()


# ---- registry -----------------------------------------------------------------------------

def _check_fmt(fmt: str) -> None:
    if fmt not in FORMATS:
        raise FormatError(f"unknown weight format {fmt!r}; expected one of {', '.join(FORMATS)}")


def available(fmt: str) -> list[str]:
    """Kernel names usable on format ``fmt``, in version order ("v0" first, always)."""
    _check_fmt(fmt)
    return [k for k, (_, fmts) in KERNELS.items() if fmt in fmts]


def profiles(fmt: str) -> list[str]:
    """Profiles supported on format ``fmt`` (the natural one first)."""
    _check_fmt(fmt)
    out = [p for (f, p) in PAIRS if f == fmt]
    return sorted(out, key=lambda p: p != _NATURAL[fmt])


def natural_profile(fmt: str) -> str:
    """The profile of the engine that reads ``fmt`` natively."""
    _check_fmt(fmt)
    return _NATURAL[fmt]


def _pairs_text() -> str:
    by_fmt: dict[str, list[str]] = {}
    for f, p in PAIRS:
        by_fmt.setdefault(f, []).append(p)
    return "; ".join(f"{f}: {', '.join(ps)}" for f, ps in by_fmt.items())


def _module(name: str):
    return importlib.import_module(KERNELS[name][0])


def _fastest(fmt: str) -> str:
    """The specialised kernel when its Cython twin runs, else v0.

    On the NumPy path v0's float32 BLAS matmul beats the integer references of mad and tq
    (``minibit bench kernels``); the twins beat both by two orders of magnitude.
    """
    for k in available(fmt):
        if k == "v0":
            continue
        mod = _module(k)
        impl = getattr(mod, "_impl", None)
        if impl is not None and impl() is not mod:
            return k
    return "v0"


# ---- activations ---------------------------------------------------------------------------

def quantize_acts(x, fmt: str, profile: str) -> dict:
    """The profile's activation quantization -> dict of q, s, sums, d (those it has)."""
    qmod = _backend.select("quant", quant)
    name = PAIRS[(fmt, profile)]
    out = getattr(qmod, name)(x)
    if name == "quantize_act_i2s":
        return {"q": out[0], "s": out[1], "sums": out[2]}
    if name == "quantize_q8_k":
        return {"q": out[0], "d": out[1]}
    return {"q": out[0], "s": out[1]}


def _resolve(p, profile, kernel):
    if not isinstance(p, Packed):
        raise FormatError(f"expected a minibit.formats.Packed weight, got {type(p).__name__}")
    _check_fmt(p.fmt)
    prof = _NATURAL[p.fmt] if profile is None else profile
    if (p.fmt, prof) not in PAIRS:
        raise FormatError(f"profile {prof!r} is not supported on format {p.fmt!r}; supported "
                          f"(format: profiles) are {_pairs_text()}")
    names = available(p.fmt)
    if kernel is None:
        kernel = _fastest(p.fmt)
    elif kernel not in names:
        raise FormatError(f"kernel {kernel!r} does not run on format {p.fmt!r}; available: "
                          f"{', '.join(names)}")
    return prof, kernel


def resolve(p: Packed, profile: str | None = None, kernel: str | None = None) -> tuple[str, str]:
    """(profile, kernel) that linear() would use for weight p (FormatError when unsupported)."""
    return _resolve(p, profile, kernel)


def kernel_module(name: str):
    """The module of kernel ``name`` (its ``apply(p, profile, acts)``)."""
    return _module(name)


def check_activations(x, cols: int) -> np.ndarray:
    """x as a [T, cols] floating array, or FormatError naming the mismatch."""
    a, vec = _activations(x, cols)
    return a.reshape(1, -1) if vec else a


def _activations(x, cols: int) -> tuple[np.ndarray, bool]:
    a = np.asarray(x)
    vec = a.ndim == 1
    if a.ndim not in (1, 2) or a.shape[-1] != cols:
        raise FormatError(f"activations of shape {a.shape} do not fit a weight with {cols} "
                          f"columns: expected [T, {cols}] or [{cols}]")
    if not np.issubdtype(a.dtype, np.floating):
        raise FormatError(f"activations must be floating point, got {a.dtype}")
    return a, vec


def linear(x, p: Packed, profile: str | None = None, kernel: str | None = None) -> np.ndarray:
    """y = x @ W.T as the profile's engine computes it: float32 [T, cols] -> float32 [T, rows].

    x may also be one vector [cols] (-> [rows]).  profile None: the format's natural one
    (hf_packed -> "hf", i2_s/tl1/tl2 -> "bitnet.cpp", tq1_0/tq2_0 -> "llama.cpp").  kernel
    None: the fastest available.  x is never modified.
    """
    if not isinstance(p, Packed):
        raise FormatError(f"expected a minibit.formats.Packed weight, got {type(p).__name__}")
    a, vec = _activations(x, p.shape[1])
    prof, kern = _resolve(p, profile, kernel)
    acts = quantize_acts(a, p.fmt, prof)                      # q int8 [T, cols] and scales
    y = _module(kern).apply(p, prof, acts)                    # float32 [T, rows]
    return y[0] if vec else y


# ---- the int16 lanes of bitnet.cpp's AVX2 kernel -----------------------------------------

@dataclass(frozen=True)
class LaneOverflow:
    """Where bitnet.cpp's AVX2 MAD kernel would wrap its int16 lanes for one input.

    wraps    True when at least one output differs from the exact product because of it
    outputs  how many (token, row) outputs are affected
    lanes    how many (token, row, group, lane) int16 accumulators end out of range
    worst    the largest |exact lane sum| seen (int16 holds -32768..32767)
    first    (token, row, group, lane) of the first wrapped accumulator, or None

    A lane that leaves the int16 range and comes back within its 32-block group gives the
    right answer (addition modulo 2^16), so only lanes whose group total is out of range
    count.  ``bool(info)`` is ``info.wraps``.
    """

    wraps: bool
    outputs: int
    lanes: int
    worst: int
    first: tuple | None

    def __bool__(self) -> bool:
        return self.wraps


def int16_lane_overflow(x, p: Packed) -> LaneOverflow:
    """Would bitnet.cpp's AVX2 I2_S kernel wrap an int16 lane for activations x and weight p?

    Quantizes x as the "bitnet.cpp" profile does and sums every (token, row, 32-block group,
    lane) exactly (mad.lane_sums).  Only hf_packed and i2_s weights run through that kernel.
    """
    from . import mad

    if not isinstance(p, Packed) or p.fmt not in ("hf_packed", "i2_s"):
        raise FormatError("int16_lane_overflow needs an hf_packed or i2_s weight (the formats "
                          "bitnet.cpp's MAD kernel reads)")
    rows, cols = p.shape
    a, _ = _activations(x, cols)
    acts = quantize_acts(a, p.fmt, "bitnet.cpp")
    data, _scale = mad.packed_args(p, "bitnet.cpp")
    lanes = mad.lane_sums(data, rows, cols, p.fmt, acts["q"])    # [T, rows, G, 16] int32
    bad = (lanes < -32768) | (lanes > 32767)
    first = tuple(int(i) for i in np.argwhere(bad)[0]) if bad.any() else None
    return LaneOverflow(wraps=bool(bad.any()), outputs=int(bad.any(axis=(2, 3)).sum()),
                        lanes=int(bad.sum()), worst=int(np.abs(lanes).max()) if lanes.size else 0,
                        first=first)
