"""tl1: bitnet.cpp's TL1 lookup-table layout (ARM NEON kernels; GGML type 38 in its fork).

Matches ``transform_to_tl1`` -> ``preprocess_weights_tl1`` -> ``process_tl1`` in
microsoft/BitNet ``utils/convert-hf-to-gguf-bitnet.py`` (checked byte for byte at commit
16da220), with the tiling parameters of ``preset_kernels/<model>/kernel_config_tl1.ini``.

The idea
--------
The TL1 kernel multiplies by table lookup: for every pair of activations (x0, x1) it builds
the 9 sums a*x0 + b*x1 (a, b in {-1, 0, 1}) once, and each pair of weights then only needs
the 4-bit index of its (a, b) combination.  So the weights are stored as one nibble per PAIR
of columns (K direction), two nibbles per byte: 0.25 bytes per weight, M*K/4 bytes in all.

    index(a, b) = 3*a + b + 4            a = w[m, 2j], b = w[m, 2j + 1];  0..8, never 9..15

    (-1,-1)=0 (-1,0)=1 (-1,1)=2 (0,-1)=3 (0,0)=4 (0,1)=5 (1,-1)=6 (1,0)=7 (1,1)=8

The weights are reduced to their sign first (bitnet.cpp: ``|w| < 1e-6`` -> 0, then sign);
for an absmean-ternarized matrix that is exactly its codes.  The scale is not in these
bytes: the converter writes it as a separate F32 tensor ``<name>_scale`` (max |w|).

The tiles
---------
Three parameters from the preset file order the nibbles for the NEON kernel:
BM rows per tile (a thread's unit of work), BK columns per K block, and bm rows per SIMD
block, with by = 256 / bm columns handled per block step.  Name every index so that

    row    m = t*BM + sb*bm + h*16 + l          t < M/BM, sb < BM/bm, h < bm/16, l < 16
    column k = kb*BK + g*by + 4*p + 2*e         kb < K/BK, g < BK/by, p < by/4, e < 2

(columns k and k + 1 form one pair).  The bytes run over (t, kb, sb, g, h, p, l) with l
fastest, and each byte holds the two pairs e = 0 (high nibble) and e = 1 (low nibble)::

    byte[t, kb, sb, g, h, p, l] = index(pair at k = ..+4p) << 4 | index(pair at k = ..+4p+2)

i.e. for a 16-row strip the 4 columns 4p..4p+3 of each row make one byte, 16 rows side by
side make a 16-byte NEON register.

Constraints (else FormatError): bm in {32, 64} (``codegen_tl1.py`` asserts it), M % BM == 0,
BM % bm == 0, K % BK == 0, BK % by == 0.  bitnet.cpp's kernels exist only for the preset
shapes; minibit packs any shape the layout can hold.

Worked example
--------------
M = 32, K = 8 with BM = 32, BK = 8, bm = 32 (by = 8): one tile, one K block, one group, so
byte b = 32*h + 16*p + l holds row 16*h + l, columns 4p..4p+3.  Let row 0 be
[1, -1, 0, 1, -1, -1, 1, 1] and every other row zero::

    pairs of row 0:  (1,-1) -> 6   (0,1) -> 5   (-1,-1) -> 0   (1,1) -> 8
    byte[0]  (h=0, p=0, l=0) = 6 << 4 | 5 = 0x65
    byte[16] (h=0, p=1, l=0) = 0 << 4 | 8 = 0x08
    every other byte          = 4 << 4 | 4 = 0x44       (a zero pair is index 4)
"""

from __future__ import annotations

import sys

import numpy as np

from .._errors import FormatError
from . import _tiled
from ._packed import check_codes, check_data

__all__ = ["PRESETS", "default_params", "check_params", "nbytes", "pack", "unpack", "pack_codes", "unpack_codes",
           "encode", "decode"]
# the functions of the minibit._fast twin: same names, signatures and bytes
TWINNED = ("pack", "unpack")

FMT = "tl1"
BM_MAX = 256      # largest tile the generic rule picks (the presets use 128..320)
BK_MAX = 128      # largest K block the generic rule picks (int16 sums: 64 pairs * 254 fit)

# (M, K) -> tiling: bitnet.cpp's kernel_config_tl1.ini presets (formats/_tiled.py).  All of
# them run in the converter.
PRESETS: dict[tuple[int, int], dict] = _tiled.presets(0)


def _as_int(name: str, v) -> int:
    return _tiled.as_int(FMT, name, v)


