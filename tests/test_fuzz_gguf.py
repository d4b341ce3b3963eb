"""Damaged and hostile GGUF files: every case ends in a clean FormatError or a correct load.

Small valid files are written with ``minibit.save_gguf`` from a tiny synthetic checkpoint
(hidden 256, one layer) in every weight format, then damaged in ways that follow the file's
structure: truncation, bit flips in the header / metadata / tensor-info region, lying counts
(n_tensors, n_kv, array counts) and string lengths (any u64 up to 2**64 - 1), retyped and
dropped metadata, huge n_dims and dimensions, unknown type ids, tensor offsets past the end
or off the alignment, and bad ``general.alignment`` values.

A case passes when it raises ``minibit.FormatError`` (while loading, or from the forward
pass's own check for non-finite activations, which absurd but finite weights can cause), or
when the file loads and the model computes: ``logits`` on 3 ids has the right shape and
finite values.  Anything else (another
exception type, a MemoryError, a hang, non-finite logits) fails, and so does a case whose
Python allocations (tracemalloc peak, NumPy's buffers included) exceed ``MAX_ALLOC``: a
lying size field must never turn into a giant allocation.  A case running longer than
``HANG_SECONDS`` is stopped by SIGALRM and fails as a hang.

The case counts are fixed (not the hypothesis profile's default) so the normal suite always
runs them: ``FUZZ_CASES`` + ``RETYPE_CASES`` + ``ALIGN_CASES``.
"""

import signal
import struct
import tracemalloc
import warnings
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import minibit
from minibit.io.synthetic import write_checkpoint

gguf_mod = pytest.importorskip("gguf")
from minibit.io.gguf import GGUFFile, inspect_lines  # noqa: E402

FUZZ_CASES = 1000       # structural damage (test_structural_damage)
RETYPE_CASES = 300      # a metadata value replaced by another type / value (test_metadata_retyped)
ALIGN_CASES = 100       # general.alignment inserted with any type and value (test_alignment)
MAX_ALLOC = 64 << 20    # bytes one case may allocate (peak, tracemalloc)
HANG_SECONDS = 20

FORMATS = ("tq2_0", "tq1_0", "i2_s", "tl1", "tl2")
IDS = (256, 1, 2)


