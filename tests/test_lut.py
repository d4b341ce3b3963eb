"""minibit.kernels.lut: TL1 / TL2 table kernels as bitnet.cpp computes them, and T-MAC's.

Every kernel is checked against the plain int32 product codes @ q.T, the Cython twin against
the reference bit for bit (its AVX2 and its scalar loops, 1 and 2 threads), the float output
against the formula written out again here, and TL against I2_S.
"""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import assert_same_bytes, tl1_tilings, twin_pair
from minibit import _backend, kernels, quant
from minibit._errors import FormatError
from minibit.formats import Packed, i2_s, tl1, tl2
from minibit.kernels import lut

FMTS = {"tl1": tl1, "tl2": tl2}


# ---------------------------------------------------------------------------------------------
# helpers

def impl_modes(impl):
    """[(label, module, simd)]: the reference, or the twin in each SIMD mode this CPU has."""
    if impl == "ref":
        return [("ref", lut, None)]
    _, fast = twin_pair("lut")
    modes = [True, False] if fast._use_simd() else [False]
    return [(f"twin-{'avx2' if m else 'scalar'}", fast, m) for m in modes]


def call(mod, simd, name, *args):
    """mod.name(*args), with the twin's SIMD switch set for the call and restored after."""
    if simd is None:
        return getattr(mod, name)(*args)
    old = mod._use_simd()
    mod._use_simd(simd)
    try:
        return getattr(mod, name)(*args)
    finally:
        mod._use_simd(old)


def every_result(name, *args):
    """{label: result} from the reference and every available twin mode."""
    out = {"ref": getattr(lut, name)(*args)}
    fast = _backend.fast_module("lut")
    if fast is not None:
        for label, mod, simd in impl_modes("twin"):
            out[label] = call(mod, simd, name, *args)
    return out


def packed(fmt, codes, params, scale=0.5):
    mod = FMTS[fmt]
    data = mod.pack(codes, params["BM"], params["BK"], params["bm"])
    return Packed(fmt, codes.shape, data, np.array([scale], np.float32), dict(params))


def product(q, codes):
    return q.astype(np.int32) @ codes.astype(np.int32).T        # [T, K] @ [K, M] -> [T, M]


# ---------------------------------------------------------------------------------------------
# strategies: valid tilings, ternary codes, activations with edge values

@st.composite
def tl2_shapes(draw):
    BM = 32 * draw(st.integers(1, 2))
    BK = 24 * draw(st.sampled_from([1, 2, 4, 8, 10]))
    K = BK * draw(st.integers(0, 2)) + 32 * draw(st.integers(0, 2))
    M = BM * draw(st.integers(1, 2))
    assume(K > 0)
    try:
        tl2.check_params(M, K, BM, BK, 32)
    except FormatError:
        assume(False)
    return M, K, {"BM": BM, "BK": BK, "bm": 32}


@st.composite
def default_shapes(draw, fmt):
    M = draw(st.sampled_from([32, 64, 96, 128, 192]))
    K = 4 * draw(st.integers(1, 90))
    try:
        params = FMTS[fmt].default_params(M, K)
    except FormatError:
        assume(False)
    return M, K, params


def shapes(fmt):
    return st.one_of(tl1_tilings(max_strips=2) if fmt == "tl1" else tl2_shapes(), default_shapes(fmt))


def ternary(M, K):
    pattern = st.sampled_from(["random", "ones", "minus", "zero"])
    return st.tuples(pattern, hnp.arrays(np.int8, (M, K), elements=st.integers(-1, 1))).map(
        lambda pc: {"random": pc[1], "ones": np.ones((M, K), np.int8),
                    "minus": -np.ones((M, K), np.int8), "zero": np.zeros((M, K), np.int8)}[pc[0]])


def int8_acts(T, K):
    edge = st.sampled_from([0, 0, 127, -127, -128, 1, -1])
    return hnp.arrays(np.int8, (T, K), elements=st.one_of(st.integers(-128, 127), edge))


@st.composite
def tl_case(draw, fmt, max_t=4):
    M, K, params = draw(shapes(fmt))
    codes = draw(ternary(M, K))
    T = draw(st.integers(1, max_t))
    q = draw(int8_acts(T, K))
    if draw(st.booleans()):
        q[draw(st.integers(0, T - 1))] = 0                   # an all-zero token
    return codes, params, q


