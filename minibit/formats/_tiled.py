"""What TL1 and TL2 share: tiling parameters, and the Packed wrappers around pack/unpack.

Both layouts are tiled by (BM, BK, bm) that are not stored in the bytes (bitnet.cpp compiles
them into its kernels per shape).  A caller gives all three or none (then the format's
``default_params(M, K)``); the chosen values travel in ``Packed.params``.  ``mod`` below is
the format's reference module (minibit.formats.tl1 or tl2): it supplies FMT, nbytes,
check_params, default_params and the twinned pack / unpack; ``packed_api(mod)`` gives it the
Packed-level functions every format module has.
"""

from __future__ import annotations

import numpy as np

from .. import _backend
from .._errors import FormatError
from ..quant import absmean_ternarize
from ._packed import Packed, check_codes, check_matrix, single_scale


def as_int(fmt: str, name: str, v) -> int:
    """A tiling parameter or dimension as a Python int (a bool or float is refused)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise FormatError(f"{fmt}: {name} must be an integer, got {v!r}")
    return int(v)


def resolve_params(mod, M: int, K: int, params: dict) -> dict:
    """All three of BM, BK, bm from the caller, or mod.default_params for none of them."""
    unknown = set(params) - {"BM", "BK", "bm"}
    if unknown:
        raise FormatError(f"{mod.FMT}: unknown parameter(s) {sorted(unknown)}; expected BM, BK, bm")
    if not params:
        return mod.default_params(M, K)
    if len(params) != 3:
        raise FormatError(f"{mod.FMT}: give all of BM, BK, bm or none of them, got {sorted(params)}")
    p = {k: as_int(mod.FMT, k, params[k]) for k in ("BM", "BK", "bm")}
    mod.check_params(M, K, **p)
    return p


def packed_api(mod):
    """The Packed-level functions of a TL format, bound to its reference module ``mod``:
    (_impl, resolve_params, data_shape, pack_codes, encode, unpack_codes, decode).  TL1 and TL2
    differ only in their bytes (mod.pack / mod.unpack and mod.nbytes), so they share these."""

    def impl():
        return _backend.select(mod.FMT, mod)           # the Cython twin, or mod itself

    def resolve(M: int, K: int, params: dict) -> dict:
        """All three of BM, BK, bm from the caller, or default_params for none of them."""
        return resolve_params(mod, M, K, params)

    def data_shape(M: int, K: int, params: dict) -> tuple:
        """uint8 [nbytes(M, K)], one flat array (the tiling is in params, not in the bytes)."""
        return (mod.nbytes(M, K),)

    def pack_codes(codes, scale, **params) -> Packed:
        """int8 ternary codes [M, K] and the tensor scale -> Packed (``params``: BM, BK, bm,
        or default_params(M, K))."""
        codes = check_codes(codes)
        M, K = codes.shape
        p = resolve_params(mod, M, K, params)
        data = impl().pack(codes, p["BM"], p["BK"], p["bm"])
        return Packed(mod.FMT, (M, K), data, np.array([scale], dtype=np.float32), p)

    def encode(w, **params) -> Packed:
        """float32 [M, K] -> Packed: absmean ternarization, then the layout's bytes.

        ``params`` are BM, BK, bm (all three), else default_params(M, K).  The scale is what
        bitnet.cpp stores in ``<name>_scale``: max |w| of the ternarized tensor, i.e. the
        absmean scale, or 0 when every code is 0.
        """
        codes, scale = absmean_ternarize(check_matrix(w))  # [M, K] int8, float32
        return pack_codes(codes, scale if codes.any() else np.float32(0), **params)

    def unpack_codes(p: Packed):
        """A valid Packed of this format -> (int8 codes [M, K], float32 scale)."""
        if p.fmt != mod.FMT:
            raise FormatError(f"{mod.FMT}: cannot decode a {p.fmt!r} tensor")
        M, K = p.shape
        prm = p.params                                   # resolved when the Packed was made
        codes = impl().unpack(p.data, M, K, prm["BM"], prm["BK"], prm["bm"])   # [M, K] int8
        return codes, single_scale(p)

    def decode(p: Packed) -> np.ndarray:
        """Packed -> float32 [M, K] = codes * scale."""
        codes, scale = unpack_codes(p)
        return codes.astype(np.float32) * scale            # [M, K] float32

    return impl, resolve, data_shape, pack_codes, encode, unpack_codes, decode
