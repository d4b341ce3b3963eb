"""hf_packed, i2_s, tq1_0, tq2_0: known bytes, peer oracles, twins equal to references.

TL1/TL2 have their own file (test_tl.py): their tiling needs shape-specific parameters.
"""

import struct

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st
from hypothesis.extra import numpy as hnp

import minibit
from minibit import formats
from conftest import assert_same_bytes, twin_pair

gguf = pytest.importorskip("gguf")   # a [test] dependency: the TQ byte oracle
from gguf import GGMLQuantizationType as QT  # noqa: E402

special = st.sampled_from([0.0, 0.5, -0.5, 1.0, -1.0, 0.25, -0.75, 1.5, -3.0, 1e-3])
floats = st.floats(-8, 8, width=32, allow_nan=False, allow_infinity=False)
values = st.one_of(special, floats)


def matrices(rows=(1, 9), cols_unit=1, cols=(1, 3), elements=values):
    return st.tuples(st.integers(*rows), st.integers(*cols)).flatmap(
        lambda s: hnp.arrays(np.float32, (s[0], s[1] * cols_unit), elements=elements))


def ternary(rows=(1, 9), cols_unit=1, cols=(1, 3)):
    return st.tuples(st.integers(*rows), st.integers(*cols)).flatmap(
        lambda s: hnp.arrays(np.int8, (s[0], s[1] * cols_unit), elements=st.integers(-1, 1)))


# ---- hf_packed ---------------------------------------------------------------------------

def test_hf_packed_worked_example():
    w = np.array([1, 0, -1, 1, 0, 0, 1, -1], np.int8)[:, None]     # rows = 8, cols = 1
    p = formats.pack_codes("hf_packed", w, 0.5)
    assert p.data.tolist() == [[0x92], [0x19]]                       # see hf_packed docstring
    codes, scale = formats.unpack_codes(p)
    assert codes.tolist() == w.tolist() and scale == np.float32(0.5)


def test_hf_packed_rows_not_multiple_of_four():
    w = np.array([[1], [-1], [0], [1], [1]], np.int8)                # R = 2; rows 5..7 are pad
    p = formats.pack_codes("hf_packed", w, 1.0)
    # row r -> packed row r % 2, bits 2*(r // 2): rows 0,2,4 -> byte 0; rows 1,3 -> byte 1
    assert p.data[:, 0].tolist() == [2 | 1 << 2 | 2 << 4, 0 | 2 << 2]
    assert formats.unpack_codes(p)[0].tolist() == w.tolist()


def test_hf_packed_matches_transformers_pack_weights():
    torch = pytest.importorskip("torch")
    bitnet = pytest.importorskip("transformers.integrations.bitnet")
    rng = np.random.default_rng(7)
    for rows in (4, 8, 12, 36):
        codes = rng.integers(-1, 2, size=(rows, 24)).astype(np.int8)
        theirs = bitnet.pack_weights(torch.tensor(codes.astype(np.float32))).numpy()
        ours = formats.pack_codes("hf_packed", codes, 1.0).data
        assert_same_bytes(ours, theirs.astype(np.uint8), f"hf_packed rows={rows}")
        back = bitnet.unpack_weights(torch.tensor(ours), dtype=torch.float32).numpy()
        assert np.array_equal(back, codes.astype(np.float32))


def test_hf_packed_weight_scale_semantics():
    from minibit.formats.hf_packed import multiplier_from_weight_scale as m
    assert m(np.array([2.0], np.float32), "autobitlinear") == np.float32(2.0)
    assert m(np.array([4.0], np.float32), "bitlinear") == np.float32(0.25)
    with pytest.raises(minibit.FormatError, match="linear_class"):
        m(np.array([1.0], np.float32), "linear")


def test_hf_packed_code_3_is_rejected():
    p = formats.Packed("hf_packed", (4, 2), np.array([[0x55, 0xC5]], np.uint8), np.ones(1, np.float32))
    with pytest.raises(minibit.FormatError, match="code 3.*row 3, column 1"):
        formats.decode(p)


