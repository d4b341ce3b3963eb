"""tq1_0: llama.cpp's base-3 ternary type TQ1_0 (1.6875 bits per weight).

Matches ``quantize_row_tq1_0_ref`` / ``dequantize_row_tq1_0`` in llama.cpp
``ggml/src/ggml-quants.c`` and ``class TQ1_0`` in gguf-py ``gguf/quants.py``.

Layout
------
Blocks of 256 values, 54 bytes each: ``qs[48]``, ``qh[4]``, fp16 ``d``.  With
d = max|x| and trits t = lroundf(x / d) + 1 in {0, 1, 2} (as TQ2_0, see tq2_0.py)::

    qs[m]       (m = 0..31)  holds elements m + 32n,        n = 0..4   (elements 0..159)
    qs[32 + m]  (m = 0..15)  holds elements 160 + m + 16n,  n = 0..4   (elements 160..239)
    qh[j]       (j = 0..3)   holds elements 240 + j + 4n,   n = 0..3   (elements 240..255)

Each byte first collects its trits as a base-3 number, the element with n = 0 the most
significant: q = sum_n t_n * 3^(4-n) (qh: 4 trits, then times 3, so its last trit is 0).
Then the byte is stored as the fixed-point fraction q / 243 rounded UP to 8 bits::

    byte = ceil(q * 256 / 243) = (q * 256 + 242) // 243

Decoding trit n multiplies the byte by 3^n modulo 256 (the wrap shifts the wanted trit to
the top), then takes t = (byte * 3) >> 8.  That is why the bytes are fractions: a trit is
read with one multiply and one shift, no division.

Worked example: trits (2, 0, 1, 2, 2) in one qs byte::

    q = 2*81 + 0*27 + 1*9 + 2*3 + 2 = 179;  byte = (179*256 + 242) // 243 = 189
    n = 0: (189 * 3) >> 8 = 2            n = 1: (189*3 % 256 = 55) * 3 >> 8 = 0
    n = 2: (189*9 % 256 = 165) * 3 >> 8 = 1,  and so on.
"""

from __future__ import annotations

import sys

import numpy as np

from .tq2_0 import QK_K, byte_blocks, packed_api, round_away, weight_blocks

__all__ = ["quantize", "dequantize", "unpack", "encode", "decode", "pack_codes", "unpack_codes",
           "BLOCK_BYTES"]
# the functions of the minibit._fast twin: same names, signatures and bytes
TWINNED = ("quantize", "unpack", "dequantize")

FMT = "tq1_0"
BLOCK_BYTES = 54
_POW5 = np.array([81, 27, 9, 3, 1], dtype=np.int32)     # most significant trit first
_POW4 = np.array([81, 27, 9, 3], dtype=np.int32)        # qh: 4 trits, then the x3


def quantize(w):
    """float32 [rows, cols] -> uint8 [rows, cols/256 * 54], gguf-py's bytes (twinned)."""
    x, d, inv = weight_blocks(FMT, w)                                                 # [rows, nb, 256] f32
    rows, nb, _ = x.shape
    t = (round_away(x * inv[..., None]) + 1).astype(np.int32)                         # [rows, nb, 256]
    a = (t[..., :160].reshape(rows, nb, 5, 32) * _POW5[:, None]).sum(axis=2)          # [rows, nb, 32]
    b = (t[..., 160:240].reshape(rows, nb, 5, 16) * _POW5[:, None]).sum(axis=2)       # [rows, nb, 16]
    h = (t[..., 240:].reshape(rows, nb, 4, 4) * _POW4[:, None]).sum(axis=2)           # [rows, nb, 4]
    q = np.concatenate([a, b, h], axis=2)                                             # [rows, nb, 52] 0..242
    out = np.empty((rows, nb, BLOCK_BYTES), dtype=np.uint8)
    out[:, :, :52] = (q * 256 + 242) // 243                                           # ceil(q*256/243)
    out[:, :, 52:] = d.astype("<f2").view(np.uint8).reshape(rows, nb, 2)
    return out.reshape(rows, nb * BLOCK_BYTES)


def _trits(byte_plane: np.ndarray, count: int) -> np.ndarray:
    """[..., m] uint8 -> [..., count, m] trits in {0,1,2}, trit n = most significant first."""
    mult = (3 ** np.arange(count)).astype(np.uint16)                                  # 1, 3, 9, 27, 81
    q8 = (byte_plane[..., None, :].astype(np.uint16) * mult[:, None]) & 0xFF          # wraps mod 256
    return ((q8 * 3) >> 8).astype(np.int8)


def unpack(data, rows, cols):
    """uint8 [rows, nb*54] -> (int8 codes [rows, cols], float32 d [rows, nb]) (twinned).

    Every byte decodes to valid trits, so no byte pattern is an error here.
    """
    blk = byte_blocks(FMT, data, rows, cols, BLOCK_BYTES)       # [rows, nb, 54] uint8
    nb = blk.shape[1]
    a = _trits(blk[..., :32], 5).reshape(rows, nb, 160)        # element m + 32n
    b = _trits(blk[..., 32:48], 5).reshape(rows, nb, 80)       # element 160 + m + 16n
    h = _trits(blk[..., 48:52], 4).reshape(rows, nb, 16)       # element 240 + j + 4n
    codes = np.concatenate([a, b, h], axis=2).reshape(rows, cols) - np.int8(1)
    d = np.ascontiguousarray(blk[..., 52:]).view("<f2")[..., 0].astype(np.float32)
    return codes, d


def dequantize(data, rows, cols):
    """uint8 [rows, nb*54] -> float32 [rows, cols] = (trit - 1) * d (twinned)."""
    codes, d = unpack(data, rows, cols)
    nb = cols // QK_K
    return (codes.reshape(rows, nb, QK_K).astype(np.float32) * d[..., None]).reshape(rows, cols)


SCALE_OUTSIDE = False    # fp16 d closes every block

# the Packed-level functions, shared with TQ2_0 (formats/tq2_0.py packed_api)
_impl, resolve_params, data_shape, encode, pack_codes, unpack_codes, decode = \
    packed_api(sys.modules[__name__])
