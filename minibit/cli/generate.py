"""``minibit generate PROMPT``: continue a prompt, streaming the text to stdout."""

from __future__ import annotations

import sys

from ._common import gen_kwargs, load_model, model_args

HELP = "continue a prompt, streaming"


def report(res, verbose: bool) -> None:
    """With --verbose: prompt and decode speed on stderr."""
    if not verbose:
        return
    from .._backend import backend
    n = len(res.tokens)
    pf = res.prompt_tokens / res.prefill_seconds if res.prefill_seconds else 0.0
    dc = (n - 1) / res.decode_seconds if res.decode_seconds and n > 1 else 0.0
    print(f"\n[{backend()}] prompt {res.prompt_tokens} tok in {res.prefill_seconds:.3f} s "
          f"({pf:.1f} tok/s); generated {n} tok, decode {dc:.1f} tok/s; finish: {res.finish_reason}",
          file=sys.stderr)


def stream(model, prompt: str, args, out=None):
    """Generate from ``prompt`` with the parsed flags, writing each piece as it comes to
    ``out`` (default: sys.stdout as it is at the call, so a redirected stdout is honoured)."""
    from ..generate import GenerationResult
    out = sys.stdout if out is None else out
    res = GenerationResult(text="")
    try:
        for piece in model.generate(prompt, stream=True, result=res, **gen_kwargs(args)):
            out.write(piece)
            out.flush()
    except KeyboardInterrupt:
        out.write("\n")
        out.flush()
        report(res, args.verbose)
        raise
    report(res, args.verbose)
    return res


DESCRIPTION = "Continue a prompt, streaming to stdout."


def add_arguments(ap) -> None:
    ap.add_argument("prompt")
    model_args(ap)


def run(args, ap) -> int:
    model = load_model(args)
    sys.stdout.write(args.prompt)
    stream(model, args.prompt, args)
    sys.stdout.write("\n")
    return 0
