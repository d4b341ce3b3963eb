"""TL1 / TL2: bitnet.cpp's lookup-table weight layouts (minibit/formats/tl1.py, tl2.py).

Golden values come from running bitnet.cpp's own converter functions, extracted unchanged
from microsoft/BitNet@16da220ae2b510caff437d403288882687f44ae5
``utils/convert-hf-to-gguf-bitnet.py`` (``transform_to_tl1`` -> ``preprocess_weights_tl1``
-> ``process_tl1``; ``transform_to_tl2`` -> ``preprocess_weights_tl2`` ->
``preprocess_three_weights_tl2`` / ``preprocess_two_weights_tl2``), in a scratch directory
holding an ``include/kernel_config.ini`` with the one [Kernels_0] section (m, k, bm, bk, bmm)
being tested, on the float32 input ``formula(M, K) * 0.25``.  Only the sha256 of the bytes
they returned is kept here.
"""

import hashlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import assert_same_bytes, tl1_tilings, twin_pair
from minibit import _backend
from minibit._errors import FormatError
from minibit.formats import tl1, tl2
from minibit.formats._packed import Packed

REFS = {"tl1": tl1, "tl2": tl2}


def impls(name):
    """The reference module, plus the compiled twin when it was built."""
    fast = _backend.fast_module(name)
    return [REFS[name]] + ([fast] if fast is not None else [])


def all_impls():
    return [pytest.param(m, id=f"{n}-{'ref' if m is REFS[n] else 'twin'}")
            for n in REFS for m in impls(n)]


