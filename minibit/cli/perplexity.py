"""``minibit perplexity FILE``: perplexity and bits per byte of a model on a text file."""

from __future__ import annotations

import pathlib

from .._errors import FormatError
from ._common import load_model, model_args

HELP = "perplexity and bits per byte of a text file"


DESCRIPTION = ("Perplexity and bits per byte of a model on a UTF-8 text file (non-overlapping "
               "windows of --ctx tokens unless --stride is smaller).")


def add_arguments(ap) -> None:
    ap.add_argument("file", help="a UTF-8 text file")
    ap.add_argument("--ctx", type=int, default=None, help="tokens per window (default 512)")
    ap.add_argument("--stride", type=int, default=None,
                    help="tokens between window starts (default: ctx, no overlap)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    model_args(ap, generation=False)


def run(args, ap) -> int:
    path = pathlib.Path(args.file)
    if not path.is_file():
        raise FormatError(f"{args.file}: no such file")
    from ..oracle import perplexity
    model = load_model(args)
    res = perplexity(model, path, ctx=args.ctx, stride=args.stride, progress=not args.no_progress)
    print(f"perplexity {res.ppl:.4f}  bits/byte {res.bits_per_byte:.4f}  "
          f"({res.tokens_scored} tokens scored, {res.bytes_scored} bytes, {res.windows} windows "
          f"of {res.ctx}, stride {res.stride}, profile {model.profile})")
    return 0