@given(hnp.arrays(np.uint8, st.integers(0, 300)), st.integers(1, 64))
def test_any_code_3_is_the_field_test(data, chunk):
    """The loaders' fast check equals 'some 2-bit field holds 3', for any chunking."""
    from minibit.formats._packed import any_code_3
    fields = np.stack([(data >> s) & 3 for s in (0, 2, 4, 6)])
    assert any_code_3(data, chunk=chunk) == bool((fields == 3).any())


def test_hf_checkpoint_with_code_3_is_rejected(tmp_path):
    """A packed HF checkpoint with one damaged byte fails to load, naming the tensor."""
    from safetensors.numpy import load_file, save_file
    from minibit.io.synthetic import write_checkpoint
    d = write_checkpoint(str(tmp_path / "m"), hidden=64, intermediate=128, layers=1, vocab=300)
    path = str(tmp_path / "m" / "model.safetensors")
    t = load_file(path)
    t["model.layers.0.mlp.up_proj.weight"][3, 5] = 0xC0               # code 3 in the top field
    save_file(t, path, metadata={"format": "pt"})
    with pytest.raises(minibit.FormatError, match="up_proj.*code 3|code 3.*up_proj"):
        minibit.load(d)


# ---- i2_s ----------------------------------------------------------------------------------
# Layout from bitnet.cpp src/ggml-bitnet-mad.cpp quantize_i2_s (x86, QK_I2_S = 128) and
# utils/convert-hf-to-gguf-bitnet.py quantize_to_i2_s: byte 32b+p = c[p]<<6 | c[32+p]<<4 |
# c[64+p]<<2 | c[96+p], code = w + 1, then float32 scale at n/4 and 28 zero bytes.

def test_i2_s_worked_example():
    codes = np.repeat(np.array([-1, 0, 1, 1], np.int8), 32)[None, :]   # sub-blocks coded 0,1,2,2
    p = formats.pack_codes("i2_s", codes, 0.75)
    assert p.data.size == 128 // 4 + 32
    assert (p.data[:32] == 0x1A).all()
    assert struct.unpack("<f", p.data[32:36].tobytes())[0] == 0.75
    assert not p.data[36:].any()
    back, scale = formats.unpack_codes(p)
    assert back.tolist() == codes.tolist() and scale == np.float32(0.75)


def test_i2_s_blocks_run_over_the_flat_tensor():
    codes = np.zeros((2, 128), np.int8)
    codes[1, 0] = 1            # flat element 128 = block 1, sub-block 0, p = 0 -> byte 32, high bits
    codes[0, 127] = -1         # flat element 127 = block 0, sub-block 3, p = 31 -> byte 31, low bits
    d = formats.pack_codes("i2_s", codes, 1.0).data
    assert d[32] == (2 << 6 | 1 << 4 | 1 << 2 | 1) and d[31] == (1 << 6 | 1 << 4 | 1 << 2 | 0)


def test_i2_s_scale_is_max_abs_of_ternarized_tensor():
    w = np.random.default_rng(1).standard_normal((4, 256)).astype(np.float32)
    codes, scale = minibit.quant.absmean_ternarize(w)
    p = formats.encode("i2_s", w)
    assert struct.unpack("<f", p.data[256:260].tobytes())[0] == scale
    assert np.abs(formats.decode(p)).max() == scale
    z = formats.encode("i2_s", np.zeros((1, 128), np.float32))
    assert struct.unpack("<f", z.data[32:36].tobytes())[0] == 0.0       # llama-quantize's max|W|


def test_i2_s_rejects_bad_shapes_and_sizes():
    with pytest.raises(minibit.FormatError, match="multiple of 128"):
        formats.encode("i2_s", np.ones((2, 100), np.float32))
    p = formats.encode("i2_s", np.ones((1, 128), np.float32))
    with pytest.raises(minibit.FormatError, match="63 data bytes, expected 64"):
        formats.decode(formats.Packed("i2_s", (1, 128), p.data[:-1]))   # a Packed checks itself


