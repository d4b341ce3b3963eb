"""What every subcommand shares: the one-line-error parser, checked number options, the
model options (--model, --profile, --threads and the sampling flags) and loading a model."""

from __future__ import annotations

import argparse
import math

EXAMPLES = """examples:
  minibit generate "It was a fine morning"          continue a prompt with the bundled model
  minibit generate "Once" --model DIR -n 64 --temp 0 --seed 1
  minibit chat --model DIR                          an interactive chat (reads stdin if piped)
  minibit bench formats            encode/decode speed of every weight format, both backends
  minibit bench kernels --quick    ternary matmul speed (GMAC/s, GB/s) per kernel and backend
  minibit bench model --synthetic large   whole-model tok/s and RSS, beside llama.cpp
  minibit inspect model.safetensors   tensor table of a checkpoint (also a HF dir, .gguf or demo)
  minibit convert DIR out.gguf --to tq2_0            a GGUF file for llama.cpp (i2_s: bitnet.cpp)
  minibit dump "Hello" --out d1 --profile hf        per-layer tensors to diff an engine against
  minibit compare d1 d2 --fail-above 1e-3           where two dumps diverge
  minibit serve --port 8080          OpenAI-compatible API and a chat page on 127.0.0.1
"""

KV_CHOICES = ["f32", "f16", "int3"]
PROFILE_CHOICES = ["hf", "bitnet.cpp", "llama.cpp", "a4.8", "trilm"]


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: ``minibit generate: error: ... (see --help)``, exit 2.

    (argparse's own error prints the whole usage block first, which buries the message.)"""

    def __init__(self, *a, **kw):
        kw.setdefault("epilog", EXAMPLES)
        kw.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*a, **kw)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def number(kind, name, ok, what):
    """An argparse type: parse with ``kind``, accept when ``ok(value)``, else say ``what``."""
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {what}, got {text!r}") from None
        if (isinstance(v, float) and not math.isfinite(v)) or not ok(v):
            raise argparse.ArgumentTypeError(f"{name} must be {what}, got {text!r}")
        return v
    parse.__name__ = name          # argparse names the type in some messages
    return parse


def model_args(ap, generation: bool = True) -> None:
    """--model, --profile, --threads; with generation also the KV cache and sampling flags."""
    ap.add_argument("--model", default="demo",
                    help="'demo' or 'demo-a4.8' (bundled), a HF snapshot directory, a .gguf file "
                         "or a cached repo id")
    ap.add_argument("--profile", choices=PROFILE_CHOICES, default=None,
                    help="numerics to reproduce (default: the model's natural one)")
    ap.add_argument("--threads", type=number(int, "--threads", lambda v: v >= 1, "an integer >= 1"),
                    default=None, help="kernel threads (default: all cores)")
    ap.add_argument("--kv-cache", choices=KV_CHOICES, default="f32",
                    help="KV cache type: f32 (default) or f16 (half the memory, as llama.cpp "
                         "keeps it; keys and values rounded to float16); int3: BitNet a4.8's "
                         "3-bit cache (absmax per token and head, the first token at 4 bits)")
    if not generation:
        return
    # every option is checked here, before anything loads (exit 2 with one line)
    ap.add_argument("-n", "--max-new-tokens", default=128,
                    type=number(int, "-n", lambda v: v >= 0, "an integer >= 0"))
    ap.add_argument("--temp", default=0.8, help="temperature; 0 = greedy",
                    type=number(float, "--temp", lambda v: v >= 0, "a number >= 0"))
    ap.add_argument("--top-k", default=40, help="0 = off",
                    type=number(int, "--top-k", lambda v: v >= 0, "an integer >= 0"))
    ap.add_argument("--top-p", default=1.0,
                    type=number(float, "--top-p", lambda v: 0 < v <= 1, "in (0, 1]"))
    ap.add_argument("--min-p", default=0.0,
                    type=number(float, "--min-p", lambda v: 0 <= v <= 1, "in [0, 1]"))
    ap.add_argument("--repeat-penalty", default=1.1,
                    type=number(float, "--repeat-penalty", lambda v: v > 0, "a number > 0"))
    ap.add_argument("--seed", default=None,
                    type=number(int, "--seed", lambda v: v >= 0, "an integer >= 0"))
    ap.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    ap.add_argument("--verbose", action="store_true", help="timings and tokens/s on stderr")


def load_model(args):
    """The model the parsed model_args name, with its KV cache type when one was asked for."""
    from ..io import load
    model = load(args.model, profile=args.profile, threads=args.threads)
    model.kv_cache = getattr(args, "kv_cache", "f32")
    return model


def gen_kwargs(args) -> dict:
    """Model.generate's keyword arguments from the parsed sampling flags."""
    return dict(max_new_tokens=args.max_new_tokens, temperature=args.temp, top_k=args.top_k,
                top_p=args.top_p, min_p=args.min_p, repeat_penalty=args.repeat_penalty,
                seed=args.seed, stop=tuple(args.stop))
