"""Read a GGUF file: a validated, memory-mapped parser (``GGUFFile``) and the rows
``minibit inspect`` prints.

The file (little-endian, versions 2 and 3; gguf-py ``constants.py``, llama.cpp ``ggml/src/gguf.cpp``)
-----------------------------------------------------------------------------------------------------
::

    u32 magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
    n_kv x     (string key, u32 value_type, value)            string = u64 length + UTF-8 bytes
    n_tensors x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset)
    zero padding to general.alignment (default 32), then the data section; tensor i lives at
    data_start + offset_i, offsets aligned.  ne[0] is the contiguous axis: numpy shape = ne reversed.

Why minibit parses it itself instead of using ``gguf.GGUFReader``
------------------------------------------------------------------
1. GGUFReader cannot read bitnet.cpp's files.  bitnet.cpp's llama.cpp fork numbers its types
   I2_S = 36, I8_S = 37, TL1 = 38, TL2 = 39 (old fork ``ggml.h``; facts/bitnet_cpp.md §1.1).
   Mainline gguf-py defines no 36-38 and uses 39 for MXFP4, so GGUFReader raises on the
   official I2_S file of BitNet-2B-4T and would size a TL2 tensor as MXFP4.  I2_S's byte
   size (n/4 + 32, scale inside) follows no block rule gguf-py could express.
2. GGUFReader trusts the counts: a lying string length or array count makes it allocate or
   read past the file before anything checks it.  Here every count, length, n_dims, shape,
   type id, offset and size is checked against the file size *before* anything is allocated
   or read, and a bad field raises FormatError naming the file, the key or tensor, the field
   and the value.  Tensor data is never copied: the file is mapped (``mmap``) and tensors are
   read-only NumPy views into it.
The ``gguf`` package is still used for its constants (GGMLQuantizationType, GGML_QUANT_SIZES,
Keys), for dequantizing float/quantized embedding tensors (``gguf.quants.dequantize``), and to
write files (``GGUFWriter``).

Type ids (GGML)
---------------
F32 0, F16 1, Q4_0 2, Q8_0 8, Q6_K 14, BF16 30, TQ1_0 34, TQ2_0 35 (and every other id gguf-py
knows, for embeddings), plus bitnet.cpp's I2_S 36 (n/4 + 32 bytes, float32 scale at byte n/4)
and TL1 38 (M*K/4 bytes).  **The id 39 rule:** id 39 is TL2 when the tensor has a sibling F32
tensor named ``<name>_scale`` (bitnet.cpp's converter writes one after every TL1/TL2 weight,
``utils/convert-hf-to-gguf-bitnet.py``), and MXFP4 (mainline) otherwise.  TL1 needs that
sibling too (it holds the scale).  TL tiling (BM, BK, bm) is not stored in the file: bitnet.cpp
compiles it in from its kernel_config.ini, so minibit uses ``formats.tl1/tl2.default_params``
(bitnet.cpp's presets for their shapes, a generic rule otherwise).

"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass

import numpy as np

from ... import formats
from ..._errors import FormatError
from .._file import check_disjoint, open_file

__all__ = ["GGUFFile", "TensorInfo", "gguf_package", "tensor_rows", "metadata_lines",
           "inspect_lines", "I2_S", "TL1", "TL2", "FTYPE_I2_S", "FTYPE_TQ1_0", "FTYPE_TQ2_0"]

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32          # GGUF_DEFAULT_ALIGNMENT
MAX_DIMS = 4                    # GGML_MAX_DIMS

# bitnet.cpp's fork (old fork ggml.h:393-397); mainline has none of these
I2_S, TL1, TL2 = 36, 38, 39
FTYPE_I2_S = 40                 # LLAMA_FTYPE_MOSTLY_I2_S (convert-hf-to-gguf-bitnet.py:158-159)
FTYPE_TQ1_0, FTYPE_TQ2_0 = 36, 37   # gguf-py LlamaFileType.MOSTLY_TQ1_0 / MOSTLY_TQ2_0

# GGUFValueType ids -> (name, struct format, byte size) for the fixed-size ones
_SCALARS = {0: ("UINT8", "<B", 1), 1: ("INT8", "<b", 1), 2: ("UINT16", "<H", 2),
            3: ("INT16", "<h", 2), 4: ("UINT32", "<I", 4), 5: ("INT32", "<i", 4),
            6: ("FLOAT32", "<f", 4), 7: ("BOOL", "<B", 1), 10: ("UINT64", "<Q", 8),
            11: ("INT64", "<q", 8), 12: ("FLOAT64", "<d", 8)}
_NP = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1",
       10: "<u8", 11: "<i8", 12: "<f8"}
STRING, ARRAY = 8, 9


def gguf_package():
    """The ``gguf`` package (gguf-py), or FormatError saying how to install it."""
    try:
        import gguf
    except ImportError:
        raise FormatError("reading or writing GGUF needs the 'gguf' package "
                          "(pip install gguf)") from None
    return gguf


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a GGUF file.

    name      as in the file
    ne        ggml dims, ne[0] innermost (contiguous)
    type_id   the GGML type id as stored
    type_name "F32", "TQ2_0", "I2_S", "TL1", "TL2", "MXFP4", ...
    offset    absolute byte offset of the data in the file
    nbytes    bytes of data
    """

    name: str
    ne: tuple
    type_id: int
    type_name: str
    offset: int
    nbytes: int

    @property
    def shape(self) -> tuple:
        """numpy order (ne reversed)."""
        return tuple(reversed(self.ne))

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.ne:
            n *= d
        return n


