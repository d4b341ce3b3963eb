"""v2: lookup-table mpGEMM -- bitnet.cpp's TL1 and TL2, and a T-MAC style bit-serial table.

This module is the NumPy reference (the spec); ``_fast/lut.pyx`` is its twin, with the same
function names and signatures and the same bits.

The idea
--------
A ternary weight row times an int8 activation vector is a sum of +q, -q and nothing.  Cut
the K activations of one token into small groups: a group of g weights can only take 3**g
patterns, so the partial sum of every pattern against that activation group can be worked
out ONCE per token and kept in a table.  Every output row then pays one table lookup per
weight group instead of g multiply-adds, and the table is shared by all M rows.  The weights
are stored as table indices.  bitnet.cpp's TL1 uses pairs (g = 2, 9 patterns, a 4-bit
index), TL2 triplets (g = 3, 27 patterns folded to 14 magnitudes plus a sign bit), and
T-MAC splits each weight into bit planes and looks up groups of g = 4 bits (16 entries per
table, one pass per plane).  A table of 16 small entries is exactly what one ``pshufb``
(x86) or ``tbl`` (ARM) instruction reads, which is why these kernels can be fast.

Worked example (one TL1 table)::

    activations of one pair      (x0, x1) = (5, -3)
    table  L[3a + b + 4] = a*x0 + b*x1     for a, b in {-1, 0, 1}

        index   0    1    2    3    4    5    6    7    8     (9..15 unused)
        (a, b) -1-1 -1 0 -1 1  0-1  0 0  0 1  1-1  1 0  1 1
        L       -2   -5   -8    3    0   -3    8    5    2

    weight pair (1, -1)  ->  index 3*1 + (-1) + 4 = 6  ->  L[6] = 8 = 1*5 + (-1)*(-3)

The entries are exact int16 sums of int8 activations.  The SIMD lookup instructions read
bytes, so bitnet.cpp keeps each int16 table as two 16-byte planes, the low bytes and the high
bytes (L[2] = -8 = 0xFFF8: low byte 0xF8, high byte 0xFF), looks both up with the same index
and interleaves the two bytes back into the int16.  Nothing is rounded: unlike T-MAC's own
kernels (and bitnet.cpp's lossy "TL2_0" variant), the table is not quantized to int8.

TL1 (formats/tl1.py; bitnet.cpp utils/codegen_tl1.py, ARM NEON)
    tables: one 16-slot int16 table per activation pair (2j, 2j+1); slots 9..15 are 0
    (bitnet.cpp never writes them: its registers hold garbage there, but a valid file never
    indexes them).  lookups: the pair index nibbles of formats.tl1, decoded here from the
    packed bytes in the tile order.  sums: per row, the BK/2 lookups of one K block add up
    in an int16 lane, which is then widened and added to an int32 total.

TL2 (formats/tl2.py; bitnet.cpp utils/codegen_tl2.py, x86 AVX2)
    three part (the first three_k columns): one table per activation triplet, slot v
    (v = 0..13) = a*x0 + b*x1 + c*x2 for the (a, b, c) with 9a + 3b + c = v, slots 14, 15 = 0.
    The magnitude nibble picks the slot, the sign bit s in {0, -1} is applied as
    ``(L + s) ^ s`` (two's complement negation when s = -1).  The BK/3 lookups of one K
    block add up in int16, then int32.
    two part (the last two_k columns): TL1 pair tables, int16 sums over 32-column blocks.
    R = three-part total + two-part total, in int32.

Output, both (TL1 qgemm_lut, TL2 two_qgemm_lut)::

    y = (float)R / s * weight_scale         float32, left to right

with s the activation scale of ``quant.quantize_act_tl`` (127 / max|x| in float32, no
epsilon floor) and weight_scale the ``<name>_scale`` tensor (Packed.scale).

The int16 bound
---------------
An int16 lane wraps past 32767.  With activations from quantize_act_tl (|q| <= 127):

* TL1: BK/2 lookups of at most 2*127 = 254 per block: safe while BK/2 * 254 <= 32767,
  i.e. BK <= 258.  For arbitrary int8 input (q = -128 allowed, entries up to 256): BK <= 254.
* TL2 three part: BK/3 lookups of at most 381 (384 with -128): safe for BK <= 258 (255);
  with BK % 24 == 0 every BK <= 240 is safe for any int8 input.
* TL2 two part: 16 lookups of at most 256: 4096, never wraps.

Every bitnet.cpp preset (TL1 BK <= 128: 64 * 254 = 16256; TL2 BK <= 192: 64 * 381 = 24384)
and every default_params tiling (TL1 BK <= 128, TL2 BK <= 240) is inside the bound.  A larger
BK is still a legal layout (formats.tl1/tl2 accept it) and then the C kernel CAN wrap: this
module reproduces the wrap (the block sum modulo 2**16, read as a signed int16), so its
integers are what the kernel computes, which is then NOT the true product.  The int32 totals
would wrap only for K above 2**31 / 384 (about 5.6 million).

What minibit does not copy
--------------------------
* TL2 batches (PR #521): for more than one token the generated three_/two_qgemm_lut store
  every token into the same C[0..BM) (no token stride), and from the second token on add an
  int32 sum to the float already stored there, so multi-token TL2 output is garbage in
  bitnet.cpp.  minibit computes every token correctly, exactly as for T = 1.
* TL1 is a GEMV in bitnet.cpp (one token); minibit runs it per token for any T.
* An all-zero token: bitnet.cpp divides by max|x| = 0 and writes NaN; quantize_act_tl gives
  q = 0 and s = +inf, so R = 0 and y = 0 / inf * scale = 0.
* bitnet.cpp's table builders step 16 activations (pairs) or 24 (triplets) at a time and
  exist only for its preset shapes; minibit builds a table for every pair and triplet of any
  shape formats.tl1/tl2 accept.
* Like bitnet.cpp, the kernels do not validate the nibbles (formats.tl1/tl2.unpack do): an
  index no valid file holds reads a zero slot here (TL1 9..15, where bitnet.cpp reads
  uninitialized registers; TL2 14, 15, zero there too).  A sign bit on magnitude 0 is -0 = 0.

T-MAC style (bit-serial)
------------------------
``tmac_pack`` stores any ternary codes w as code = w + 1 in {0, 1, 2}, split into two bit
planes b0 = code & 1 and b1 = code >> 1; each plane packs groups of 4 columns into a 4-bit
index (bit i = column 4g + i).  Per token and group the 16-entry int16 table is
T_g[idx] = sum of the activations whose bit is set (|T| <= 512), so::

    sum_k w_k q_k = sum_g T_g[b0 index] + 2 * sum_g T_g[b1 index] - sum_k q_k

(plane lookups combined by shift-and-add, minus the offset of code = w + 1).  No table is
quantized (T-MAC's own kernels quantize them to int8 with per-group scales, which is lossy):
the result is the exact int32 product.  The twin sums at most 32 lookups of one plane in
int16 (at most 16384) before widening, so nothing can wrap.
"""

