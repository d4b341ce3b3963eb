# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 03 · Ternary matrix multiplication: multiply-add vs lookup tables
#
# Every kernel computes the same integers: R[t, n] = Σ_k w[n, k] · q[t, k] with ternary w and
# int8 q. They differ in *how*: decode and multiply (v0), multiply-add on packed codes (mad:
# bitnet.cpp's I2_S, TQ's dot products), or look up precomputed sums of activations (lut:
# bitnet.cpp's TL1/TL2; T-MAC's bit-serial tables). We show they agree to the bit, why TL and
# I2_S give the same numbers, and measure them.

# %%
import os
import time

import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
import matplotlib.pyplot as plt
import numpy as np

import minibit
from minibit import _backend, formats, kernels, quant
from minibit.kernels import lut, mad

rng = np.random.default_rng(0)
print("backend:", minibit.backend())

# %% [markdown]
# ## 1. The idea of a lookup table, by hand
#
# Two activations (a0, a1) and a pair of ternary weights (w0, w1): the product w0·a0 + w1·a1
# takes one of 9 values. Compute those 9 once per activation pair, then each weight pair is
# an index 3·w0 + w1 + 4 into the table — no multiplications left.

# %%
a0, a1 = 10, -3
table = [w0 * a0 + w1 * a1 for w0 in (-1, 0, 1) for w1 in (-1, 0, 1)]
print("table:", table)
for w0, w1 in [(1, 0), (-1, 1), (1, 1)]:
    idx = 3 * w0 + w1 + 4
    assert table[idx] == w0 * a0 + w1 * a1
    print(f"weights ({w0:+d}, {w1:+d}) -> index {idx} -> {table[idx]}")

# %% [markdown]
# ## 2. Every kernel, the same integers
#
# One 256 x 1536 weight matrix in every format; the integer part of each kernel against
# the plain int32 product.

# %%
N, K, T = 256, 1536, 3
w = rng.standard_normal((N, K)).astype(np.float32)
x = rng.standard_normal((T, K)).astype(np.float32)
codes, scale = quant.absmean_ternarize(w)
q, s = quant.quantize_act_hf(x)
exact = q.astype(np.int32) @ codes.astype(np.int32).T                  # [T, K] x [K, N] -> int32

p_i2 = formats.pack_codes("i2_s", codes, scale)
R_mad = mad.integer_product(p_i2.data, N, K, "i2_s", q)
p_tl1 = formats.pack_codes("tl1", codes, scale)
p_tl2 = formats.pack_codes("tl2", codes, scale)
R_tl1, R_tl2 = lut.tl1_integer(q, p_tl1), lut.tl2_integer(q, p_tl2)
R_tmac = lut.tmac_integer(q, lut.tmac_pack(codes), N)
for name, R in [("mad (I2_S)", R_mad), ("TL1", R_tl1), ("TL2", R_tl2), ("T-MAC", R_tmac)]:
    print(f"{name:11} identical to the int32 product: {np.array_equal(R, exact)}")
    assert np.array_equal(R, exact)

# %% [markdown]
# ## 3. Why TL and I2_S outputs (almost always) agree
#
# bitnet.cpp quantizes activations for I2_S with a 1e-5 floor on max|x| (in double) and for
# TL without one (in float). Above the floor the int8 values and the scale are the same, and
# the float epilogue differs only by the `- sum(q)` that I2_S needs (its codes are w + 1) —
# an exact integer subtraction. So the outputs are bit-identical:

# %%
y_i2s = kernels.linear(x, p_i2, profile="bitnet.cpp")
y_tl2 = kernels.linear(x, p_tl2, profile="bitnet.cpp")
print("max |I2_S - TL2| =", np.abs(y_i2s - y_tl2).max())
assert np.array_equal(y_i2s, y_tl2)
tiny = (x * 1e-7).astype(np.float32)                  # max|x| below the 1e-5 floor
d = np.abs(kernels.linear(tiny, p_i2, profile="bitnet.cpp") - kernels.linear(tiny, p_tl2, profile="bitnet.cpp")).max()
print(f"below the floor they differ: max |I2_S - TL2| = {d:.2e}")
assert d > 0