def _fuzz(n):
    return settings(max_examples=n, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


class Blob(bytes):
    """File bytes with a short repr, so a failing hypothesis case prints readably."""

    def __repr__(self):
        return f"<{len(self)} bytes>"


# ================================================================== the layout of a valid file

_SCALAR_SIZE = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


class Layout:
    """Byte positions of every field of a *valid* GGUF file (an independent walker, so the
    mutations do not depend on the parser under test).

    kvs     [{key, start, end, vtype_pos, strlens: [pos], count_pos, etype_pos}]
    tinfos  [{name, start, end, strlen, ndims_pos, ne_pos: [pos], type_pos, offset_pos}]
    meta_end (end of the tensor infos), data_start, alignment
    """

    def __init__(self, data: bytes):
        self.data = data
        pos = 24
        n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
        self.kvs, self.tinfos = [], []

        def string(p):
            n = struct.unpack_from("<Q", data, p)[0]
            return data[p + 8:p + 8 + n].decode(), p + 8 + n

        for _ in range(n_kv):
            kv = {"start": pos, "strlens": [pos], "count_pos": None, "etype_pos": None}
            kv["key"], pos = string(pos)
            kv["vtype_pos"] = pos
            vtype = struct.unpack_from("<I", data, pos)[0]
            pos += 4
            if vtype == 8:
                kv["strlens"].append(pos)
                _, pos = string(pos)
            elif vtype == 9:
                kv["etype_pos"], kv["count_pos"] = pos, pos + 4
                etype, count = struct.unpack_from("<IQ", data, pos)
                pos += 12
                if etype == 8:
                    for _ in range(count):
                        kv["strlens"].append(pos)
                        _, pos = string(pos)
                else:
                    pos += count * _SCALAR_SIZE[etype]
            else:
                pos += _SCALAR_SIZE[vtype]
            kv["end"] = pos
            self.kvs.append(kv)
        for _ in range(n_tensors):
            t = {"start": pos, "strlen": pos}
            t["name"], pos = string(pos)
            t["ndims_pos"] = pos
            nd = struct.unpack_from("<I", data, pos)[0]
            t["ne_pos"] = [pos + 4 + 8 * d for d in range(nd)]
            pos += 4 + 8 * nd
            t["type_pos"], t["offset_pos"] = pos, pos + 4
            pos += 12
            t["end"] = pos
            self.tinfos.append(t)
        self.meta_end = pos
        self.alignment = 32
        self.data_start = -(-pos // 32) * 32
        self.strlens = [p for kv in self.kvs for p in kv["strlens"]] + \
                       [t["strlen"] for t in self.tinfos]
        self.counts = [kv["count_pos"] for kv in self.kvs if kv["count_pos"] is not None]
        self.vtypes = [kv["vtype_pos"] for kv in self.kvs] + \
                      [kv["etype_pos"] for kv in self.kvs if kv["etype_pos"] is not None]

    def __repr__(self):
        return f"<Layout: {len(self.kvs)} kv, {len(self.tinfos)} tensors>"

    def rebuild(self, kvs: list, tinfos: list | None = None, align: int = 32,
                n_tensors: int | None = None) -> bytes:
        """A file with these KV byte strings and tensor infos, the data section placed at the
        next multiple of ``align`` (tensor offsets are relative, so they stay valid)."""
        tinfos = [self.data[t["start"]:t["end"]] for t in self.tinfos] if tinfos is None else tinfos
        head = self.data[:8] + struct.pack("<QQ", len(tinfos) if n_tensors is None else n_tensors,
                                           len(kvs))
        meta = head + b"".join(kvs) + b"".join(tinfos)
        pad = -len(meta) % align
        return meta + b"\0" * pad + self.data[self.data_start:]

    def kv_bytes(self):
        return [self.data[kv["start"]:kv["end"]] for kv in self.kvs]


def _gstr(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


# =========================================================================== fixtures

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """{fmt: (Blob, Layout)} of small valid files in every weight format."""
    d = tmp_path_factory.mktemp("fzg")
    ck = write_checkpoint(str(d / "ck"), hidden=256, heads=2, kv_heads=1, intermediate=256,
                          layers=1, vocab=260, seed=3)
    m = minibit.load(ck)
    out = {}
    for fmt in FORMATS:
        p = str(d / f"{fmt}.gguf")
        minibit.save_gguf(m, p, fmt, progress=False)
        data = Blob(open(p, "rb").read())
        lay = Layout(data)
        assert lay.data_start == GGUFFile(p).data_offset       # the walker agrees with the parser
        out[fmt] = (data, lay)
    return out


@pytest.fixture(scope="module", autouse=True)
def _trace_allocations():
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    yield
    if started:
        tracemalloc.stop()


class Hang(Exception):
    pass


@contextmanager
def _alarm(seconds):
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def fire(signum, frame):
        raise Hang(f"a case ran longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _outcome(path) -> str:
    """"error" (a FormatError) or "load" (the file parsed, loaded and computed); anything else
    raises.  Also runs the parser alone and ``minibit inspect``'s listing."""
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        with _alarm(HANG_SECONDS), warnings.catch_warnings():
            warnings.simplefilter("ignore")         # "loaded without a tokenizer" is fine
            try:
                GGUFFile(path).close()
                inspect_lines(path)
                m = minibit.load(path)
            except minibit.FormatError:
                return "error"
            V = m.config.vocab_size
            ids = [i % V for i in IDS]
            try:
                out = m.logits(ids)
            except minibit.FormatError:         # the forward's own check: "non-finite
                return "error"                  # activation" (absurd but finite weights)
            assert out.shape == (3, V), out.shape
            assert np.isfinite(out).all(), "a file that loads must compute finite logits"
            return "load"
    finally:
        peak = tracemalloc.get_traced_memory()[1] - base
        assert peak <= MAX_ALLOC, f"one case allocated {peak / 2 ** 20:.0f} MiB"


def _write(tmp_path_factory, data: bytes) -> str:
    path = str(tmp_path_factory.getbasetemp() / "fuzz.gguf")
    with open(path, "wb") as f:
        f.write(data)
    return path


# =========================================================================== mutations

# u64 values a lying field is set to: edges, powers of two, and (rel=True) the true value +-32
U64_EDGES = [0, 1, 2, 3, 4, 5, 7, 8, 13, 31, 32, 33, 255, 256, 4096, 2 ** 31 - 1, 2 ** 31,
             2 ** 32 - 1, 2 ** 32, 2 ** 48, 2 ** 62, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 2, 2 ** 64 - 1]
values = st.one_of(st.sampled_from(U64_EDGES), st.integers(0, 2 ** 64 - 1))

KINDS = ["truncate", "flip", "byte", "version", "n_tensors", "n_kv", "strlen", "arrcount",
         "vtype", "n_dims", "dim", "ttype", "offset", "drop_kv", "drop_tensor"]


def _put(b: bytearray, pos: int, fmt: str, v: int, rel: bool, delta: int) -> None:
    bits = 8 * struct.calcsize(fmt)
    if rel:
        v = struct.unpack_from(fmt, b, pos)[0] + delta
    struct.pack_into(fmt, b, pos, v % (1 << bits))


def _mutate(data: bytes, lay: Layout, kind: str, pos: int, val: int, rel: bool, delta: int) -> bytes:
    b = bytearray(data)
    pick = lambda seq: seq[pos % len(seq)]                           # noqa: E731
    if kind == "truncate":                      # mostly inside the metadata, sometimes anywhere
        end = len(b) if val % 4 == 0 else lay.data_start + 64
        return bytes(b[:pos % (end + 1)])
    if kind == "flip":
        b[pos % lay.meta_end] ^= 1 << (val % 8)
    elif kind == "byte":
        b[pos % lay.meta_end] = val & 0xFF
    elif kind == "version":
        _put(b, 4, "<I", val, rel, delta)
    elif kind == "n_tensors":
        _put(b, 8, "<Q", val, rel, delta)
    elif kind == "n_kv":
        _put(b, 16, "<Q", val, rel, delta)
    elif kind == "strlen":
        _put(b, pick(lay.strlens), "<Q", val, rel, delta)
    elif kind == "arrcount":
        _put(b, pick(lay.counts), "<Q", val, rel, delta)
    elif kind == "vtype":                       # mostly the ids around the real ones
        _put(b, pick(lay.vtypes), "<I", val % 16 if val % 3 else val, rel, delta)
    elif kind == "n_dims":
        _put(b, pick(lay.tinfos)["ndims_pos"], "<I", val % 8 if val % 3 else val, rel, delta)
    elif kind == "dim":
        _put(b, pick([p for t in lay.tinfos for p in t["ne_pos"]]), "<Q", val, rel, delta)
    elif kind == "ttype":                       # mostly the known GGML ids (0..41) and bitnet.cpp's
        _put(b, pick(lay.tinfos)["type_pos"], "<I", val % 42 if val % 3 else val, rel, delta)
    elif kind == "offset":                      # rel: off the alignment; else anywhere, past EOF
        _put(b, pick(lay.tinfos)["offset_pos"], "<Q", val, rel, delta)
    elif kind == "drop_kv":
        kvs = lay.kv_bytes()
        del kvs[pos % len(kvs)]
        return lay.rebuild(kvs)
    elif kind == "drop_tensor":
        ts = [data[t["start"]:t["end"]] for t in lay.tinfos]
        del ts[pos % len(ts)]
        return lay.rebuild(lay.kv_bytes(), ts)
    else:
        raise AssertionError(kind)
    return bytes(b)


@_fuzz(FUZZ_CASES)
@given(fmt=st.sampled_from(FORMATS), kind=st.sampled_from(KINDS), pos=st.integers(0, 2 ** 20),
       val=values, rel=st.booleans(), delta=st.integers(-32, 32))
def test_structural_damage(tmp_path_factory, files, fmt, kind, pos, val, rel, delta):
    data, lay = files[fmt]
    _outcome(_write(tmp_path_factory, _mutate(data, lay, kind, pos, val, rel, delta)))


# a metadata value replaced by a value of another (or the same) type: (vtype, payload)
def _arr(etype, payload, count):
    return struct.pack("<IIQ", 9, etype, count) + payload


NEW_VALUES = [
    struct.pack("<IB", 0, 255), struct.pack("<Ib", 1, -1), struct.pack("<IH", 2, 0),
    struct.pack("<Ih", 3, -32768), struct.pack("<II", 4, 0), struct.pack("<II", 4, 1),
    struct.pack("<II", 4, 2 ** 32 - 1), struct.pack("<Ii", 5, -1), struct.pack("<Ii", 5, 2 ** 31 - 1),
    struct.pack("<If", 6, float("nan")), struct.pack("<If", 6, float("inf")),
    struct.pack("<If", 6, 0.0), struct.pack("<If", 6, -1.0), struct.pack("<If", 6, 1e-30),
    struct.pack("<IB", 7, 1), struct.pack("<IB", 7, 2), struct.pack("<IQ", 10, 2 ** 64 - 1),
    struct.pack("<Iq", 11, -2 ** 63), struct.pack("<Id", 12, 1e308), struct.pack("<Id", 12, -0.0),
    struct.pack("<I", 8) + _gstr(b""), struct.pack("<I", 8) + _gstr(b"llama"),
    struct.pack("<I", 8) + _gstr(b"gpt2"), struct.pack("<I", 8) + _gstr("\u2581x".encode()),
    struct.pack("<I", 8) + _gstr(b"\xff\xfe"), struct.pack("<I", 8) + _gstr(b"x" * 300),
    _arr(4, b"", 0), _arr(8, b"", 0), _arr(0, b"\x01\x02\x03", 3), _arr(7, b"\x00\x01", 2),
    _arr(5, struct.pack("<3i", -1, 0, 2 ** 31 - 1), 3), _arr(6, struct.pack("<2f", np.nan, 1), 2),
    _arr(8, _gstr(b"a") + _gstr(b"a b"), 2), _arr(8, _gstr(b"") * 4, 4),
    _arr(10, struct.pack("<Q", 2 ** 64 - 1), 1), _arr(12, struct.pack("<d", 1.5), 1),
    _arr(9, b"", 0), struct.pack("<I", 13), struct.pack("<I", 2 ** 32 - 1),
]


@_fuzz(RETYPE_CASES)
@given(fmt=st.sampled_from(FORMATS), which=st.integers(0, 1000),
       new=st.integers(0, len(NEW_VALUES) - 1))
def test_metadata_retyped(tmp_path_factory, files, fmt, which, new):
    data, lay = files[fmt]
    kvs = lay.kv_bytes()
    kv = lay.kvs[which % len(kvs)]
    kvs[which % len(kvs)] = data[kv["start"]:kv["vtype_pos"]] + NEW_VALUES[new]
    _outcome(_write(tmp_path_factory, lay.rebuild(kvs)))


ALIGN_TYPES = [4, 4, 4, 4, 5, 10, 0, 8]         # mostly UINT32 (the only valid type)


@_fuzz(ALIGN_CASES)
@given(fmt=st.sampled_from(FORMATS), vtype=st.sampled_from(ALIGN_TYPES),
       align=st.one_of(st.sampled_from([0, 1, 2, 3, 4, 8, 16, 24, 32, 48, 64, 128, 4096, 2 ** 16,
                                        2 ** 31, 2 ** 32 - 1]), st.integers(0, 2 ** 32 - 1)))
def test_alignment(tmp_path_factory, files, fmt, vtype, align):
    data, lay = files[fmt]
    key = _gstr(b"general.alignment")
    if vtype == 8:
        value = _gstr(str(align).encode())
    else:
        fmt_, bits = {0: ("<B", 8), 4: ("<I", 32), 5: ("<i", 32), 10: ("<Q", 64)}[vtype]
        v = align % (1 << bits)
        if fmt_ == "<i" and v >= 1 << 31:
            v -= 1 << 32
        value = struct.pack(fmt_, v)
    kvs = lay.kv_bytes() + [key + struct.pack("<I", vtype) + value]
    # place the data where a reader honouring a sane alignment expects it
    sane = vtype == 4 and 0 < align <= 2 ** 20 and not align & (align - 1)
    got = _outcome(_write(tmp_path_factory, lay.rebuild(kvs, align=align if sane else 32)))
    offsets = [struct.unpack_from("<Q", data, t["offset_pos"])[0] for t in lay.tinfos]
    # UINT32, a power of two that every tensor offset is a multiple of: the file is valid;
    # any other type or value (or data not where that alignment puts it) is an error
    assert got == ("load" if sane and all(o % align == 0 for o in offsets) else "error")


def test_valid_files_load(tmp_path_factory, files):
    """The undamaged files load and compute (so an "error" above really is the damage)."""
    for fmt, (data, _) in files.items():
        assert _outcome(_write(tmp_path_factory, data)) == "load", fmt


def test_lying_sizes_allocate_nothing_big(tmp_path_factory, files):
    """The largest claims at every count and length: all FormatError, no big allocation."""
    data, lay = files["i2_s"]
    spots = [(8, "<Q"), (16, "<Q")] + [(p, "<Q") for p in lay.strlens[:50] + lay.counts] + \
            [(p, "<Q") for t in lay.tinfos for p in t["ne_pos"]]
    for p, fmt in spots:
        for v in (2 ** 64 - 1, 2 ** 63, 2 ** 62, 2 ** 40, 2 ** 32 + 1):
            b = bytearray(data)
            struct.pack_into(fmt, b, p, v)
            assert _outcome(_write(tmp_path_factory, bytes(b))) == "error", (p, v)