def float_acts(T, K):
    """float32 [T, K]: ties (max 127 makes s = 1, so halves stay halves), zero rows, randoms."""
    kind = st.sampled_from(["ties", "random", "zero_row", "one_hot"])

    def build(args):
        kind, base, halves = args
        x = base.copy()
        if kind == "ties":
            x = (halves.astype(np.float32) * np.float32(0.5))   # -126.5 .. 126.5 in halves
            x[:, 0] = 127.0
        elif kind == "zero_row":
            x[0] = 0.0
        elif kind == "one_hot":
            x[:] = 0.0
            x[:, -1] = -3.25
        return x

    return st.tuples(kind,
                     hnp.arrays(np.float32, (T, K), elements=st.floats(-8, 8, width=32)),
                     hnp.arrays(np.int16, (T, K), elements=st.integers(-253, 253))).map(build)


# ---------------------------------------------------------------------------------------------
# 1. the tables, by hand

def test_worked_example_pair_table():
    L = lut.pair_table(np.array([[5, -3]], np.int8))[0, 0]
    assert L.tolist() == [-2, -5, -8, 3, 0, -3, 8, 5, 2] + [0] * 7
    assert L[3 * 1 + (-1) + 4] == 1 * 5 + (-1) * (-3) == 8      # weight pair (1, -1)
    lo, hi = lut.byte_planes(L)
    assert (int(lo[2]), int(hi[2])) == (0xF8, -1)              # -8 = 0xFFF8


def test_triplet_table_slots():
    L = lut.triplet_table(np.array([[100, -7, 3]], np.int8))[0, 0]
    x0, x1, x2 = 100, -7, 3
    want = [0, x2, x1 - x2, x1, x1 + x2, x0 - x1 - x2, x0 - x1, x0 - x1 + x2, x0 - x2, x0,
            x0 + x2, x0 + x1 - x2, x0 + x1, x0 + x1 + x2, 0, 0]
    assert L.tolist() == want                                  # codegen_tl2.py's L[0..13]


def test_byte_planes_round_trip_every_int16():
    L = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16).reshape(-1, 16)
    lo, hi = lut.byte_planes(L)
    assert_same_bytes(lut.join_bytes(lo, hi), L, "join_bytes(byte_planes(L))")


def test_tmac_table_by_hand():
    T = lut.tmac_table(np.array([[1, 2, 4, 8, -128]], np.int8))[0]   # K = 5 -> 8 -> 2 groups
    assert T.shape == (2, 16)
    assert T[0].tolist() == list(range(16))                   # idx = sum of its bits' weights
    assert T[1].tolist() == [0, -128] * 8                      # columns 5..7 pad with 0


def test_twin_has_every_twinned_name():
    _, fast = twin_pair("lut")
    for name in lut.TWINNED:
        assert callable(getattr(fast, name)), name


# ---------------------------------------------------------------------------------------------
# 2. integers: every implementation equals the int32 product and each other

@pytest.mark.parametrize("fmt", ["tl1", "tl2"])
@given(data=st.data())
def test_tl_integer_equals_int32_product_and_twin(fmt, data):
    codes, params, q = data.draw(tl_case(fmt))
    p = packed(fmt, codes, params)
    want = product(q, codes)
    got = every_result(f"{fmt}_integer", q, p)
    for label, R in got.items():
        assert_same_bytes(R, want, f"{label} {fmt}_integer {codes.shape} {params}")
    assert_same_bytes(lut.tl_integer(q, p), want, "tl_integer")


@given(data=st.data())
def test_tmac_integer_equals_int32_product_and_twin(data):
    N, K = data.draw(st.integers(1, 70)), data.draw(st.integers(1, 70))
    T = data.draw(st.integers(1, 3))
    codes = data.draw(ternary(N, K))
    q = data.draw(int8_acts(T, K))
    planes = lut.tmac_pack(codes)
    for label, P in every_result("tmac_pack", codes).items():
        assert_same_bytes(P, planes, f"{label} tmac_pack")
    for label, R in every_result("tmac_integer", q, planes, N).items():
        assert_same_bytes(R, product(q, codes), f"{label} tmac_integer ({N}, {K})")


