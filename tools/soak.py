#!/usr/bin/env python3
"""Soak test: does memory grow when minibit runs for a long time?

(a) generates ``--tokens`` tokens (default 10,000) with one model, in chunks with new
    prompts (generation stops at the model's context, ``config.max_position``), printing
    the resident set size (VmRSS from /proc/self/status) every ``--every`` tokens;
(b) loads the model ``--loads`` times (default 100), printing RSS every ``--load-every``.

For each phase it prints the first and last sample and the maximum, and fails (exit 1)
when the last sample exceeds the first by more than ``--grow-pct`` percent plus
``--grow-mb`` MB (default 10 % + 20 MB).  The first sample is taken after the first
interval, so one-time costs (the first forward's buffers, imports, the KV cache) are not
counted as growth; ``start`` (before the phase) is printed too.

The model: ``--model`` (anything ``minibit.load`` takes), default the bundled demo when it
is installed, else a synthetic checkpoint (``minibit.io.synthetic.write_checkpoint``) of
``--hidden``/``--layers``/``--vocab``/``--max-position`` written to a temporary directory;
``--synthetic`` forces that, ``--gguf FMT`` converts the model to a GGUF file first
(tq2_0 | tq1_0 | i2_s) and soaks that.

    python tools/soak.py                                   # the demo (or a synthetic model)
    python tools/soak.py --synthetic --hidden 512 --layers 4 --vocab 4096 --max-position 512
    python tools/soak.py --model path/to/model.gguf --tokens 2000 --loads 20

Linux only (reads /proc/self/status).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time

PROMPTS = ["It was a fine morning", "Once upon a time", "The letter arrived on Tuesday",
           "She said that", "In the evening the family", "Mr. Darcy", "He walked to the window",
           "A single man in possession of a good fortune"]


def rss_mb() -> float:
    """Resident set size of this process in MB (VmRSS)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _sample(gc_first: bool) -> float:
    if gc_first:
        gc.collect()
    return rss_mb()


def verdict(name: str, start: float, samples: list, pct: float, mb: float) -> bool:
    first, last, peak = samples[0], samples[-1], max(samples)
    limit = first * (1 + pct / 100) + mb
    ok = last <= limit
    print(f"{name}: RSS start {start:.1f} MB, first {first:.1f} MB, last {last:.1f} MB, "
          f"max {peak:.1f} MB; growth first->last {last - first:+.1f} MB "
          f"({(last / first - 1) * 100:+.1f} %), limit {limit:.1f} MB: "
          f"{'OK' if ok else 'GREW'}")
    return ok


def soak_generate(model, n_tokens: int, every: int, seed: int, gc_first: bool) -> tuple:
    """Generate n_tokens in chunks that fit the context; RSS every ``every`` tokens."""
    from minibit.generate import GenerationResult

    ctx = model.config.max_position
    start = _sample(gc_first)
    print(f"[generate] model context {ctx}, RSS before {start:.1f} MB", flush=True)
    samples = []
    done, chunk, mark, empty = 0, 0, every, 0
    t0 = time.perf_counter()
    while done < n_tokens:
        prompt = PROMPTS[chunk % len(PROMPTS)]
        n_prompt = len(model.tokenizer.encode(prompt))
        room = ctx - n_prompt - 1
        if room < 1:
            raise SystemExit(f"the model's context ({ctx}) is too short for the prompts")
        res = GenerationResult(text="")
        for _ in model.generate(prompt, max_new_tokens=min(room, n_tokens - done), temperature=0.8,
                                top_k=40, seed=seed + chunk, stream=True, result=res):
            while done + len(res.tokens) >= mark:
                r = _sample(gc_first)
                samples.append(r)
                el = time.perf_counter() - t0
                print(f"[generate] {mark:6d} tokens  RSS {r:8.1f} MB  ({mark / el:.0f} tok/s)",
                      flush=True)
                mark += every
        if not res.tokens:                       # EOS at once: a new prompt, a new seed
            chunk += 1
            empty += 1
            if empty > 100:
                raise SystemExit("soak: 100 chunks in a row ended at once (EOS): nothing to soak")
            continue
        empty = 0
        done += len(res.tokens)
        chunk += 1
        while done >= mark:                      # tokens after the last piece (held back)
            r = _sample(gc_first)
            samples.append(r)
            print(f"[generate] {mark:6d} tokens  RSS {r:8.1f} MB", flush=True)
            mark += every
    print(f"[generate] {done} tokens in {chunk} chunks, {time.perf_counter() - t0:.1f} s",
          flush=True)
    return start, samples


