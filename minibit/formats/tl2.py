"""tl2: bitnet.cpp's TL2 lookup-table layout (x86 AVX2 kernels; GGML type 39 in its fork).

Matches ``transform_to_tl2`` -> ``preprocess_weights_tl2`` -> ``preprocess_three_weights_tl2``
and ``preprocess_two_weights_tl2`` in microsoft/BitNet ``utils/convert-hf-to-gguf-bitnet.py``,
with the K split of ``get_three_k_two_k`` in ``utils/codegen_tl2.py`` (checked byte for byte
at commit 16da220), and the tiling of ``preset_kernels/<model>/kernel_config_tl2.ini``.

The idea
--------
TL2 looks up THREE weights at once.  A triplet (a, b, c) along K has 27 combinations, but
v = 9a + 3b + c runs over -13..13 and (-a, -b, -c) is just -v, so the kernel keeps a table
of the 14 magnitudes |v| = 0..13 and flips the looked-up sum when a separate sign bit is
set.  Per triplet that is a 4-bit magnitude plus 1 sign bit: 5/3 bits per weight.

    magnitude = |9a + 3b + c|      0..13, a 4-bit nibble        a, b, c = w[m, 3j .. 3j+2]
    sign      = 1 if 9a + 3b + c < 0 else 0

K is cut into ``three_k = (K // BK) * BK`` columns stored as triplets and the remaining
``two_k = K - three_k`` columns stored as TL1 pairs (index 3a + b + 4, 0..8).  Like TL1 the
weights are reduced to their sign first (|w| < 1e-6 -> 0), which for absmean codes changes
nothing, and the scale (max |w|) is a separate F32 tensor ``<name>_scale`` in the GGUF.

The bytes, in file order
------------------------
Tiles: BM rows per tile, BK columns per K block, bm = 32 rows per AVX2 block.  Inside every
32-row block the four 8-row chunks are stored in the order 0, 2, 1, 3 (AVX2 unpacklo/hi
lane order): byte position q (0..31) of a block holds block row

    r(q) = 8 * CHUNK[q // 8] + q % 8,      CHUNK = (0, 2, 1, 3)

1. magnitudes, M * three_k / 6 bytes.  With row m = t*BM + sb*32 + r(q) and column
   k = kb*BK + 6g (g < BK/6), the bytes run over (t, kb, sb, g, q), q fastest::

       byte = |v(m, k .. k+2)| << 4 | |v(m, k+3 .. k+5)|

2. sign bits, M * three_k / 24 bytes: 16-bit little-endian words over (t, kb, sb, G, u) with
   G < BK/24 and u < 16.  Bit 15 - i of word u (i < 16) is the sign of the triplet at row
   t*BM + sb*32 + 16*(i % 2) + u, column kb*BK + 24G + 3*(i // 2)  (note: rows in natural
   order here, no chunk swap).

3. pairs of the last two_k columns, M * two_k / 4 bytes, tiled as 1. with BK = 32: over
   (t, kb2, sb, g, q) with g < 8, row t*BM + sb*32 + r(q), column three_k + 32*kb2 + 4g::

       byte = index(m, k, k+1) << 4 | index(m, k+2, k+3)

4. zeros up to ``(K - 256) * M // 3 * 5 // 8 + 256 * M // 2 * 4 // 8`` bytes, the converter's
   fixed size formula (Python floor division; for K < 256 bitnet.cpp's C loader computes the
   same expression with truncating division, so such tiny shapes are layout exercises).

Constraints (else FormatError): bm == 32 (``codegen_tl2.py`` asserts it, and the converter
pairs exactly two triplets per byte only when 192 / bm == 6), M % BM == 0, BM % 32 == 0,
BK % 24 == 0 (a sign word spans 8 triplets), (K % BK) % 32 == 0, and the padded size must
not be smaller than parts 1-3 (else the converter's ``np.pad`` fails).  K < BK is allowed:
three_k = 0 and every column is a pair, as the converter writes it.

Preset trouble: ``bitnet_b1_58-large/kernel_config_tl2.ini`` gives 4096 x 1536 bmm = 64, and
bitnet.cpp's converter raises IndexError on it (192/64 = 3 leaves one triplet per slot where
the code takes two).  minibit's PRESETS use bm = 32 for that shape instead (BM 256, BK 96
kept), which the converter runs.

Worked example
--------------
M = 32, K = 24 with BM = 32, BK = 24, bm = 32: three_k = 24, two_k = 0; 128 magnitude
bytes (g = 0..3, byte 32g + q), 32 sign bytes (16 words), zero padding to 501 bytes.
Row 0 = [1, 0, -1, -1, -1, -1, 0, ...], row 9 = [0, 1, 1, 0, ...],
row 17 = [-1, 0, 0, 0, ...], every other value 0::

    row 0:  v = 9 + 0 - 1 = 8 (sign 0),   v = -9 - 3 - 1 = -13 (magnitude 13, sign 1)
    row 9:  v = 0 + 3 + 1 = 4             row 17: v = -9 (magnitude 9, sign 1)
    byte[0]  = 8 << 4 | 13 = 0x8D   (q = 0 is row 0)
    byte[17] = 4 << 4 | 0  = 0x40   (q = 17 is chunk 2 at position 1: row 8*CHUNK[2]+1 = 9)
    byte[9]  = 9 << 4 | 0  = 0x90   (q = 9 is chunk 1 -> rows 16..23: row 17)
    sign word 0: row 0, triplet 1 is i = 2 -> bit 13 = 0x2000 -> bytes 128, 129 = 0x00, 0x20
    sign word 1: row 17 = 16 + 1, triplet 0 is i = 1 -> bit 14 = 0x4000 -> byte 131 = 0x40
"""

