"""Ternary weights and int8 activations: the quantizers of every profile, as the spec.

This module is the NumPy reference; ``_fast/quant.pyx`` is its twin (same names, same
bits).  Four functions turn floats into the integers the kernels multiply:

absmean_ternarize(w)        weights -> codes in {-1, 0, 1} and one float32 scale per tensor
                            (BitNet b1.58, transformers' WeightQuant, bitnet.cpp's converter)
quantize_act_hf(x)          per-token int8, transformers' ActQuant        (profile "hf")
quantize_act_i2s(x)         per-token int8, bitnet.cpp's quantize_row_i8_s (profile "bitnet.cpp")
quantize_act_tl(x)          per-token int8, bitnet.cpp's LUT preprocessing (TL1/TL2 kernels)
quantize_q8_k(x)            256-element blocks, ggml's quantize_row_q8_K    (profile "llama.cpp")

Rounding traps, stated where they bite
--------------------------------------
* ``np.rint`` rounds half to even, like ``torch.round``, ggml's ``nearest_int`` (the
  ``f + 1.5*2**23`` trick) and SIMD ``cvtps`` in the default mode.  Every quantizer here
  uses it.  (C ``roundf`` / ``lroundf`` round half away from zero; only TQ weight packing
  uses those, see ``formats/tq2_0.py``.)
* Every product below is formed in float32 first and then rounded, as the peers do:
  ``rint(float32(x * s))``, never ``rint(float64(x) * s)``.

Worked example (hf profile)::

    x = [0.5, -1.0, 0.25, 0.0]        amax = 1.0, s = 127 / 1.0 = 127.0
    x * s = [63.5, -127.0, 31.75, 0]   rint -> [64, -127, 32, 0]   (63.5 is a tie: even is 64)
"""

from __future__ import annotations

import numpy as np

from ._errors import FormatError

__all__ = [
    "absmean_ternarize",
    "quantize_act_hf",
    "quantize_act_i2s",
    "quantize_act_tl",
    "quantize_q8_k",
    "QK_K",
]
# the functions of the minibit._fast twin: same names, signatures and bytes
TWINNED = ("absmean_ternarize", "quantize_act_hf", "quantize_act_i2s", "quantize_act_tl",
           "quantize_q8_k")

QK_K = 256          # ggml's super-block: Q8_K and TQ1_0/TQ2_0 blocks hold 256 values
_EPS32 = np.float32(1e-5)


