"""minibit as an oracle for other engines.

dump(model, prompt or ids, out_dir, profile=None)   every stage of one forward pass, one .npy
                                                    per tensor + manifest.json (llama.cpp and
                                                    transformers names)
compare(dir_a, dir_b, fail_above=None)              per-tensor diff of two dumps, the first
                                                    diverging tensor, logits top-1 and KL
vectors(fmt, out_dir)                               kernel test vectors: packed bytes, int8
                                                    inputs, int32 accumulators, float outputs
perplexity(model, text, ctx=None, stride=None)      perplexity and bits per byte

The file formats are specified in docs/oracle.md.  The ``main_*`` functions are the
``minibit dump | compare | vectors | perplexity`` subcommands: each parses its own argv and
returns an exit code; bad input raises FormatError (the CLI prints it as one line).
"""

from __future__ import annotations

import json
import os
import sys

from ..cli import Parser
from .._errors import FormatError
from .compare import CompareReport, compare
from .dump import dump, read_manifest
from .perplexity import PerplexityResult, perplexity
from .vectors import vectors

__all__ = ["dump", "read_manifest", "compare", "CompareReport", "vectors", "perplexity",
           "PerplexityResult", "main_dump", "main_compare", "main_vectors", "main_perplexity",
           "EXIT_ABOVE_THRESHOLD"]

EXIT_ABOVE_THRESHOLD = 3      # `minibit compare --fail-above X` when a tensor is above X


def _model_args(ap) -> None:
    ap.add_argument("--model", default="demo",
                    help="'demo' or 'demo-a4.8' (bundled), a HF snapshot directory, a .gguf file "
                         "or a cached repo id")
    ap.add_argument("--profile", choices=["hf", "bitnet.cpp", "llama.cpp", "a4.8", "trilm"], default=None,
                    help="numerics to reproduce (default: the model's natural one)")
    ap.add_argument("--threads", type=int, default=None, help="kernel threads (default: all cores)")


def _load(args):
    from .. import load
    if args.threads is not None and args.threads < 1:
        raise FormatError(f"--threads must be at least 1, got {args.threads}")
    return load(args.model, profile=args.profile, threads=args.threads)


def main_dump(argv) -> int:
    ap = Parser(
        prog="minibit dump",
        description="Write every intermediate tensor of one forward pass (one .npy per tensor "
                    "and manifest.json with llama.cpp and transformers names) to --out.")
    ap.add_argument("prompt", nargs="?", help="the prompt (tokenized with the model's tokenizer)")
    ap.add_argument("--ids", default=None, help="comma-separated token ids instead of a prompt")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--no-acc", action="store_true",
                    help="skip the int32 accumulators (one integer product less per projection)")
    _model_args(ap)
    args = ap.parse_args(argv)
    if (args.prompt is None) == (args.ids is None):
        ap.error("give a PROMPT or --ids, not both")
    src = args.prompt
    if args.ids is not None:
        try:
            src = [int(v) for v in args.ids.replace(",", " ").split()]
        except ValueError:
            raise FormatError(f"--ids: expected comma-separated integers, got "
                              f"{args.ids!r}") from None
    model = _load(args)
    m = dump(model, src, args.out, accumulators=not args.no_acc)
    print(f"wrote {len(m['entries'])} tensors for {len(m['token_ids'])} tokens "
          f"(profile {m['profile']}) to {args.out}")
    return 0


def main_compare(argv) -> int:
    ap = Parser(
        prog="minibit compare",
        description="Compare two dumps tensor by tensor (B against the reference A): max|diff|, "
                    "relative error, cosine, the first diverging tensor, logits top-1 and KL.")
    ap.add_argument("a", help="reference dump directory")
    ap.add_argument("b", help="dump directory to check")
    ap.add_argument("--fail-above", type=float, default=None, metavar="X",
                    help=f"exit {EXIT_ABOVE_THRESHOLD} when a tensor's relative error is above X "
                         f"(also the divergence threshold; default: any difference diverges)")
    ap.add_argument("--only-diff", action="store_true", help="list only tensors that differ")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write the report as JSON")
    args = ap.parse_args(argv)
    rep = compare(args.a, args.b, fail_above=args.fail_above, out=sys.stdout,
                  only_diff=args.only_diff)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rep.to_dict(), f, indent=1)
    if args.fail_above is not None and not rep.ok:
        return EXIT_ABOVE_THRESHOLD
    return 0


def main_vectors(argv) -> int:
    from ..formats import FORMATS
    ap = Parser(
        prog="minibit vectors",
        description="Write kernel test vectors (packed weights, int8 activations, int32 "
                    "accumulators, float outputs per profile) as .npz files + index.json.")
    ap.add_argument("--format", required=True, choices=list(FORMATS) + ["all"], dest="fmt")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    index = vectors(args.fmt, args.out, seed=args.seed)
    n = sum(1 for c in index["cases"] if args.fmt == "all" or c["format"] == args.fmt)
    index_path = os.path.join(args.out, "index.json")
    print(f"wrote {n} cases ({args.fmt}) to {args.out}; index: {index_path}")
    return 0


def main_perplexity(argv) -> int:
    ap = Parser(
        prog="minibit perplexity",
        description="Perplexity and bits per byte of a model on a UTF-8 text file "
                    "(non-overlapping windows of --ctx tokens unless --stride is smaller).")
    ap.add_argument("file", help="a UTF-8 text file")
    ap.add_argument("--ctx", type=int, default=None, help="tokens per window (default 512)")
    ap.add_argument("--stride", type=int, default=None,
                    help="tokens between window starts (default: ctx, no overlap)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--kv-cache", choices=["f32", "f16", "int3"], default="f32",
                    help="KV cache type (int3: BitNet a4.8's 3-bit cache)")
    _model_args(ap)
    args = ap.parse_args(argv)
    import pathlib
    path = pathlib.Path(args.file)
    if not path.is_file():
        raise FormatError(f"{args.file}: no such file")
    model = _load(args)
    model.kv_cache = args.kv_cache
    res = perplexity(model, path, ctx=args.ctx, stride=args.stride, progress=not args.no_progress)
    print(f"perplexity {res.ppl:.4f}  bits/byte {res.bits_per_byte:.4f}  "
          f"({res.tokens_scored} tokens scored, {res.bytes_scored} bytes, {res.windows} windows "
          f"of {res.ctx}, stride {res.stride}, profile {model.profile})")
    return 0
