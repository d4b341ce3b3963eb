"""The `minibit` command (also `python -m minibit`).

Subcommands are small functions that parse their own arguments and call the library; the
library never prints.  Bad arguments exit 2 with one line on stderr; a FormatError exits 1
with its message.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ._errors import FormatError

EXAMPLES = """examples:
  minibit bench formats            encode/decode speed of every weight format, both backends
  minibit bench kernels --quick    ternary matmul speed (GMAC/s, GB/s) per kernel and backend
  minibit inspect model.safetensors   tensor table of a checkpoint (also a HF dir or .gguf)
"""


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
    try:
        from gguf import GGUFReader
        r = GGUFReader(path)
    except Exception as e:
        raise FormatError(f"{path}: not a readable GGUF file ({e})") from None
    print(f"# {path}: GGUF, {len(r.fields)} metadata fields, {len(r.tensors)} tensors")
    for name, field in r.fields.items():
        if name.startswith("GGUF.") or name in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges",
                                                 "tokenizer.ggml.token_type", "tokenizer.ggml.scores"):
            continue
        try:
            val = field.contents()
        except Exception:
            val = "?"
        text = repr(val)
        print(f"{name} = {text[:100] + '...' if len(text) > 100 else text}")
    return [(t.name, t.tensor_type.name, tuple(int(d) for d in reversed(t.shape)), int(t.n_bytes))
            for t in r.tensors]


def cmd_inspect(argv) -> int:
    ap = argparse.ArgumentParser(prog="minibit inspect",
                                 description="Show what a checkpoint holds: tensors, types, sizes.")
    ap.add_argument("file", help="a .safetensors file, a HF snapshot directory or a .gguf file")
    args = ap.parse_args(argv)
    path = args.file
    if not os.path.exists(path):
        raise FormatError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        cfg = os.path.join(path, "config.json")
        if os.path.exists(cfg):
            with open(cfg, encoding="utf-8") as f:
                try:
                    print(f"# config.json: {json.dumps(json.load(f), sort_keys=True)[:400]}")
                except json.JSONDecodeError as e:
                    raise FormatError(f"{cfg}: not valid JSON ({e})") from None
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


def cmd_bench(argv) -> int:
    from . import bench
    return bench.main(argv)


COMMANDS = {
    "bench": (cmd_bench, "measure speed: formats | kernels"),
    "inspect": (cmd_inspect, "show the tensors of a checkpoint"),
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(
        prog="minibit", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
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
    try:
        return fn(argv[1:])
    except FormatError as e:
        print(f"minibit {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
