"""The `minibit` command (also `python -m minibit`).

Subcommands are small functions that parse their own arguments and call the library; the
library never prints.  Bad arguments exit 2 with one line on stderr; a FormatError exits 1
with its message.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings

from ._errors import FormatError

EXAMPLES = """examples:
  minibit generate "It was a fine morning"          continue a prompt with the bundled model
  minibit generate "Once" --model DIR -n 64 --temp 0 --seed 1
  minibit chat --model DIR                          an interactive chat (reads stdin if piped)
  minibit bench formats            encode/decode speed of every weight format, both backends
  minibit bench kernels --quick    ternary matmul speed (GMAC/s, GB/s) per kernel and backend
  minibit bench model --synthetic large   whole-model tok/s and RSS, beside llama.cpp
  minibit inspect model.safetensors   tensor table of a checkpoint (also a HF dir or .gguf)
  minibit convert DIR out.gguf --to tq2_0            a GGUF file for llama.cpp (i2_s: bitnet.cpp)
  minibit dump "Hello" --out d1 --profile hf        per-layer tensors to diff an engine against
  minibit compare d1 d2 --fail-above 1e-3           where two dumps diverge
"""


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: ``minibit generate: error: ... (see --help)``, exit 2.

    (argparse's own error prints the whole usage block first, which buries the message.)"""

    def __init__(self, *a, **kw):
        kw.setdefault("epilog", EXAMPLES)
        kw.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*a, **kw)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(kind, name, ok, what):
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


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _inspect_safetensors(paths):
    from safetensors import safe_open

    rows = []
    for path in paths:
        try:
            with safe_open(path, framework="numpy") as f:
                for name in f.keys():
                    sl = f.get_slice(name)
                    shape = tuple(sl.get_shape())
                    dtype = sl.get_dtype()
                    n = 1
                    for d in shape:
                        n *= d
                    size = {"F32": 4, "F16": 2, "BF16": 2, "U8": 1, "I8": 1, "F64": 8,
                            "I32": 4, "I64": 8}.get(dtype, 0) * n
                    rows.append((name, dtype, shape, size))
        except Exception as e:  # the library's own parser said no: name the file
            raise FormatError(f"{path}: not a readable safetensors file ({e})") from None
    return rows


def _inspect_gguf(path):
    from .io import gguf
    for line in gguf.metadata_lines(path):
        print(line)
    return gguf.tensor_rows(path)


def cmd_inspect(argv) -> int:
    ap = Parser(prog="minibit inspect",
                description="Show what a checkpoint holds: tensors, types, sizes.")
    ap.add_argument("file", help="a .safetensors file, a HF snapshot directory or a .gguf file")
    args = ap.parse_args(argv)
    path = args.file
    if not os.path.exists(path):
        raise FormatError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        cfg = os.path.join(path, "config.json")
        if os.path.exists(cfg):
            import json
            from .io.hf import read_json          # size-capped; names the file on bad JSON
            print(f"# config.json: {json.dumps(read_json(cfg), sort_keys=True)[:400]}")
        files = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".safetensors"))
        if not files:
            raise FormatError(f"{path}: no .safetensors files in this directory")
        rows = _inspect_safetensors(files)
    elif path.endswith(".gguf"):
        rows = _inspect_gguf(path)
    else:
        rows = _inspect_safetensors([path])
    width = max([len(r[0]) for r in rows] + [6])
    print(f"{'tensor':<{width}}  {'type':<6}  {'shape':<18}  bytes")
    total = 0
    for name, dtype, shape, size in rows:
        total += size
        print(f"{name:<{width}}  {dtype:<6}  {str(list(shape)):<18}  {_human(size)}")
    print(f"# {len(rows)} tensors, {_human(total)}")
    return 0


def _model_args(ap, generation=True):
    ap.add_argument("--model", default="demo",
                    help="'demo' or 'demo-a4.8' (bundled), a HF snapshot directory, a .gguf file "
                         "or a cached repo id")
    ap.add_argument("--profile", choices=["hf", "bitnet.cpp", "llama.cpp", "a4.8", "trilm"], default=None,
                    help="numerics to reproduce (default: the model's natural one)")
    ap.add_argument("--threads", type=_number(int, "--threads", lambda v: v >= 1, "an integer >= 1"),
                    default=None, help="kernel threads (default: all cores)")
    if generation:
        ap.add_argument("--kv-cache", choices=["f32", "f16", "int3"], default="f32",
                        help="KV cache type: f32 (default) or f16 (half the memory, as llama.cpp "
                             "keeps it; keys and values rounded to float16); int3: BitNet a4.8's "
                             "3-bit cache (absmax per token and head)")
        # every option is checked here, before anything loads (exit 2 with one line)
        ap.add_argument("-n", "--max-new-tokens", default=128,
                        type=_number(int, "-n", lambda v: v >= 0, "an integer >= 0"))
        ap.add_argument("--temp", default=0.8, help="temperature; 0 = greedy",
                        type=_number(float, "--temp", lambda v: v >= 0, "a number >= 0"))
        ap.add_argument("--top-k", default=40, help="0 = off",
                        type=_number(int, "--top-k", lambda v: v >= 0, "an integer >= 0"))
        ap.add_argument("--top-p", default=1.0,
                        type=_number(float, "--top-p", lambda v: 0 < v <= 1, "in (0, 1]"))
        ap.add_argument("--min-p", default=0.0,
                        type=_number(float, "--min-p", lambda v: 0 <= v <= 1, "in [0, 1]"))
        ap.add_argument("--repeat-penalty", default=1.1,
                        type=_number(float, "--repeat-penalty", lambda v: v > 0, "a number > 0"))
        ap.add_argument("--seed", default=None,
                        type=_number(int, "--seed", lambda v: v >= 0, "an integer >= 0"))
        ap.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
        ap.add_argument("--verbose", action="store_true", help="timings and tokens/s on stderr")


