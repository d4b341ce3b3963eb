"""``minibit convert SRC DST --to tq2_0|tq1_0|i2_s``: write a GGUF file llama.cpp or bitnet.cpp runs."""

from __future__ import annotations

import os
import sys

HELP = "write a GGUF file llama.cpp / bitnet.cpp run"


DESCRIPTION = "Write a model as a GGUF file: TQ1_0/TQ2_0 for llama.cpp, I2_S for bitnet.cpp."


def add_arguments(ap) -> None:
    from ..io.gguf import WEIGHT_FORMATS
    ap.add_argument("src", help="'demo', a HF snapshot directory, a .gguf file or a cached repo id")
    ap.add_argument("dst", help="the .gguf file to write")
    ap.add_argument("--to", dest="fmt", choices=WEIGHT_FORMATS, default="tq2_0",
                    help="ternary weight type (default tq2_0)")
    ap.add_argument("--model-name", default=None, help="general.name (default: DST's file name)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args, ap) -> int:
    from ..io import load
    from ..io.gguf import gguf_arch_of, save_gguf

    model = load(args.src)
    save_gguf(model, args.dst, weight_format=args.fmt, progress=not args.no_progress,
              model_name=args.model_name)
    print(f"wrote {args.dst} ({os.path.getsize(args.dst)} bytes, {gguf_arch_of(model.config)}, "
          f"{args.fmt})", file=sys.stderr)
    return 0
