# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 05 · Generation and sampling
#
# A model gives a score (logit) per vocabulary entry; a sampler turns scores into a choice.
# We plot the next-token distribution of the bundled demo model under temperature, top-k,
# top-p and min-p, then generate text and check that a seed fixes the output.

# %%
import os

import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
import matplotlib.pyplot as plt
import numpy as np

import minibit
from minibit import sampling
from minibit.sampling import SamplingParams

try:
    m = minibit.load("demo")
except minibit.FormatError:               # a checkout without the demo model: a random one
    import tempfile
    from minibit.io.synthetic import write_checkpoint
    m = minibit.load(write_checkpoint(tempfile.mkdtemp(), hidden=64, intermediate=128, seed=0))
print(m)
prompt = "It was a fine morning, and"
ids = m.tokenizer.encode(prompt)
logits = m.logits(ids)[-1]
print(f"prompt: {prompt!r} -> {len(ids)} tokens; vocabulary {logits.shape[0]}")

# %% [markdown]
# ## 1. Temperature reshapes, filters cut
#
# `sampling.candidates` returns the tokens a sampler may still pick and their (unnormalized)
# probabilities, best first.

# %%
def probs(params):
    ids_, p = sampling.candidates(logits, [], params)
    out = np.zeros_like(logits, dtype=np.float64)
    out[ids_] = p / p.sum()
    return out


settings = {
    "T=1.0": SamplingParams(temperature=1.0),
    "T=0.5": SamplingParams(temperature=0.5),
    "T=1.5": SamplingParams(temperature=1.5),
    "top-k 10": SamplingParams(temperature=1.0, top_k=10),
    "top-p 0.9": SamplingParams(temperature=1.0, top_p=0.9),
    "min-p 0.1": SamplingParams(temperature=1.0, min_p=0.1),
}
dists = {k: probs(v) for k, v in settings.items()}
top = np.argsort(-dists["T=1.0"], kind="stable")[:30]
fig, ax = plt.subplots(figsize=(10, 4))
for k, d in dists.items():
    ax.plot(range(30), d[top], marker=".", label=f"{k} ({int((d > 0).sum())} kept)")
ax.set_xlabel("rank of the token at T=1")
ax.set_ylabel("probability")
ax.set_title(f"next token after {prompt!r}")
ax.legend()
fig.tight_layout()
fig.savefig("05_sampling.png", dpi=90)
print("saved 05_sampling.png")
for k, d in dists.items():
    ent = -(d[d > 0] * np.log(d[d > 0])).sum()
    print(f"{k:10} kept {int((d > 0).sum()):5}  p(top) {d.max():.3f}  entropy {ent:.2f} nats")

# %% [markdown]
# Checks: lower temperature concentrates mass; top-k keeps exactly k; top-p keeps the
# smallest set reaching p; min-p keeps tokens with p >= 0.1 * p_max.

# %%
assert dists["T=0.5"].max() > dists["T=1.0"].max() > dists["T=1.5"].max()
assert int((dists["top-k 10"] > 0).sum()) == 10
p1 = np.sort(dists["T=1.0"])[::-1]
need = int(np.searchsorted(np.cumsum(p1), 0.9)) + 1
print("top-p 0.9 keeps", int((dists["top-p 0.9"] > 0).sum()), "tokens; smallest set reaching 0.9:", need)
assert abs(int((dists["top-p 0.9"] > 0).sum()) - need) <= 1
kept = dists["min-p 0.1"] > 0
assert (dists["T=1.0"][kept] >= 0.1 * dists["T=1.0"].max() * (1 - 1e-9)).all()

# %% [markdown]
# ## 2. Generation: greedy, sampled, seeded

# %%
greedy = m.generate(prompt, max_new_tokens=30, temperature=0)
print("greedy :", prompt + greedy)
a = m.generate(prompt, max_new_tokens=30, temperature=0.8, top_k=40, repeat_penalty=1.1, seed=7)
b = m.generate(prompt, max_new_tokens=30, temperature=0.8, top_k=40, repeat_penalty=1.1, seed=7)
print("seed 7 :", prompt + a)
assert a == b
streamed = "".join(m.generate(prompt, max_new_tokens=30, temperature=0.8, top_k=40,
                              repeat_penalty=1.1, seed=7, stream=True))
assert streamed == a
print("the same seed gives the same text, streamed or not")

# %% [markdown]
# ## Summary
#
# * Temperature changes the shape; top-k, top-p and min-p cut the tail.
# * The sampler draws one float64 per token from a NumPy Generator: the seed fixes the text on
#   both backends.
#
# ## Exercises
#
# 1. With `repeat_penalty=1.5`, how does the greedy continuation change?
# 2. Find the smallest temperature at which top-1 probability falls below 0.5.