def _load(args):
    from . import load
    model = load(args.model, profile=args.profile, threads=args.threads)
    model.kv_cache = getattr(args, "kv_cache", "f32")
    return model


def _gen_kwargs(args):
    return dict(max_new_tokens=args.max_new_tokens, temperature=args.temp, top_k=args.top_k,
                top_p=args.top_p, min_p=args.min_p, repeat_penalty=args.repeat_penalty,
                seed=args.seed, stop=tuple(args.stop))


def _report(res, verbose):
    if not verbose:
        return
    n = len(res.tokens)
    pf = res.prompt_tokens / res.prefill_seconds if res.prefill_seconds else 0.0
    dc = (n - 1) / res.decode_seconds if res.decode_seconds and n > 1 else 0.0
    from . import backend
    print(f"\n[{backend()}] prompt {res.prompt_tokens} tok in {res.prefill_seconds:.3f} s "
          f"({pf:.1f} tok/s); generated {n} tok, decode {dc:.1f} tok/s; finish: {res.finish_reason}",
          file=sys.stderr)


def _stream(model, prompt, args, out=sys.stdout):
    from .generate import GenerationResult
    res = GenerationResult(text="")
    try:
        for piece in model.generate(prompt, stream=True, result=res, **_gen_kwargs(args)):
            out.write(piece)
            out.flush()
    except KeyboardInterrupt:
        out.write("\n")
        out.flush()
        _report(res, args.verbose)
        raise
    _report(res, args.verbose)
    return res


def cmd_generate(argv) -> int:
    ap = Parser(prog="minibit generate", description="Continue a prompt, streaming to stdout.")
    ap.add_argument("prompt")
    _model_args(ap)
    args = ap.parse_args(argv)
    model = _load(args)
    sys.stdout.write(args.prompt)
    _stream(model, args.prompt, args)
    sys.stdout.write("\n")
    return 0


def cmd_chat(argv) -> int:
    ap = Parser(prog="minibit chat",
                description="Chat with a model through its chat template. Type a message per "
                            "line; an empty line or EOF ends.")
    ap.add_argument("--system", default=None, help="a system message")
    _model_args(ap)
    args = ap.parse_args(argv)
    model = _load(args)
    from .generate import render_chat
    messages = [{"role": "system", "content": args.system}] if args.system else []
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            sys.stdout.write("> ")
            sys.stdout.flush()
        line = sys.stdin.readline()
        if not line or not line.strip():
            return 0
        messages.append({"role": "user", "content": line.strip()})
        if not interactive:
            sys.stdout.write(f"> {line.strip()}\n")
        res = _stream(model, render_chat(model, messages), args)
        sys.stdout.write("\n")
        messages.append({"role": "assistant", "content": res.text.strip()})


def cmd_convert(argv) -> int:
    from .io.gguf import main_convert
    return main_convert(argv)


def _oracle(name):
    def run(argv) -> int:
        from . import oracle
        return getattr(oracle, name)(argv)
    return run


def cmd_bench(argv) -> int:
    from . import bench
    return bench.main(argv)


COMMANDS = {
    "generate": (cmd_generate, "continue a prompt, streaming"),
    "chat": (cmd_chat, "chat through the model's template"),
    "convert": (cmd_convert, "write a GGUF file llama.cpp / bitnet.cpp run"),
    "bench": (cmd_bench, "measure speed: formats | kernels | model"),
    "dump": (_oracle("main_dump"), "write every layer's tensors for a prompt (oracle)"),
    "compare": (_oracle("main_compare"), "compare two dumps: first diverging tensor, logits KL"),
    "vectors": (_oracle("main_vectors"), "kernel test vectors for another engine's tests"),
    "perplexity": (_oracle("main_perplexity"), "perplexity and bits per byte of a text file"),
    "inspect": (cmd_inspect, "show the tensors of a checkpoint"),
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = Parser(
        prog="minibit",
        description="minibit: a readable, exact reference for 1.58-bit (ternary) LLM inference.")
    ap.add_argument("--version", action="store_true", help="print the version and backend")
    ap.add_argument("command", nargs="?", choices=sorted(COMMANDS),
                    help="; ".join(f"{k}: {v[1]}" for k, v in sorted(COMMANDS.items())))
    args, rest = ap.parse_known_args(argv[:1] if argv and not argv[0].startswith("-") else argv)
    if args.version:
        from . import __version__, backend
        print(f"minibit {__version__} ({backend()} backend)")
        return 0
    if args.command is None:
        ap.print_help()
        return 2
    fn = COMMANDS[args.command][0]
    show = warnings.showwarning
    warnings.showwarning = _one_line_warning
    try:
        return fn(argv[1:])
    except FormatError as e:
        print(f"minibit {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`minibit generate ... | head`): stop quietly; point stdout at
        # /dev/null so the interpreter's final flush does not raise again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    finally:
        warnings.showwarning = show


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings on the command line: ``minibit: warning: ...``, one line, no source echo."""
    print(f"minibit: warning: {message}", file=file or sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