from __future__ import annotations

import sys

import numpy as np

from .. import _backend
from .._errors import FormatError
from ..formats import tl2 as _tl2
from ..formats._packed import Packed, check_codes
from ..quant import quantize_act_tl
from .mad import wrap_int16

__all__ = [
    # twinned in _fast/lut.pyx: same names, signatures and bits
    "tl1_integer", "tl2_integer", "tl_integer", "tl_output", "linear_tl",
    "tmac_pack", "tmac_integer",
    # minibit.kernels.linear's protocol
    "apply",
    # building blocks (reference only): the tables and the decoded indices
    "pair_table", "triplet_table", "byte_planes", "join_bytes", "tmac_table",
    "tl1_indices", "tl2_indices", "tmac_indices",
]

TWINNED = ("tl1_integer", "tl2_integer", "tl_integer", "tl_output", "linear_tl",
           "tmac_pack", "tmac_integer")

SLOTS = 16           # every table has 16 slots: one pshufb / tbl register of bytes
TMAC_G = 4           # T-MAC group: 4 bits of one plane index a 16-entry table
TMAC_ROWS = 32       # T-MAC tile height: one 32-byte AVX2 register of rows
TL2_BK2 = _tl2.BK2   # K block of TL2's pair part (32 columns, fixed in bitnet.cpp)


