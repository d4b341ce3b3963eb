"""Read safetensors files as memory-mapped NumPy arrays, validating before touching data.

The file format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header
length N, N bytes of JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, ...,
"__metadata__": {...}}``, then the tensor bytes, offsets counted from the end of the header.

minibit parses the header itself instead of calling ``safetensors.numpy.load_file`` for two
reasons: (1) the arrays stay memory-mapped, so a 2B-parameter checkpoint costs page cache, not
a private copy (packed ternary weights are never expanded); (2) every field is checked before
anything is allocated — header length within the file, dtypes known, shape products without
overflow, offsets inside the data section, sizes equal to shape x itemsize, no overlap — so a
damaged or hostile file raises FormatError naming the file, tensor and field.  The
``safetensors`` package is still used to write files (tests, the demo model).

bf16 has no NumPy dtype: such tensors come back as uint16 views; ``as_float32`` widens them
(bf16 is the top half of a float32, so the conversion is exact).
"""

from __future__ import annotations

import json
import mmap

import numpy as np

from .._errors import FormatError
from ._file import check_disjoint, open_file

__all__ = ["SafetensorsFile", "as_float32", "DTYPES"]

# safetensors dtype -> (numpy dtype, itemsize); BF16 is read as raw uint16
DTYPES = {
    "F64": (np.dtype("<f8"), 8), "F32": (np.dtype("<f4"), 4), "F16": (np.dtype("<f2"), 2),
    "BF16": (np.dtype("<u2"), 2), "I64": (np.dtype("<i8"), 8), "I32": (np.dtype("<i4"), 4),
    "I16": (np.dtype("<i2"), 2), "I8": (np.dtype("i1"), 1), "U8": (np.dtype("u1"), 1),
    "BOOL": (np.dtype("?"), 1), "U16": (np.dtype("<u2"), 2), "U32": (np.dtype("<u4"), 4),
    "U64": (np.dtype("<u8"), 8),
}
MAX_HEADER = 100 * 1024 * 1024       # the reference implementation's own limit
MAX_DIMS = 8


class SafetensorsFile:
    """One safetensors file: ``names``, ``info(name)``, ``get(name)`` (a read-only memmap view)."""

    def __init__(self, path: str):
        self.path, self._fh, size = open_file(path, 8, "safetensors")
        try:
            n = int.from_bytes(self._fh.read(8), "little")
            if n > MAX_HEADER or n > size - 8:
                raise FormatError(f"{self.path}: header length {n} exceeds the file "
                                  f"({size} bytes) or the {MAX_HEADER}-byte limit")
            raw = self._fh.read(n)
            try:
                header = json.loads(raw.decode("utf-8"))
            # (json.loads raises RecursionError on a header of deeply nested brackets)
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
                raise FormatError(f"{self.path}: header is not valid UTF-8 JSON ({e})") from None
            if not isinstance(header, dict):
                raise FormatError(f"{self.path}: header must be a JSON object")
            self.metadata = header.pop("__metadata__", None) or {}
            if not isinstance(self.metadata, dict):
                raise FormatError(f"{self.path}: __metadata__ must be an object")
            self._start = 8 + n
            self._datalen = size - self._start
            self._info = {name: self._check(name, entry) for name, entry in header.items()}
            check_disjoint(self.path, ((b, e, name) for name, (_, _, b, e) in self._info.items()
                                       if e > b))
            self._mm = (mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ)
                        if size > 0 else None)
        except BaseException:
            self._fh.close()
            raise

    def _check(self, name, entry):
        where = f"{self.path}: tensor {name!r}"
        if not isinstance(entry, dict):
            raise FormatError(f"{where}: entry must be an object")
        dtype = entry.get("dtype")
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise FormatError(f"{where}: unknown dtype {dtype!r}")
        shape = entry.get("shape")
        if (not isinstance(shape, list) or len(shape) > MAX_DIMS
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            raise FormatError(f"{where}: bad shape {shape!r}")
        offs = entry.get("data_offsets")
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)):
            raise FormatError(f"{where}: bad data_offsets {offs!r}")
        begin, end = offs
        if not 0 <= begin <= end <= self._datalen:
            raise FormatError(f"{where}: data_offsets {offs} outside the data section "
                              f"({self._datalen} bytes)")
        count = 1
        for d in shape:               # Python ints: no overflow; bounded by the file size below
            count *= d
        nbytes = count * DTYPES[dtype][1]
        if nbytes != end - begin:
            raise FormatError(f"{where}: shape {shape} of {dtype} needs {nbytes} bytes, "
                              f"data_offsets give {end - begin}")
        return dtype, tuple(shape), begin, end

    @property
    def names(self) -> list[str]:
        return list(self._info)

    def __contains__(self, name) -> bool:
        return name in self._info

    def info(self, name):
        """(dtype string, shape tuple, nbytes)."""
        dtype, shape, b, e = self._info[name]
        return dtype, shape, e - b

    def get(self, name) -> np.ndarray:
        """A read-only view of the tensor's bytes in the mapped file (no copy)."""
        if name not in self._info:
            raise FormatError(f"{self.path}: no tensor named {name!r}")
        dtype, shape, b, e = self._info[name]
        npdt = DTYPES[dtype][0]
        if e == b:
            return np.zeros(shape, dtype=npdt)
        arr = np.frombuffer(self._mm, dtype=np.uint8, count=e - b, offset=self._start + b)
        if (self._start + b) % npdt.itemsize == 0:
            arr = arr.view(npdt)
        else:                          # misaligned (legal in the format): one aligned copy
            arr = arr.copy().view(npdt)
        return arr.reshape(shape)

    def close(self) -> None:
        self._fh.close()


def as_float32(arr: np.ndarray, dtype: str) -> np.ndarray:
    """A float32 array from a tensor read by SafetensorsFile.get (bf16 widened exactly)."""
    if dtype == "BF16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    if dtype in ("F32", "F16", "F64"):
        return np.asarray(arr, dtype=np.float32)
    raise FormatError(f"expected a float tensor, got {dtype}")
