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


# bitnet.cpp's tilings per shape, from microsoft/BitNet@16da220
# preset_kernels/<model>/kernel_config_tl1.ini and kernel_config_tl2.ini (the ini keys are m,
# k, bm = BM, bk = BK, bmm = bm):   (M, K): ((TL1 BM, BK, bm), (TL2 BM, BK, bm))
PRESET_TABLE = {
    # bitnet_b1_58-large
    (1536, 4096): ((256, 128, 32), (256, 96, 32)),
    (1536, 1536): ((128, 64, 64), (128, 192, 32)),
    (4096, 1536): ((256, 128, 32), (256, 96, 32)),   # TL2 ini says bmm = 64: IndexError in bitnet.cpp
    # bitnet_b1_58-3B
    (3200, 8640): ((160, 64, 32), (160, 96, 32)),
    (3200, 3200): ((320, 128, 64), (320, 96, 32)),
    (8640, 3200): ((320, 64, 32), (320, 96, 32)),
    # Llama3-8B-1.58-100B-tokens
    (14336, 4096): ((256, 128, 64), (256, 96, 32)),
    (4096, 14336): ((256, 128, 32), (128, 96, 32)),
    (1024, 4096): ((128, 64, 64), (256, 96, 32)),
    (4096, 4096): ((128, 64, 32), (128, 96, 32)),
}


def presets(which: int) -> dict:
    """{(M, K): {"BM", "BK", "bm"}} of TL1 (which=0) or TL2 (which=1)."""
    return {shape: dict(zip(("BM", "BK", "bm"), tiles[which]))
            for shape, tiles in PRESET_TABLE.items()}


def as_int(fmt: str, name: str, v) -> int:
    """A tiling parameter or dimension as a Python int (a bool or float is refused)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise FormatError(f"{fmt}: {name} must be an integer, got {v!r}")
    return int(v)


def check_tiles(fmt: str, M, K, BM, BK, bm, bms: tuple, source: str) -> tuple:
    """The rules TL1 and TL2 share: integers, a non-empty matrix, bm one of ``bms`` (what
    bitnet.cpp's ``source`` generates kernels for), BM a positive multiple of bm dividing M.
    Returns (M, K, BM, BK, bm, where): ints, and the prefix for the format's own messages."""
    M, K = as_int(fmt, "M", M), as_int(fmt, "K", K)
    BM, BK, bm = as_int(fmt, "BM", BM), as_int(fmt, "BK", BK), as_int(fmt, "bm", bm)
    where = f"{fmt}: shape ({M}, {K}) with BM={BM}, BK={BK}, bm={bm}"
    if M <= 0 or K <= 0:
        raise FormatError(f"{where}: the matrix is empty")
    if bm not in bms:
        raise FormatError(f"{where}: bm must be {' or '.join(map(str, bms))} ({source})")
    if BM <= 0 or BM % bm:
        raise FormatError(f"{where}: BM must be a positive multiple of bm = {bm}")
    if M % BM:
        raise FormatError(f"{where}: M must be a multiple of BM")
    return M, K, BM, BK, bm, where


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
