"""GGUF in and out: read llama.cpp's and bitnet.cpp's ternary model files, write files they run.

Reading: ``load_gguf(path, profile=None) -> Model``.  Writing: ``save_gguf(model, path,
weight_format="tq2_0" | "tq1_0" | "i2_s")``.  Also ``main_convert(argv)`` (``minibit convert``)
and ``inspect_lines(path)`` = ``metadata_lines(path)`` + a table of ``tensor_rows(path)``
(``minibit inspect FILE.gguf``).

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

Architectures (general.architecture)
------------------------------------
========================== ============ ========== ===========================================
arch                       FFN act      sub-norms  minibit Config.arch / source
========================== ============ ========== ===========================================
bitnet-b1.58, bitnet-25    relu2        yes        "bitnet-b1.58"; bitnet.cpp's fork names
                                                   (LLM_ARCH_BITNET_B158 / _25, build_bitnet_158)
bitnet                     silu         yes        "bitnet"; mainline llama.cpp's graph
                                                   (src/models/bitnet.cpp, LLM_FFN_SILU): the
                                                   1bitLLM layout, tied, NeoX RoPE
llama                      silu         no         "llama" (Falcon3-1.58bit); q/k rows permuted
========================== ============ ========== ===========================================

The graph's activation is fixed by the arch name (no key carries it).  bitnet.cpp's own
converter labels every BitNet model "bitnet-b1.58", 1bitLLM ones included, and its fork runs
that name with relu2, so minibit does the same.  For "llama", llama.cpp's converter permutes
the q and k rows of each head for its interleaved RoPE (``permute``: rows [head, 2, half] ->
[head, half, 2], k with the kv head count; llama.cpp ``convert_hf_to_gguf.py`` LlamaModel,
bitnet.cpp ``convert-hf-to-gguf-bitnet.py`` LlamaModel.permute).  The reader undoes it (row
permutations are lossless in every format: TQ and I2_S rows are byte ranges, TL is repacked),
so minibit's rotate_half RoPE sees transformers' order; the writer applies it.

Weights and profiles
--------------------
Ternary projections stay packed in their file format (Packed.data is a view of the mapped
file).  The default profile is the file's engine (DESIGN §3): any TQ projection ->
"llama.cpp", else I2_S/TL -> "bitnet.cpp".  When ``kernels`` has no (format, profile) pair
for a requested profile, the codes are repacked *losslessly* into a format that has one, or
FormatError says why that is impossible:

* I2_S / TL / float under "llama.cpp": -> TQ2_0 when the row length is a multiple of 256 and
  the tensor scale is exact in fp16 (TQ's block scale);
* TQ under "hf" / "bitnet.cpp": -> I2_S (row length % 128 == 0) else hf_packed, when every
  non-zero block has the same scale (true for files converted from absmean models, whose
  fp16 block scales are all fp16(scale));
* TL under "hf": -> I2_S or hf_packed (always possible).

Projections stored as F32/F16/BF16 (pre-quantization files) are ternarized on load: exactly
when their values are {0, +-a} (what the converters' weight_quant writes), else by absmean.
Embeddings and ``output`` stay F32/F16/BF16 views, other types are dequantized to float32
once.  Norms are float32.

Writing (``save_gguf``)
-----------------------
Tensor names and keys as llama.cpp reads them (gguf-py ``constants.py`` TENSOR_NAMES /
Keys; llama.cpp ``src/llama-arch.cpp``, ``src/llama-model.cpp``; converters
``convert_hf_to_gguf.py`` / ``conversion/bitnet.py`` and bitnet.cpp's
``utils/convert-hf-to-gguf-bitnet.py``).  Ternary projections TQ1_0/TQ2_0 (bytes of
``formats.pack_codes``, identical to ``gguf.quants.quantize``) with general.file_type 36/37,
or I2_S (type 36, n/4 + 32 bytes, general.file_type 40) exactly as bitnet.cpp's converter
lays them out (``weight_format="tl1"/"tl2"`` also writes bitnet.cpp's TL layouts, type
38/39 plus ``<name>_scale``, tiled by default_params); token_embd / output F16 (both
converters' choice); norms F32; the tokenizer
as tokenizer.ggml.* (byte-level BPE "gpt2": tokens, token types, merges, pre-tokenizer name;
SentencePiece-style "llama": tokens, token types, scores; BOS/EOS/EOT, add_bos) and
tokenizer.chat_template.  A 2B-4T-form model (relu2) is written as arch "bitnet-b1.58":
mainline llama.cpp has no relu2 BitNet graph, so such a file runs in
bitnet.cpp (or a llama.cpp patched with that arch), not in stock llama.cpp.
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
import warnings
from dataclasses import dataclass

import numpy as np

from .. import formats
from ..formats._packed import any_code_3
from .._errors import FormatError
from ..cli import Parser

__all__ = ["GGUFFile", "TensorInfo", "load_gguf", "save_gguf", "main_convert", "inspect_lines",
           "tensor_rows", "metadata_lines", "tokenizer_from_meta", "fit_profile", "permute_rows",
           "unpermute_rows", "I2_S", "TL1", "TL2", "FTYPE_I2_S"]

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

# the projections minibit keeps ternary: GGUF name -> Layer field
PROJ = {"attn_q": "q", "attn_k": "k", "attn_v": "v", "attn_output": "o",
        "ffn_gate": "gate", "ffn_up": "up", "ffn_down": "down"}
ARCHS = {"bitnet-b1.58": ("bitnet-b1.58", "relu2", True),
         "bitnet-25": ("bitnet-b1.58", "relu2", True),
         "bitnet": ("bitnet", "silu", True),
         "llama": ("llama", "silu", False)}

# tokenizer.ggml.token_type values (gguf-py TokenType)
TT_NORMAL, TT_UNKNOWN, TT_CONTROL, TT_USER_DEFINED, TT_UNUSED, TT_BYTE = 1, 2, 3, 4, 5, 6

# The Llama-3 pre-tokenizer regex (facts/formats.md §7; llama.cpp LLAMA_VOCAB_PRE_TYPE_LLAMA3)
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# llama.cpp's pre-tokenizer names that use the Llama-3 regex (src/llama-vocab.cpp)
LLAMA3_PRES = ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral",
               "midm-2.0", "lfm2", "jina-v5-nano")


def _gguf():
    try:
        import gguf
    except ImportError:
        raise FormatError("reading or writing GGUF needs the 'gguf' package "
                          "(pip install gguf)") from None
    return gguf


# ================================================================================ parsing

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
    gguf = _gguf()
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
        self.path = os.fspath(path)
        try:
            self._fh = open(self.path, "rb")
        except OSError as e:
            raise FormatError(f"{self.path}: cannot open ({e.strerror})") from None
        try:
            self.size = os.fstat(self._fh.fileno()).st_size
            if self.size < 24:
                raise FormatError(f"{self.path}: {self.size} bytes, too short for a GGUF header (24)")
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
        spans = sorted((t.offset, t.offset + t.nbytes, t.name) for t in self.tensors.values()
                       if t.nbytes)
        for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
            if b1 < e0:
                raise FormatError(f"{self.path}: tensors {n0!r} and {n1!r} overlap "
                                  f"([{b0}, {e0}) and [{b1}, {e1}))")

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
            # (fuzz fix: formats.module, not formats.tl1: the submodule is imported lazily, so
            # GGUFFile / `minibit inspect` on a TL1/TL2 file raised AttributeError in a fresh
            # process that had not loaded a model yet)
            nbytes = formats.module("tl1").nbytes(ne[1], ne[0])
        elif type_id == TL2 and scale_sibling:
            # the id 39 rule: TL2 in a bitnet.cpp file (sibling <name>_scale), else MXFP4
            tname = "TL2"
            if len(ne) != 2 or ne[0] < 1 or ne[1] < 1:
                raise FormatError(f"{where}: TL2 tensor must be 2-D, got ne={list(ne)}")
            nbytes = formats.module("tl2").nbytes(ne[1], ne[0])      # (fuzz fix, as above)
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
        gguf = _gguf()
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


# ================================================================================ model

def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter permutation of q/k rows: per head, [2, half] -> [half, 2]."""
    return w[_perm(w.shape[0], n_head, inverse=False)]


def unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of permute_rows: what a reader applies to a "llama" file's q/k."""
    return w[_perm(w.shape[0], n_head, inverse=True)]


def _perm(rows: int, n_head: int, inverse: bool) -> np.ndarray:
    """Index array p with permuted = original[p] (or its inverse)."""
    if n_head <= 0 or rows % (2 * n_head):
        raise FormatError(f"cannot permute {rows} rows for RoPE across {n_head} heads "
                          f"(rows must be a multiple of 2 * heads)")
    half = rows // n_head // 2
    idx = np.arange(rows)
    if not inverse:
        return idx.reshape(n_head, 2, half).swapaxes(1, 2).reshape(-1)
    return idx.reshape(n_head, half, 2).swapaxes(1, 2).reshape(-1)


def _permute_packed(p, idx: np.ndarray):
    """Packed with rows reordered as rows_new = rows_old[idx], losslessly in its own format."""
    M, K = p.shape
    if p.fmt in ("tq1_0", "tq2_0"):
        return formats.Packed(p.fmt, p.shape, np.ascontiguousarray(np.asarray(p.data)[idx]), p.scale,
                              dict(p.params))
    if p.fmt == "i2_s":
        d = np.asarray(p.data).reshape(-1)
        n4 = M * K // 4
        body = d[:n4].reshape(M, K // 4)[idx]
        return formats.Packed("i2_s", p.shape, np.concatenate([body.reshape(-1), d[n4:]]), None)
    codes, scale = formats.unpack_codes(p)
    return formats.pack_codes(p.fmt, codes[idx], scale, **dict(p.params))


# one mechanism for every loader: see minibit/kernels/fit.py
from ..kernels.fit import fit_profile, tensor_scale  # noqa: E402


def _ternary_from_float(w: np.ndarray):
    """Codes and scale of a float projection: exact when its values are {0, +-a}, else absmean."""
    from ..quant import absmean_ternarize

    a = np.abs(w)
    nz = a[a > 0]
    if nz.size == 0:
        return np.zeros(w.shape, np.int8), np.float32(0)
    if nz.min() == nz.max():
        return np.sign(w).astype(np.int8), np.float32(nz[0])
    return absmean_ternarize(w)


def _scalar(g: GGUFFile, key: str, kind, default=None, required=True):
    if key not in g.fields:
        if required:
            raise FormatError(f"{g.path}: missing metadata key {key!r}")
        return default
    v = g.fields[key]
    t = g.field_types[key]
    if kind is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise FormatError(f"{g.path}: metadata {key!r} must be an integer, got {t} {v!r}")
    elif kind is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise FormatError(f"{g.path}: metadata {key!r} must be a number, got {t} {v!r}")
        v = float(v)
    elif kind is str:
        if not isinstance(v, str):
            raise FormatError(f"{g.path}: metadata {key!r} must be a string, got {t}")
    elif kind is bool:
        if not isinstance(v, bool):
            raise FormatError(f"{g.path}: metadata {key!r} must be a bool, got {t} {v!r}")
    return v


def _norm(g: GGUFFile, name: str, width: int) -> np.ndarray:
    t = g.info(name)
    if t.shape != (width,):
        raise FormatError(f"{g.path}: tensor {name!r} has shape {list(t.shape)}, expected [{width}]")
    if t.type_name not in ("F32", "F16", "BF16"):
        raise FormatError(f"{g.path}: norm {name!r} has type {t.type_name}, expected F32/F16/BF16")
    w = np.ascontiguousarray(g.float32(name))
    # (fuzz fix: a damaged type id (F32 -> F16) reread the bytes into NaN/inf weights, so the
    # file loaded and every forward failed; a norm is small, so check it here)
    if not np.isfinite(w).all():
        raise FormatError(f"{g.path}: norm {name!r} holds non-finite values")
    return w


def _matrix(g: GGUFFile, name: str, rows: int, cols: int):
    """(array, dtype) of an embedding-like matrix: F32/F16/BF16 views, others to float32."""
    t = g.info(name)
    if t.shape != (rows, cols):
        raise FormatError(f"{g.path}: tensor {name!r} has shape {list(t.shape)}, "
                          f"expected [{rows}, {cols}]")
    if t.type_name in ("F32", "F16", "BF16"):
        return g.view(name), t.type_name
    return g.float32(name), "F32"


def _projection(g: GGUFFile, name: str, rows: int, cols: int):
    """The Packed weight of projection tensor ``name`` in the file's own format."""
    t = g.info(name)
    if t.shape != (rows, cols):
        raise FormatError(f"{g.path}: tensor {name!r} has shape {list(t.shape)} "
                          f"(ggml ne {list(t.ne)}), expected [{rows}, {cols}]")
    where = f"{g.path}: tensor {name!r}"
    if t.type_name in ("TQ1_0", "TQ2_0"):
        fmt = t.type_name.lower()
        bs = 54 if fmt == "tq1_0" else 66
        data = g.raw(name).reshape(rows, cols // 256 * bs)
        # (fuzz fix: an inf/NaN fp16 block scale d (the last 2 bytes of each block) loaded and
        # made every logit NaN; check them as the I2_S scale is checked below)
        d = np.ascontiguousarray(data.reshape(rows, -1, bs)[:, :, bs - 2:]).view("<f2")
        if not np.isfinite(d).all():
            raise FormatError(f"{where}: a {t.type_name} block scale is not finite")
        return formats.Packed(fmt, (rows, cols), data, None)
    if t.type_name == "I2_S":
        if cols % 128:
            raise FormatError(f"{where}: I2_S row length {cols} is not a multiple of 128")
        p = formats.Packed("i2_s", (rows, cols), g.raw(name), None)
        body = p.data[:rows * cols // 4] if p.data.size >= rows * cols // 4 else p.data
        try:
            if p.data.size != rows * cols // 4 + 32 or any_code_3(body):
                formats.unpack_codes(p)               # the full decoder names the damage
            scale = np.asarray(p.data[rows * cols // 4:rows * cols // 4 + 4]).view("<f4")[0]
        except FormatError as e:
            raise FormatError(f"{where}: {e}") from None
        if not np.isfinite(scale):
            raise FormatError(f"{where}: I2_S scale {scale!r} is not finite")
        return p
    if t.type_name in ("TL1", "TL2"):
        sname = name + "_scale"
        s = g.info(sname)
        if s.type_name != "F32" or s.n_elements != 1:
            raise FormatError(f"{g.path}: {sname!r} must be one F32 value, got {s.type_name} "
                              f"ne={list(s.ne)}")
        scale = np.float32(g.view(sname).reshape(-1)[0])
        if not np.isfinite(scale):
            raise FormatError(f"{g.path}: {sname!r} = {scale!r} is not finite")
        mod = formats.module(t.type_name.lower())
        try:
            params = mod.default_params(rows, cols)
        except FormatError as e:
            raise FormatError(f"{where}: {e}") from None
        return formats.Packed(t.type_name.lower(), (rows, cols), g.raw(name),
                              np.array([scale], np.float32), params)
    if t.type_name in ("F32", "F16", "BF16"):
        codes, scale = _ternary_from_float(g.float32(name))
        return formats.pack_codes("i2_s" if cols % 128 == 0 else "hf_packed", codes, scale)
    raise FormatError(f"{where}: type {t.type_name} is not a ternary weight type minibit reads "
                      f"(TQ1_0, TQ2_0, I2_S, TL1, TL2, or F32/F16/BF16)")


def _config_from_gguf(g: GGUFFile):
    from ..model.config import Config

    arch = _scalar(g, "general.architecture", str)
    if arch not in ARCHS:
        raise FormatError(f"{g.path}: architecture {arch!r} is not a ternary model minibit runs "
                          f"(expected one of {', '.join(ARCHS)})")
    march, act, sub = ARCHS[arch]
    k = lambda s: f"{arch}.{s}"                                    # noqa: E731
    hidden = _scalar(g, k("embedding_length"), int)
    heads = _scalar(g, k("attention.head_count"), int)
    kv = _scalar(g, k("attention.head_count_kv"), int, heads, required=False)
    if not heads or not kv:
        raise FormatError(f"{g.path}: head counts must be positive, got {heads}, {kv}")
    head_dim = _scalar(g, k("attention.key_length"), int, None, required=False)
    if head_dim is None:
        if hidden % heads:
            raise FormatError(f"{g.path}: embedding_length {hidden} is not a multiple of "
                              f"head_count {heads} and no attention.key_length is given")
        head_dim = hidden // heads
    vl = _scalar(g, k("attention.value_length"), int, head_dim, required=False)
    if vl != head_dim:
        raise FormatError(f"{g.path}: attention.value_length {vl} differs from key_length {head_dim}")
    rot = _scalar(g, k("rope.dimension_count"), int, head_dim, required=False)
    if rot != head_dim:
        raise FormatError(f"{g.path}: partial RoPE (rope.dimension_count {rot} < head dim "
                          f"{head_dim}) is not supported")
    st = _scalar(g, k("rope.scaling.type"), str, "none", required=False)
    sf = _scalar(g, k("rope.scaling.factor"), float, 1.0, required=False)
    if st not in ("none", "linear") or sf not in (0.0, 1.0):
        raise FormatError(f"{g.path}: rope scaling {st!r} x {sf} is not supported")
    if "token_embd.weight" not in g.tensors:
        raise FormatError(f"{g.path}: missing tensor 'token_embd.weight'")
    emb = g.info("token_embd.weight")
    if len(emb.ne) != 2 or emb.ne[0] != hidden:
        raise FormatError(f"{g.path}: token_embd.weight has ne {list(emb.ne)}, expected "
                          f"[{hidden}, vocab]")
    vocab = emb.ne[1]
    bos = _scalar(g, "tokenizer.ggml.bos_token_id", int, None, required=False)
    eos = _scalar(g, "tokenizer.ggml.eos_token_id", int, None, required=False)
    eot = _scalar(g, "tokenizer.ggml.eot_token_id", int, None, required=False)
    eos_ids = [e for e in (eos, eot) if e is not None]
    ff = _scalar(g, k("feed_forward_length"), int)
    return Config(
        arch=march, vocab_size=vocab, hidden_size=hidden, intermediate_size=ff,
        num_layers=_scalar(g, k("block_count"), int), num_heads=heads, num_kv_heads=kv,
        head_dim=head_dim,
        rope_theta=_scalar(g, k("rope.freq_base"), float, 10000.0, required=False),
        rms_norm_eps=_scalar(g, k("attention.layer_norm_rms_epsilon"), float),
        max_position=_scalar(g, k("context_length"), int, 2048, required=False),
        hidden_act=act, sub_norms=sub,
        tie_word_embeddings="output.weight" not in g.tensors,
        linear_class="autobitlinear", quantization_mode="offline",
        bos_token_id=bos, eos_token_ids=eos_ids), arch


def natural_profile_of(fmts) -> str:
    """The engine of a file whose projections are in ``fmts`` (DESIGN §3)."""
    fmts = set(fmts)
    if fmts & {"tq1_0", "tq2_0"}:
        return "llama.cpp"
    return "bitnet.cpp"


def load_gguf(path, profile: str | None = None):
    """A minibit Model from a GGUF file (llama.cpp's or bitnet.cpp's); see the module docstring.

    profile None: "llama.cpp" for TQ files, "bitnet.cpp" for I2_S/TL (and float) files.
    """
    from ..model.model import PROFILES

    if profile is not None and profile not in PROFILES:
        raise FormatError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    g = GGUFFile(path)
    try:
        return _build(g, profile)
    finally:
        g.close()                        # the mapping lives on in the tensor views


def _build(g: GGUFFile, profile):
    from ..model.layers import BitLinear
    from ..model.model import Model
    from ..model.transformer import Layer, Transformer

    cfg, arch = _config_from_gguf(g)
    hid, ff = cfg.hidden_size, cfg.intermediate_size
    qd, kvd = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    dims = {"attn_q": (qd, hid), "attn_k": (kvd, hid), "attn_v": (kvd, hid),
            "attn_output": (hid, qd), "ffn_gate": (ff, hid), "ffn_up": (ff, hid),
            "ffn_down": (hid, ff)}
    if "rope_freqs.weight" in g.tensors:
        rf = g.float32("rope_freqs.weight")
        if not np.all(rf == 1):
            raise FormatError(f"{g.path}: rope_freqs (RoPE frequency factors) are not supported")
    raw_layers = []
    for i in range(cfg.num_layers):
        pre = f"blk.{i}."
        lin = {}
        for gname, (r, c) in dims.items():
            tname = pre + gname + ".weight"
            if pre + gname + ".scale" in g.tensors:
                s = g.float32(pre + gname + ".scale").reshape(-1)
                if s.size != 1 or s[0] != 1:
                    raise FormatError(f"{g.path}: tensor {pre + gname + '.scale'!r}: separate "
                                      f"output scales other than 1 are not supported")
            p = _projection(g, tname, r, c)
            if arch == "llama" and gname in ("attn_q", "attn_k"):
                nh = cfg.num_heads if gname == "attn_q" else cfg.num_kv_heads
                p = _permute_packed(p, _perm(r, nh, inverse=True))
            lin[gname] = p
        norms = {"attn_norm": _norm(g, pre + "attn_norm.weight", hid),
                 "ffn_norm": _norm(g, pre + "ffn_norm.weight", hid)}
        if cfg.sub_norms:
            norms["attn_sub_norm"] = _norm(g, pre + "attn_sub_norm.weight", qd)
            norms["ffn_sub_norm"] = _norm(g, pre + "ffn_sub_norm.weight", ff)
        raw_layers.append((lin, norms))
    prof = profile or natural_profile_of(p.fmt for lin, _ in raw_layers for p in lin.values())
    layers = []
    for i, (lin, norms) in enumerate(raw_layers):
        bl = {PROJ[k]: BitLinear(f"blk.{i}.{k}.weight",
                                 fit_profile(p, prof, f"{g.path}: blk.{i}.{k}.weight"), prof)
              for k, p in lin.items()}
        layers.append(Layer(**bl, **norms))
    embed, edt = _matrix(g, "token_embd.weight", cfg.vocab_size, hid)
    lm_head, ldt = None, None
    if "output.weight" in g.tensors:
        lm_head, ldt = _matrix(g, "output.weight", cfg.vocab_size, hid)
    final = _norm(g, "output_norm.weight", hid)
    transformer = Transformer(cfg, embed, edt, layers, final, lm_head, ldt)
    tok = None
    if "tokenizer.ggml.model" in g.fields:
        from ..tokenizer import Tokenizer
        # (fuzz fix: a damaged file may hold a scalar or a NumPy array here; `arr or ()` and
        # len(int) raised ValueError / TypeError.  A non-list fails in Tokenizer.from_gguf.)
        toks = g.fields.get("tokenizer.ggml.tokens")
        n_tok = len(toks) if isinstance(toks, list) else 0
        if n_tok > cfg.vocab_size:
            raise FormatError(f"{g.path}: {n_tok} tokens but token_embd has only "
                              f"{cfg.vocab_size} rows")
        try:
            tok = Tokenizer.from_gguf(g.fields, source=g.path)
        except FormatError as e:        # the weights are still usable with token ids
            warnings.warn(f"{e}; the model is loaded without a tokenizer", stacklevel=3)
    template = g.fields.get("tokenizer.chat_template")
    return Model(transformer, tok, prof, source=g.path,
                 chat_template=template if isinstance(template, str) else None)


# ================================================================================ tokenizer

def _meta_list(meta, key, source, n=None, kind="string"):
    v = meta.get(key)
    if v is None:
        return None
    if kind == "string":
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise FormatError(f"{source}: {key} must be an array of strings")
    else:
        if not isinstance(v, np.ndarray) or v.ndim != 1 or not (
                np.issubdtype(v.dtype, np.integer) if kind == "int" else
                np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.integer)):
            raise FormatError(f"{source}: {key} must be an array of {kind}s")
    if n is not None and len(v) != n:
        raise FormatError(f"{source}: {key} has {len(v)} entries, tokenizer.ggml.tokens has {n}")
    return v


def _meta_id(meta, key, source, n):
    v = meta.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n:
        raise FormatError(f"{source}: {key} = {v!r} is not a token id in [0, {n})")
    return v


def tokenizer_from_meta(meta: dict, source: str = "<gguf>"):
    """(tokenizers.Tokenizer, bos_id, eos_ids, add_bos) from tokenizer.ggml.* metadata; the
    body of ``minibit.tokenizer.Tokenizer.from_gguf`` (see its docstring)."""
    from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers
    from tokenizers import Tokenizer as _TK
    from tokenizers.models import BPE

    model = meta.get("tokenizer.ggml.model")
    if model is not None and not isinstance(model, str):
        # (fuzz fix: an array here made `model == "gpt2"` below raise ValueError)
        raise FormatError(f"{source}: tokenizer.ggml.model must be a string")
    tokens = _meta_list(meta, "tokenizer.ggml.tokens", source)
    if not tokens:
        raise FormatError(f"{source}: no tokenizer.ggml.tokens")
    n = len(tokens)
    types = _meta_list(meta, "tokenizer.ggml.token_type", source, n, "int")
    if types is None:
        types = np.full(n, TT_NORMAL, np.int32)
    pre = meta.get("tokenizer.ggml.pre")
    pre = pre if isinstance(pre, str) else None
    vocab: dict = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)                      # a duplicate keeps its first id
    if model == "gpt2":
        merges = _meta_list(meta, "tokenizer.ggml.merges", source)
        if merges is None:
            raise FormatError(f"{source}: a 'gpt2' tokenizer needs tokenizer.ggml.merges")
        pairs = []
        for j, mg in enumerate(merges):
            k = mg.find(" ", 1)                      # llama.cpp: the first space after byte 0
            if k < 0:
                raise FormatError(f"{source}: tokenizer.ggml.merges[{j}] = {mg!r} has no space")
            pairs.append((mg[:k], mg[k + 1:]))
        llama3 = pre in LLAMA3_PRES
        try:
            bpe = BPE(vocab, pairs, ignore_merges=llama3)
        except Exception as e:                       # the library's own check of merges vs vocab
            raise FormatError(f"{source}: tokenizer.ggml.merges do not fit the tokens ({e})") from None
        tk = _TK(bpe)
        if llama3:
            tk.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        else:                                        # "gpt-2", "default", unnamed: GPT-2's regex
            tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tk.decoder = decoders.ByteLevel()
        add_bos_default = llama3
    elif model == "llama":
        scores = _meta_list(meta, "tokenizer.ggml.scores", source, n, "float")
        if scores is None:
            raise FormatError(f"{source}: a 'llama' (SentencePiece) tokenizer needs "
                              f"tokenizer.ggml.scores")
        scores = np.asarray(scores, dtype=np.float64)
        mergeable = {t for t, i in vocab.items() if types[i] in (TT_NORMAL, TT_USER_DEFINED)}
        cand = []
        for t in mergeable:
            for k in range(1, len(t)):
                a, b = t[:k], t[k:]
                if a in mergeable and b in mergeable:
                    cand.append((-scores[vocab[t]], vocab[a], vocab[b], a, b))
        cand.sort()
        unk = next((tokens[i] for i in range(n) if types[i] == TT_UNKNOWN), None)
        try:
            bpe = BPE(vocab, [(a, b) for *_, a, b in cand], unk_token=unk, fuse_unk=True,
                      byte_fallback=True)
        except Exception as e:
            raise FormatError(f"{source}: cannot build the SentencePiece vocabulary ({e})") from None
        tk = _TK(bpe)
        space = meta.get("tokenizer.ggml.add_space_prefix", True)
        norms = [normalizers.Replace(" ", "\u2581")]
        if space is True:
            norms.insert(0, normalizers.Prepend("\u2581"))
        tk.normalizer = normalizers.Sequence(norms)
        tk.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                        decoders.Fuse()] +
                                       ([decoders.Strip(" ", 1, 0)] if space is True else []))
        add_bos_default = True
    else:
        raise FormatError(f"{source}: tokenizer model {model!r} is not supported "
                          f"(expected 'gpt2' or 'llama')")
    special = [AddedToken(tokens[i], special=True, normalized=False)
               for i in range(n) if types[i] == TT_CONTROL and vocab[tokens[i]] == i]
    user = [AddedToken(tokens[i], special=False, normalized=False)
            for i in range(n) if types[i] == TT_USER_DEFINED and vocab[tokens[i]] == i]
    if special:
        tk.add_special_tokens(special)
    if user:
        tk.add_tokens(user)
    bos = _meta_id(meta, "tokenizer.ggml.bos_token_id", source, n)
    eos = _meta_id(meta, "tokenizer.ggml.eos_token_id", source, n)
    eot = _meta_id(meta, "tokenizer.ggml.eot_token_id", source, n)
    eos_ids = [e for e in dict.fromkeys((eos, eot)) if e is not None]
    add_bos = meta.get("tokenizer.ggml.add_bos_token", add_bos_default)
    if not isinstance(add_bos, bool):
        raise FormatError(f"{source}: tokenizer.ggml.add_bos_token must be a bool, got {add_bos!r}")
    return tk, bos, eos_ids, bool(add_bos and bos is not None)


# ================================================================================ writing

WEIGHT_FORMATS = ("tq2_0", "tq1_0", "i2_s")
# also writable, for bitnet.cpp's LUT kernels (tiling = formats.tl1/tl2.default_params; the
# file runs in bitnet.cpp only when its kernels were generated for these shapes and tilings)
EXTRA_WEIGHT_FORMATS = ("tl1", "tl2")


def gguf_arch_of(cfg) -> str:
    """The GGUF architecture name a Config is written as."""
    if cfg.sub_norms and cfg.hidden_act == "silu":
        return "bitnet"                  # mainline llama.cpp's bitnet graph (1bitLLM form)
    if cfg.sub_norms and cfg.hidden_act == "relu2":
        return "bitnet-b1.58"            # bitnet.cpp's fork only (build_bitnet_158)
    if not cfg.sub_norms and cfg.hidden_act == "silu":
        return "llama"                   # Falcon3-1.58bit: plain llama graph
    raise FormatError(f"no GGUF architecture runs a {cfg.hidden_act} model without sub-norms")


def _to_format(p, fmt: str, name: str):
    """Packed -> Packed in ``fmt`` for writing (TQ block scales are kept when already TQ)."""
    if p.fmt == fmt and (fmt not in EXTRA_WEIGHT_FORMATS or
                         dict(p.params) == formats.module(fmt).default_params(*p.shape)):
        return p              # the reader assumes default TL tilings: repack any other
    codes, scale = formats.unpack_codes(p)
    s = np.asarray(scale, dtype=np.float32)
    if fmt in ("tq1_0", "tq2_0"):
        rows, cols = p.shape
        if cols % 256:
            raise FormatError(f"{name}: row length {cols} is not a multiple of 256, which "
                              f"{fmt.upper()} needs (write i2_s, or pick another model)")
        if s.size > 1:                       # TQ -> other TQ: the same fp16 block scales
            w = (codes.reshape(rows, -1, 256).astype(np.float32) * s[:, :, None]).reshape(rows, cols)
            return formats.encode(fmt, w)
        return formats.pack_codes(fmt, codes, np.float32(s.reshape(-1)[0]))
    single = tensor_scale(codes, s)
    if single is None:
        raise FormatError(f"{name}: the {p.fmt} weight has differing block scales; {fmt} holds "
                          f"one scale per tensor, so it cannot be written losslessly")
    if fmt in EXTRA_WEIGHT_FORMATS:
        try:
            return formats.pack_codes(fmt, codes, single)
        except FormatError as e:
            raise FormatError(f"{name}: {e}") from None
    if p.shape[1] % 128:
        raise FormatError(f"{name}: row length {p.shape[1]} is not a multiple of 128, which "
                          f"I2_S needs")
    return formats.pack_codes("i2_s", codes, single)


def _f16(a, dtype: str, name: str, chunk: int = 16384) -> np.ndarray:
    """A [rows, cols] F32/F16/BF16(uint16) matrix as float16, converted chunk by chunk so a
    large embedding is never held in float32 all at once."""
    a = np.asarray(a)
    if dtype == "F16":
        return np.ascontiguousarray(a, dtype=np.float16)
    out = np.empty(a.shape, dtype=np.float16)
    for s in range(0, a.shape[0], chunk):
        r = a[s:s + chunk]
        x = (r.astype(np.uint32) << 16).view(np.float32) if dtype == "BF16" else r.astype(np.float32)
        big = np.abs(x).max(initial=0)
        if not big <= 65504:
            raise FormatError(f"{name}: a value of magnitude {float(big)} does not fit F16")
        out[s:s + chunk] = x
    return out


class _Writer:
    """gguf.GGUFWriter that also writes empty arrays (a byte tokenizer has no merges, and
    llama.cpp requires the tokenizer.ggml.merges key to exist)."""

    @staticmethod
    def make(path, arch):
        gguf = _gguf()

        class W(gguf.GGUFWriter):
            def _pack_val(self, val, vtype, add_vtype, sub_type=None):
                if vtype == gguf.GGUFValueType.ARRAY and len(val) == 0 and sub_type is not None:
                    out = bytearray()
                    if add_vtype:
                        out += self._pack("I", vtype)
                    out += self._pack("I", sub_type) + self._pack("Q", 0)
                    return bytes(out)
                return super()._pack_val(val, vtype, add_vtype, sub_type)

        return W(path, arch)


def _tokenizer_meta(model) -> dict:
    """tokenizer.ggml.* values for the model's tokenizer (the model's tokenizer.json as
    ``tokenizers`` holds it), the way llama.cpp's converters write them:

    byte-level BPE (ByteLevel pre-tokenizer)      -> model "gpt2": tokens, token types, merges,
                                                     pre ("gpt-2", "llama-bpe", else "default")
    SentencePiece-style BPE (byte_fallback, "▁")  -> model "llama": tokens, token types, scores
                                                     (a merge result scores -its merge rank, so
                                                     llama.cpp's score-ranked bigrams merge in
                                                     the tokenizer.json's order), add_space_prefix
    Ids missing from the tokenizer up to the embedding's rows become "[PAD{i}]" UNUSED tokens,
    as llama.cpp's converter pads them (llama.cpp needs one token per embedding row).
    """
    import json
    import re

    tok = model.tokenizer
    if tok is None:
        raise FormatError("the model has no tokenizer; llama.cpp needs tokenizer.ggml.* "
                          "metadata to load a GGUF file")
    tk = tok._tk
    spec = json.loads(tk.to_str())
    m = spec.get("model") or {}
    if m.get("type") != "BPE":
        raise FormatError(f"tokenizer model {m.get('type')!r}: only BPE tokenizers can be "
                          f"written to GGUF")
    pre = _pre_name(spec.get("pre_tokenizer"))
    spm_space = _spm_space(spec)
    if pre is None and spm_space is None:
        raise FormatError("only byte-level BPE tokenizers (GGUF model 'gpt2') and "
                          "SentencePiece-style BPE tokenizers (byte_fallback, '\u2581' for "
                          "spaces; GGUF model 'llama') can be written to GGUF")
    vocab = tk.get_vocab(with_added_tokens=False)
    added = tk.get_added_tokens_decoder()                     # {id: AddedToken}
    n = max(model.config.vocab_size, max(list(vocab.values()) + list(added) + [-1]) + 1)
    tokens = [None] * n
    types = [TT_UNUSED] * n
    byte_re = re.compile(r"<0x[0-9A-F]{2}>")
    for t, i in vocab.items():
        tokens[i], types[i] = t, TT_NORMAL
        if pre is None and byte_re.fullmatch(t):
            types[i] = TT_BYTE
    if pre is None and m.get("unk_token") in vocab:
        types[vocab[m["unk_token"]]] = TT_UNKNOWN
    for i, at in added.items():
        tokens[i] = at.content
        types[i] = TT_CONTROL if at.special else TT_USER_DEFINED
    for i in range(n):
        if tokens[i] is None:                 # as llama.cpp's converter pads: [PAD{i}] UNUSED
            tokens[i] = f"[PAD{i}]"
    pairs = [tuple(mg.split(" ", 1)) if isinstance(mg, str) else tuple(mg)
             for mg in m.get("merges") or []]
    out = dict(tokens=tokens, types=types, bos=tok.bos_id)
    if pre is not None:
        out.update(model="gpt2", pre=pre, merges=[f"{a} {b}" for a, b in pairs])
    else:
        rank: dict = {}
        for r, (a, b) in enumerate(pairs):
            rank.setdefault(a + b, r)
        scores = [0.0] * n
        for i, t in enumerate(tokens):
            if types[i] == TT_NORMAL and len(t) > 1 and not byte_re.fullmatch(t):
                scores[i] = -float(rank.get(t, 1e9))
        out.update(model="llama", scores=scores, add_space_prefix=spm_space)
    probe = tok.encode("a", bos=True)
    out["add_bos"] = bool(tok.bos_id is not None and probe and probe[0] == tok.bos_id)
    eos = next((e for e in model.config.eos_token_ids), None)
    if eos is None and tok.eos_ids:
        eos = tok.eos_ids[0]
    out["eos"] = eos
    out["eot"] = tk.token_to_id("<|eot_id|>")
    return out


def _spm_space(spec: dict) -> bool | None:
    """For a SentencePiece-style BPE tokenizer.json (byte_fallback, spaces as "▁"): whether a
    "▁" is prepended (llama.cpp's add_space_prefix); None for any other tokenizer."""
    m = spec.get("model") or {}
    if not m.get("byte_fallback"):
        return None
    norm = spec.get("normalizer") or {}
    items = norm.get("normalizers", [norm]) if norm.get("type") == "Sequence" else [norm]
    repl = any(n.get("type") == "Replace" and (n.get("pattern") or {}).get("String") == " "
               and n.get("content") == "\u2581" for n in items)
    prepend = any(n.get("type") == "Prepend" and n.get("prepend") == "\u2581" for n in items)
    ms = spec.get("pre_tokenizer") or {}
    if ms.get("type") == "Metaspace" and ms.get("replacement") == "\u2581":
        return ms.get("prepend_scheme", "always") != "never"
    return prepend if repl else None


def _pre_name(pre) -> str | None:
    """llama.cpp's tokenizer.ggml.pre name for a tokenizer.json pre_tokenizer, or None when it
    is not byte-level; "default" (with a warning) for byte-level splits llama.cpp does not name."""
    if not isinstance(pre, dict):
        return None
    if pre.get("type") == "ByteLevel":
        return "gpt-2" if pre.get("use_regex", True) else "default"
    if pre.get("type") == "Sequence":
        items = pre.get("pretokenizers") or []
        if not items or items[-1].get("type") != "ByteLevel":
            return None
        splits = [p for p in items[:-1] if p.get("type") == "Split"]
        if len(splits) == 1 and len(items) == 2 and not items[-1].get("use_regex", True):
            pat = (splits[0].get("pattern") or {}).get("Regex")
            if pat == LLAMA3_REGEX:
                return "llama-bpe"
        warnings.warn("the tokenizer's pre-tokenizer has no llama.cpp name; writing 'default' "
                      "(llama.cpp will split text differently)", stacklevel=3)
        return "default"
    return None


def save_gguf(model, path, weight_format: str = "tq2_0", progress: bool = True,
              model_name: str | None = None) -> str:
    """Write ``model`` as a GGUF file llama.cpp (TQ) or bitnet.cpp (I2_S) runs; returns path.

    weight_format "tq2_0" | "tq1_0" | "i2_s".  Lossless for the ternary codes; the scale is
    kept in float32 by I2_S and rounded to fp16 per 256-block by TQ (as llama.cpp's converter
    does).  Embedding and output are written F16 (as both converters do).
    """
    gguf = _gguf()
    if weight_format not in WEIGHT_FORMATS + EXTRA_WEIGHT_FORMATS:
        raise FormatError(f"weight_format must be one of "
                          f"{', '.join(WEIGHT_FORMATS + EXTRA_WEIGHT_FORMATS)}, got {weight_format!r}")
    cfg = model.config
    t = model.transformer
    arch = gguf_arch_of(cfg)
    if arch == "bitnet" and t.lm_head is not None:
        raise FormatError("llama.cpp's 'bitnet' graph has no output tensor (logits come from "
                          "token_embd); this model has an untied lm_head")
    tm = _tokenizer_meta(model)
    path = os.fspath(path)
    w = _Writer.make(path, arch)
    K = gguf.Keys
    a = lambda s: s.format(arch=arch)                              # noqa: E731
    w.add_name(model_name or os.path.splitext(os.path.basename(path))[0])
    # bitnet.cpp's converter writes its ftype = the GGML type id for TL1/TL2 (38/39)
    w.add_uint32(K.General.FILE_TYPE, {"tq1_0": FTYPE_TQ1_0, "tq2_0": FTYPE_TQ2_0,
                                       "i2_s": FTYPE_I2_S, "tl1": TL1, "tl2": TL2}[weight_format])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_uint32(a(K.LLM.VOCAB_SIZE), cfg.vocab_size)
    w.add_uint32(a(K.LLM.CONTEXT_LENGTH), cfg.max_position)
    w.add_uint32(a(K.LLM.EMBEDDING_LENGTH), cfg.hidden_size)
    w.add_uint32(a(K.LLM.BLOCK_COUNT), cfg.num_layers)
    w.add_uint32(a(K.LLM.FEED_FORWARD_LENGTH), cfg.intermediate_size)
    w.add_uint32(a(K.Attention.HEAD_COUNT), cfg.num_heads)
    w.add_uint32(a(K.Attention.HEAD_COUNT_KV), cfg.num_kv_heads)
    if cfg.head_dim * cfg.num_heads != cfg.hidden_size:
        w.add_uint32(a(K.Attention.KEY_LENGTH), cfg.head_dim)
        w.add_uint32(a(K.Attention.VALUE_LENGTH), cfg.head_dim)
    w.add_uint32(a(K.Rope.DIMENSION_COUNT), cfg.head_dim)
    w.add_float32(a(K.Rope.FREQ_BASE), float(cfg.rope_theta))
    w.add_float32(a(K.Attention.LAYERNORM_RMS_EPS), float(cfg.rms_norm_eps))
    # tokenizer (gguf-py Keys.Tokenizer; llama.cpp src/llama-vocab.cpp llama_vocab::load)
    w.add_tokenizer_model(tm["model"])
    w.add_token_list(tm["tokens"])
    w.add_token_types(tm["types"])
    if tm["model"] == "gpt2":
        w.add_tokenizer_pre(tm["pre"])
        # llama.cpp refuses a "gpt2" vocab without this key, even when there are no merges
        w.add_key_value(K.Tokenizer.MERGES, tm["merges"], gguf.GGUFValueType.ARRAY,
                        sub_type=gguf.GGUFValueType.STRING)
    else:
        w.add_token_scores(tm["scores"])
        w.add_add_space_prefix(bool(tm["add_space_prefix"]))
    if tm["bos"] is not None:
        w.add_bos_token_id(int(tm["bos"]))
    if tm["eos"] is not None:
        w.add_eos_token_id(int(tm["eos"]))
    if tm["eot"] is not None:
        w.add_eot_token_id(int(tm["eot"]))
    w.add_add_bos_token(tm["add_bos"])
    if model.chat_template:
        w.add_chat_template(model.chat_template)

    # tensors: token_embd, output_norm, output, then blk.N.* (order is free for llama.cpp)
    w.add_tensor("token_embd.weight", _f16(t.embed, t.embed_dtype, "token_embd"))
    w.add_tensor("output_norm.weight", np.ascontiguousarray(t.final_norm, np.float32))
    if t.lm_head is not None:
        w.add_tensor("output.weight", _f16(t.lm_head, t.lm_head_dtype, "output"))
    jobs = [(i, g) for i in range(cfg.num_layers) for g in PROJ]
    bar = _bar(len(jobs), progress, f"packing {weight_format}")
    for i, L in enumerate(t.layers):
        pre = f"blk.{i}."
        w.add_tensor(pre + "attn_norm.weight", np.ascontiguousarray(L.attn_norm, np.float32))
        w.add_tensor(pre + "ffn_norm.weight", np.ascontiguousarray(L.ffn_norm, np.float32))
        if cfg.sub_norms:
            w.add_tensor(pre + "attn_sub_norm.weight", np.ascontiguousarray(L.attn_sub_norm, np.float32))
            w.add_tensor(pre + "ffn_sub_norm.weight", np.ascontiguousarray(L.ffn_sub_norm, np.float32))
        for gname, field in PROJ.items():
            name = pre + gname + ".weight"
            lin = getattr(L, field)     # a TriLM weight with shard scales gives its TQ form
            p = lin.gguf_packed() if hasattr(lin, "gguf_packed") else lin.packed
            if arch == "llama" and gname in ("attn_q", "attn_k"):
                nh = cfg.num_heads if gname == "attn_q" else cfg.num_kv_heads
                p = _permute_packed(p, _perm(p.shape[0], nh, inverse=False))
            q = _to_format(p, weight_format, name)
            rows, cols = q.shape
            if weight_format == "i2_s":
                # bitnet.cpp's converter: add_tensor(name, bytes, raw_shape=(M, K), raw_dtype=I2_S);
                # a non-uint8 dtype keeps gguf-py from converting the byte shape with a block size
                # it does not have for id 36.
                w.add_tensor(name, np.asarray(q.data).reshape(-1).view(np.int8),
                             raw_shape=(rows, cols), raw_dtype=I2_S)
            elif weight_format in EXTRA_WEIGHT_FORMATS:
                # bitnet.cpp's converter: the TL bytes, then a separate F32 "<name>_scale"
                w.add_tensor(name, np.asarray(q.data).reshape(-1).view(np.int8),
                             raw_shape=(rows, cols), raw_dtype=TL1 if weight_format == "tl1" else TL2)
                w.add_tensor(name + "_scale", np.asarray(q.scale, np.float32).reshape(1))
            else:
                w.add_tensor(name, np.ascontiguousarray(q.data),
                             raw_dtype=getattr(gguf.GGMLQuantizationType, weight_format.upper()))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=progress and _has_tqdm())
    w.close()
    return path