from __future__ import annotations

import sys

import numpy as np

from .._errors import FormatError
from . import _tiled
from ._packed import check_codes, check_data

__all__ = ["PRESETS", "default_params", "check_params", "split_k", "nbytes", "pack", "unpack", "pack_codes", "unpack_codes",
           "encode", "decode"]
# the functions of the minibit._fast twin: same names, signatures and bytes
TWINNED = ("pack", "unpack")

FMT = "tl2"
BM_MAX = 256         # largest tile the generic rule picks
BK_DEFAULT = 96      # the K block of every bitnet.cpp TL2 preset but one
BK_MAX = 240         # int16 block sums: 80 triplet lookups * 381 still fit
BK2 = 32             # K block of the pair part (fixed in the converter)
CHUNK = (0, 2, 1, 3)  # stored order of the 8-row chunks of a 32-row block (self-inverse)

# (M, K) -> tiling: bitnet.cpp's kernel_config_tl2.ini presets (formats/_tiled.py).
PRESETS: dict[tuple[int, int], dict] = _tiled.presets(1)


def _as_int(name: str, v) -> int:
    return _tiled.as_int(FMT, name, v)


def split_k(K: int, BK: int) -> tuple[int, int]:
    """(three_k, two_k): the columns stored as triplets and the remainder stored as pairs."""
    three_k = K // BK * BK
    return three_k, K - three_k


def nbytes(M: int, K: int) -> int:
    """Weight bytes of a TL2 tensor (padding included, scale excluded): the converter's formula."""
    return (K - 256) * M // 3 * 5 // 8 + 256 * M // 2 * 4 // 8


def _used_bytes(M: int, K: int, BK: int) -> int:
    three_k, two_k = split_k(K, BK)
    return M * three_k // 6 + M * three_k // 24 + M * two_k // 4


def check_params(M: int, K: int, BM: int, BK: int, bm: int) -> None:
    """FormatError unless the (M, K) matrix can be tiled with (BM, BK, bm).

    Every accepted tiling runs in bitnet.cpp's converter with the same bytes.  One rule is
    stricter than the converter: BK % 24 == 0 is required even when K < BK, where the
    converter has no triplets to tile and would accept any BK.
    """
    M, K, BM, BK, bm, where = _tiled.check_tiles(
        FMT, M, K, BM, BK, bm, (32,), "bitnet.cpp's codegen_tl2.py; its converter fails for "
        "other values")
    if BK <= 0 or BK % 24:
        raise FormatError(f"{where}: BK must be a positive multiple of 24")
    if (K % BK) % BK2:
        raise FormatError(f"{where}: the {K % BK} columns left after the BK blocks must be "
                          f"a multiple of 32")
    if nbytes(M, K) < _used_bytes(M, K, BK):
        raise FormatError(f"{where}: {_used_bytes(M, K, BK)} weight bytes exceed the "
                          f"converter's fixed tensor size of {nbytes(M, K)} bytes")