@pytest.mark.parametrize("fmt", ["i2_s", "tq2_0", "tq1_0", "hf_packed", "tl1", "tl2"])
def test_tmac_runs_any_formats_codes(fmt):
    import minibit.formats as F
    rng = np.random.default_rng(5)
    w = rng.standard_normal((64, 256)).astype(np.float32)
    p = F.encode(fmt, w)
    if fmt in ("tl1", "tl2"):
        codes = FMTS[fmt].unpack(p.data, 64, 256, **p.params)
    else:
        codes = F.unpack_codes(p)[0]
    q = rng.integers(-128, 128, (2, 256)).astype(np.int8)
    for label, R in every_result("tmac_integer", q, lut.tmac_pack(codes), 64).items():
        assert_same_bytes(R, product(q, codes), f"{label} tmac on {fmt}")


@pytest.mark.parametrize("impl", ["ref", "twin"])
def test_preset_shape_int32_product(impl):
    rng = np.random.default_rng(7)
    for fmt in ("tl1", "tl2"):
        M, K = 1536, 1536
        codes = rng.integers(-1, 2, (M, K)).astype(np.int8)
        p = packed(fmt, codes, FMTS[fmt].PRESETS[(M, K)])
        q = rng.integers(-127, 128, (2, K)).astype(np.int8)
        for label, mod, simd in impl_modes(impl):
            assert_same_bytes(call(mod, simd, "tl_integer", q, p), product(q, codes),
                              f"{label} {fmt} preset {M}x{K}")


# ---------------------------------------------------------------------------------------------
# 3. the int16 bound: inside it the product, outside it the kernel's wrap

@pytest.mark.parametrize("impl", ["ref", "twin"])
def test_int16_wrap_outside_the_bound(impl):
    # TL2, BK = 264: 88 triplet lookups of 3*127 = 381 per block -> 33528 wraps to -32008.
    codes = np.ones((32, 264), np.int8)
    q = np.full((1, 264), 127, np.int8)
    p2 = packed("tl2", codes, {"BM": 32, "BK": 264, "bm": 32})
    # TL1, BK = 256: 128 pair lookups of -(-128) - (-128) = 256 -> 32768 wraps to -32768.
    p1 = packed("tl1", -np.ones((32, 256), np.int8), {"BM": 32, "BK": 256, "bm": 32})
    q1 = np.full((1, 256), -128, np.int8)
    for label, mod, simd in impl_modes(impl):
        assert call(mod, simd, "tl2_integer", q, p2)[0].tolist() == [33528 - 65536] * 32, label
        assert call(mod, simd, "tl1_integer", q1, p1)[0].tolist() == [-32768] * 32, label


@pytest.mark.parametrize("impl", ["ref", "twin"])
def test_no_wrap_at_the_largest_safe_blocks(impl):
    # TL2 BK = 240 (80 lookups of 384) and TL1 BK = 248 / 252 (124 / 126 of 256): exact.
    cases = [("tl2", {"BM": 32, "BK": 240, "bm": 32}, 32, 480),
             ("tl1", {"BM": 32, "BK": 248, "bm": 32}, 32, 496),
             ("tl1", {"BM": 64, "BK": 252, "bm": 64}, 64, 504)]
    for fmt, params, M, K in cases:
        for sign in (1, -1):
            codes = np.full((M, K), sign, np.int8)
            q = np.full((2, K), -128, np.int8)
            q[1] = 127
            p = packed(fmt, codes, params)
            for label, mod, simd in impl_modes(impl):
                assert_same_bytes(call(mod, simd, "tl_integer", q, p), product(q, codes),
                                  f"{label} {fmt} {params}")


# ---------------------------------------------------------------------------------------------
# 4. the float output: (float)R / s * scale, written out again here

def tl_formula(x, codes, scale):
    """bitnet.cpp's TL profile from scratch: s = 127 / max|x| in float32 (inf for a zero token,
    whose q is 0), q = rint(float32(x * s)), R = codes @ q in int32, y = ((float)R / s) * scale."""
    amax = np.abs(x).max(axis=1)                                     # [T] float32
    with np.errstate(divide="ignore", over="ignore"):
        s = np.float32(127) / amax                                   # [T] float32
    finite = np.where(np.isfinite(s), s, np.float32(0)).astype(np.float32)
    q = np.rint(x * finite[:, None]).astype(np.int8)                 # [T, K] int8
    R = product(q, codes)                                            # [T, M] int32
    return (R.astype(np.float32) / s[:, None]) * np.float32(scale)   # [T, M] float32


