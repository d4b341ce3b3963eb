# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 07 · Making it fast: the Cython twin, threads, and the memory roofline
#
# Decoding one token multiplies every weight once: 2 bits per weight read, 1 multiply-add
# each. At T = 1 a ternary GEMV is limited by how fast memory delivers the packed bytes, not
# by arithmetic. We measure the machine's read bandwidth, the twin's GEMV speed at 1 and 2
# threads, and put them side by side.

# %%
import os
import time

import numpy as np

import minibit
from minibit import _backend, formats, kernels
from minibit.kernels.bench import read_bandwidth

rng = np.random.default_rng(0)
have_fast = _backend.fast_module("mad") is not None
print("backend:", minibit.backend(), "| cores:", os.cpu_count())


def best(fn, reps=15):
    fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


# %% [markdown]
# ## 1. The roofline: single-thread read bandwidth

# %%
bw = read_bandwidth(128)
print(f"read bandwidth, one thread: {bw:.1f} GB/s")
assert bw > 0.5

# %% [markdown]
# ## 2. One token through BitNet-2B4T's largest projection (6912 x 2560)
#
# 17.7 M weights = 4.4 MB as I2_S. At the bandwidth above, reading them once takes the time
# printed as "roofline"; the kernel cannot beat it when the weights come from memory (they
# may partly sit in the 32+ MB caches of a server CPU, which is why GB/s can exceed it).

# %%
rows, cols = 6912, 2560
p = formats.encode("i2_s", rng.standard_normal((rows, cols)).astype(np.float32))
x = rng.standard_normal((1, cols)).astype(np.float32)
roof = p.data.nbytes / (bw * 1e9)
print(f"packed weights {p.data.nbytes / 1e6:.2f} MB -> roofline {roof * 1e3:.3f} ms at {bw:.1f} GB/s")
table = []
with _backend.use("numpy"):
    t_np = best(lambda: kernels.linear(x, p), reps=2)
table.append(("numpy reference", "-", t_np))
if have_fast:
    old = kernels.get_threads()
    for th in (1, 2):
        kernels.set_threads(th)
        with _backend.use("cython"):
            table.append(("cython twin", th, best(lambda: kernels.linear(x, p))))
    kernels.set_threads(old)
print(f"{'kernel':16} {'threads':>7} {'ms':>8} {'GMAC/s':>8} {'GB/s':>7}")
for name, th, t in table:
    print(f"{name:16} {th!s:>7} {t * 1e3:8.3f} {rows * cols / t / 1e9:8.1f} {p.data.nbytes / t / 1e9:7.1f}")

# %% [markdown]
# ## 3. Threads split output rows; the bits do not change
#
# Each output element is summed by one thread in one fixed order, so 1 and 2 threads give
# identical floats — the property that makes "same seed, same tokens" hold at any thread
# count.

# %%
if have_fast:
    outs = []
    for th in (1, 2):
        kernels.set_threads(th)
        with _backend.use("cython"):
            outs.append(kernels.linear(x, p))
    kernels.set_threads(old)
    print("1 vs 2 threads identical:", np.array_equal(outs[0], outs[1]))
    assert np.array_equal(outs[0], outs[1])
    speedup = t_np / table[1][2]
    print(f"twin vs reference at 1 thread: {speedup:.0f}x")
    assert speedup > 20

# %% [markdown]
# ## 4. What the twin does differently
#
# The reference (minibit/kernels/mad.py) unpacks codes into int8 arrays and calls NumPy; the
# twin (_fast/mad.pyx and its C header) never unpacks: per 32-byte block it shifts and masks
# the codes in AVX2 registers, multiplies them with the int8 activations with `maddubs`
# (unsigned x signed bytes -> int16 pairs), and widens to int32 — bitnet.cpp's own scheme,
# chosen at run time when the CPU has AVX2, with a scalar loop otherwise. Both give the same
# bits as the reference, proven by hypothesis tests in tests/test_kernels.py.
#
# ## Summary
#
# * Decode-time GEMV is a memory problem: 2 bits per weight is the whole point of ternary.
# * Threads split rows; results stay bit-identical.
#
# ## Exercises
#
# 1. Repeat section 2 for TQ2_0 (2.06 bits) and TQ1_0 (1.69 bits): does fewer bytes mean
#    faster here? (TQ1_0's base-3 decode costs arithmetic.)
# 2. Measure T = 128 (prefill): is it still memory bound?