# ---- tq2_0 / tq1_0 against gguf-py -------------------------------------------------------

@pytest.mark.parametrize("fmt", ["tq2_0", "tq1_0"])
@given(w=matrices(cols_unit=256))
def test_tq_bytes_equal_gguf(fmt, w):
    qt = QT.TQ2_0 if fmt == "tq2_0" else QT.TQ1_0
    # blocks whose 1/max overflows float32: gguf-py casts NaN there (platform-defined bytes)
    bmax = np.abs(w.reshape(w.shape[0], -1, 256)).max(axis=2)
    assume(not ((bmax > 0) & (bmax < 2.0 ** -127)).any())
    before = w.copy()
    p = formats.encode(fmt, w)
    assert np.array_equal(w, before)
    theirs = gguf.quants.quantize(w, qt)
    assert p.data.tobytes() == theirs.tobytes()
    assert_same_bytes(formats.decode(p), gguf.quants.dequantize(theirs, qt), f"{fmt} decode")


@pytest.mark.parametrize("fmt", ["tq2_0", "tq1_0"])
@given(c=ternary(cols_unit=256), scale=st.sampled_from([0.5, 1.0, 1.7, 0.013]))
def test_tq_pack_codes_is_lossless(fmt, c, scale):
    p = formats.pack_codes(fmt, c, scale)
    codes, d = formats.unpack_codes(p)
    assert codes.tolist() == c.tolist()
    nonzero = np.abs(c.reshape(c.shape[0], -1, 256)).max(axis=2) > 0
    assert (d[nonzero] == np.float32(np.float16(scale))).all() and (d[~nonzero] == 0).all()


def test_tq2_0_worked_example():
    x = np.full((1, 256), -1.0, np.float32)
    x[0, :32] = 1.0
    x[0, 32:64] = 0.0
    p = formats.encode("tq2_0", x)
    assert (p.data[0, :32] == 0x06).all() and (p.data[0, 32:64] == 0).all()
    assert p.data[0, 64:66].tobytes() == np.float16(1.0).tobytes()


def test_tq1_0_worked_example():
    # trits (2, 0, 1, 2, 2) at elements 0, 32, 64, 96, 128 -> qs[0] = 189 (tq1_0 docstring)
    x = np.zeros((1, 256), np.float32)
    x[0, [0, 96, 128]] = 1.0
    x[0, 32] = -1.0
    p = formats.encode("tq1_0", x)
    assert p.data[0, 0] == 189
    assert p.data[0, 1] == (1 * 121 * 256 + 242) // 243          # all zero trits: q = 121


@pytest.mark.parametrize("fmt", ["tq2_0", "tq1_0"])
def test_tq_tiny_block_is_zero(fmt):
    x = np.full((1, 256), 1.12e-43, np.float32)        # 1 / max overflows float32
    codes, d = formats.unpack_codes(formats.encode(fmt, x))
    assert not codes.any() and d[0, 0] == 0


def test_tq_round_half_away_from_zero():
    x = np.zeros((1, 256), np.float32)
    x[0, 0], x[0, 1], x[0, 2] = 1.0, 0.5, -0.5       # x/d = +-0.5: lroundf -> +-1 (np.rint -> 0)
    codes, _ = formats.unpack_codes(formats.encode("tq2_0", x))
    assert codes[0, :3].tolist() == [1, 1, -1]


@pytest.mark.parametrize("fmt", ["tq2_0", "tq1_0"])
def test_tq_rejects(fmt):
    with pytest.raises(minibit.FormatError, match="multiple of 256"):
        formats.encode(fmt, np.ones((1, 128), np.float32))
    with pytest.raises(minibit.FormatError, match="fp16 scale"):
        formats.encode(fmt, np.full((1, 256), 1e5, np.float32))
    with pytest.raises(minibit.FormatError, match="non-finite"):
        formats.encode(fmt, np.full((1, 256), np.inf, np.float32))


# ---- twins == references ---------------------------------------------------------------