class _Cursor:
    """Bounds-checked little-endian reads from the mapped file."""

    def __init__(self, buf, size: int, path: str):
        self.buf, self.size, self.path, self.pos = buf, size, path, 0

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise FormatError(f"{self.path}: {what} needs {n} bytes at offset {self.pos}, "
                              f"past the end of the file ({self.size} bytes)")

    def scalar(self, fmt: str, n: int, what: str):
        self.need(n, what)
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += n
        return v

    def u32(self, what):
        return self.scalar("<I", 4, what)

    def u64(self, what):
        return self.scalar("<Q", 8, what)

    def string(self, what: str) -> str:
        n = self.u64(f"{what}: string length")
        if n > self.size - self.pos:
            raise FormatError(f"{self.path}: {what}: string length {n} exceeds the "
                              f"{self.size - self.pos} bytes left in the file")
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise FormatError(f"{self.path}: {what}: not valid UTF-8 ({e})") from None


def _type_tables():
    """(names by id, (block, type_size) by id) for every id gguf-py knows."""
    gguf = gguf_package()
    names = {int(t): t.name for t in gguf.GGMLQuantizationType}
    sizes = {int(t): tuple(gguf.GGML_QUANT_SIZES[t]) for t in gguf.GGMLQuantizationType
             if t in gguf.GGML_QUANT_SIZES}
    return names, sizes