def _activations(x, what: str = "x", finite: bool = True) -> np.ndarray:
    """x as a C-contiguous float32 [T, K] matrix (a 1-D vector counts as T = 1).
    finite=False leaves the NaN/inf check to the caller (the twin scans in C, then calls
    :func:`not_finite`)."""
    a = np.asarray(x)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] == 0:
        raise FormatError(f"{what}: expected activations [T, K], got shape {np.shape(x)}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if finite and not np.isfinite(a).all():
        not_finite(a, what)
    return a


def not_finite(a: np.ndarray, what: str = "x"):
    """Raise the FormatError that names the first non-finite activation of a."""
    t, k = (int(v) for v in np.argwhere(~np.isfinite(a))[0])
    raise FormatError(f"{what}: non-finite activation {a[t, k]} at token {t}, index {k}")


def absmean_scale(w: np.ndarray) -> np.float32:
    """BitNet's per-tensor weight scale gamma = max(mean|W|, 1e-5), as float32.

    The mean is summed in float64 by NumPy's pairwise sum and rounded once to float32.
    (torch sums in its own order; its float32 mean can differ from this one by an ulp.)
    """
    m = np.float32(np.abs(w, dtype=np.float64).sum() / w.size) if w.size else np.float32(0)
    return max(m, _EPS32)


def absmean_ternarize(w):
    """Absmean ternarization: float32 [rows, cols] -> (int8 codes [rows, cols], float32 scale).

    As transformers' ``WeightQuant`` and bitnet.cpp's ``weight_quant``::

        gamma = max(mean|W|, 1e-5)           float32 (see absmean_scale)
        s     = 1 / gamma                    float32 division
        codes = clamp(rint(W * s), -1, 1)    product in float32, half to even
        scale = 1 / s                        float32: what codes / s dequantizes to

    ``scale`` is the value bitnet.cpp stores for I2_S (max |W_q| of the ternarized tensor,
    where W_q = codes / s) and the weight_scale of an "autobitlinear" checkpoint.  It can
    differ from gamma in the last ulp, because 1 / (1 / gamma) need not round back.
    """
    w = np.ascontiguousarray(w, dtype=np.float32)
    s = np.float32(1) / absmean_scale(w)                        # float32
    codes = np.clip(np.rint(w * s), -1, 1).astype(np.int8)      # [rows, cols] f32 -> int8
    return codes, np.float32(np.float32(1) / s)


def quantize_act_hf(x):
    """transformers' ActQuant, per token: float32 [T, K] -> (int8 q [T, K], float32 s [T]).

    s = 127 * (1 / max(max|x|, 1e-5)), two float32 roundings: torch evaluates ActQuant's
    ``127 / t`` (a scalar over a tensor) as ``127 * reciprocal(t)``, and a one-division
    ``127 / amax`` differs in the last bit for about a quarter of inputs, which moves a
    rounding boundary: an int8 code can flip at an exact .5 (facts/formats.md §9).
    q = clamp(rint(x * s), -128, 127).  The dequantized activation is q / s.
    """
    x = _activations(x)
    amax = np.maximum(np.abs(x).max(axis=1), _EPS32)            # [T] float32
    s = np.float32(127) * (np.float32(1) / amax)                # [T] float32, torch's order
    q = np.clip(np.rint(x * s[:, None]), -128, 127).astype(np.int8)   # [T, K]
    return q, s


def quantize_act_i2s(x):
    """bitnet.cpp's quantize_row_i8_s, per token: -> (int8 q, float32 s [T], int32 sums [T]).

    max = max(1e-5, max|x|) in double; s = (float)(127 / max) in double then rounded to
    float32; q = nearest_int(x * s) with the product in float32 (half to even); clamp to
    [-128, 127]; sums = sum(q) in int32 (the kernel subtracts it: codes are w + 1).
    """
    x = _activations(x)
    amax = np.maximum(np.abs(x).max(axis=1).astype(np.float64), 1e-5)   # [T] float64
    s = (127.0 / amax).astype(np.float32)                               # [T] float32
    q = np.clip(np.rint(x * s[:, None]), -128, 127).astype(np.int8)     # [T, K]
    sums = q.sum(axis=1, dtype=np.int32)                                # [T] int32
    return q, s, sums


def quantize_act_tl(x):
    """bitnet.cpp's TL1/TL2 activation preprocessing, per token: -> (int8 q, float32 s [T]).

    s = 127 / max|x| in float32 with no epsilon floor (unlike I2_S); q = rint(x * s).
    bitnet.cpp divides by zero on an all-zero token and writes NaN; minibit instead gives
    q = 0 and s = +inf for such a row, so every later (float)R / s is an exact 0.
    """
    x = _activations(x)
    amax = np.abs(x).max(axis=1)                                        # [T] float32
    with np.errstate(divide="ignore", over="ignore"):
        s = (np.float32(127) / amax).astype(np.float32)                 # inf where amax == 0
    # s is also inf when max|x| < 127 / FLT_MAX (~3.7e-37): such a row counts as zero.
    safe = np.where(np.isfinite(s), s, np.float32(0))
    q = np.clip(np.rint(x * safe[:, None]), -128, 127).astype(np.int8)
    return q, s


def quantize_q8_k(x):
    """ggml's quantize_row_q8_K_ref over rows of K (K % 256 == 0).

    Returns (int8 q [T, K], float32 d [T, K/256], int16 bsums [T, K/256, 16]).
    Per 256-block: ``max`` is the signed value of largest magnitude (first one wins);
    iscale = -127 / max in float32; q = min(127, nearest_int(iscale * x)); d = 1 / iscale;
    bsums[g] = sum of q[16g : 16g + 16].  The sign flip makes the extreme value -127, so
    nothing needs +128.  An all-zero block gives d = 0, q = 0 and (unlike the C reference,
    which leaves them unwritten) bsums = 0.
    """
    x = _activations(x)
    T, K = x.shape
    if K % QK_K:
        raise FormatError(f"Q8_K: row length {K} is not a multiple of {QK_K}")
    nb = K // QK_K
    blocks = x.reshape(T, nb, QK_K)                                     # [T, nb, 256] f32
    first = np.abs(blocks).argmax(axis=2)                               # first max |x|
    vmax = np.take_along_axis(blocks, first[..., None], axis=2)[..., 0]  # [T, nb] signed
    zero = vmax == 0
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        iscale = np.where(zero, np.float32(0), np.float32(-127) / np.where(zero, 1, vmax))
        iscale = iscale.astype(np.float32)                              # [T, nb]
        prod = blocks * iscale[..., None]                               # [T, nb, 256] f32
        # nearest_int of inf or NaN (iscale overflows when |max| < 127 / FLT_MAX) gives a
        # value whose low byte is 0 in ggml: q = 0 there, d = 1 / +-inf = +-0.
        q = np.minimum(np.where(np.isfinite(prod), np.rint(prod), 0), 127).astype(np.int8)
        d = np.where(zero, np.float32(0), np.float32(1) / np.where(zero, 1, iscale)).astype(np.float32)
    bsums = q.reshape(T, nb, 16, 16).sum(axis=3, dtype=np.int32).astype(np.int16)
    return q.reshape(T, K), d, bsums