@given(c=ternary(rows=(1, 13), cols=(1, 9)))
def test_hf_packed_twin_equal(c):
    ref, fast = twin_pair("hf_packed")
    a = ref.pack(c)
    assert_same_bytes(a, fast.pack(c), "pack")
    assert_same_bytes(ref.unpack(a, c.shape[0]), fast.unpack(a, c.shape[0]), "unpack")


@given(c=ternary(rows=(1, 5), cols_unit=128), scale=st.floats(0, 10, width=32))
def test_i2_s_twin_equal(c, scale):
    ref, fast = twin_pair("i2_s")
    a = ref.pack(c, scale)
    assert_same_bytes(a, fast.pack(c, scale), "pack")
    (c1, s1), (c2, s2) = ref.unpack(a, *c.shape), fast.unpack(a, *c.shape)
    assert_same_bytes(c1, c2, "unpack codes")
    assert_same_bytes(s1, s2, "unpack scale")


@pytest.mark.parametrize("name", ["tq2_0", "tq1_0"])
@given(w=matrices(cols_unit=256))
def test_tq_twin_equal(name, w):
    ref, fast = twin_pair(name)
    a = ref.quantize(w)
    assert_same_bytes(a, fast.quantize(w), "quantize")
    for i, (u, v) in enumerate(zip(ref.unpack(a, *w.shape), fast.unpack(a, *w.shape))):
        assert_same_bytes(u, v, f"unpack {i}")
    assert_same_bytes(ref.dequantize(a, *w.shape), fast.dequantize(a, *w.shape), "dequantize")


@pytest.mark.parametrize("name", ["tq2_0", "tq1_0"])
@given(data=st.data())
def test_tq_twin_decodes_arbitrary_bytes_alike(name, data):
    """Any byte pattern (a damaged file) decodes the same way, or fails the same way."""
    ref, fast = twin_pair(name)
    blk = 66 if name == "tq2_0" else 54
    rows = data.draw(st.integers(1, 3))
    raw = data.draw(hnp.arrays(np.uint8, (rows, blk)))
    raw[:, -2:] = np.frombuffer(np.float16(0.5).tobytes(), np.uint8)    # keep d finite
    try:
        expected = ref.unpack(raw, rows, 256)
    except minibit.FormatError as e:
        with pytest.raises(minibit.FormatError, match=str(e)[:20]):
            fast.unpack(raw, rows, 256)
        return
    for u, v in zip(expected, fast.unpack(raw, rows, 256)):
        assert_same_bytes(u, v)


# ---- every format: round trips, grid, no mutation ----------------------------------------

@pytest.mark.parametrize("fmt", ["hf_packed", "i2_s", "tq1_0", "tq2_0"])
@given(w=matrices(rows=(1, 6), cols_unit=256, cols=(1, 2)))
def test_decode_lies_on_grid_and_reencodes(fmt, w):
    before = w.copy()
    p = formats.encode(fmt, w)
    assert np.array_equal(w, before)
    d = formats.decode(p)
    assert d.dtype == np.float32 and d.shape == w.shape
    codes, scale = formats.unpack_codes(p)
    assert set(np.unique(codes)) <= {-1, 0, 1}
    if np.ndim(scale) == 0:
        assert set(np.unique(np.abs(d))) <= {0.0, float(scale)}
    p2 = formats.encode(fmt, d)
    codes2 = formats.unpack_codes(p2)[0]
    if np.ndim(scale) == 2:      # TQ: a block whose fp16 d underflowed to 0 decodes to zeros
        live = np.repeat(scale != 0, 256, axis=1)
        codes, codes2 = codes[live], codes2[live]
    assert np.array_equal(codes2, codes)


def test_unknown_format_and_params():
    with pytest.raises(minibit.FormatError, match="unknown weight format"):
        formats.encode("q4_0", np.ones((1, 256), np.float32))
    with pytest.raises(minibit.FormatError, match="takes no layout parameters"):
        formats.encode("tq2_0", np.ones((1, 256), np.float32), BM=32)
    with pytest.raises(minibit.FormatError, match="2-D"):
        formats.encode("tq2_0", np.ones(256, np.float32))
