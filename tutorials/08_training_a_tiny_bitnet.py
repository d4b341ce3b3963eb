# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 08 · Training your own tiny BitNet (optional: needs torch)
#
# The bundled demo model was trained by `tools/train_demo.py`. This tutorial runs the same
# recipe at toy scale for a few seconds: a byte-level BPE tokenizer, a BitNet-2B4T-shaped
# model whose every projection is a BitLinear trained with the straight-through estimator,
# then export to the packed HF layout and load it back with minibit.
#
# Skips itself (with a message) when torch is not installed: `pip install torch==2.13.0`.

# %%
import os
import sys
import tempfile

import numpy as np

try:
    import torch
except ImportError:
    print("torch is not installed: this optional tutorial has nothing to run")
    sys.exit(0)

here = os.path.dirname(os.path.abspath(__file__)) if "__file__" in globals() else os.getcwd()
sys.path.insert(0, os.path.join(here, "..", "tools"))
import make_corpus  # noqa: E402
import train_demo  # noqa: E402

import minibit  # noqa: E402

torch.manual_seed(0)
torch.set_num_threads(2)

# %% [markdown]
# ## 1. A small corpus
#
# The full recipe extracts Jane Austen's novels from a Debian package (tools/make_corpus.py);
# here we take the copy beside the repository if there is one, else a few sentences.

# %%
shared = os.path.join(here, "..", "..", "shared", "corpus", "austen.txt")
if os.path.exists(shared):
    with open(shared, encoding="utf-8") as f:
        text = f.read()[:300_000]
else:
    text = ("It is a truth universally acknowledged, that a single man in possession of a good "
            "fortune, must be in want of a wife.\n\n") * 400
paras = make_corpus.paragraphs(text)
train_txt, valid_txt = make_corpus.split(paras)
work = tempfile.mkdtemp()
for name, body in (("train.txt", train_txt), ("valid.txt", valid_txt)):
    with open(os.path.join(work, name), "w", encoding="utf-8") as f:
        f.write(body)
print(f"{len(paras)} paragraphs; train {len(train_txt):,} chars, valid {len(valid_txt):,} chars")

# %% [markdown]
# ## 2. Tokenizer and model

# %%
tk = train_demo.train_tokenizer(os.path.join(work, "train.txt"), vocab=512)
train = train_demo.encode_docs(tk, os.path.join(work, "train.txt"))
cfg = dict(vocab=tk.get_vocab_size(), hidden=64, ffn=128, layers=2, heads=4, kv_heads=2,
           ctx=64, eps=1e-5, rope_theta=10000.0)
model = train_demo.build_model(torch, cfg)
print(f"{len(train):,} training tokens; {sum(p.numel() for p in model.parameters()):,} parameters")

# %% [markdown]
# ## 3. Forty steps of AdamW with straight-through ternary weights
#
# The forward pass sees ternary weights and int8 activations; the backward pass treats the
# rounding as identity, so the float "latent" weights keep learning.

# %%
rng = np.random.default_rng(0)
opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
T, losses = cfg["ctx"], []
for step in range(40):
    starts = rng.integers(0, len(train) - T - 1, size=8)
    x = torch.from_numpy(np.stack([train[s:s + T] for s in starts]).astype(np.int64))
    y = torch.from_numpy(np.stack([train[s + 1:s + T + 1] for s in starts]).astype(np.int64))
    loss = torch.nn.functional.cross_entropy(model(x).reshape(-1, cfg["vocab"]), y.reshape(-1))
    opt.zero_grad()
    loss.backward()
    opt.step()
    losses.append(loss.item())
print(f"loss: first 5 steps {np.mean(losses[:5]):.3f}, last 5 steps {np.mean(losses[-5:]):.3f}")
assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5

# %% [markdown]
# ## 4. Export packed, load with minibit, compare logits

# %%
with torch.no_grad():
    w = model.embed_tokens.weight
    w.copy_(w.to(torch.bfloat16).float())        # the file stores the embedding in bf16
out = os.path.join(work, "tiny-bitnet")
train_demo.export(torch, model, tk, cfg, out)
m = minibit.load(out)
ids = tk.encode("It was a fine morning").ids
with torch.no_grad():
    ref = model(torch.tensor([ids]))[0].numpy()
diff = np.abs(m.logits(ids) - ref).max()
print(m)
print(f"max |minibit - torch| = {diff:.2e}")
assert diff < 1e-3 * np.abs(ref).max()
print("sample:", m.generate("It was", max_new_tokens=20, seed=0))

# %% [markdown]
# ## Summary
#
# * BitNet training = ordinary training with quantize-in-forward, identity-in-backward.
# * The packed export (uint8 + weight_scale) is what minibit and transformers load.
#
# ## Exercises
#
# 1. Replace relu² by SiLU in `build_model` and compare the loss after 40 steps.
# 2. Export with `quantization_mode` "online" (float weights): how much larger is the file?
