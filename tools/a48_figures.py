"""The figures of issue 21: bits per byte of the two demos under each activation scheme, the
sparsity of the down-projection inputs, and a4.8's share of active parameters.

    python tools/a48_figures.py --text tests/data/austen_valid_head.txt --out /tmp/fig.json

Rows (model @ profile):
    demo @ hf            the b1.58 demo as trained (int8 activations)
    demo @ a4.8          the same weights under a4.8 numerics, no retraining
    demo @ trilm         the same weights with float activations (weights-only ternary)
    demo-a4.8 @ a4.8     the a4.8 demo as trained (stage 2 of the two-stage recipe)
    demo-a4.8 @ a4.8 + 3-bit KV cache
    demo-a4.8 @ hf       the a4.8 demo back under int8 activations

Sparsity (a4.8 profile, over the text's windows): the share of exact zeros in each
projection's quantized input -- down_proj (squared ReLU makes them), o_proj (TopK keeps 50%),
q/k/v and gate/up (INT4 rounds small values to 0) -- and the parameter-weighted share of
weights that meet a non-zero activation ("active parameters", the paper's 55%).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def bpb(model, text, ctx):
    from minibit.oracle.perplexity import perplexity
    return perplexity(model, text, ctx=ctx, progress=False).bits_per_byte


def sparsity(model, text, ctx, max_windows=None):
    """{projection input: share of zeros after its a4.8 quantizer} and the active share."""
    from minibit import quant_a48
    ids = np.asarray(model.tokenizer.encode(text), np.int64)
    taps = {"attn_norm": "a4", "attn_sub_norm": "a8k", "ffn_norm": "a4", "ffn_sub_norm": "a8"}
    zeros = {k: 0 for k in taps}
    raw_zero_down = 0
    total = {k: 0 for k in taps}

    def tr(name, arr):
        nonlocal raw_zero_down
        base = name.rsplit("-", 1)[0]
        if base not in taps:
            return
        x = np.asarray(arr, np.float32)
        if taps[base] == "a4":
            q, _ = quant_a48.quantize_act_a4(x)
        elif taps[base] == "a8k":
            q, _ = quant_a48.quantize_act_a8(quant_a48.topk_sparsify(x))
        else:
            q, _ = quant_a48.quantize_act_a8(x)
            raw_zero_down += int((x == 0).sum())
        zeros[base] += int((q == 0).sum())
        total[base] += q.size

    starts = list(range(0, len(ids) - 1, ctx))[:max_windows]
    for s in starts:
        model.forward(ids[s:s + ctx], model.new_cache(ctx), trace=tr)
    share = {k: zeros[k] / total[k] for k in taps}
    c = model.config
    hd = c.num_heads * c.head_dim
    params = {"attn_norm": c.hidden_size * (hd + 2 * c.num_kv_heads * c.head_dim),
              "attn_sub_norm": hd * c.hidden_size,
              "ffn_norm": 2 * c.hidden_size * c.intermediate_size,
              "ffn_sub_norm": c.intermediate_size * c.hidden_size}
    active = sum(params[k] * (1 - share[k]) for k in taps) / sum(params.values())
    return {"down_proj_input_zero_share_quantized": share["ffn_sub_norm"],
            "down_proj_input_zero_share_exact": raw_zero_down / total["ffn_sub_norm"],
            "o_proj_input_zero_share": share["attn_sub_norm"],
            "qkv_input_zero_share": share["attn_norm"],
            "gate_up_input_zero_share": share["ffn_norm"],
            "active_parameter_share": active}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--text", required=True)
    ap.add_argument("--out", default=None)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--a48", default="demo-a4.8", help="the a4.8 model (default: the bundled one)")
    ap.add_argument("--rows", default=None,
                    help="comma-separated row names to measure (default: all), e.g. "
                         "'demo @ hf,demo-a4.8 @ a4.8'")
    ap.add_argument("--no-sparsity", action="store_true")
    args = ap.parse_args(argv)
    import minibit
    wanted = None if args.rows is None else {r.strip() for r in args.rows.split(",")}

    with open(args.text, encoding="utf-8") as f:
        text = f.read()
    rows = {}
    for name, src, prof, kv in (("demo @ hf", "demo", "hf", "f32"),
                                ("demo @ a4.8", "demo", "a4.8", "f32"),
                                ("demo @ trilm", "demo", "trilm", "f32"),
                                ("demo-a4.8 @ a4.8", args.a48, "a4.8", "f32"),
                                ("demo-a4.8 @ a4.8 + int3 KV", args.a48, "a4.8", "int3"),
                                ("demo-a4.8 @ hf", args.a48, "hf", "f32")):
        if wanted is not None and name not in wanted:
            continue
        m = minibit.load(src, profile=prof)
        m.kv_cache = kv
        rows[name] = bpb(m, text, args.ctx)
        print(f"{name:30s} {rows[name]:.4f} bits/byte", flush=True)
    sp = {} if args.no_sparsity else {
        "demo-a4.8 @ a4.8": sparsity(minibit.load(args.a48), text, args.ctx),
        "demo @ a4.8": sparsity(minibit.load("demo", profile="a4.8"), text, args.ctx)}
    for k, v in sp.items():
        print(k, {a: round(b, 4) for a, b in v.items()})
    out = {"text": args.text, "bytes": len(text.encode("utf-8")), "ctx": args.ctx,
           "bits_per_byte": rows, "sparsity": sp}
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
