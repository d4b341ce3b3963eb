# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 04 · BitLinear and the transformer block
#
# We build one BitNet-b1.58 block by hand from minibit's modules — RMSNorm, RoPE, grouped-
# query attention with a KV cache, the two sub-norms, the squared-ReLU FFN — check every
# shape, and show that the hand-built block gives exactly what `minibit.load(...)` computes.
# A tiny random checkpoint stands in for a real one (same file layout as BitNet-2B4T).

# %%
import dataclasses
import os
import tempfile

import numpy as np

import minibit
from minibit import kernels
from minibit.io.synthetic import write_checkpoint
from minibit.model.layers import apply_rope, attention, ffn_act, rms_norm, rope_tables

tmp = tempfile.mkdtemp()
path = write_checkpoint(os.path.join(tmp, "tiny"), arch="bitnet-b1.58", hidden=64, heads=4,
                        kv_heads=2, intermediate=128, layers=2, seed=0)
m = minibit.load(path)
c = m.config
print(m)
print(f"hidden {c.hidden_size}, heads {c.num_heads} (kv {c.num_kv_heads}), head_dim {c.head_dim}, "
      f"ffn {c.intermediate_size}, act {c.hidden_act}")

# %% [markdown]
# ## 1. BitLinear = activation quantization + integer product + scales
#
# `kernels.linear(x, packed, profile="hf")` quantizes each token to int8, multiplies by the
# ternary codes in int32 and scales back: y = R / s_x * gamma. Below, the same thing by hand.
# (The bare `Packed` of `kernels.linear` takes that exact integer product.)

# %%
L0 = m.transformer.layers[0]
x = np.random.default_rng(1).standard_normal((5, c.hidden_size)).astype(np.float32)
codes, gamma = minibit.formats.unpack_codes(L0.q.packed)
q, s = minibit.quant.quantize_act_hf(x)
R = q.astype(np.int32) @ codes.astype(np.int32).T                  # [5, 64] int8 x [64, 64] -> int32
by_hand = R.astype(np.float32) / s[:, None] * gamma
plain = dataclasses.replace(L0.q.packed, hf_linear=None)          # just codes and scale
y = kernels.linear(x, plain, profile="hf")
print("max |kernel - by hand| =", np.abs(y - by_hand).max())
assert np.array_equal(y, by_hand)

# %% [markdown]
# transformers itself does not take the integer product for a BitNet-2B4T checkpoint like
# this one ("autobitlinear"): it divides the int8 codes back, `q / s`, and runs a float
# `F.linear` on the CPU's BLAS (MKL), which sums the K products in blocks of up to 192, each
# block one running sum from 0, the blocks added left to right. The hf profile copies that
# (the loader marks the weight `hf_linear="offline"`), so minibit's layer differs from the
# integer product above by float rounding -- and equals this, built by hand:

# %%
xq = q.astype(np.float32) / s[:, None]                             # ActQuant's q / scale
W = codes.astype(np.float32)                                       # -1, 0, 1: products exact
float_by_hand = np.zeros((x.shape[0], W.shape[0]), np.float32)
for i, (k0, k1) in enumerate(minibit.kernels.dense.mkl_k_blocks(W.shape[1])):
    part = np.zeros_like(float_by_hand)
    for k in range(k0, k1):                                        # one float32 add per term
        part = part + xq[:, k, None] * W[None, :, k]
    float_by_hand = part if i == 0 else float_by_hand + part
float_by_hand = float_by_hand * gamma                              # output * weight_scale
y_hf = L0.q(x)
print(L0.q.packed.hf_linear, "| max |layer - float by hand| =", np.abs(y_hf - float_by_hand).max(),
      "| max |layer - integer product| =", np.abs(y_hf - by_hand).max())
assert np.array_equal(y_hf, float_by_hand)
assert np.allclose(y_hf, by_hand, rtol=1e-5, atol=1e-6)

# %% [markdown]
# ## 2. One block, step by step (5 tokens)