# %% [markdown]
# ## 4. The int16 trap in bitnet.cpp's AVX2 kernel
#
# bitnet.cpp sums `maddubs` results in int16 lanes over 32 blocks (4096 columns) before
# widening. With every code 2 (w = +1) and every activation near 127 a lane passes 32767 and
# wraps. minibit's bitnet.cpp profile reproduces the wrap; `int16_lane_overflow` says when.

# %%
Kw = 4096
wc = np.ones((1, Kw), np.int8)
pw = formats.pack_codes("i2_s", wc, 1.0)
xw = np.full((1, Kw), 1.0, np.float32)
info = kernels.int16_lane_overflow(xw, pw)
yb = kernels.linear(xw, pw, profile="bitnet.cpp")[0, 0]
yh = kernels.linear(xw, pw, profile="hf")[0, 0]
print(f"overflow: {bool(info)}; bitnet.cpp profile {yb}, exact (hf) {yh}")
assert bool(info) and yb != yh

# %% [markdown]
# ## 5. Speed vs shape, both backends
#
# GMAC/s for a single token (decode) through `kernels.linear` with each format's fastest
# kernel. The NumPy references exist to be read; the Cython twins to be run.

# %%
def gmacs(fmt, rows, cols, backend, reps=7):
    p = formats.encode(fmt, rng.standard_normal((rows, cols)).astype(np.float32))
    xv = rng.standard_normal((1, cols)).astype(np.float32)
    with _backend.use(backend):
        kernels.linear(xv, p)
        best = min(_timed(lambda: kernels.linear(xv, p)) for _ in range(reps))
    return rows * cols / best / 1e9


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


kernels.set_threads(1)          # one thread: tutorial 07 is about threads
shapes = [(256, 1536), (768, 1536), (1536, 1536), (4096, 1536)]
backends = ["numpy"] + (["cython"] if _backend.fast_module("mad") is not None else [])
results = {}
for be in backends:
    for fmt in ("i2_s", "tl2", "tq2_0"):
        results[(be, fmt)] = [gmacs(fmt, r, c, be) for r, c in shapes]
        print(be, fmt, " ".join(f"{g:7.2f}" for g in results[(be, fmt)]), "GMAC/s")
fig, ax = plt.subplots(figsize=(8, 4))
for (be, fmt), g in results.items():
    ax.plot([r * c / 1e6 for r, c in shapes], g, marker="o", ls="-" if be == "cython" else ":",
            label=f"{fmt} ({be})")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("weights (millions)")
ax.set_ylabel("GMAC/s, T = 1")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig("03_mpgemm_speed.png", dpi=90)
print("saved 03_mpgemm_speed.png")
if "cython" in backends:
    ratio = results[("cython", "i2_s")][-1] / results[("numpy", "i2_s")][-1]
    print(f"Cython / NumPy on I2_S 4096x1536: {ratio:.0f}x")
    assert ratio > 10

# %% [markdown]
# ## Summary
#
# * Four ways to the same int32: decode+multiply, multiply-add on codes, element-wise LUT
#   (TL1/TL2), bit-serial LUT (T-MAC).
# * TL and I2_S agree to the bit above bitnet.cpp's 1e-5 activation floor.
# * bitnet.cpp's AVX2 int16 lanes can wrap; minibit says when and what bitnet.cpp returns.
#
# ## Exercises
#
# 1. What is the smallest number of columns for which an int16 lane can wrap? (Each lane
#    adds at most 2·2·128 = 512 per 32 columns: 32768 / 512 = 64 chunks = 2048 columns.)
# 2. Time `lut.tl2_integer` against `mad.integer_product` at T = 1 and T = 128. Where does
#    the table cost pay off?