def _has_tqdm() -> bool:
    import importlib.util
    return importlib.util.find_spec("tqdm") is not None


def _bar(total: int, progress: bool, desc: str):
    if not progress or not _has_tqdm():
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="tensor")


# ================================================================================ CLI

def main_convert(argv) -> int:
    """``minibit convert SRC DST --to tq2_0|tq1_0|i2_s [--model-name NAME] [--no-progress]``."""
    from .. import load

    ap = Parser(
        prog="minibit convert",
        description="Write a model as a GGUF file: TQ1_0/TQ2_0 for llama.cpp, I2_S for bitnet.cpp.")
    ap.add_argument("src", help="'demo', a HF snapshot directory, a .gguf file or a cached repo id")
    ap.add_argument("dst", help="the .gguf file to write")
    ap.add_argument("--to", dest="fmt", choices=WEIGHT_FORMATS, default="tq2_0",
                    help="ternary weight type (default tq2_0)")
    ap.add_argument("--model-name", default=None, help="general.name (default: DST's file name)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    model = load(args.src)
    save_gguf(model, args.dst, weight_format=args.fmt, progress=not args.no_progress,
              model_name=args.model_name)
    print(f"wrote {args.dst} ({os.path.getsize(args.dst)} bytes, {gguf_arch_of(model.config)}, "
          f"{args.fmt})", file=sys.stderr)
    return 0


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
        # (fuzz fix: only an ARRAY has a len(); a damaged file may hold a scalar under a
        # _BIG_ARRAYS key, which used to raise TypeError here)
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