# %%
ids = np.array(m.tokenizer.encode("Hello"))
T = len(ids)
H, G, D = c.num_heads, c.num_kv_heads, c.head_dim
h = m.transformer.embed_tokens(ids)                                  # [T, hidden]
a = rms_norm(h, L0.attn_norm, c.rms_norm_eps)                        # [T, hidden]
qh = L0.q(a).reshape(T, H, D)
kh = L0.k(a).reshape(T, G, D)
vh = L0.v(a).reshape(T, G, D)
cos, sin = rope_tables(np.arange(T), D, c.rope_theta)                # [T, D] each
qh, kh = apply_rope(qh, cos, sin), apply_rope(kh, cos, sin)
kv = kh.transpose(1, 0, 2), vh.transpose(1, 0, 2)                   # [G, T, D], as the cache holds them
o = attention(qh, *kv, start=0)                                      # [T, H*D]
o = rms_norm(o, L0.attn_sub_norm, c.rms_norm_eps)                    # sub-norm BEFORE o_proj
h1 = h + L0.o(o)
mm = rms_norm(h1, L0.ffn_norm, c.rms_norm_eps)
f = ffn_act(L0.gate(mm), L0.up(mm), c.hidden_act)                    # relu(g)^2 * u, [T, ffn]
f = rms_norm(f, L0.ffn_sub_norm, c.rms_norm_eps)                     # sub-norm BEFORE down_proj
h2 = h1 + L0.down(f)
for name, arr in [("embedding", h), ("q", qh), ("k", kh), ("attention", o), ("ffn", f), ("block out", h2)]:
    print(f"{name:10} {str(arr.shape):14} {arr.dtype}")
assert qh.shape == (T, H, D) and kh.shape == (T, G, D) and f.shape == (T, c.intermediate_size)

# %% [markdown]
# The model's own forward pass reports the same tensor under llama.cpp's name `l_out-0`.

# %%
seen = {}
m.transformer.forward(ids, trace=lambda name, arr: seen.__setitem__(name, arr.copy()))
print("max |hand-built block - model's l_out-0| =", np.abs(seen["l_out-0"] - h2).max())
assert np.array_equal(seen["l_out-0"], h2)

# %% [markdown]
# ## 3. RoPE pairs dimension i with i + D/2
#
# transformers' `rotate_half` (and llama.cpp's NEOX mode) rotate (x_i, x_{i+D/2}); the
# original LLaMA interleaved mode rotates (x_{2i}, x_{2i+1}). A rotation keeps norms, and the
# score q·k depends only on the distance between positions:

# %%
rng = np.random.default_rng(2)
qv, kv = rng.standard_normal((1, 1, D)).astype(np.float32), rng.standard_normal((1, 1, D)).astype(np.float32)
scores = []
for p in (3, 10, 50):
    cq, sq = rope_tables(np.array([p + 4]), D, c.rope_theta)
    ck, sk = rope_tables(np.array([p]), D, c.rope_theta)
    scores.append(float((apply_rope(qv, cq, sq) * apply_rope(kv, ck, sk)).sum()))
print("q·k at distance 4, three absolute positions:", np.round(scores, 5))
assert np.ptp(scores) < 1e-4

# %% [markdown]
# ## 4. The KV cache: decoding one token at a time gives the full forward's logits

# %%
full = m.logits(ids)
cache = m.new_cache(32)
inc = np.concatenate([m.forward(ids[:2], cache)] + [m.forward([t], cache) for t in ids[2:]])
print("max |incremental - full| =", np.abs(inc - full).max(), " cache length:", cache.len)
assert np.abs(inc - full).max() < 1e-5

# %% [markdown]
# ## Summary
#
# * A BitLinear is int8 x ternary in int32, then two float scales.
# * BitNet-2B4T's block differs from LLaMA's by the two sub-norms and squared ReLU.
# * GQA: query head h reads kv head h // (H / G); the cache stores G heads, not H.
#
# ## Exercises
#
# 1. Change the checkpoint to `arch="llama"` (Falcon3 form): which lines above fail, and why?
# 2. Count the bytes the KV cache needs for BitNet-2B4T at 4096 tokens in float32.
#    (30 layers x 2 x 4096 x 5 heads x 128 x 4 bytes = 629 MB.)
