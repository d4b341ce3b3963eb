"""``minibit inspect SOURCE``: config, metadata and the tensor table of a checkpoint."""

from __future__ import annotations

HELP = "show the tensors of a checkpoint"


def human(n: float) -> str:
    """Bytes as B / KiB / MiB / GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


DESCRIPTION = "Show what a checkpoint holds: tensors, types, sizes."


def add_arguments(ap) -> None:
    ap.add_argument("file", help="a .safetensors file, a HF snapshot directory, a .gguf file, "
                                 "'demo' or a cached repo id")


def run(args, ap) -> int:
    from ..io.inspect import describe
    lines, rows = describe(args.file)
    for line in lines:
        print(line)
    width = max([len(r[0]) for r in rows] + [6])
    print(f"{'tensor':<{width}}  {'type':<6}  {'shape':<18}  bytes")
    total = 0
    for name, dtype, shape, size in rows:
        total += size
        print(f"{name:<{width}}  {dtype:<6}  {str(list(shape)):<18}  {human(size)}")
    print(f"# {len(rows)} tensors, {human(total)}")
    return 0
