"""What a checkpoint holds, without loading it: config, metadata and one row per tensor.

``describe(source) -> (header_lines, rows)`` for a safetensors file, a HF snapshot directory
(every ``*.safetensors`` in it), a ``.gguf`` file, or anything ``resolve`` names ("demo", a
repo id in the local HF cache).  A row is ``(name, type name, numpy shape, bytes)``.  Every
file is read by minibit's own validated parsers, so a damaged one raises FormatError naming it.
"""

from __future__ import annotations

import json
import os

from .._errors import FormatError
from .hf import read_json
from .resolve import resolve
from .safetensors import SafetensorsFile

__all__ = ["describe", "safetensors_rows"]


def safetensors_rows(paths) -> list[tuple]:
    """(name, dtype, shape, nbytes) per tensor of each safetensors file, in header order."""
    rows = []
    for path in paths:
        f = SafetensorsFile(path)
        try:
            for name in f.names:
                dtype, shape, nbytes = f.info(name)
                rows.append((name, dtype, shape, nbytes))
        finally:
            f.close()
    return rows


def describe(source) -> tuple[list[str], list[tuple]]:
    """(header lines, tensor rows) of a checkpoint; see the module docstring."""
    path = os.fspath(source)
    if not os.path.exists(path):
        path = resolve(path)[1]               # "demo", a cached repo id; else names the path
    if os.path.isdir(path):
        lines = []
        cfg = os.path.join(path, "config.json")
        if os.path.exists(cfg):               # size-capped; names the file on bad JSON
            lines.append(f"# config.json: {json.dumps(read_json(cfg), sort_keys=True)[:400]}")
        files = sorted(os.path.join(path, n) for n in os.listdir(path)
                       if n.endswith(".safetensors"))
        if not files:
            raise FormatError(f"{path}: no .safetensors files in this directory")
        return lines, safetensors_rows(files)
    if path.endswith(".gguf"):
        from .gguf import metadata_lines, tensor_rows
        return metadata_lines(path), tensor_rows(path)
    return [], safetensors_rows([path])
