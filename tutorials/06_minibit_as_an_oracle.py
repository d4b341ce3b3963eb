# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 06 · minibit as an oracle
#
# You write an inference engine and its output is wrong on some CPU. Where does it go wrong?
# minibit dumps every intermediate tensor of a forward pass under the names llama.cpp's eval
# callback prints, so you can dump yours and let `compare` point at the first tensor that
# differs. We (1) compare two numerics profiles, (2) plant the ARM I2_S layout bug and find
# it, (3) read kernel test vectors with plain NumPy, (4) measure perplexity.

# %%
import os
import shutil
import tempfile

import numpy as np

import minibit
from minibit import formats, oracle

work = tempfile.mkdtemp()
try:
    m = minibit.load("demo")
except minibit.FormatError:              # a checkout without the demo model: a random one
    from minibit.io.synthetic import write_checkpoint
    m = minibit.load(write_checkpoint(os.path.join(work, "tiny"), hidden=256, heads=4,
                                      kv_heads=2, intermediate=512, seed=0))
print(m)
prompt = "It was a fine morning"

# %% [markdown]
# ## 1. Two profiles of the same model
#
# The `hf` profile quantizes activations per token; `llama.cpp` per block of 256 (Q8_K) and
# runs TQ2_0 weights whose scale is rounded to fp16. Same model, slightly different numbers.

# %%
a, b = os.path.join(work, "hf"), os.path.join(work, "llama")
oracle.dump(m, prompt, a, profile="hf")
oracle.dump(m, prompt, b, profile="llama.cpp")
rep = oracle.compare(a, b, out=None)
print("first diverging tensor:", rep.first_diverging)
n_agree, n_pos = sum(rep.logits.top1_agree), len(rep.logits.top1_agree)
print(f"logits: top-1 agreement {n_agree}/{n_pos}, mean KL {np.mean(rep.logits.kl):.2e} nats")
worst = max((r for r in rep.rows if r.name.startswith("l_out")), key=lambda r: r.rel_err)
print(f"largest drift in the residual stream: {worst.name}, relative error {worst.rel_err:.2e}")
assert rep.first_diverging is not None
assert n_agree >= n_pos - 1

# %% [markdown]
# ## 2. Catching a layout bug
#
# bitnet.cpp's ARM builds after Nov 2025 read I2_S with 64-code blocks while files use
# 128-code blocks (facts: issues #585, #598). We simulate that engine: it decodes layer 0's
# q projection with the wrong block size. Its dump differs from minibit's, and `compare`
# names the first tensor where it happens.

# %%
def decode_as_arm(data, rows, cols):
    """Read I2_S bytes as 64-code blocks of 16 bytes (the mismatched ARM kernel)."""
    body = data[: rows * cols // 4].reshape(-1, 16)
    c = np.stack([(body >> s) & 3 for s in (6, 4, 2, 0)], axis=1)      # [n/64, 4, 16]
    return c.reshape(rows, cols).astype(np.int32) - 1


lin = m.transformer.layers[0].q
p = formats.pack_codes("i2_s", *formats.unpack_codes(lin.packed))
good = formats.unpack_codes(p)[0].astype(np.int32)
bad = decode_as_arm(p.data, *p.shape)
print(f"weights read differently: {(good != bad).mean():.1%}")

engine = os.path.join(work, "engine")
shutil.copytree(a, engine)
q_in = np.load(os.path.join(a, "attn_q.q-0.npy")).astype(np.int32)       # the int8 input
np.save(os.path.join(engine, "attn_q.acc-0.npy"), q_in @ bad.T)           # the buggy accumulator
rep = oracle.compare(a, engine, out=None)
print("first diverging tensor:", rep.first_diverging)
assert rep.first_diverging == "attn_q.acc-0"

# %% [markdown]
# ## 3. Kernel test vectors, read without minibit
#
# `minibit vectors` writes packed bytes, int8 activations, the int32 accumulators and the
# float outputs for every profile, edge cases included (an int16 lane that wraps in
# bitnet.cpp's AVX2 kernel, ties, saturation). Any engine's kernel test can load them.

# %%
vdir = os.path.join(work, "vectors")
oracle.vectors("i2_s", vdir)
import json

index = json.load(open(os.path.join(vdir, "index.json")))
print(len(index["cases"]), "i2_s cases:", ", ".join(c["case"] for c in index["cases"]))
for case in index["cases"]:
    z = np.load(os.path.join(vdir, case["file"]))
    N, K = case["rows"], case["cols"]
    body = z["data"][: N * K // 4].reshape(-1, 32)                         # plain NumPy decode
    w = np.stack([(body >> s) & 3 for s in (6, 4, 2, 0)], axis=1).reshape(N, K).astype(np.int32) - 1
    acc = z["hf.q"].astype(np.int32) @ w.T
    assert (acc == z["hf.acc"]).all(), case["case"]
wrap = next(c for c in index["cases"] if c["case"] == "int16_wrap")
z = np.load(os.path.join(vdir, wrap["file"]))
print("int16_wrap, row 0: bitnet.cpp computes", z["bitnet_cpp.y"][0, 0], "where the exact value is",
      z["bitnet_cpp.y_exact"][0, 0])
assert z["bitnet_cpp.y"][0, 0] != z["bitnet_cpp.y_exact"][0, 0]

# %% [markdown]
# ## 4. Perplexity and bits per byte

# %%
text = ("Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy "
        "disposition, seemed to unite some of the best blessings of existence.")
res = oracle.perplexity(m, text, progress=False)
print(f"perplexity {res.ppl:.2f}, {res.bits_per_byte:.3f} bits per byte over {res.tokens_scored} tokens")
assert np.isfinite(res.ppl) and res.ppl > 1

# %% [markdown]
# ## Summary
#
# * `dump` + `compare` turn "wrong output" into "first wrong tensor".
# * Test vectors pin a kernel's integers and floats bit for bit, edge cases included.
#
# ## Exercises
#
# 1. Dump under `bitnet.cpp` and compare with `hf`: are they identical? Why (see DESIGN §3)?
# 2. Plant a different bug (swap two heads in `Kcur-0`): which tensor does `compare` name?