def _fits(M: int, K: int, BM: int, BK: int) -> bool:
    try:
        check_params(M, K, BM, BK, 32)
    except FormatError:
        return False
    return True


def default_params(M: int, K: int) -> dict:
    """bitnet.cpp's preset for (M, K), else a generic tiling valid for the shape.

    Generic rule: bm = 32; BM = the largest multiple of 32, at most 256, dividing M;
    BK = 96 when that fits (it does whenever K % 32 == 0), else the largest multiple of 24,
    at most 240, that fits.  No TL2 tiling exists when M % 32 != 0 or no such BK fits:
    FormatError.
    """
    M, K = _as_int("M", M), _as_int("K", K)
    if (M, K) in PRESETS:
        return dict(PRESETS[(M, K)])
    if M > 0 and K > 0 and M % 32 == 0:
        BM = next(d for d in range(BM_MAX, 0, -32) if M % d == 0)
        for BK in (BK_DEFAULT, *range(BK_MAX, 0, -24)):
            if _fits(M, K, BM, BK):
                return {"BM": BM, "BK": BK, "bm": 32}
    raise FormatError(f"{FMT}: no tiling holds shape ({M}, {K}): TL2 needs M % 32 == 0 and "
                      f"K = n*BK + 32*r for some BK, a multiple of 24 up to {BK_MAX}")