def check_params(M: int, K: int, BM: int, BK: int, bm: int) -> None:
    """FormatError unless the (M, K) matrix can be tiled with (BM, BK, bm).

    One rule is stricter than bitnet.cpp's converter: it would also reorder bytes for
    bm = 16, but ``codegen_tl1.py`` generates kernels only for bm in {32, 64}.
    """
    M, K, BM, BK, bm, where = _tiled.check_tiles(FMT, M, K, BM, BK, bm, (32, 64),
                                                 "bitnet.cpp's codegen_tl1.py")
    by = 256 // bm
    if BK <= 0 or BK % by:
        raise FormatError(f"{where}: BK must be a positive multiple of by = 256/bm = {by}")
    if K % BK:
        raise FormatError(f"{where}: K must be a multiple of BK")


def nbytes(M: int, K: int) -> int:
    """Weight bytes of a TL1 tensor (without the separate scale): M*K/4."""
    return M * K // 4


def _largest_multiple_dividing(n: int, step: int, cap: int) -> int:
    """The largest d <= cap with d % step == 0 and n % d == 0, or 0 if there is none."""
    for d in range(cap - cap % step, 0, -step):
        if n % d == 0:
            return d
    return 0


def default_params(M: int, K: int) -> dict:
    """bitnet.cpp's preset for (M, K), else a generic tiling valid for the shape.

    Generic rule: bm = 32 (by = 8) when M % 32 == 0 and K % 8 == 0, otherwise bm = 64
    (by = 4) when M % 64 == 0 and K % 4 == 0; then BM = the largest multiple of bm, at
    most 256, dividing M, and BK = the largest multiple of by, at most 128, dividing K.
    No TL1 tiling exists for any other shape: FormatError.
    """
    M, K = _as_int("M", M), _as_int("K", K)
    if (M, K) in PRESETS:
        return dict(PRESETS[(M, K)])
    if M > 0 and K > 0:
        for bm in (32, 64):
            by = 256 // bm
            if M % bm == 0 and K % by == 0:
                BM = _largest_multiple_dividing(M, bm, BM_MAX)
                BK = _largest_multiple_dividing(K, by, BK_MAX)
                return {"BM": BM, "BK": BK, "bm": bm}
    raise FormatError(f"{FMT}: no tiling holds shape ({M}, {K}): TL1 needs M % 32 == 0 and "
                      f"K % 8 == 0, or M % 64 == 0 and K % 4 == 0")


def pack(codes, BM, BK, bm) -> np.ndarray:
    """int8 codes [M, K] in {-1, 0, 1} -> uint8 [M*K/4], transform_to_tl1's bytes (twinned)."""
    codes = check_codes(codes)
    M, K = codes.shape
    check_params(M, K, BM, BK, bm)
    by = 256 // bm
    idx = (3 * codes[:, 0::2] + codes[:, 1::2] + 4).astype(np.uint8)  # [M, K/2] int8 -> uint8 0..8
    x = idx.reshape(M // BM, BM // bm, bm // 16, 16, K // BK, BK // by, by // 4, 2)
    #               t        sb        h        l   kb       g         p        e
    x = x.transpose(0, 4, 1, 5, 2, 6, 3, 7)            # -> [t, kb, sb, g, h, p, l, e] uint8
    return ((x[..., 0] << 4) | x[..., 1]).reshape(-1)  # [.., 2] nibbles -> [M*K/4] uint8


def unpack(data, M, K, BM, BK, bm) -> np.ndarray:
    """uint8 [M*K/4] -> int8 codes [M, K], the inverse of pack (twinned)."""
    d = check_data(data, FMT, M, K, {"BM": BM, "BK": BK, "bm": bm})    # tiling and byte count
    by = 256 // bm
    nib = np.stack([d >> 4, d & 15], axis=-1)          # [M*K/4, 2] uint8 (high, low)
    if (nib > 8).any():
        pos = int(np.argwhere((nib > 8).any(axis=1))[0][0])
        raise FormatError(f"{FMT}: byte {pos} = 0x{int(d[pos]):02x} holds a pair index "
                          f"above 8")
    x = nib.reshape(M // BM, K // BK, BM // bm, BK // by, bm // 16, by // 4, 16, 2)
    #               t        kb       sb        g         h          p        l   e
    idx = x.transpose(0, 2, 4, 6, 1, 3, 5, 7).reshape(M, K // 2)   # [M, K/2] uint8 0..8
    idx = idx.astype(np.int8)
    codes = np.empty((M, K), dtype=np.int8)            # [M, K] int8
    codes[:, 0::2] = idx // 3 - 1                      # a = index // 3 - 1
    codes[:, 1::2] = idx % 3 - 1                       # b = index % 3 - 1
    return codes


SCALE_OUTSIDE = True     # the separate F32 "<name>_scale" tensor

# the Packed-level functions, shared with the other TL layout (formats/_tiled.py)
_impl, resolve_params, data_shape, pack_codes, encode, unpack_codes, decode = \
    _tiled.packed_api(sys.modules[__name__])
