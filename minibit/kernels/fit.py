"""Run a weight under a profile whose kernels do not read its format: repack as the peer would.

``kernels.PAIRS`` lists the (format, profile) pairs minibit computes directly.  For any other
pair, ``fit_profile`` repacks the ternary codes into the format that peer engine runs, the
way its own converter would produce it, so the result is what that engine computes on a
converted file:

    llama.cpp   -> tq2_0   (llama.cpp's converter writes codes * scale and quantizes to
                            TQ2_0: the block scale d is the tensor scale rounded to fp16)
    bitnet.cpp  -> i2_s    (the scale is stored as float32, exactly; hf_packed when the row
                            length is not a multiple of 128, which I2_S cannot hold)
    hf          -> i2_s / hf_packed, as for bitnet.cpp

A TQ weight whose non-empty blocks have different scales has no single tensor scale, so
it cannot run under a per-tensor profile: FormatError.
"""

from __future__ import annotations

import numpy as np

from .. import formats
from .._errors import FormatError

__all__ = ["fit_profile", "tensor_scale"]


def tensor_scale(codes: np.ndarray, scale) -> np.float32 | None:
    """The single scale behind (codes, scale): the scalar itself, or the common value of the
    blocks that hold a non-zero code; None when those blocks disagree."""
    s = np.asarray(scale, dtype=np.float32)
    if s.ndim == 0 or s.size == 1:
        return np.float32(s.reshape(-1)[0])
    rows, nb = s.shape
    used = codes.reshape(rows, nb, -1).any(axis=2)            # [rows, nb] blocks with a code
    vals = np.unique(s[used])
    if vals.size == 0:
        return np.float32(0)
    return np.float32(vals[0]) if vals.size == 1 else None


def fit_profile(p: formats.Packed, profile: str, name: str = "weight") -> formats.Packed:
    """``p`` when the profile runs its format, else the repack described above."""
    from . import PAIRS

    from ..profiles import EXTRA
    if (p.fmt, profile) in PAIRS or profile in EXTRA:     # "a4.8"/"trilm" fit it themselves
        return p
    codes, scale = formats.unpack_codes(p)
    single = tensor_scale(codes, scale)
    if single is None:
        raise FormatError(f"{name}: a {p.fmt} weight whose block scales differ cannot run under "
                          f"profile {profile!r}")
    K = p.shape[1]
    if profile == "llama.cpp":
        target = "tq2_0"
    elif profile in ("bitnet.cpp", "hf"):
        target = "i2_s" if K % 128 == 0 else "hf_packed"
    else:
        raise FormatError(f"{name}: unknown profile {profile!r}")
    try:
        return formats.pack_codes(target, codes, single)
    except FormatError as e:
        raise FormatError(f"{name}: profile {profile!r} runs {target} weights, and this one "
                          f"cannot be one: {e}") from None