def formula(M, K):
    """A deterministic ternary matrix [M, K] int8 with no short period in rows or columns."""
    m = np.arange(M)[:, None]
    k = np.arange(K)[None, :]
    return ((m * 31 + k * 17 + (m * k) // 5) % 3 - 1).astype(np.int8)


def sha256(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# 1. hand-worked examples (the same ones as in the module docstrings)

@pytest.mark.parametrize("name", ["tl1"])
def test_tl1_smallest_bm32_by_hand(name):
    # M=32, K=8, BM=32, BK=8, bm=32 (by=8): byte 32h + 16p + l holds row 16h + l,
    # high nibble = pair of columns 4p, 4p+1, low nibble = columns 4p+2, 4p+3.
    codes = np.zeros((32, 8), np.int8)
    codes[0] = [1, -1, 0, 1, -1, -1, 1, 1]     # pairs (1,-1)=6 (0,1)=5 (-1,-1)=0 (1,1)=8
    want = np.full(64, 0x44, np.uint8)          # a zero pair is index 3*0 + 0 + 4 = 4
    want[0] = 0x65                              # row 0, columns 0..3: 6 << 4 | 5
    want[16] = 0x08                             # row 0, columns 4..7: 0 << 4 | 8
    for mod in impls(name):
        got = mod.pack(codes, 32, 8, 32)
        assert_same_bytes(got, want, f"{mod.__name__}.pack")
        assert_same_bytes(mod.unpack(want, 32, 8, 32, 8, 32), codes, f"{mod.__name__}.unpack")


def test_tl1_smallest_bm64_by_hand():
    # M=64, K=4, BM=64, BK=4, bm=64 (by=4): one byte per row, rows in natural order.
    codes = np.zeros((64, 4), np.int8)
    codes[:, 0] = 1                             # pairs (1,0)=7 and (0,0)=4 -> 0x74
    codes[5] = [-1, 1, 0, -1]                   # (-1,1)=2, (0,-1)=3 -> 0x23
    want = np.full(64, 0x74, np.uint8)
    want[5] = 0x23
    for mod in impls("tl1"):
        assert_same_bytes(mod.pack(codes, 64, 4, 64), want, f"{mod.__name__}.pack")
        assert_same_bytes(mod.unpack(want, 64, 4, 64, 4, 64), codes, f"{mod.__name__}.unpack")


def test_tl2_smallest_triplets_by_hand():
    # M=32, K=24, BM=32, BK=24, bm=32: 128 magnitude bytes (byte 32g + q, triplets 2g, 2g+1
    # of the row stored at q), 32 sign bytes (16 little-endian words), zeros up to 501.
    codes = np.zeros((32, 24), np.int8)
    codes[0, :6] = [1, 0, -1, -1, -1, -1]       # v = 8, v = -13
    codes[9, :3] = [0, 1, 1]                    # v = 4
    codes[17, :3] = [-1, 0, 0]                  # v = -9
    want = np.zeros((24 - 256) * 32 // 3 * 5 // 8 + 256 * 32 // 2 * 4 // 8, np.uint8)
    assert want.size == 501
    want[0] = 0x8D     # q=0 -> row 0: 8 << 4 | 13
    want[17] = 0x40    # q=17: stored chunk 2 is row chunk 1 -> row 9: 4 << 4 | 0
    want[9] = 0x90     # q=9: stored chunk 1 is row chunk 2 -> row 17: 9 << 4 | 0
    want[129] = 0x20   # word 0, bit 13 (i=2: row 0, triplet 1) = 0x2000, little-endian
    want[131] = 0x40   # word 1, bit 14 (i=1: row 16+1, triplet 0) = 0x4000
    for mod in impls("tl2"):
        assert_same_bytes(mod.pack(codes, 32, 24, 32), want, f"{mod.__name__}.pack")
        assert_same_bytes(mod.unpack(want, 32, 24, 32, 24, 32), codes, f"{mod.__name__}.unpack")


def test_tl2_smallest_pairs_by_hand():
    # M=32, K=32 with BK=96: three_k=0, all 32 columns are pairs; 256 pair bytes
    # (byte 32g + q: columns 4g..4g+3 of the row stored at q), zeros up to 554.
    codes = np.zeros((32, 32), np.int8)
    codes[8, 4:8] = [1, 1, -1, 0]               # (1,1)=8, (-1,0)=1
    want = np.zeros(554, np.uint8)
    want[:256] = 0x44
    want[32 + 16] = 0x81                        # g=1; row 8 (chunk 1) is stored at q=16
    for mod in impls("tl2"):
        assert_same_bytes(mod.pack(codes, 32, 96, 32), want, f"{mod.__name__}.pack")
        assert_same_bytes(mod.unpack(want, 32, 32, 32, 96, 32), codes, f"{mod.__name__}.unpack")


# ---------------------------------------------------------------------------------------------
# 2. golden answers from bitnet.cpp's converter (see the module docstring for how)

GOLDEN = [
    # fmt, (M, K), params (= default_params), bytes, sha256 of transform_to_tlN's bytes
    # transform_to_tl1, preset bitnet_b1_58-large (1536, 1536): bm = 64
    ("tl1", (1536, 1536), {"BM": 128, "BK": 64, "bm": 64}, 589824,
     "c9e4611b795ccbd59bd98fbde02f5565cd542db0f73bf566dfd072d8f17a1217"),
    # transform_to_tl1, preset bitnet_b1_58-large (4096, 1536): bm = 32
    ("tl1", (4096, 1536), {"BM": 256, "BK": 128, "bm": 32}, 1572864,
     "e640e37c71a6308756ebbf2865670597b901a82bc28b4aa10b24405862a6085d"),
    # transform_to_tl1, generic rule (bm = 32)
    ("tl1", (96, 40), {"BM": 96, "BK": 40, "bm": 32}, 960,
     "4803aa2e5c3fe5b3cdaa6edcec319bd58dedb9f3f3c8b6c0bc9f7a856634370f"),
    # transform_to_tl1, generic rule falling back to bm = 64 (K % 8 == 4)
    ("tl1", (64, 20), {"BM": 64, "BK": 20, "bm": 64}, 320,
     "e2b05f1c97e2ab7bbd44238f9cd781550fce2de1f6ff163614fd98df7ec7995f"),
    # transform_to_tl2, preset bitnet_b1_58-large (1536, 4096): three_k 4032 + two_k 64
    ("tl2", (1536, 4096), {"BM": 256, "BK": 96, "bm": 32}, 1327104,
     "6517fd88a40a60cdc4e43c737f617948f9f5033d9f6432766898d5799939a4ae"),
    # transform_to_tl2, preset bitnet_b1_58-large (1536, 1536): BK = 192, two_k = 0
    ("tl2", (1536, 1536), {"BM": 128, "BK": 192, "bm": 32}, 507904,
     "20943f9f3df343025a1b34593bb236c58bee2bd00f00a1489a150f23bef1a217"),
    # transform_to_tl2, (4096, 1536) with minibit's bm = 32 (the ini's bmm = 64 raises
    # IndexError in preprocess_three_weights_tl2)
    ("tl2", (4096, 1536), {"BM": 256, "BK": 96, "bm": 32}, 1354410,
     "c98b5a477c7de0c5a013b249a6a9d7248786fe66f3166337da11aedadd18f093"),
    # transform_to_tl2, generic rule: BK = 96, three_k 96 + two_k 64
    ("tl2", (96, 160), {"BM": 96, "BK": 96, "bm": 32}, 4224,
     "82910e2e7cb85dcbaa6974b56d33e656c4af06736814567e6db909e107a2e5fe"),
    # transform_to_tl2, generic rule: K % 32 != 0, so BK = 120 (largest multiple of 24 that fits)
    ("tl2", (64, 120), {"BM": 64, "BK": 120, "bm": 32}, 2282,
     "c4855e0ff11b9f4a03d91777794cbb1c2fefeab74386ebbbf6380e0eec79c1dd"),
]


@pytest.mark.parametrize("fmt,shape,params,size,digest", GOLDEN,
                         ids=[f"{g[0]}-{g[1][0]}x{g[1][1]}" for g in GOLDEN])
def test_golden_bitnet_cpp(fmt, shape, params, size, digest):
    M, K = shape
    assert REFS[fmt].default_params(M, K) == params
    codes = formula(M, K)
    for mod in impls(fmt):
        got = mod.pack(codes, **params)
        assert got.dtype == np.uint8 and got.shape == (size,)
        assert sha256(got) == digest, f"{mod.__name__}.pack differs from bitnet.cpp"
        assert_same_bytes(mod.unpack(got, M, K, **params), codes, f"{mod.__name__}.unpack")


def test_encode_scale_is_bitnet_cpp_scale():
    # transform_to_tlN stores np.max(np.abs(x)) of the ternarized float tensor it is given.
    rng = np.random.default_rng(7)
    w = rng.standard_normal((64, 96)).astype(np.float32)
    for mod in (tl1, tl2):
        p = mod.encode(w)
        assert p.scale.dtype == np.float32 and p.scale.shape == (1,)
        assert p.scale[0] == np.abs(mod.decode(p)).max()
        assert mod.encode(np.zeros((64, 96), np.float32)).scale[0] == 0


def test_presets_are_runnable():
    # Every preset passes the layout checks, including the replaced TL2 4096 x 1536 one.
    for mod in (tl1, tl2):
        for (M, K), p in mod.PRESETS.items():
            mod.check_params(M, K, **p)
            assert mod.default_params(M, K) == p


# ---------------------------------------------------------------------------------------------
# 3. twin == reference, byte for byte

KINDS = ["random", "zero", "plus", "minus", "sparse"]


def make_codes(kind, seed, M, K):
    rng = np.random.default_rng(seed)
    if kind == "zero":
        return np.zeros((M, K), np.int8)
    if kind == "plus":
        return np.ones((M, K), np.int8)
    if kind == "minus":
        return -np.ones((M, K), np.int8)
    if kind == "sparse":
        return (rng.integers(-1, 2, (M, K)) * (rng.random((M, K)) < 0.1)).astype(np.int8)
    return rng.integers(-1, 2, (M, K)).astype(np.int8)


@st.composite
def tl2_case(draw):
    BM = 32 * draw(st.integers(1, 3))
    BK = 24 * draw(st.integers(1, 4))
    n2 = draw(st.integers(0, (BK - 1) // 32))      # 32-column pair blocks left over (< BK)
    n3 = draw(st.integers(0 if n2 else 1, 2))       # BK-column triplet blocks
    K = n3 * BK + 32 * n2
    M = BM * draw(st.integers(1, 2))
    return M, K, {"BM": BM, "BK": BK, "bm": 32}


CASES = {"tl1": tl1_tilings(max_strips=3), "tl2": tl2_case()}


def _twin_pack_unpack(name, case, kind, seed):
    ref, fast = twin_pair(name)
    M, K, p = case
    codes = make_codes(kind, seed, M, K)
    a = ref.pack(codes, **p)
    b = fast.pack(codes, **p)
    assert_same_bytes(b, a, f"{name} twin.pack vs reference.pack")
    ua = ref.unpack(a, M, K, **p)
    ub = fast.unpack(a, M, K, **p)
    assert_same_bytes(ub, ua, f"{name} twin.unpack vs reference.unpack")
    assert_same_bytes(ua, codes, f"{name} unpack(pack(codes))")


@given(case=tl1_tilings(max_strips=3), kind=st.sampled_from(KINDS), seed=st.integers(0, 2**32 - 1))
def test_tl1_twin_equals_reference(case, kind, seed):
    _twin_pack_unpack("tl1", case, kind, seed)


@given(case=tl2_case(), kind=st.sampled_from(KINDS), seed=st.integers(0, 2**32 - 1))
def test_tl2_twin_equals_reference(case, kind, seed):
    _twin_pack_unpack("tl2", case, kind, seed)


def _outcome(fn, *args):
    try:
        return fn(*args)
    except FormatError:
        return FormatError


@pytest.mark.parametrize("name", ["tl1", "tl2"])
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_twin_unpack_arbitrary_bytes(name, data, seed):
    # Bytes not made by pack: invalid nibbles must fail in both, valid ones decode alike.
    ref, fast = twin_pair(name)
    M, K, p = data.draw(CASES[name])
    rng = np.random.default_rng(seed)
    size = ref.nbytes(M, K)
    raw = rng.integers(0, 256, size).astype(np.uint8)
    if data.draw(st.booleans()):                   # valid everywhere: every nibble <= 8
        raw = (np.minimum(raw >> 4, 8) << 4 | np.minimum(raw & 15, 8)).astype(np.uint8)
    a = _outcome(ref.unpack, raw, M, K, *p.values())
    b = _outcome(fast.unpack, raw, M, K, *p.values())
    if a is FormatError or b is FormatError:
        assert a is b
    else:
        assert_same_bytes(b, a, f"{name} twin.unpack of arbitrary bytes")


# ---------------------------------------------------------------------------------------------
# 4. round trips, encode/decode, no mutation

@pytest.mark.parametrize("name", ["tl1", "tl2"])
@given(data=st.data(), kind=st.sampled_from(KINDS), seed=st.integers(0, 2**32 - 1))
def test_roundtrip_and_no_mutation(name, data, kind, seed):
    M, K, p = data.draw(CASES[name])
    codes = make_codes(kind, seed, M, K)
    keep = codes.copy()
    for mod in impls(name):
        packed = mod.pack(codes, **p)
        keep_packed = packed.copy()
        assert_same_bytes(mod.unpack(packed, M, K, **p), codes, f"{mod.__name__} round trip")
        assert_same_bytes(codes, keep, "codes were mutated")
        assert_same_bytes(packed, keep_packed, "packed bytes were mutated")


@pytest.mark.parametrize("name", ["tl1", "tl2"])
@given(data=st.data(), seed=st.integers(0, 2**32 - 1), zero_frac=st.sampled_from([0, 0.5, 1]))
def test_encode_decode(name, data, seed, zero_frac):
    mod = REFS[name]
    M = 32 * data.draw(st.integers(1, 3))
    K = (8 if name == "tl1" else 32) * data.draw(st.integers(1, 6))
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((M, K)).astype(np.float32)
    w[rng.random((M, K)) < zero_frac] = 0
    w_keep = w.copy()
    p = mod.encode(w)
    assert_same_bytes(w, w_keep, "encode mutated w")
    assert p.fmt == name and p.shape == (M, K) and p.params == mod.default_params(M, K)
    assert p.data.dtype == np.uint8 and p.data.shape == (mod.nbytes(M, K),)
    data_keep = p.data.copy()
    d = mod.decode(p)
    assert_same_bytes(p.data, data_keep, "decode mutated the packed bytes")
    s = p.scale[0]
    assert d.dtype == np.float32 and d.shape == (M, K)
    assert np.isin(d, np.array([-s, 0, s], np.float32)).all()
    again = mod.encode(d, **p.params)                 # decoded values re-encode to the same codes
    assert_same_bytes(again.data, p.data, f"{name} encode(decode(p)).data")
    # the same bytes as packing the absmean codes directly with the reference
    from minibit.quant import absmean_ternarize
    codes, _ = absmean_ternarize(w)
    assert_same_bytes(p.data, mod.pack(codes, **p.params), "encode vs pack(absmean codes)")


def test_encode_uses_selected_backend():
    for name, mod in REFS.items():
        assert mod._impl() is _backend.select(name, mod)


def test_encode_explicit_params():
    w = np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)
    p = tl1.encode(w, BM=64, BK=32, bm=64)
    assert p.params == {"BM": 64, "BK": 32, "bm": 64}
    assert_same_bytes(tl1.decode(p), tl1.decode(tl1.encode(w)), "decode with other tiling")
    w = np.random.default_rng(2).standard_normal((64, 96)).astype(np.float32)
    p = tl2.encode(w, BM=32, BK=48, bm=32)
    assert p.params == {"BM": 32, "BK": 48, "bm": 32}
    assert_same_bytes(tl2.decode(p), tl2.decode(tl2.encode(w)), "decode with other tiling")


# ---------------------------------------------------------------------------------------------
# 5. shapes and arguments the layouts cannot hold

BAD_PACK = [
    ("tl1", (48, 8), (32, 8, 32)),      # M not a multiple of BM
    ("tl1", (32, 12), (32, 8, 32)),     # K not a multiple of BK
    ("tl1", (32, 12), (32, 12, 32)),    # BK not a multiple of by = 8
    ("tl1", (64, 32), (48, 32, 32)),    # BM not a multiple of bm
    ("tl1", (32, 32), (32, 32, 16)),    # bm outside {32, 64} (codegen_tl1.py)
    ("tl2", (48, 96), (32, 96, 32)),    # M not a multiple of BM
    ("tl2", (64, 96), (64, 96, 64)),    # bm = 64: IndexError in bitnet.cpp's converter
    ("tl2", (32, 96), (32, 36, 32)),    # BK not a multiple of 24
    ("tl2", (32, 112), (32, 96, 32)),   # 16 columns left after the BK blocks
    ("tl2", (32, 600), (32, 312, 32)),  # 288 leftover pair columns overflow the fixed size
]


@pytest.mark.parametrize("name,shape,params", BAD_PACK,
                         ids=[f"{b[0]}-{b[1]}-{b[2]}" for b in BAD_PACK])
def test_bad_shapes_raise(name, shape, params):
    for mod in impls(name):
        with pytest.raises(FormatError):
            mod.pack(np.zeros(shape, np.int8), *params)
        with pytest.raises(FormatError):
            mod.unpack(np.zeros(max(REFS[name].nbytes(*shape), 1), np.uint8), *shape, *params)


def test_preset_bm64_tl2_rejected():
    # bitnet_b1_58-large/kernel_config_tl2.ini: m=4096, k=1536, bm=256, bk=96, bmm=64
    with pytest.raises(FormatError, match="bm must be 32"):
        tl2.check_params(4096, 1536, 256, 96, 64)


@pytest.mark.parametrize("name,shape", [("tl1", (30, 8)), ("tl1", (32, 6)), ("tl1", (32, 4)),
                                        ("tl2", (30, 96)), ("tl2", (32, 40))])
def test_default_params_no_tiling(name, shape):
    with pytest.raises(FormatError, match=rf"\({shape[0]}, {shape[1]}\)"):
        REFS[name].default_params(*shape)
    with pytest.raises(FormatError):
        REFS[name].encode(np.ones(shape, np.float32))


@pytest.mark.parametrize("mod", all_impls())
def test_bad_arguments_raise(mod):
    name = "tl1" if "tl1" in mod.__name__ else "tl2"
    M, K = 32, (8 if name == "tl1" else 24)
    p = (32, K, 32)
    good = mod.pack(np.zeros((M, K), np.int8), *p)
    with pytest.raises(FormatError):
        mod.pack(np.full((M, K), 2, np.int8), *p)                 # not ternary
    with pytest.raises(FormatError):
        mod.pack(np.zeros((M, K), np.float32) + 0.5, *p)          # not integer codes
    with pytest.raises(FormatError):
        mod.pack(np.zeros((M, K), np.int8), 32.0, K, 32)          # float parameter
    with pytest.raises(FormatError):
        mod.unpack(good[:-1], M, K, *p)                           # wrong size
    with pytest.raises(FormatError):
        mod.unpack(good.astype(np.int16), M, K, *p)               # wrong dtype
    with pytest.raises(FormatError):
        mod.unpack(good.reshape(1, -1), M, K, *p)                 # not 1-D
    bad = good.copy()
    bad[5] = 0xE0 if name == "tl2" else 0x94                      # magnitude 14 / index 9
    with pytest.raises(FormatError, match="byte 5"):
        mod.unpack(bad, M, K, *p)


def test_tl2_bad_pair_nibble_raises():
    for mod in impls("tl2"):
        good = mod.pack(np.zeros((32, 32), np.int8), 32, 96, 32)
        bad = good.copy()
        bad[7] = 0x49
        with pytest.raises(FormatError, match="byte 7"):
            mod.unpack(bad, 32, 32, 32, 96, 32)


def test_encode_decode_bad_params():
    w = np.ones((32, 32), np.float32)
    for mod in (tl1, tl2):
        with pytest.raises(FormatError):
            mod.encode(w, BM=32)                                  # partial
        with pytest.raises(FormatError):
            mod.encode(w, BM=32, BK=96, bm=32, extra=1)           # unknown
        p = mod.encode(w)
        with pytest.raises(FormatError):
            mod.decode(Packed("i2_s", p.shape, p.data, p.scale, p.params))
        with pytest.raises(FormatError):
            mod.decode(Packed(p.fmt, p.shape, p.data[:-1], p.scale, p.params))
        with pytest.raises(FormatError):
            mod.decode(Packed(p.fmt, p.shape, p.data, None, p.params))
        with pytest.raises(FormatError):                          # an i2_s Packed, decoded as TL
            mod.decode(Packed("i2_s", (32, 128), np.zeros(32 * 128 // 4 + 32, np.uint8)))
