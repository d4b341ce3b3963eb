"""``minibit compare A B``: where two dumps diverge, tensor by tensor (oracle)."""

from __future__ import annotations

import json
import sys


HELP = "compare two dumps: first diverging tensor, logits KL"

EXIT_ABOVE_THRESHOLD = 3      # `minibit compare --fail-above X` when a tensor is above X


DESCRIPTION = ("Compare two dumps tensor by tensor (B against the reference A): max|diff|, "
               "relative error, cosine, the first diverging tensor, logits top-1 and KL.")


def add_arguments(ap) -> None:
    ap.add_argument("a", help="reference dump directory")
    ap.add_argument("b", help="dump directory to check")
    ap.add_argument("--fail-above", type=float, default=None, metavar="X",
                    help=f"exit {EXIT_ABOVE_THRESHOLD} when a tensor's relative error is above X "
                         f"(also the divergence threshold; default: any difference diverges)")
    ap.add_argument("--only-diff", action="store_true", help="list only tensors that differ")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write the report as JSON")


def run(args, ap) -> int:
    from ..oracle import compare
    rep = compare(args.a, args.b, fail_above=args.fail_above, out=sys.stdout,
                  only_diff=args.only_diff)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rep.to_dict(), f, indent=1)
    if args.fail_above is not None and not rep.ok:
        return EXIT_ABOVE_THRESHOLD
    return 0