def soak_load(source: str, n_loads: int, every: int, gc_first: bool) -> tuple:
    import minibit

    start = _sample(gc_first)
    print(f"[load] RSS before {start:.1f} MB", flush=True)
    samples = []
    t0 = time.perf_counter()
    for i in range(1, n_loads + 1):
        m = minibit.load(source)
        m.logits([1, 2, 3])                      # touch the weights once
        del m
        if i % every == 0:
            r = _sample(gc_first)
            samples.append(r)
            print(f"[load] {i:4d} loads  RSS {r:8.1f} MB  "
                  f"({(time.perf_counter() - t0) / i * 1000:.0f} ms per load)", flush=True)
    return start, samples


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a model minibit.load takes (default: demo)")
    ap.add_argument("--synthetic", action="store_true", help="a synthetic checkpoint, not the demo")
    ap.add_argument("--gguf", choices=["tq2_0", "tq1_0", "i2_s"], default=None,
                    help="convert the model to this GGUF format first and soak the file")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--intermediate", type=int, default=None, help="default 2 * hidden")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--max-position", type=int, default=512)
    ap.add_argument("--tokens", type=int, default=10_000)
    ap.add_argument("--every", type=int, default=500, help="RSS every N tokens (default 500)")
    ap.add_argument("--loads", type=int, default=100)
    ap.add_argument("--load-every", type=int, default=10)
    ap.add_argument("--grow-pct", type=float, default=10.0)
    ap.add_argument("--grow-mb", type=float, default=20.0)
    ap.add_argument("--no-gc", action="store_true",
                    help="sample RSS without gc.collect() first (cyclic garbage then counts)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for name in ("tokens", "every", "loads", "load_every", "hidden", "layers", "vocab",
                 "max_position"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if not os.path.exists("/proc/self/status"):
        print("soak: needs /proc/self/status (Linux)", file=sys.stderr)
        return 2

    import minibit

    tmp = tempfile.mkdtemp(prefix="minibit-soak-")
    try:
        source = args.model
        if source is None and not args.synthetic:
            try:
                minibit.load("demo")
                source = "demo"
            except minibit.FormatError as e:
                print(f"soak: no demo model ({e}); using a synthetic checkpoint", file=sys.stderr)
        if source is None:
            from minibit.io.synthetic import write_checkpoint
            source = write_checkpoint(os.path.join(tmp, "synthetic"), hidden=args.hidden,
                                      intermediate=args.intermediate or 2 * args.hidden,
                                      layers=args.layers, heads=args.heads, kv_heads=args.kv_heads,
                                      vocab=args.vocab, max_position=args.max_position,
                                      seed=args.seed)
            print(f"soak: synthetic checkpoint hidden {args.hidden}, {args.layers} layers, "
                  f"vocab {args.vocab}, context {args.max_position}")
        if args.gguf:
            path = os.path.join(tmp, f"soak-{args.gguf}.gguf")
            minibit.save_gguf(minibit.load(source), path, args.gguf, progress=False)
            source = path
        print(f"soak: model {source}, backend {minibit.backend()}, pid {os.getpid()}", flush=True)
        model = minibit.load(source)
        if model.tokenizer is None:
            print("soak: the model has no tokenizer, so it cannot generate text", file=sys.stderr)
            return 2
        gc_first = not args.no_gc
        g_start, g_samples = soak_generate(model, args.tokens, args.every, args.seed, gc_first)
        del model
        l_start, l_samples = soak_load(source, args.loads, args.load_every, gc_first)
        print()
        ok_g = verdict("generate", g_start, g_samples, args.grow_pct, args.grow_mb)
        ok_l = verdict("load", l_start, l_samples, args.grow_pct, args.grow_mb)
        return 0 if ok_g and ok_l else 1
    except minibit.FormatError as e:
        print(f"soak: error: {e}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
