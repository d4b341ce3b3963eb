"""Train minibit's bundled demo model: a tiny BitNet-b1.58 (2B-4T architecture) on Jane Austen.

    pip install '.[train]'                      # torch (CPU wheel), tokenizers, tqdm
    python tools/make_corpus.py --out /tmp/corpus
    python tools/train_demo.py --corpus /tmp/corpus --out data/demo --minutes 50

The model is BitNet-2B4T's architecture at small scale: RMSNorm, GQA attention with RoPE
(rotate_half), attn_sub_norm before o_proj, squared-ReLU gated FFN with ffn_sub_norm before
down_proj, tied embeddings.  Every projection is a BitLinear trained with the straight-through
estimator: absmean ternary weights (per tensor) and per-token int8 activations in the
forward pass, full-precision gradients in the backward pass.

The result is written as a HF snapshot directory in the *packed* form real checkpoints use
(uint8 weights + weight_scale, quantization_config autobitlinear/offline, tokenizer.json,
tokenizer_config.json with a chat template), so minibit loads it through the same code path
as microsoft/bitnet-b1.58-2B-4T.  At the end the script loads the directory with minibit and
checks that its logits equal the PyTorch model's quantized forward.

``--recipe a4.8`` trains BitNet a4.8 (arXiv:2411.04965) with the paper's two stages: INT8
activations first (the b1.58 forward above), then, for the last ``1 - --stage1-fraction``
of the budget (the paper: 5% of the tokens), the hybrid forward -- INT4 absmean inputs for
q/k/v/gate/up, TopK 50% + INT8 for o_proj, INT8 for down_proj (minibit/quant_a48.py has the
formulas).  ``--init-from DIR`` starts stage 2 from an exported b1.58 directory instead,
reusing that run as stage 1 (how data/demo-a4.8 was made).  The export's config.json then
names ``"minibit_profile": "a4.8"``, and the closing check runs minibit under that profile.

Never run in CI: it takes most of an hour on two cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
CHAT_TEMPLATE = ("{% for message in messages %}{{ message['role'] | capitalize + ': ' + "
                 "message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
                 "{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}")


def train_tokenizer(train_text_path: str, vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIALS, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tk.train([train_text_path], trainer)
    bos = tk.token_to_id(SPECIALS[0])
    tk.post_processor = processors.TemplateProcessing(
        single=f"{SPECIALS[0]} $A", pair=f"{SPECIALS[0]} $A {SPECIALS[0]} $B",
        special_tokens=[(SPECIALS[0], bos)])
    return tk


def encode_docs(tk, path: str) -> np.ndarray:
    """One paragraph per line -> BOS + tokens + newline tokens, concatenated (int32)."""
    with open(path, encoding="utf-8") as f:
        paras = [line.rstrip("\n") for line in f if line.strip()]
    ids = []
    for enc in tk.encode_batch([p + "\n" for p in paras]):
        ids.extend(enc.ids)
    return np.array(ids, dtype=np.int32)


def build_model(torch, cfg):
    nn = torch.nn
    F = torch.nn.functional

    class BitLinear(nn.Linear):
        """Absmean ternary weights, per-token quantized activations, straight-through gradients.

        ``act`` picks the activation quantizer (the a4.8 recipe switches it between stages):
        "int8"  b1.58: s = 127 / max(max|x|, 1e-5), round, clamp [-128, 127]
        "a4"    a4.8 attention/FFN inputs: s = sqrt(7) / (mean|x| + 1e-5), clamp [-8, 7]
        "a8"    a4.8 down_proj input: s = 127 / (max|x| + 1e-5), clamp [-128, 127]
        "a8k"   a4.8 o_proj input: keep the top 50% of |x| per token, then as "a8"
        (minibit/quant_a48.py holds the same formulas for inference, with their sources.)
        """

        act = "int8"
        role = "a4"           # what this projection's input becomes in the a4.8 stage

        def forward(self, x):
            w = self.weight
            s = 1.0 / w.abs().mean().clamp(min=1e-5)
            wq = w + ((w * s).round().clamp(-1, 1) / s - w).detach()
            if self.act == "int8":
                a = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
                xq = x + ((x * a).round().clamp(-128, 127) / a - x).detach()
            elif self.act == "a4":
                a = 7.0 ** 0.5 / (x.abs().mean(dim=-1, keepdim=True) + 1e-5)
                xq = x + ((x * a).round().clamp(-8, 7) / a - x).detach()
            else:
                if self.act == "a8k":
                    k = max(1, x.shape[-1] // 2)
                    thr = x.abs().topk(k, dim=-1).values[..., -1:]
                    x = x * (x.abs() >= thr).to(x.dtype)       # gradient flows to kept entries
                a = 127.0 / (x.abs().amax(dim=-1, keepdim=True) + 1e-5)
                xq = x + ((x * a).round().clamp(-128, 127) / a - x).detach()
            return F.linear(xq, wq)

    class RMSNorm(nn.Module):
        def __init__(self, n, eps):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(n))
            self.eps = eps

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight

    H, G, D, d, f = cfg["heads"], cfg["kv_heads"], cfg["hidden"] // cfg["heads"], cfg["hidden"], cfg["ffn"]

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.input_layernorm = RMSNorm(d, cfg["eps"])
            self.q_proj, self.k_proj = BitLinear(d, H * D, bias=False), BitLinear(d, G * D, bias=False)
            self.v_proj, self.o_proj = BitLinear(d, G * D, bias=False), BitLinear(H * D, d, bias=False)
            self.attn_sub_norm = RMSNorm(H * D, cfg["eps"])
            self.post_attention_layernorm = RMSNorm(d, cfg["eps"])
            self.gate_proj, self.up_proj = BitLinear(d, f, bias=False), BitLinear(d, f, bias=False)
            self.down_proj = BitLinear(f, d, bias=False)
            self.o_proj.role, self.down_proj.role = "a8k", "a8"
            self.ffn_sub_norm = RMSNorm(f, cfg["eps"])

        def forward(self, h, cos, sin):
            B, T, _ = h.shape
            a = self.input_layernorm(h)
            q = self.q_proj(a).view(B, T, H, D).transpose(1, 2)
            k = self.k_proj(a).view(B, T, G, D).transpose(1, 2)
            v = self.v_proj(a).view(B, T, G, D).transpose(1, 2)

            def rope(x):
                x1, x2 = x[..., : D // 2], x[..., D // 2:]
                return x * cos + torch.cat([-x2, x1], dim=-1) * sin

            q, k = rope(q), rope(k)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            o = o.transpose(1, 2).reshape(B, T, H * D)
            h = h + self.o_proj(self.attn_sub_norm(o))
            m = self.post_attention_layernorm(h)
            g = torch.relu(self.gate_proj(m))
            return h + self.down_proj(self.ffn_sub_norm(g * g * self.up_proj(m)))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = nn.Embedding(cfg["vocab"], d)
            nn.init.normal_(self.embed_tokens.weight, std=0.02)
            self.layers = nn.ModuleList([Block() for _ in range(cfg["layers"])])
            self.norm = RMSNorm(d, cfg["eps"])
            inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, D, 2).float() / D))
            self.register_buffer("inv_freq", inv, persistent=False)

        def forward(self, ids):
            T = ids.shape[1]
            fr = torch.arange(T, dtype=torch.float32)[:, None] * self.inv_freq[None, :]
            emb = torch.cat([fr, fr], dim=-1)
            cos, sin = emb.cos(), emb.sin()
            h = self.embed_tokens(ids)
            for L in self.layers:
                h = L(h, cos, sin)
            return self.norm(h) @ self.embed_tokens.weight.T

    return Model()


def set_recipe_stage(model, stage: str) -> None:
    """"int8": every BitLinear quantizes its input to int8 (b1.58, and a4.8's stage 1);
    "a4.8": each takes its a4.8 role (int4 for q/k/v/gate/up, top-K + int8 for o, int8 for down)."""
    for mod in model.modules():
        if hasattr(mod, "role"):
            mod.act = "int8" if stage == "int8" else mod.role


def load_exported(torch, model, src: str) -> None:
    """Initialise ``model`` from an exported demo directory (continued training).

    Norms and the embedding are copied; each projection's latent float weight is set to
    codes * scale / f, with f the fraction of non-zero codes, so that absmean ternarization
    of the latent weight (mean|W| = scale) gives back exactly the stored codes and scale.
    """
    import minibit
    from minibit.formats import unpack_codes

    m = minibit.load(src)
    t = m.transformer
    sd = {}
    from minibit.kernels.dense import widen
    sd["embed_tokens.weight"] = torch.from_numpy(widen(np.asarray(t.embed), t.embed_dtype).copy())
    sd["norm.weight"] = torch.from_numpy(np.array(t.final_norm))
    names = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj", "gate": "gate_proj",
             "up": "up_proj", "down": "down_proj"}
    for i, L in enumerate(t.layers):
        for key, name in names.items():
            codes, scale = unpack_codes(getattr(L, key).packed)
            codes = codes.astype(np.float32)
            f = max(float(np.abs(codes).mean()), 1e-6)
            sd[f"layers.{i}.{name}.weight"] = torch.from_numpy(codes * (float(np.asarray(scale).reshape(-1)[0]) / f))
        sd[f"layers.{i}.input_layernorm.weight"] = torch.from_numpy(np.array(L.attn_norm))
        sd[f"layers.{i}.post_attention_layernorm.weight"] = torch.from_numpy(np.array(L.ffn_norm))
        sd[f"layers.{i}.attn_sub_norm.weight"] = torch.from_numpy(np.array(L.attn_sub_norm))
        sd[f"layers.{i}.ffn_sub_norm.weight"] = torch.from_numpy(np.array(L.ffn_sub_norm))
    model.load_state_dict(sd)


def export(torch, model, tk, cfg, out: str, profile: str | None = None) -> None:
    """Write the packed HF snapshot directory minibit (and transformers) load."""
    from safetensors.torch import save_file
    from minibit.formats import hf_packed
    from minibit.quant import absmean_ternarize

    os.makedirs(out, exist_ok=True)
    tensors = {}
    sd = model.state_dict()
    sub = {"q_proj": "self_attn.", "k_proj": "self_attn.", "v_proj": "self_attn.",
           "o_proj": "self_attn.", "attn_sub_norm": "self_attn.", "gate_proj": "mlp.",
           "up_proj": "mlp.", "down_proj": "mlp.", "ffn_sub_norm": "mlp."}
    for name, t in sd.items():
        parts = name.split(".")            # layers.{i}.q_proj.weight -> layers.{i}.self_attn.q_proj.weight
        if parts[0] == "layers" and parts[2] in sub:
            parts[2] = sub[parts[2]] + parts[2]
        full = "model." + ".".join(parts)
        t = t.detach().float().contiguous()
        if name.endswith("_proj.weight"):
            codes, scale = absmean_ternarize(t.numpy())
            tensors[full] = torch.from_numpy(hf_packed.pack(codes))
            tensors[full + "_scale"] = torch.tensor([float(scale)], dtype=torch.float32)
        elif name == "embed_tokens.weight":
            tensors[full] = t.to(torch.bfloat16)       # as the 2B-4T checkpoint stores it
        else:
            tensors[full] = t
    save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    bos, eos = tk.token_to_id(SPECIALS[0]), tk.token_to_id(SPECIALS[1])
    config = {
        "architectures": ["BitNetForCausalLM"], "model_type": "bitnet",
        "vocab_size": cfg["vocab"], "hidden_size": cfg["hidden"], "intermediate_size": cfg["ffn"],
        "num_hidden_layers": cfg["layers"], "num_attention_heads": cfg["heads"],
        "num_key_value_heads": cfg["kv_heads"], "hidden_act": "relu2",
        "max_position_embeddings": cfg["ctx"], "rms_norm_eps": cfg["eps"],
        "rope_theta": cfg["rope_theta"], "tie_word_embeddings": True,
        "bos_token_id": bos, "eos_token_id": eos, "torch_dtype": "bfloat16",
        "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                "quantization_mode": "offline"},
    }
    if profile is not None:             # the numerics minibit.load runs this model with
        config["minibit_profile"] = profile
    with open(os.path.join(out, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    tk.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"bos_token": SPECIALS[0], "eos_token": SPECIALS[1],
                   "chat_template": CHAT_TEMPLATE, "model_max_length": cfg["ctx"]}, f, indent=2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Train the demo model (see the module docstring).")
    ap.add_argument("--corpus", required=True, help="directory with train.txt and valid.txt")
    ap.add_argument("--out", default="data/demo")
    ap.add_argument("--minutes", type=float, default=50.0, help="wall-clock training budget")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--ffn", type=int, default=768)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--patience", type=int, default=4, help="evaluations without improvement before stopping")
    ap.add_argument("--recipe", choices=("b1.58", "a4.8"), default="b1.58",
                    help="a4.8: BitNet a4.8's two stages, int8 activations first, then the hybrid "
                         "int4 / top-K int8 scheme (the exported config names profile a4.8)")
    ap.add_argument("--stage1-fraction", type=float, default=0.95,
                    help="a4.8 from scratch: the share of the budget trained with int8 activations "
                         "(the paper: 95B of 100B tokens)")
    ap.add_argument("--init-from", default=None,
                    help="a4.8: start stage 2 from this exported b1.58 directory (its tokenizer and "
                         "weights), i.e. reuse that run as stage 1")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: no limit)")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--save-state", default=None, help="also save the torch state_dict here")
    ap.add_argument("--eval-every", type=int, default=200)
    args = ap.parse_args(argv)

    import torch
    from tqdm import tqdm

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    cfg = dict(vocab=args.vocab, hidden=args.hidden, ffn=args.ffn, layers=args.layers,
               heads=args.heads, kv_heads=args.kv_heads, ctx=args.ctx, eps=1e-5, rope_theta=10000.0)

    t0 = time.time()
    if args.init_from:
        from tokenizers import Tokenizer
        tk = Tokenizer.from_file(os.path.join(args.init_from, "tokenizer.json"))
    else:
        tk = train_tokenizer(os.path.join(args.corpus, "train.txt"), args.vocab)
    train = encode_docs(tk, os.path.join(args.corpus, "train.txt"))
    valid = encode_docs(tk, os.path.join(args.corpus, "valid.txt"))
    print(f"tokenizer: {tk.get_vocab_size()} tokens; train {len(train):,} tokens, valid {len(valid):,} "
          f"({time.time() - t0:.0f} s)", flush=True)

    model = build_model(torch, cfg)
    if args.init_from:
        load_exported(torch, model, args.init_from)
    stage1 = 0.0 if args.recipe == "b1.58" or args.init_from else args.stage1_fraction
    set_recipe_stage(model, "int8" if args.recipe == "b1.58" or stage1 > 0 else "a4.8")
    stage, stage1_steps = ("int8" if args.recipe == "b1.58" or stage1 > 0 else "a4.8"), None
    nparams = sum(p.numel() for p in model.parameters())
    print(f"model: {nparams:,} parameters", flush=True)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    T = args.ctx
    vstarts = np.arange(0, len(valid) - T - 1, T)[:64]
    vx = torch.from_numpy(np.stack([valid[s:s + T] for s in vstarts]).astype(np.int64))
    vy = torch.from_numpy(np.stack([valid[s + 1:s + T + 1] for s in vstarts]).astype(np.int64))

    def evaluate():
        model.eval()
        with torch.no_grad():
            losses = [torch.nn.functional.cross_entropy(model(vx[i:i + 16]).reshape(-1, cfg["vocab"]),
                                                        vy[i:i + 16].reshape(-1)).item()
                      for i in range(0, len(vx), 16)]
        model.train()
        return float(np.mean(losses))

    budget = args.minutes * 60
    warmup = args.warmup
    init_vl = None
    if args.init_from:
        init_vl = evaluate()
        print(f"continued from {args.init_from}: valid loss {init_vl:.4f} under the "
              f"{'a4.8' if args.recipe == 'a4.8' else 'int8'} scheme before any step", flush=True)
    step, seen, best, bad = 0, 0, float("inf"), 0
    best_state = None
    start = time.time()
    bar = tqdm(total=int(budget), unit="s", desc="training", mininterval=5)
    while True:
        elapsed = time.time() - start
        if elapsed > budget or (args.max_steps and step >= args.max_steps):
            break
        frac = elapsed / budget
        if args.max_steps:
            frac = max(frac, step / args.max_steps)
        if stage == "int8" and args.recipe == "a4.8" and frac >= stage1:
            stage, stage1_steps = "a4.8", step            # the paper's second stage
            set_recipe_stage(model, "a4.8")
            best, bad, best_state = float("inf"), 0, None
            tqdm.write(f"step {step}: stage 2 (a4.8 activations) begins")
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        starts = rng.integers(0, len(train) - T - 1, size=args.batch)
        x = torch.from_numpy(np.stack([train[s:s + T] for s in starts]).astype(np.int64))
        y = torch.from_numpy(np.stack([train[s + 1:s + T + 1] for s in starts]).astype(np.int64))
        loss = torch.nn.functional.cross_entropy(model(x).reshape(-1, cfg["vocab"]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        seen += args.batch * T
        bar.update(int(time.time() - start) - bar.n)
        bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{seen / (time.time() - start):.0f}", refresh=False)
        if step % args.eval_every == 0:
            vl = evaluate()
            tqdm.write(f"step {step}: {seen:,} tokens, train loss {loss.item():.3f}, valid loss {vl:.4f}, "
                       f"lr {lr:.2e}, {time.time() - start:.0f} s")
            if vl < best - 1e-3:
                best, bad = vl, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
                if bad >= args.patience:
                    tqdm.write("validation loss stopped improving")
                    break
    bar.close()
    vl = evaluate()
    if best_state is not None and best < vl:
        model.load_state_dict(best_state)
        vl = best
    train_s = time.time() - start
    print(f"done: {step} steps, {seen:,} tokens in {train_s / 60:.1f} min ({seen / train_s:.0f} tok/s); "
          f"valid loss {vl:.4f} nats/token", flush=True)

    with torch.no_grad():       # the file keeps the embedding in bf16: make the model agree
        w = model.embed_tokens.weight
        w.copy_(w.to(torch.bfloat16).float())
    if args.save_state:
        torch.save(model.state_dict(), args.save_state)
    export(torch, model, tk, cfg, args.out, profile="a4.8" if args.recipe == "a4.8" else None)
    # the exported directory must give minibit the same logits as this model's forward
    import minibit
    m = minibit.load(args.out)
    ids = tk.encode("It was a fine morning, and Emma").ids
    model.eval()
    with torch.no_grad():
        ref = model(torch.tensor([ids]))[0].numpy()
    ours = m.logits(ids)
    diff = float(np.abs(ours - ref).max())
    rel = diff / float(np.abs(ref).max())
    print(f"minibit vs torch logits: max|diff| {diff:.3g}, relative {rel:.3g}")
    rec = {"parameters": nparams, "steps": step, "tokens": seen, "minutes": train_s / 60,
           "valid_loss_nats": vl, "seed": args.seed, "config": cfg,
           "minibit_vs_torch_max_abs_diff": diff}
    if args.recipe == "a4.8":
        rec["recipe"] = {
            "name": "a4.8", "lr": args.lr, "warmup": args.warmup, "batch": args.batch,
            "threads": args.threads,
            "stage1": (f"reused: the training run of {args.init_from} (int8 activations); "
                       f"its TRAINING.json gives its steps" if args.init_from else
                       f"int8 activations for {stage1_steps} steps"),
            "stage2_steps": step - (stage1_steps or 0),
            "valid_loss_nats_before_stage2": init_vl,
        }
    with open(os.path.join(args.out, "TRAINING.json"), "w", encoding="utf-8") as f:
        json.dump(rec, f, indent=2)
    if rel > 1e-3:
        print("ERROR: the exported model does not reproduce the trained one", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
