"""``minibit dump PROMPT --out DIR``: every intermediate tensor of one forward pass (oracle)."""

from __future__ import annotations

from .._errors import FormatError
from ._common import load_model, model_args

HELP = "write every layer's tensors for a prompt (oracle)"


DESCRIPTION = ("Write every intermediate tensor of one forward pass (one .npy per tensor and "
               "manifest.json with llama.cpp and transformers names) to --out.")


def add_arguments(ap) -> None:
    ap.add_argument("prompt", nargs="?", help="the prompt (tokenized with the model's tokenizer)")
    ap.add_argument("--ids", default=None, help="comma-separated token ids instead of a prompt")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--no-acc", action="store_true",
                    help="skip the int32 accumulators (one integer product less per projection)")
    model_args(ap, generation=False)


def run(args, ap) -> int:
    if (args.prompt is None) == (args.ids is None):
        ap.error("give a PROMPT or --ids, not both")
    src = args.prompt
    if args.ids is not None:
        try:
            src = [int(v) for v in args.ids.replace(",", " ").split()]
        except ValueError:
            raise FormatError(f"--ids: expected comma-separated integers, got "
                              f"{args.ids!r}") from None
    from ..oracle import dump
    model = load_model(args)
    m = dump(model, src, args.out, accumulators=not args.no_acc)
    print(f"wrote {len(m['entries'])} tensors for {len(m['token_ids'])} tokens "
          f"(profile {m['profile']}) to {args.out}")
    return 0