@pytest.mark.parametrize("fmt", ["tl1", "tl2"])
@given(data=st.data())
def test_linear_tl_is_the_documented_formula(fmt, data):
    M, K, params = data.draw(shapes(fmt))
    codes = data.draw(ternary(M, K))
    x = data.draw(float_acts(data.draw(st.integers(1, 3)), K))
    scale = data.draw(st.sampled_from([0.5, 0.0123, 1.7e-3, 3.0]))
    p = packed(fmt, codes, params, scale)
    want = tl_formula(x, codes, scale)
    x0 = x.copy()
    for label, y in every_result("linear_tl", x, p).items():
        assert_same_bytes(y, want, f"{label} linear_tl {fmt} {codes.shape}")
    assert_same_bytes(x, x0, "x after linear_tl")


@pytest.mark.parametrize("impl", ["ref", "twin"])
def test_single_token_and_vector_input(impl):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((64, 96)).astype(np.float32)
    p = tl2.encode(w)
    codes = tl2.unpack(p.data, 64, 96, **p.params)
    x = rng.standard_normal(96).astype(np.float32)
    for label, mod, simd in impl_modes(impl):
        y = call(mod, simd, "linear_tl", x, p)                       # [K] counts as T = 1
        assert y.shape == (1, 64) and y.dtype == np.float32
        assert_same_bytes(y, tl_formula(x[None], codes, p.scale[0]), label)


@pytest.mark.parametrize("impl", ["ref", "twin"])
def test_zero_token_gives_zero_not_nan(impl):
    p = tl1.encode(np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32))
    x = np.zeros((2, 64), np.float32)
    x[1, 5] = 1.0
    for label, mod, simd in impl_modes(impl):
        y = call(mod, simd, "linear_tl", x, p)
        assert np.isfinite(y).all() and not y[0].any(), label


def test_kernels_linear_runs_lut_with_the_same_bits_as_v0():
    if "lut" not in kernels.available("tl2"):
        pytest.skip("kernels.linear does not offer the lut kernel")
    rng = np.random.default_rng(9)
    w = rng.standard_normal((128, 352)).astype(np.float32)
    x = rng.standard_normal((3, 352)).astype(np.float32)
    for fmt in ("tl1", "tl2"):
        p = FMTS[fmt].encode(w)
        y = kernels.linear(x, p, kernel="lut")
        assert_same_bytes(y, lut.linear_tl(x, p), f"kernels.linear lut {fmt}")
        if "v0" in kernels.available(fmt):
            assert_same_bytes(y, kernels.linear(x, p, kernel="v0"), f"lut vs v0 {fmt}")
        assert_same_bytes(kernels.linear(x[0], p, kernel="lut"), y[0], f"vector input {fmt}")


# ---------------------------------------------------------------------------------------------
# 5. threads: 1 and 2 give the same bits

def test_one_and_two_threads_identical(monkeypatch):
    _, fast = twin_pair("lut")
    rng = np.random.default_rng(11)
    cases = [("tl1", (1024, 512), {"BM": 128, "BK": 128, "bm": 32}),
             ("tl1", (512, 256), {"BM": 64, "BK": 64, "bm": 64}),
             ("tl2", (1024, 512), {"BM": 128, "BK": 96, "bm": 32})]
    for fmt, (M, K), params in cases:
        codes = rng.integers(-1, 2, (M, K)).astype(np.int8)
        p = packed(fmt, codes, params)
        q = rng.integers(-128, 128, (3, K)).astype(np.int8)
        planes = lut.tmac_pack(codes)
        runs = {}
        for n in (1, 2):
            monkeypatch.setattr(kernels, "get_threads", lambda n=n: n, raising=False)
            assert fast._threads() == n
            for label, mod, simd in impl_modes("twin"):
                runs[(n, label)] = (call(mod, simd, "tl_integer", q, p),
                                    call(mod, simd, "tmac_integer", q, planes, M))
        for key, (R, Rt) in runs.items():
            assert_same_bytes(R, product(q, codes), f"{fmt} {key}")
            assert_same_bytes(Rt, product(q, codes), f"tmac {key}")


# ---------------------------------------------------------------------------------------------
# 6. TL vs I2_S

def i2s_formula(x, codes, scale):
    """bitnet.cpp's I2_S profile from scratch: max floored at 1e-5 in double, s rounded to
    float32, R' = (codes + 1) @ q, y = (((float)R' - (float)sum(q)) / s) * scale."""
    amax = np.maximum(np.abs(x).max(axis=1).astype(np.float64), 1e-5)
    s = (127.0 / amax).astype(np.float32)
    q = np.clip(np.rint(x * s[:, None]), -128, 127).astype(np.int8)
    R1 = product(q, codes + 1)                                        # [T, M] int32
    sums = q.sum(axis=1, dtype=np.int32)                              # [T] int32
    diff = R1.astype(np.float32) - sums.astype(np.float32)[:, None]
    return q, s, (diff / s[:, None]) * np.float32(scale)


