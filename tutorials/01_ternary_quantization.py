# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 01 · Ternary weights and int8 activations
#
# A BitNet b1.58 linear layer multiplies **ternary** weights (-1, 0, +1 times one scale per
# tensor) by **int8** activations (one scale per token). This tutorial builds both quantizers
# from scratch, checks them against minibit's, and shows the rounding traps that make two
# engines disagree on the same model.
#
# Run it with `python tutorials/01_ternary_quantization.py` (or open it with jupytext).

# %%
import numpy as np

import minibit
from minibit import quant

rng = np.random.default_rng(0)
print("minibit", minibit.__version__, "backend:", minibit.backend())

# %% [markdown]
# ## 1. Absmean ternarization
#
# gamma = mean|W| over the **whole tensor**; every weight becomes round(W / gamma) clipped to
# [-1, 1]. The dequantized weight is code * gamma', where gamma' = 1 / (1 / gamma) in float32 (the
# value bitnet.cpp stores).

# %%
W = rng.standard_normal((6, 8)).astype(np.float32)
gamma = np.float32(np.abs(W, dtype=np.float64).mean())
s = np.float32(1) / gamma
codes_by_hand = np.clip(np.rint(W * s), -1, 1).astype(np.int8)
codes, scale = quant.absmean_ternarize(W)
print("gamma =", gamma, " stored scale =", scale)
print(codes)
assert np.array_equal(codes, codes_by_hand)
assert scale == np.float32(1) / s
frac = np.bincount(codes.reshape(-1) + 1, minlength=3) / codes.size
print("fraction of -1 / 0 / +1:", np.round(frac, 3))

# %% [markdown]
# For Gaussian weights a code is 0 when |W| < gamma/2, and gamma = mean|W| = sqrt(2/pi) sigma,
# so P(0) = P(|Z| < 0.399) = 0.31: about a third of the codes are zero.

# %%
big = rng.standard_normal((512, 512)).astype(np.float32)
c, _ = quant.absmean_ternarize(big)
zeros = float((c == 0).mean())
print(f"zero codes in a 512x512 Gaussian matrix: {zeros:.3f}")
assert 0.28 < zeros < 0.35

# %% [markdown]
# ## 2. Per-token int8 activations (the `hf` profile)
#
# s = 127 / max|x| per token; q = round(x * s). Rounding is **half to even**, like
# `torch.round`.

# %%
x = np.array([[0.5, -1.0, 0.25, 0.0]], np.float32)
q, s_act = quant.quantize_act_hf(x)
print("x*s =", x * s_act[:, None], "->", q)
assert q.tolist() == [[64, -127, 32, 0]]     # 63.5 rounds to the even 64

# %% [markdown]
# ## 3. The rounding traps
#
# Three rules appear in the engines minibit reproduces:
#
# * `np.rint`, `torch.round` and ggml's `nearest_int` (add 1.5·2^23, read the mantissa):
#   half to even;
# * C `roundf` / `lroundf` (llama.cpp's TQ weight packing): half away from zero;
# * floor(x + 0.5) (a common hand-written rule): half up, and wrong just below 0.5 in float32.

# %%
def nearest_int(f):
    """ggml's trick: valid for |f| <= 4194303, rounds half to even in float32."""
    v = np.float32(f) + np.float32(12582912.0)
    return int((v.view(np.int32) & 0x7FFFFF) - 0x400000)


for v in [0.5, 1.5, 2.5, -0.5, -2.5]:
    print(f"{v:5}: rint {np.rint(v):5}  nearest_int {nearest_int(v):3}  roundf-like "
          f"{float(np.sign(v) * np.floor(abs(v) + 0.5)):5}")
    assert nearest_int(v) == np.rint(v)

# the floor(x + 0.5) trap: the largest float32 below 0.5
v = np.nextafter(np.float32(0.5), np.float32(0))
print("x =", repr(v), " floor(x + 0.5) =", np.floor(v + np.float32(0.5)), "(should be 0)")
assert np.floor(v + np.float32(0.5)) == 1.0      # the float32 sum rounds up to exactly 1.0

# %% [markdown]
# ## 4. Where profiles differ: I2_S (bitnet.cpp) vs hf
#
# bitnet.cpp computes max|x| in double with a 1e-5 floor and rounds 127/max to float32;
# transformers computes 127/max in float32. For most tokens the int8 values agree; the
# scales can differ in the last bit.

# %%
X = rng.standard_normal((1000, 256)).astype(np.float32)
qh, sh = quant.quantize_act_hf(X)
qi, si, sums = quant.quantize_act_i2s(X)
same_q = float((qh == qi).all(axis=1).mean())
same_s = float((sh == si).mean())
print(f"tokens with identical int8 values: {same_q:.3f}; identical float32 scales: {same_s:.3f}")
assert same_q > 0.99
assert np.array_equal(sums, qi.sum(axis=1, dtype=np.int32))

# %% [markdown]
# ## 5. Q8_K (llama.cpp): blocks of 256 and a sign trick
#
# llama.cpp quantizes activations for TQ weights in blocks of 256, each with its own scale
# d = -max/127 where max is the **signed** value of largest magnitude: the extreme value
# becomes -127 and no value ever needs +128.

# %%
xb = rng.standard_normal((1, 512)).astype(np.float32)
q8, d8, bsums = quant.quantize_q8_k(xb)
print("block scales:", d8, " min/max q:", q8.min(), q8.max())
err = np.abs(q8.reshape(1, 2, 256) * d8[..., None] - xb.reshape(1, 2, 256)).max()
print("max |dequantized - x| =", err)
assert err <= np.abs(d8).max() / 2 * 1.0001

# %% [markdown]
# ## Summary
#
# * Ternary weights: one absmean scale per tensor; about a third of the codes are zero.
# * int8 activations: one scale per token (hf, bitnet.cpp) or per 256-block (llama.cpp).
# * Half-to-even rounding everywhere except TQ weight packing; never floor(x + 0.5).
#
# ## Exercises
#
# 1. How many tokens of `X` above get *different* int8 values under the hf and bitnet.cpp
#    profiles? (Answer: compute `(~(qh == qi).all(axis=1)).sum()`.)
# 2. Show that `quantize_act_tl` (bitnet.cpp's LUT kernels) differs from `quantize_act_i2s`
#    on an all-zero token. Which one divides by zero?