class GGUFFile:
    """A validated, memory-mapped GGUF file.

    fields        {key: python value}; arrays of numbers are NumPy arrays, of strings lists
    field_types   {key: "UINT32" | "STRING" | "ARRAY[INT32]" | ...}
    tensors       {name: TensorInfo} in file order
    version, alignment, data_offset, size

    ``raw(name)`` -> the tensor's bytes (uint8 view, no copy); ``view(name)`` -> a typed view in
    numpy shape for F32/F16/BF16(uint16)/I8-I64/F64; ``float32(name)`` -> a float32 array of
    any float or gguf-py-quantized type.
    """

    def __init__(self, path):
        self.path, self._fh, self.size = open_file(path, 24, "GGUF")
        try:
            self._mm = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ)
            self._parse()
        except BaseException:
            self.close()
            raise

    # ---- header ------------------------------------------------------------------------

    def _parse(self) -> None:
        c = _Cursor(self._mm, self.size, self.path)
        magic = bytes(self._mm[0:4])
        if magic != GGUF_MAGIC:
            raise FormatError(f"{self.path}: not a GGUF file (magic {magic!r}, expected b'GGUF')")
        c.pos = 4
        version = c.u32("version")
        if version not in (2, 3):
            swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
            if swapped in (2, 3):
                raise FormatError(f"{self.path}: a big-endian GGUF file (version {swapped}); "
                                  f"only little-endian files are supported")
            raise FormatError(f"{self.path}: GGUF version {version} is not supported "
                              f"(expected 2 or 3)")
        self.version = version
        n_tensors = c.u64("tensor count")
        n_kv = c.u64("metadata count")
        rest = self.size - c.pos
        # a KV needs >= 8 (key length) + 4 (type) + 1 bytes; a tensor info >= 8 + 4 + 4 + 8
        if n_kv * 13 > rest:
            raise FormatError(f"{self.path}: metadata count {n_kv} cannot fit in the "
                              f"{rest} bytes after the header")
        if n_tensors * 24 > rest:
            raise FormatError(f"{self.path}: tensor count {n_tensors} cannot fit in the "
                              f"{rest} bytes after the header")
        self.fields: dict = {}
        self.field_types: dict = {}
        for i in range(n_kv):
            key = c.string(f"metadata #{i} key")
            if key in self.fields:
                raise FormatError(f"{self.path}: metadata key {key!r} appears twice")
            vtype = c.u32(f"metadata {key!r} value type")
            value, tname = self._value(c, vtype, key, depth=0)
            self.fields[key] = value
            self.field_types[key] = tname
        align = self.fields.get("general.alignment", DEFAULT_ALIGNMENT)
        if "general.alignment" in self.fields and self.field_types["general.alignment"] != "UINT32":
            raise FormatError(f"{self.path}: general.alignment must be UINT32, got "
                              f"{self.field_types['general.alignment']}")
        if not isinstance(align, int) or align <= 0 or align & (align - 1):
            raise FormatError(f"{self.path}: general.alignment {align!r} is not a power of two")
        self.alignment = align
        names, sizes = _type_tables()
        infos = []
        seen = set()
        for i in range(n_tensors):
            name = c.string(f"tensor #{i} name")
            if name in seen:
                raise FormatError(f"{self.path}: tensor {name!r} appears twice")
            seen.add(name)
            where = f"{self.path}: tensor {name!r}"
            n_dims = c.u32(f"tensor {name!r} n_dims")
            if n_dims > MAX_DIMS:
                raise FormatError(f"{where}: n_dims {n_dims} exceeds GGML_MAX_DIMS ({MAX_DIMS})")
            ne = tuple(c.u64(f"tensor {name!r} ne[{d}]") for d in range(n_dims))
            for d, v in enumerate(ne):
                if v >= 1 << 63:
                    raise FormatError(f"{where}: ne[{d}] = {v} is not a valid dimension")
            type_id = c.u32(f"tensor {name!r} type")
            offset = c.u64(f"tensor {name!r} offset")
            infos.append((name, ne, type_id, offset))
        self.data_offset = -(-c.pos // align) * align
        if n_tensors and self.data_offset > self.size:
            raise FormatError(f"{self.path}: the data section would start at {self.data_offset}, "
                              f"past the end of the file ({self.size} bytes)")
        self.tensors: dict[str, TensorInfo] = {}
        for name, ne, type_id, offset in infos:
            self.tensors[name] = self._tensor_info(name, ne, type_id, offset, seen, names, sizes)
        check_disjoint(self.path, ((t.offset, t.offset + t.nbytes, t.name)
                                   for t in self.tensors.values() if t.nbytes))

    def _value(self, c: _Cursor, vtype: int, key: str, depth: int):
        where = f"metadata {key!r}"
        if vtype in _SCALARS:
            tname, fmt, n = _SCALARS[vtype]
            v = c.scalar(fmt, n, where)
            if vtype == 7:
                if v not in (0, 1):
                    raise FormatError(f"{self.path}: {where}: BOOL byte {v} is not 0 or 1")
                v = bool(v)
            return v, tname
        if vtype == STRING:
            return c.string(where), "STRING"
        if vtype == ARRAY:
            etype = c.u32(f"{where} array element type")
            count = c.u64(f"{where} array count")
            left = self.size - c.pos
            if etype in _SCALARS:
                n = _SCALARS[etype][2]
                if count * n > left:
                    raise FormatError(f"{self.path}: {where}: array count {count} of "
                                      f"{_SCALARS[etype][0]} needs {count * n} bytes, only "
                                      f"{left} left in the file")
                arr = np.frombuffer(self._mm, dtype=_NP[etype], count=count, offset=c.pos).copy()
                c.pos += count * n
                if etype == 7:
                    if arr.size and arr.max() > 1:
                        raise FormatError(f"{self.path}: {where}: BOOL array holds a byte "
                                          f"other than 0 or 1")
                    arr = arr.astype(bool)
                return arr, f"ARRAY[{_SCALARS[etype][0]}]"
            if etype == STRING:
                if count * 8 > left:
                    raise FormatError(f"{self.path}: {where}: array count {count} of STRING "
                                      f"needs at least {count * 8} bytes, only {left} left")
                return [c.string(f"{where}[{i}]") for i in range(count)], "ARRAY[STRING]"
            if etype == ARRAY:
                raise FormatError(f"{self.path}: {where}: nested arrays are not supported "
                                  f"(neither llama.cpp nor gguf-py reads them)")
            raise FormatError(f"{self.path}: {where}: unknown array element type {etype}")
        raise FormatError(f"{self.path}: {where}: unknown value type {vtype}")

    def _tensor_info(self, name, ne, type_id, offset, names_in_file, names, sizes) -> TensorInfo:
        where = f"{self.path}: tensor {name!r}"
        n = 1
        for d in ne:
            n *= d
        scale_sibling = name + "_scale" in names_in_file
        if type_id == I2_S:
            tname = "I2_S"
            if n % 4:
                raise FormatError(f"{where}: I2_S tensor of {n} elements (not a multiple of 4)")
            nbytes = n // 4 + 32
        elif type_id == TL1:
            tname = "TL1"
            if len(ne) != 2 or not scale_sibling:
                raise FormatError(f"{where}: type 38 (bitnet.cpp TL1) needs a 2-D shape and "
                                  f"a sibling {name + '_scale'!r} tensor, got ne={list(ne)}"
                                  f"{'' if scale_sibling else ' and no scale tensor'}")
            # formats.module imports the layout module on first use
            nbytes = formats.module("tl1").nbytes(ne[1], ne[0])
        elif type_id == TL2 and scale_sibling:
            # the id 39 rule: TL2 in a bitnet.cpp file (sibling <name>_scale), else MXFP4
            tname = "TL2"
            if len(ne) != 2 or ne[0] < 1 or ne[1] < 1:
                raise FormatError(f"{where}: TL2 tensor must be 2-D, got ne={list(ne)}")
            nbytes = formats.module("tl2").nbytes(ne[1], ne[0])
            if nbytes <= 0:
                raise FormatError(f"{where}: TL2 shape {list(ne)} has no valid byte size")
        elif type_id in sizes:
            tname = names[type_id]
            block, tsize = sizes[type_id]
            if ne and ne[0] % block:
                raise FormatError(f"{where}: {tname} row length ne[0] = {ne[0]} is not a "
                                  f"multiple of its block size {block}")
            nbytes = n // block * tsize
        else:
            raise FormatError(f"{where}: unknown GGML type id {type_id}")
        if offset % self.alignment:
            raise FormatError(f"{where}: offset {offset} is not a multiple of the alignment "
                              f"{self.alignment}")
        start = self.data_offset + offset
        if start + nbytes > self.size:
            raise FormatError(f"{where}: data [{start}, {start + nbytes}) ({tname}, ne={list(ne)}) "
                              f"runs past the end of the file ({self.size} bytes)")
        return TensorInfo(name, ne, type_id, tname, start, nbytes)

    # ---- access ------------------------------------------------------------------------

    def close(self) -> None:
        """Drop the file handle.  The mapping stays alive while any view uses it."""
        fh = getattr(self, "_fh", None)
        if fh is not None:
            fh.close()

    def info(self, name: str) -> TensorInfo:
        if name not in self.tensors:
            raise FormatError(f"{self.path}: missing tensor {name!r}")
        return self.tensors[name]

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes: a read-only uint8 view of the mapped file."""
        t = self.info(name)
        return np.frombuffer(self._mm, dtype=np.uint8, count=t.nbytes, offset=t.offset)

    _VIEW = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "F64": "<f8", "I8": "i1",
             "I16": "<i2", "I32": "<i4", "I64": "<i8"}

    def view(self, name: str) -> np.ndarray:
        """A typed read-only view in numpy shape (BF16 as uint16), for unquantized types."""
        t = self.info(name)
        if t.type_name not in self._VIEW:
            raise FormatError(f"{self.path}: tensor {name!r} is {t.type_name}, not a plain array type")
        dt = np.dtype(self._VIEW[t.type_name])      # (an offset off the itemsize: unaligned view)
        return np.frombuffer(self._mm, dtype=dt, count=t.n_elements, offset=t.offset).reshape(t.shape)

    def float32(self, name: str) -> np.ndarray:
        """float32 values of a float or gguf-py-quantized tensor (a copy)."""
        t = self.info(name)
        if t.type_name in ("F32", "F16", "F64"):
            return self.view(name).astype(np.float32)
        if t.type_name == "BF16":
            return (self.view(name).astype(np.uint32) << 16).view(np.float32)
        if t.type_name in ("I2_S", "TL1", "TL2"):
            raise FormatError(f"{self.path}: tensor {name!r} is ternary {t.type_name}")
        gguf = gguf_package()
        qt = gguf.GGMLQuantizationType(t.type_id)
        rows = t.n_elements // max(t.ne[0], 1) if t.ne else 1
        data = self.raw(name).reshape(rows, -1)
        try:
            out = gguf.quants.dequantize(data, qt)
        except NotImplementedError:
            raise FormatError(f"{self.path}: tensor {name!r}: gguf-py cannot dequantize "
                              f"{t.type_name}") from None
        return np.ascontiguousarray(out, dtype=np.float32).reshape(t.shape)

    def get(self, key: str, default=None):
        return self.fields.get(key, default)


# ---- what `minibit inspect FILE.gguf` prints -------------------------------------------------

_BIG_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
               "tokenizer.ggml.scores")


def tensor_rows(path) -> list[tuple]:
    """(name, type name, numpy shape, nbytes) per tensor, in file order (the rows of
    ``minibit inspect``'s tensor table; I2_S/TL1/TL2 named as bitnet.cpp names them)."""
    g = GGUFFile(path)
    g.close()
    return [(t.name, t.type_name, t.shape, t.nbytes) for t in g.tensors.values()]


def metadata_lines(path, width: int = 100) -> list[str]:
    """A header line and one ``key (TYPE) = value`` line per metadata field; arrays longer
    than 16 items (token lists, merges) are summarized as ``[N items]``."""
    g = GGUFFile(path)
    g.close()
    return _metadata_lines(g, width)


def _metadata_lines(g: GGUFFile, width: int) -> list[str]:
    out = [f"# {g.path}: GGUF v{g.version}, {len(g.fields)} metadata fields, "
           f"{len(g.tensors)} tensors, alignment {g.alignment}, data at byte {g.data_offset}"]
    for key, val in g.fields.items():
        tname = g.field_types[key]
        # summarize by type, not by key: a damaged file may hold a scalar under a big key
        if tname.startswith("ARRAY") and (key in _BIG_ARRAYS or len(val) > 16):
            text = f"[{len(val)} items]"
        elif isinstance(val, np.ndarray):
            text = repr(val.tolist())
        else:
            text = repr(val)
        if len(text) > width:
            text = text[:width] + "..."
        out.append(f"{key} ({tname}) = {text}")
    return out


def inspect_lines(path, width: int = 100) -> list[str]:
    """What ``minibit inspect FILE.gguf`` prints: metadata_lines, then the tensor table."""
    g = GGUFFile(path)
    g.close()
    out = _metadata_lines(g, width)
    rows = [(t.name, t.type_name, t.shape, t.nbytes) for t in g.tensors.values()]
    nw = max([len(r[0]) for r in rows] + [6])
    out.append(f"{'tensor':<{nw}}  {'type':<6}  {'shape':<18}  bytes")
    total = 0
    for name, tn, shape, nb in rows:
        total += nb
        out.append(f"{name:<{nw}}  {tn:<6}  {str(list(shape)):<18}  {nb}")
    out.append(f"# {len(rows)} tensors, {total} bytes of data")
    return out
