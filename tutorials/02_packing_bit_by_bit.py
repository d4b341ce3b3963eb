# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 02 · Packing ternary weights, bit by bit
#
# The same ternary matrix is stored six different ways by the engines people use. This
# tutorial packs one small matrix into each layout, prints the bytes, and decodes a few of
# them by hand — the fastest way to see why a reader that assumes the wrong layout produces
# garbage (bitnet.cpp's ARM builds misreading I2_S files is exactly that bug).

# %%
import struct

import numpy as np

import minibit
from minibit import formats

rng = np.random.default_rng(0)


def bits(b):
    return " ".join(f"{int(x):08b}" for x in np.asarray(b).reshape(-1))


# %% [markdown]
# ## 1. hf_packed (transformers): four rows per byte, in row chunks
#
# Rows are cut into 4 chunks of R = rows/4; chunk i goes to bits 2i..2i+1. code = w + 1.

# %%
w = np.array([1, 0, -1, 1, 0, 0, 1, -1], np.int8)[:, None]        # 8 rows, 1 column
p = formats.pack_codes("hf_packed", w, 1.0)
print("codes  :", (w[:, 0] + 1).tolist())
print("packed :", bits(p.data), "=", [hex(int(b)) for b in p.data[:, 0]])
byte0 = int(p.data[0, 0])
by_hand = [(byte0 >> (2 * i)) & 3 for i in range(4)]        # rows 0, 2, 4, 6
print("byte 0 holds rows 0, 2, 4, 6 ->", by_hand)
assert by_hand == [2, 0, 1, 2]

# %% [markdown]
# ## 2. I2_S (bitnet.cpp): 128-code blocks over the flat tensor, first sub-block HIGH
#
# byte[32b + p] = c[128b+p] << 6 | c[128b+32+p] << 4 | c[128b+64+p] << 2 | c[128b+96+p],
# then the float32 scale at byte n/4 and 28 padding bytes.

# %%
codes = np.zeros((1, 128), np.int8)
codes[0, 0], codes[0, 32], codes[0, 64], codes[0, 96] = 1, -1, 0, 1    # position p = 0 of each sub-block
p = formats.pack_codes("i2_s", codes, 0.625)
print("byte 0 :", bits(p.data[0]), " (+1 -1 0 +1 -> codes 2 0 1 2)")
assert p.data[0] == (2 << 6 | 0 << 4 | 1 << 2 | 2)
print("bytes 32..35 (scale):", p.data[32:36].tolist(), "->", struct.unpack("<f", p.data[32:36].tobytes())[0])
print("total bytes:", p.data.size, "= 128/4 + 32")
assert p.data.size == 64

# %% [markdown]
# ## 3. TQ2_0 (llama.cpp): the same 2 bits, the opposite order
#
# Blocks of 256 with an fp16 scale; element e -> byte (e // 128) * 32 + e % 32, bits
# 2 * ((e % 128) // 32): the **first** 32 values sit in the LOW bits. Reading TQ2_0 bytes
# with I2_S's rule (or the reverse) scrambles every block.

# %%
x = np.zeros((1, 256), np.float32)
x[0, 0], x[0, 32], x[0, 64], x[0, 96] = 1, -1, 0, 1
p = formats.encode("tq2_0", x)
print("byte 0 :", bits(p.data[0, 0]), " (codes 2 0 1 2 from the low bits up)")
assert p.data[0, 0] == (2 | 0 << 2 | 1 << 4 | 2 << 6)
print("d (fp16) =", np.frombuffer(p.data[0, 64:66].tobytes(), "<f2")[0])
import gguf
same = p.data.tobytes() == gguf.quants.quantize(x, gguf.GGMLQuantizationType.TQ2_0).tobytes()
print("identical to gguf-py's bytes:", same)
assert same

# %% [markdown]
# ## 4. TQ1_0: five trits in a byte, stored as a fraction
#
# 3^5 = 243 <= 256, so five ternary digits fit in a byte. TQ1_0 stores q (0..242) as
# ceil(q * 256 / 243): multiplying the byte by 3^n (mod 256) brings trit n to the top, and
# (byte * 3) >> 8 reads it — one multiply and one shift per trit, no division.

# %%
trits = [2, 0, 1, 2, 2]
q = 0
for t in trits:
    q = q * 3 + t
byte = (q * 256 + 242) // 243
print(f"trits {trits} -> q = {q} -> byte {byte} = {byte:08b}")
decoded = [((((byte * 3 ** n) & 255) * 3) >> 8) for n in range(5)]
print("decoded:", decoded)
assert decoded == trits
x = np.zeros((1, 256), np.float32)
for n, t in enumerate(trits):
    x[0, 32 * n] = t - 1                 # qs[0] holds elements 0, 32, 64, 96, 128
p = formats.encode("tq1_0", x)
assert p.data[0, 0] == byte
print("minibit's qs[0]:", int(p.data[0, 0]))

# %% [markdown]
# ## 5. TL1 / TL2: indices for lookup tables
#
# bitnet.cpp's LUT kernels do not store codes: TL1 stores the index 3a + b + 4 (0..8) of each
# **pair** of weights along K, TL2 a sign bit and the magnitude |9a + 3b + c| (0..13) of each
# **triplet**; the kernel looks the index up in a table of precomputed activation sums.
# Both are tiled by shape-specific parameters (BM, BK, bm).

# %%
M, K = 64, 128
Wt = rng.integers(-1, 2, size=(M, K)).astype(np.int8)
for fmt in ("tl1", "tl2"):
    p = formats.pack_codes(fmt, Wt, 1.0)
    back, scale = formats.unpack_codes(p)
    print(f"{fmt}: params {p.params}, {p.data.size} bytes = {8 * p.data.size / (M * K):.3f} bits/weight")
    assert np.array_equal(back, Wt)
a, b = Wt[0, 0], Wt[0, 1]
print(f"first pair of row 0: ({a}, {b}) -> TL1 index {3 * a + b + 4}")

# %% [markdown]
# ## 6. Sizes side by side

# %%
Wbig = rng.standard_normal((2560, 6912)).astype(np.float32)
print(f"{'format':10} {'bytes':>10} {'bits/weight':>12}")
for fmt in formats.FORMATS:
    p = formats.encode(fmt, Wbig)
    print(f"{fmt:10} {p.nbytes:>10} {p.bits_per_weight:>12.4f}")
    assert 1.6 < p.bits_per_weight < 2.1

# %% [markdown]
# ## Summary
#
# * Same 2-bit codes, opposite bit orders: I2_S puts the first sub-block high, TQ2_0 low,
#   hf_packed spreads rows over the bit pairs.
# * TQ1_0 reaches 1.6875 bits with base-3 fractions; TL2 ~1.67 with sign + magnitude.
#
# ## Exercises
#
# 1. Decode byte 0x1A as I2_S and as TQ2_0. Which four values does each give?
#    (I2_S: 0, 1, 2, 2 -> -1, 0, +1, +1; TQ2_0: 2, 2, 1, 0 -> +1, +1, 0, -1.)
# 2. Why does TQ1_0 store ceil(q*256/243) and not q? Try floor and find the trit that breaks.
