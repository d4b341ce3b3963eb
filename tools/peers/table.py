"""The table in docs/oracle.md: minibit's matching profile against each engine, per position.

    python tools/peers/table.py [--threads 1,2] [--models DIR]

For every engine, architecture and ternary format the engine runs (peers.RUNS), on the
synthetic models of peers.synthetic_models (40 positions; F16 KV cache, the engines'
default), with flash attention off and, for llama.cpp, on (peers.FLASH_ATTN; minibit's
Model.flash_attn set alike), batch and token by token ("seq"), under the engine's own
profile: how many positions' logits are bit-identical,
how many agree on the argmax, and the median and max per-position relative error
||minibit - engine|| / ||engine||.  The last column says whether the row meets issue 17's
bar (peers.meets_done_when with exact=False).  Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import peers  # noqa: E402


def rows(threads=(1,), models_dir=None, log=print):
    models = peers.synthetic_models(models_dir or os.path.join(peers.cache_root(), "models"))
    ids = peers.token_ids()
    out = []
    for name in peers.PEER_NAMES:
        try:
            p = peers.get(name, build=True, log=lambda *a: None)
        except peers.PeerUnavailable as e:
            log(f"# {name} unavailable: {str(e).splitlines()[0]}")
            continue
        for arch, fmt in peers.RUNS[name]:
            path = models[(arch, fmt)]
            profile = name                  # the engine's own profile (minibit.model.ggml)
            for fa in peers.FLASH_ATTN[name]:
                for mode in ("batch", "seq"):
                    mine = peers.minibit_logits(path, ids, mode, profile=profile, flash_attn=fa)
                    for t in threads:
                        eng = peers.evaluate(p, path, ids, mode, t, flash_attn=fa)["logits"]
                        a = peers.agreement(mine, eng)
                        out.append(dict(profile=profile, engine=p.label, fmt=fmt, arch=arch,
                                        flash=fa, mode=mode, threads=t,
                                        **{k: v for k, v in a.items() if k != "rel"},
                                        ok=peers.meets_done_when(a, False)))
    return out


def markdown(rs) -> str:
    head = ("| profile | engine | format | arch | flash attn | mode | threads | bit-identical | "
            "argmax | median rel err | max rel err | bar met |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rs:
        n = r["positions"]
        lines.append(f"| `{r['profile']}` | {r['engine']} | {r['fmt'].upper()} | {r['arch']} | "
                     f"{r['flash']} | {r['mode']} | {r['threads']} | {r['identical']}/{n} | {r['argmax']}/{n} | "
                     f"{r['rel_median']:.2g} | {r['rel_max']:.2g} | {'yes' if r['ok'] else 'no'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="tools/peers/table.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2", help="engine thread counts (default 1,2)")
    ap.add_argument("--models", default=None, help="where the synthetic models are written")
    a = ap.parse_args(argv)
    threads = [int(t) for t in a.threads.split(",") if t.strip()]
    print(markdown(rows(threads, a.models, log=lambda s: print(s, file=sys.stderr))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
