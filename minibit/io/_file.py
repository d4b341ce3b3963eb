"""What the two binary parsers (safetensors, GGUF) share: opening a file with a clear error,
and the check that no two tensors claim the same bytes."""

from __future__ import annotations

import os

from .._errors import FormatError


def open_file(path, min_size: int, what: str):
    """(path as str, open binary file, size in bytes); FormatError when it cannot be opened or
    is shorter than ``min_size`` (the smallest ``what`` header)."""
    path = os.fspath(path)
    try:
        fh = open(path, "rb")
    except OSError as e:
        raise FormatError(f"{path}: cannot open ({e.strerror})") from None
    size = os.fstat(fh.fileno()).st_size
    if size < min_size:
        fh.close()
        raise FormatError(f"{path}: {size} bytes, too short for a {what} header ({min_size})")
    return path, fh, size


def check_disjoint(path: str, spans) -> None:
    """FormatError naming the first two tensors whose byte ranges [begin, end) overlap;
    ``spans`` holds (begin, end, name) of every non-empty tensor."""
    spans = sorted(spans)
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise FormatError(f"{path}: tensors {n0!r} and {n1!r} overlap "
                              f"([{b0}, {e0}) and [{b1}, {e1}))")