ABOVE_FLOOR = float(np.nextafter(np.float32(1e-5), np.float32(1)))   # first float32 > 1e-5
FLOAT32_MAX = float(np.finfo(np.float32).max)


@given(a=st.floats(ABOVE_FLOOR, FLOAT32_MAX, width=32))
def test_activation_scale_float_and_double_agree(a):
    # 127 / max computed in float32 (TL) and in double then rounded (I2_S) is one float32:
    # both are correctly rounded quotients, and double rounding of a float32 quotient through
    # binary64 (53 >= 2*24 + 2 bits) is innocuous.  So above the 1e-5 floor the scales agree.
    a = np.float32(a)
    assert np.float32(127) / a == np.float32(127.0 / np.float64(a))


@pytest.mark.parametrize("impl", ["ref", "twin"])
def test_tl_and_i2s_agree_above_the_floor_and_differ_below(impl):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((128, 256)).astype(np.float32)
    p_tl, p_i2 = tl2.encode(w), i2_s.encode(w)
    codes_i2, scale_i2 = i2_s.unpack_codes(p_i2)
    codes_tl = tl2.unpack(p_tl.data, 128, 256, **p_tl.params)
    assert_same_bytes(codes_tl, codes_i2, "codes")
    assert p_tl.scale[0] == scale_i2                                  # the same max|w|

    x = rng.standard_normal((3, 256)).astype(np.float32)
    x[1] *= np.float32(3e-4)                                          # small, above the floor
    q_tl, s_tl = quant.quantize_act_tl(x)
    q_i2, s_i2, _ = quant.quantize_act_i2s(x)
    assert_same_bytes(q_tl, q_i2, "int8 activations")
    assert_same_bytes(s_tl, s_i2, "activation scales")
    _, _, y_i2 = i2s_formula(x, codes_i2, scale_i2)
    if "mad" in kernels.available("i2_s"):                           # minibit's own I2_S path
        assert_same_bytes(kernels.linear(x, p_i2, "bitnet.cpp", "mad"), y_i2, "mad kernel")
    for label, mod, simd in impl_modes(impl):
        assert_same_bytes(call(mod, simd, "tl2_integer", q_i2, p_tl), product(q_i2, codes_i2),
                          f"{label} integers from I2_S's activations")
        assert_same_bytes(call(mod, simd, "linear_tl", x, p_tl), y_i2, f"{label} outputs")

    # Below the floor (0 < max|x| < 1e-5) I2_S uses s = 127 / 1e-5 and its q stay small;
    # TL still stretches the token to +-127.  Different integers, outputs that differ (both
    # near x @ W.T; TL's is the finer one).
    tiny = x[:1] * np.float32(1e-7)
    q_tl, s_tl = quant.quantize_act_tl(tiny)
    q_i2, s_i2, y_i2 = i2s_formula(tiny, codes_i2, scale_i2)
    assert np.abs(q_tl).max() == 127 and np.abs(q_i2).max() < 127
    assert s_tl[0] > s_i2[0] == np.float32(127 / 1e-5)
    for label, mod, simd in impl_modes(impl):
        y_tl = call(mod, simd, "linear_tl", tiny, p_tl)
        assert not np.array_equal(y_tl, y_i2), label
        exact = tiny.astype(np.float64) @ (codes_i2.astype(np.float64) * scale_i2).T
        assert np.abs(y_tl - exact).max() <= np.abs(y_i2 - exact).max(), label


# ---------------------------------------------------------------------------------------------
# 7. bad arguments raise FormatError; inputs are never written