# ---------------------------------------------------------------------------------------------
# 1. Tables from the int8 activations of each token

def _pair_weights() -> np.ndarray:
    """int16 [16, 2]: the (a, b) of pair index 3a + b + 4 (0..8); slots 9..15 weigh nothing."""
    w = np.zeros((SLOTS, 2), dtype=np.int16)
    for idx in range(9):
        w[idx] = (idx // 3 - 1, idx % 3 - 1)
    return w


def _triplet_weights() -> np.ndarray:
    """int16 [16, 3]: the (a, b, c) with 9a + 3b + c = v for magnitude v = 0..13; 14, 15 zero."""
    w = np.zeros((SLOTS, 3), dtype=np.int16)
    for v in range(14):
        d = v + 13                            # 0..26: the three base-3 digits of (a+1, b+1, c+1)
        w[v] = (d // 9 - 1, d // 3 % 3 - 1, d % 3 - 1)
    return w


PAIR_WEIGHTS = _pair_weights()          # [16, 2] int16
TRIPLET_WEIGHTS = _triplet_weights()    # [16, 3] int16


def pair_table(q) -> np.ndarray:
    """int8 [T, 2n] -> int16 [T, n, 16]: L[t, j, 3a + b + 4] = a*q[t, 2j] + b*q[t, 2j + 1].

    TL1's table (codegen_tl1.py lut_ctor) and TL2's two-part table (two_lut_ctor).
    """
    q = np.asarray(q)
    T, K = q.shape
    x = q.astype(np.int16).reshape(T, K // 2, 2)          # [T, n, 2] int16 (x0, x1)
    return x @ PAIR_WEIGHTS.T                              # [T, n, 2] @ [2, 16] -> [T, n, 16] int16


def triplet_table(q) -> np.ndarray:
    """int8 [T, 3n] -> int16 [T, n, 16]: slot v = a*x0 + b*x1 + c*x2 with 9a + 3b + c = v.

    TL2's three-part table (codegen_tl2.py three_lut_ctor): 14 magnitudes, slots 14, 15 = 0.
    """
    q = np.asarray(q)
    T, K = q.shape
    x = q.astype(np.int16).reshape(T, K // 3, 3)          # [T, n, 3] int16 (x0, x1, x2)
    return x @ TRIPLET_WEIGHTS.T                           # -> [T, n, 16] int16


def byte_planes(L) -> tuple[np.ndarray, np.ndarray]:
    """int16 tables [..., 16] -> (low bytes uint8 [..., 16], high bytes int8 [..., 16]).

    How bitnet.cpp stores a table for byte lookups (TL2: packs_epi32 then an even/odd byte
    shuffle; TL1: vqtbl1q_s8 with the mask 0, 2, .., 14, 1, 3, .., 15).
    """
    L = np.asarray(L, dtype=np.int16)
    return (L & 0xFF).astype(np.uint8), (L >> 8).astype(np.int8)


def join_bytes(lo, hi) -> np.ndarray:
    """(low uint8, high int8) -> int16 = high * 256 + low: the unpack / zip of the two lookups."""
    return (np.asarray(hi).astype(np.int16) << 8) | np.asarray(lo).astype(np.int16)


def _lookup(L: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """One token's tables [n, 16] int16, indices [M, n] 0..15 -> entries [M, n] int16.

    Each lookup reads the low-byte plane and the high-byte plane at the same index and joins
    the two bytes, as the SIMD kernels do; the result is the exact int16 entry.
    """
    lo, hi = byte_planes(L)                                # [n, 16] uint8, [n, 16] int8
    n = L.shape[0]
    flat = np.arange(n) * SLOTS + idx                      # [M, n] positions in the [n*16] planes
    return join_bytes(lo.reshape(-1)[flat], hi.reshape(-1)[flat])   # [M, n] int16


# ---------------------------------------------------------------------------------------------
# 2. Table indices from the packed bytes, in the tile order of formats/tl1.py and tl2.py

def tl1_indices(data, M: int, K: int, BM: int, BK: int, bm: int) -> np.ndarray:
    """TL1 bytes uint8 [M*K/4] -> pair indices uint8 [M, K/2] (nibbles as stored, 0..15).

    Bytes run over (t, kb, sb, g, h, p, l); each holds pair 2p (high nibble) and 2p + 1 (low
    nibble) of group g for row t*BM + sb*bm + 16h + l.  Nothing is validated: a nibble above 8
    just reads a zero slot.
    """
    by = 256 // bm
    d = np.asarray(data)
    nib = np.stack([d >> 4, d & 15], axis=-1)             # [M*K/4, 2] uint8 (pair 2p, 2p + 1)
    x = nib.reshape(M // BM, K // BK, BM // bm, BK // by, bm // 16, by // 4, 16, 2)
    #               t        kb       sb        g         h          p        l   e
    return x.transpose(0, 2, 4, 6, 1, 3, 5, 7).reshape(M, K // 2)   # [M, K/2] uint8


def tl2_indices(data, M: int, K: int, BM: int, BK: int):
    """TL2 bytes -> (magnitudes uint8 [M, three_k/3], signs int16 [M, three_k/3] in {0, -1},
    pair indices uint8 [M, two_k/2]).

    Part 1 bytes run over (t, kb, sb, g, q) and part 3 over (t, kb2, sb, g, q), where byte
    position q of a 32-row block holds block row 8*CHUNK[q // 8] + q % 8 (chunks 0, 2, 1, 3)
    and the high nibble is the first of the two triplets (pairs).  Part 2 is 16-bit words
    over (t, kb, sb, G, u): bit 15 - i of word u is the sign of triplet 8G + i // 2 of row
    16*(i % 2) + u of the block.  Nothing is validated (magnitudes 14, 15 read zero slots).
    """
    three_k, two_k = _tl2.split_k(K, BK)
    d = np.asarray(data)
    n1, n2, n3 = M * three_k // 6, M * three_k // 24, M * two_k // 4
    chunk = list(_tl2.CHUNK)

    x = np.stack([d[:n1] >> 4, d[:n1] & 15], axis=-1)     # [n1, 2] uint8
    x = x.reshape(M // BM, three_k // BK, BM // 32, BK // 6, 4, 8, 2)[:, :, :, :, chunk]
    #             t        kb            sb         g       chunk row e
    mag = x.transpose(0, 2, 4, 5, 1, 3, 6).reshape(M, three_k // 3)   # [M, three_k/3] uint8

    words = np.ascontiguousarray(d[n1:n1 + n2]).view("<u2")            # [n2/2] uint16
    bits = (words[:, None] >> (15 - np.arange(16, dtype=np.uint16))) & 1   # [n2/2, 16] (bit i)
    y = bits.reshape(M // BM, three_k // BK, BM // 32, BK // 24, 16, 8, 2)
    #                t        kb            sb         G         u   s  half (i = 2s + half)
    neg = y.transpose(0, 2, 6, 4, 1, 3, 5).reshape(M, three_k // 3)    # [M, three_k/3] 0/1
    sign = -neg.astype(np.int16)                                       # 0 or -1 (all ones)

    z = np.stack([d[n1 + n2:n1 + n2 + n3] >> 4, d[n1 + n2:n1 + n2 + n3] & 15], axis=-1)
    z = z.reshape(M // BM, two_k // TL2_BK2, BM // 32, 8, 4, 8, 2)[:, :, :, :, chunk]
    pairs = z.transpose(0, 2, 4, 5, 1, 3, 6).reshape(M, two_k // 2)   # [M, two_k/2] uint8
    return mag, sign, pairs


# ---------------------------------------------------------------------------------------------
# 3. Arguments (shared with the twin, so both raise the same FormatError)

def _check_q(q, K: int | None = None, what: str = "q") -> np.ndarray:
    """A C-contiguous int8 [T, K] activation matrix (any K > 0 when K is None), or FormatError."""
    a = np.asarray(q)
    if a.dtype != np.int8:
        raise FormatError(f"{what}: expected int8 activations, got dtype {a.dtype}")
    if a.ndim != 2 or a.shape[1] == 0 or (K is not None and a.shape[1] != K):
        want = "K" if K is None else K
        raise FormatError(f"{what}: expected int8 activations [T, {want}], got shape {a.shape}")
    return np.ascontiguousarray(a)


def _check_tl(p, fmt: str):
    """A TL Packed -> (M, K, BM, BK, bm, data); a Packed is valid by construction."""
    if not isinstance(p, Packed):
        raise FormatError(f"{fmt}: expected a minibit.formats.Packed, got {type(p).__name__}")
    if p.fmt != fmt:
        raise FormatError(f"{fmt}: this kernel cannot run a {p.fmt!r} tensor")
    M, K = p.shape
    return M, K, p.params["BM"], p.params["BK"], p.params["bm"], p.data


def _weight_scale(p) -> np.float32:
    """The one float32 weight scale of a TL tensor (its ``<name>_scale``)."""
    return p.scale[0]


# ---------------------------------------------------------------------------------------------
# 4. The TL integer products

def tl1_integer(q, p) -> np.ndarray:
    """int8 q [T, K] and a "tl1" Packed [M, K] -> int32 R [T, M], as bitnet.cpp's TL1 kernel.

    Per token: pair tables, one lookup per weight pair, int16 sums per BK block (wrapping as
    the int16 lanes do), widened and added in int32.  Equals codes @ q.T whenever BK is within
    the int16 bound (module docstring).
    """
    M, K, BM, BK, bm, data = _check_tl(p, "tl1")
    q = _check_q(q, K)
    T = q.shape[0]
    idx = tl1_indices(data, M, K, BM, BK, bm)             # [M, K/2] uint8
    R = np.zeros((T, M), dtype=np.int32)
    for t in range(T):
        L = pair_table(q[t:t + 1])[0]                      # [K/2, 16] int16
        v = _lookup(L, idx)                                # [M, K/2] int16
        blocks = v.reshape(M, K // BK, BK // 2).sum(axis=2, dtype=np.int32)   # [M, K/BK] int32
        R[t] = wrap_int16(blocks).sum(axis=1, dtype=np.int32)               # [M] int32
    return R


def tl2_integer(q, p) -> np.ndarray:
    """int8 q [T, K] and a "tl2" Packed [M, K] -> int32 R [T, M], as bitnet.cpp's TL2 kernel.

    Three part: triplet tables, magnitude lookup, sign applied as (L + s) ^ s, int16 sums per
    BK block (wrapping), widened to int32.  Two part: pair tables, int16 sums per 32 columns,
    int32.  R = three + two.  Each token on its own (no PR #521 batch bug).
    """
    M, K, BM, BK, bm, data = _check_tl(p, "tl2")
    q = _check_q(q, K)
    T = q.shape[0]
    three_k, two_k = _tl2.split_k(K, BK)
    mag, sign, pairs = tl2_indices(data, M, K, BM, BK)    # [M, three_k/3] x2, [M, two_k/2]
    R = np.zeros((T, M), dtype=np.int32)
    for t in range(T):
        R3 = np.zeros(M, dtype=np.int32)
        if three_k:
            L3 = triplet_table(q[t:t + 1, :three_k])[0]   # [three_k/3, 16] int16
            v = _lookup(L3, mag)                           # [M, three_k/3] int16, |v| <= 384
            v = (v + sign) ^ sign                          # negate where the sign bit is set
            blocks = v.reshape(M, three_k // BK, BK // 3).sum(axis=2, dtype=np.int32)
            R3 = wrap_int16(blocks).sum(axis=1, dtype=np.int32)             # [M] int32
        R2 = np.zeros(M, dtype=np.int32)
        if two_k:
            L2 = pair_table(q[t:t + 1, three_k:])[0]       # [two_k/2, 16] int16
            v = _lookup(L2, pairs)                         # [M, two_k/2] int16
            blocks = v.reshape(M, two_k // TL2_BK2, TL2_BK2 // 2).sum(axis=2, dtype=np.int32)
            R2 = wrap_int16(blocks).sum(axis=1, dtype=np.int32)
        R[t] = R3 + R2                                     # int32 (C writes three, adds two)
    return R


def tl_integer(q, p) -> np.ndarray:
    """tl1_integer or tl2_integer, by p.fmt."""
    fmt = getattr(p, "fmt", None)
    if fmt == "tl1":
        return tl1_integer(q, p)
    if fmt == "tl2":
        return tl2_integer(q, p)
    raise FormatError(f"lut: the TL kernels run 'tl1' or 'tl2' tensors, got {fmt!r}")


def tl_output(R, s, scale) -> np.ndarray:
    """int32 R [T, M], float32 activation scales s [T], float32 weight scale -> float32 [T, M].

    y = (float)R / s * scale, in float32 and in that order (bitnet.cpp's TL epilogue).
    """
    R = np.asarray(R)
    if R.dtype != np.int32 or R.ndim != 2:
        raise FormatError(f"tl_output: R must be int32 [T, M], got {R.dtype} {R.shape}")
    s = np.asarray(s)
    if s.dtype != np.float32 or s.shape != (R.shape[0],):
        raise FormatError(f"tl_output: s must be float32 [{R.shape[0]}], got {s.dtype} {s.shape}")
    scale = np.asarray(scale)
    if scale.dtype != np.float32 or scale.size != 1:
        raise FormatError(f"tl_output: scale must be one float32, got {scale!r}")
    y = R.astype(np.float32) / s[:, None]                  # [T, M] float32 (int32 -> float rounds)
    return y * scale.reshape(())                           # [T, M] float32


def linear_tl(x, p) -> np.ndarray:
    """float32 x [T, K] (or [K]) and a "tl1"/"tl2" Packed [M, K] -> float32 y [T, M].

    bitnet.cpp's TL profile end to end: q, s = quantize_act_tl(x); R = tl_integer(q, p);
    y = (float)R / s * weight_scale.
    """
    if not isinstance(p, Packed):
        raise FormatError(f"linear_tl: expected a minibit.formats.Packed, got {type(p).__name__}")
    scale = _weight_scale(p)
    q, s = quantize_act_tl(x)                              # [T, K] int8, [T] float32
    R = tl_integer(q, p)                                   # [T, M] int32
    return tl_output(R, s, scale)


# ---------------------------------------------------------------------------------------------
# 5. T-MAC style: two bit planes, 4-bit groups, 16-entry tables

def tmac_pack(codes) -> np.ndarray:
    """int8 ternary codes [N, K] -> uint8 planes [ceil(N/32), 2, ceil(K/8), 32].

    code = w + 1 in {0, 1, 2}; plane b holds bit b of the code.  planes[nb, b, j, r] is row
    32*nb + r: its low nibble is group 2j (columns 8j..8j+3, bit i = column 8j + i), its high
    nibble group 2j + 1 (columns 8j+4..8j+7).  Padding rows and columns get code 1 (w = 0).
    32 rows of one byte position side by side make one 32-byte SIMD register.
    """
    c = check_codes(codes)
    N, K = c.shape
    NB, KB = -(-N // TMAC_ROWS), -(-K // 8)
    code = np.ones((NB * TMAC_ROWS, KB * 8), dtype=np.uint8)             # padding: w = 0
    code[:N, :K] = (c + 1).astype(np.uint8)                               # [Np, Kp] 0..2
    bits = np.stack([code & 1, code >> 1])                                # [2, Np, Kp] 0/1
    g = bits.reshape(2, NB * TMAC_ROWS, KB * 2, TMAC_G)                   # [2, Np, groups, 4]
    nib = (g << np.arange(TMAC_G, dtype=np.uint8)).sum(axis=3, dtype=np.uint8)   # [2, Np, G]
    byte = nib[:, :, 0::2] | (nib[:, :, 1::2] << 4)                       # [2, Np, KB] uint8
    tiles = byte.reshape(2, NB, TMAC_ROWS, KB).transpose(1, 0, 3, 2)      # [NB, 2, KB, 32]
    return np.ascontiguousarray(tiles)


_TMAC_BITS = ((np.arange(SLOTS)[:, None] >> np.arange(TMAC_G)) & 1).astype(np.int16)  # [16, 4]


def tmac_table(q) -> np.ndarray:
    """int8 [T, K] -> int16 [T, ceil(K/8)*2, 16]: T[t, g, idx] = sum of q[t, 4g + i] over the
    bits i set in idx (columns past K count as 0).  |entry| <= 512."""
    q = np.asarray(q)
    T, K = q.shape
    Kp = -(-K // 8) * 8
    x = np.zeros((T, Kp), dtype=np.int16)
    x[:, :K] = q                                           # [T, Kp] int16, zero padded
    return x.reshape(T, Kp // TMAC_G, TMAC_G) @ _TMAC_BITS.T   # [T, G, 4] @ [4, 16] -> int16


def tmac_indices(planes) -> np.ndarray:
    """uint8 planes [NB, 2, KB, 32] -> indices uint8 [2, NB*32, KB*2] (plane, row, group)."""
    P = np.asarray(planes)
    NB, _, KB, _ = P.shape
    nib = np.stack([P & 15, P >> 4], axis=-1)                             # [NB, 2, KB, 32, 2]
    return nib.transpose(1, 0, 3, 2, 4).reshape(2, NB * TMAC_ROWS, KB * 2)


def _check_planes(planes, rows, K: int) -> np.ndarray:
    P = np.asarray(planes)
    if isinstance(rows, (bool, np.bool_)) or not isinstance(rows, (int, np.integer)) or rows <= 0:
        raise FormatError(f"tmac: rows must be a positive integer, got {rows!r}")
    want = (-(-int(rows) // TMAC_ROWS), 2, -(-K // 8), TMAC_ROWS)
    if P.dtype != np.uint8 or P.shape != want:
        raise FormatError(f"tmac: planes must be uint8 {list(want)} for {rows} rows and K = "
                          f"{K}, got {P.dtype} {list(P.shape)}")
    return np.ascontiguousarray(P)


def tmac_integer(q, planes, rows) -> np.ndarray:
    """int8 q [T, K], tmac_pack planes, rows N -> int32 [T, N] = codes @ q.T exactly.

    Per token and plane: one table lookup per 4-column group, summed; then
    R = S(b0) + 2*S(b1) - sum(q).  A code of 3 (both bits set; tmac_pack never writes it)
    would count as w = 2.
    """
    q = _check_q(q)
    P = _check_planes(planes, rows, q.shape[1])
    T = q.shape[0]
    idx = tmac_indices(P)                                  # [2, Np, G] uint8
    R = np.zeros((T, int(rows)), dtype=np.int32)
    for t in range(T):
        Tab = tmac_table(q[t:t + 1])[0]                    # [G, 16] int16
        S0 = _lookup(Tab, idx[0]).sum(axis=1, dtype=np.int32)   # [Np] int32, plane b0
        S1 = _lookup(Tab, idx[1]).sum(axis=1, dtype=np.int32)   # [Np] int32, plane b1
        offset = q[t].sum(dtype=np.int32)                  # sum_k q_k: code = w + 1
        R[t] = (S0 + (S1 << 1) - offset)[:rows]            # shift-and-add, minus the offset
    return R


# ---------------------------------------------------------------------------------------------
# 6. minibit.kernels.linear's protocol

def _impl():
    """The module that runs the twinned functions: the Cython twin unless forced pure."""
    return _backend.select("lut", sys.modules[__name__])


def apply(p: Packed, profile: str, acts: dict) -> np.ndarray:
    """kernels.linear's entry: the "bitnet.cpp" profile on a tl1/tl2 weight -> float32 [T, rows].

    ``acts`` holds q (int8 [T, K]) and s (float32 [T]) from quantize_act_tl.
    """
    if profile != "bitnet.cpp" or getattr(p, "fmt", None) not in ("tl1", "tl2"):
        raise FormatError(f"lut runs the 'bitnet.cpp' profile on tl1/tl2, not {profile!r} on "
                          f"{getattr(p, 'fmt', None)!r}")
    scale = _weight_scale(p)
    impl = _impl()
    return impl.tl_output(impl.tl_integer(acts["q"], p), acts["s"], scale)   # [T, rows] f32
