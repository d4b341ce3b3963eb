"""``minibit vectors --format FMT --out DIR``: kernel test vectors for another engine's tests."""

from __future__ import annotations

import os


HELP = "kernel test vectors for another engine's tests"


DESCRIPTION = ("Write kernel test vectors (packed weights, int8 activations, int32 accumulators, "
               "float outputs per profile) as .npz files + index.json.")


def add_arguments(ap) -> None:
    from ..formats import FORMATS
    ap.add_argument("--format", required=True, choices=list(FORMATS) + ["all"], dest="fmt")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--seed", type=int, default=0)


def run(args, ap) -> int:
    from ..oracle import vectors
    index = vectors(args.fmt, args.out, seed=args.seed)
    n = sum(1 for c in index["cases"] if args.fmt == "all" or c["format"] == args.fmt)
    index_path = os.path.join(args.out, "index.json")
    print(f"wrote {n} cases ({args.fmt}) to {args.out}; index: {index_path}")
    return 0