def _blocks(x: np.ndarray, M: int, BM: int) -> np.ndarray:
    """[M, n] -> [M/BM, BM/32, 4, 8, n]: tile, 32-row block, 8-row chunk, row in chunk."""
    return x.reshape(M // BM, BM // 32, 4, 8, x.shape[1])


def pack(codes, BM, BK, bm) -> np.ndarray:
    """int8 codes [M, K] in {-1, 0, 1} -> uint8 [nbytes(M, K)], transform_to_tl2's bytes (twinned)."""
    codes = check_codes(codes)
    M, K = codes.shape
    check_params(M, K, BM, BK, bm)
    three_k, two_k = split_k(K, BK)
    c3 = codes[:, :three_k].astype(np.int16)                       # [M, three_k] int16
    v = 9 * c3[:, 0::3] + 3 * c3[:, 1::3] + c3[:, 2::3]            # [M, three_k/3] -13..13
    mag = np.abs(v).astype(np.uint8)                               # [M, three_k/3] 0..13
    neg = (v < 0).astype(np.uint16)                                # [M, three_k/3] 0/1

    # 1. magnitudes: [t, sb, chunk, row, kb, g, 2] -> [t, kb, sb, g, stored chunk, row, 2]
    x = _blocks(mag, M, BM).reshape(M // BM, BM // 32, 4, 8, three_k // BK, BK // 6, 2)
    x = x.transpose(0, 4, 1, 5, 2, 3, 6)[:, :, :, :, CHUNK]        # chunk swap 0,2,1,3
    part1 = ((x[..., 0] << 4) | x[..., 1]).reshape(-1)            # [M*three_k/6] uint8

    # 2. sign words: [t, sb, half, u, kb, G, s] -> [t, kb, sb, G, u, s, half]; i = 2s + half
    y = neg.reshape(M // BM, BM // 32, 2, 16, three_k // BK, BK // 24, 8)
    y = y.transpose(0, 4, 1, 5, 3, 6, 2).reshape(-1, 16)           # [words, 16 bits] uint16
    words = (y << (15 - np.arange(16, dtype=np.uint16))).sum(axis=1, dtype=np.uint16)
    part2 = words.astype("<u2").view(np.uint8)                     # [M*three_k/24] uint8

    # 3. pairs of the last two_k columns, tiled like 1. with BK = 32
    c2 = codes[:, three_k:]                                        # [M, two_k] int8
    idx = (3 * c2[:, 0::2] + c2[:, 1::2] + 4).astype(np.uint8)     # [M, two_k/2] 0..8
    z = _blocks(idx, M, BM).reshape(M // BM, BM // 32, 4, 8, two_k // BK2, 8, 2)
    z = z.transpose(0, 4, 1, 5, 2, 3, 6)[:, :, :, :, CHUNK]
    part3 = ((z[..., 0] << 4) | z[..., 1]).reshape(-1)            # [M*two_k/4] uint8

    out = np.zeros(nbytes(M, K), dtype=np.uint8)                   # 4. zero padding
    body = np.concatenate([part1, part2, part3])
    out[:body.size] = body
    return out


def _bad_nibble(d: np.ndarray, limit: int, offset: int, what: str) -> None:
    bad = ((d >> 4) > limit) | ((d & 15) > limit)
    if bad.any():
        pos = int(np.argmax(bad))
        raise FormatError(f"{FMT}: byte {offset + pos} = 0x{int(d[pos]):02x} holds a {what} "
                          f"above {limit}")


def unpack(data, M, K, BM, BK, bm) -> np.ndarray:
    """uint8 [nbytes(M, K)] -> int8 codes [M, K], the inverse of pack (twinned).

    The padding bytes are not read.  A sign bit on a zero magnitude decodes to 0.
    """
    d = check_data(data, FMT, M, K, {"BM": BM, "BK": BK, "bm": bm})    # tiling and byte count
    three_k, two_k = split_k(K, BK)
    n1, n2, n3 = M * three_k // 6, M * three_k // 24, M * two_k // 4
    d1, d2, d3 = d[:n1], d[n1:n1 + n2], d[n1 + n2:n1 + n2 + n3]
    _bad_nibble(d1, 13, 0, "triplet magnitude")
    _bad_nibble(d3, 8, n1 + n2, "pair index")
    codes = np.empty((M, K), dtype=np.int8)                        # [M, K] int8

    # 1. magnitudes back to [M, three_k/3]
    x = np.stack([d1 >> 4, d1 & 15], axis=-1)                      # [n1, 2] uint8
    x = x.reshape(M // BM, three_k // BK, BM // 32, BK // 6, 4, 8, 2)[:, :, :, :, CHUNK]
    mag = x.transpose(0, 2, 4, 5, 1, 3, 6).reshape(M, three_k // 3).astype(np.int16)

    # 2. sign bits back to [M, three_k/3]
    words = np.ascontiguousarray(d2).view("<u2").astype(np.uint16)  # [n2/2] uint16
    bits = (words[:, None] >> (15 - np.arange(16, dtype=np.uint16))) & 1   # [n2/2, 16]
    y = bits.reshape(M // BM, three_k // BK, BM // 32, BK // 24, 16, 8, 2)
    neg = y.transpose(0, 2, 6, 4, 1, 3, 5).reshape(M, three_k // 3)  # [M, three_k/3] 0/1

    v = np.where(neg == 1, -mag, mag) + 13                         # [M, three_k/3] 0..26
    codes[:, 0:three_k:3] = v // 9 - 1                             # a
    codes[:, 1:three_k:3] = v // 3 % 3 - 1                         # b
    codes[:, 2:three_k:3] = v % 3 - 1                              # c

    # 3. pairs back to [M, two_k/2]
    z = np.stack([d3 >> 4, d3 & 15], axis=-1)                      # [n3, 2] uint8
    z = z.reshape(M // BM, two_k // BK2, BM // 32, 8, 4, 8, 2)[:, :, :, :, CHUNK]
    idx = z.transpose(0, 2, 4, 5, 1, 3, 6).reshape(M, two_k // 2).astype(np.int8)
    codes[:, three_k::2] = idx // 3 - 1
    codes[:, three_k + 1::2] = idx % 3 - 1
    return codes


SCALE_OUTSIDE = True     # the separate F32 "<name>_scale" tensor

# the Packed-level functions, shared with the other TL layout (formats/_tiled.py)
_impl, resolve_params, data_shape, pack_codes, encode, unpack_codes, decode = \
    _tiled.packed_api(sys.modules[__name__])