@pytest.mark.parametrize("impl", ["ref", "twin"])
def test_format_errors(impl):
    codes = np.ones((64, 96), np.int8)
    p1 = packed("tl1", codes, tl1.default_params(64, 96))
    p2 = packed("tl2", codes, tl2.default_params(64, 96))
    q = np.zeros((2, 96), np.int8)
    x = np.zeros((1, 96), np.float32)

    def tl(fmt, data, scale, params):
        return Packed(fmt, (64, 96), data, scale, params)

    bad = [
        ("tl1_integer", lambda: (q, p2)),                                      # wrong format
        ("tl2_integer", lambda: (q, p1)),
        ("tl_integer", lambda: (q, Packed("i2_s", (64, 96), p1.data))),
        ("tl_integer", lambda: (q, "not a tensor")),
        ("tl1_integer", lambda: (q.astype(np.int16), p1)),                     # q dtype
        ("tl1_integer", lambda: (q[:, :64], p1)),                              # q length
        ("tl1_integer", lambda: (q[0], p1)),                                   # q not 2-D
        ("tl1_integer", lambda: (q, tl("tl1", p1.data[:-1], p1.scale, p1.params))),      # data size
        ("tl1_integer", lambda: (q, tl("tl1", p1.data.astype(np.int8), p1.scale, p1.params))),
        ("tl1_integer", lambda: (q, tl("tl1", p1.data, p1.scale, {"BM": 48, "BK": 96, "bm": 32}))),
        ("tl1_integer", lambda: (q, tl("tl1", p1.data, p1.scale, {"BM": 64}))),
        ("tl2_integer", lambda: (q, tl("tl2", p2.data, p2.scale, {"BM": 64, "BK": 96, "bm": 64}))),
        ("tl2_integer", lambda: (q, tl("tl2", p2.data, p2.scale, {**p2.params, "x": 1}))),
        ("linear_tl", lambda: (x, tl("tl2", p2.data, None, p2.params))),                # no scale
        ("linear_tl", lambda: (x, tl("tl2", p2.data, np.ones(2, np.float32), p2.params))),
        ("linear_tl", lambda: (x[:, :64], p2)),
        ("linear_tl", lambda: (np.full((1, 96), np.nan, np.float32), p2)),
        ("tl_output", lambda: (np.zeros((1, 4), np.int64), np.ones(1, np.float32), np.float32(1))),
        ("tl_output", lambda: (np.zeros((1, 4), np.int32), np.ones(2, np.float32), np.float32(1))),
        ("tl_output", lambda: (np.zeros((1, 4), np.int32), np.ones(1, np.float64), np.float32(1))),
        ("tmac_pack", lambda: (np.full((4, 4), 2, np.int8),)),
        ("tmac_integer", lambda: (q, lut.tmac_pack(codes), 65)),               # planes hold 64 rows
        ("tmac_integer", lambda: (q, lut.tmac_pack(codes)[:, :, :-1], 64)),
        ("tmac_integer", lambda: (q, lut.tmac_pack(codes), 0)),
        ("tmac_integer", lambda: (q, lut.tmac_pack(codes).astype(np.int8), 64)),
    ]
    for label, mod, simd in impl_modes(impl):
        for name, args in bad:             # args() inside: a bad Packed fails when it is made
            with pytest.raises(FormatError):
                call(mod, simd, name, *args())


@pytest.mark.parametrize("impl", ["ref", "twin"])
def test_inputs_not_mutated_and_views_accepted(impl):
    rng = np.random.default_rng(4)
    big = rng.integers(-1, 2, (64, 192)).astype(np.int8)
    codes = big[:, ::2]                                               # a strided view [64, 96]
    p = packed("tl2", np.ascontiguousarray(codes), tl2.default_params(64, 96))
    qbig = rng.integers(-128, 128, (4, 96)).astype(np.int8)
    q = qbig[::2]                                                     # non-contiguous rows
    x = rng.standard_normal((2, 96)).astype(np.float32)
    keep = [a.copy() for a in (big, qbig, x, p.data, p.scale)]
    planes = lut.tmac_pack(codes)
    keep_planes = planes.copy()
    for label, mod, simd in impl_modes(impl):
        assert_same_bytes(call(mod, simd, "tl2_integer", q, p), product(q, codes), label)
        call(mod, simd, "linear_tl", x, p)
        assert_same_bytes(call(mod, simd, "tmac_pack", codes), planes, label)
        assert_same_bytes(call(mod, simd, "tmac_integer", q, planes, 64), product(q, codes), label)
    for a, b in zip(keep, (big, qbig, x, p.data, p.scale)):
        assert_same_bytes(a, b, "input after the kernels")
    assert_same_bytes(keep_planes, planes, "planes after the kernels")


@pytest.mark.parametrize("impl", ["ref", "twin"])
def test_no_tokens(impl):
    p = packed("tl1", np.ones((32, 8), np.int8), {"BM": 32, "BK": 8, "bm": 32})
    for label, mod, simd in impl_modes(impl):
        R = call(mod, simd, "tl1_integer", np.zeros((0, 8), np.int8), p)
        assert R.shape == (0, 32) and R.dtype == np.int32, label
