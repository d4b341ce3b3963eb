"""minibit.quant: hand-worked answers, and the Cython twin equal to the reference bit for bit."""

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import minibit
from minibit import quant
from conftest import assert_same_bytes, each_simd, twin_pair

FUNCS = ["quantize_act_hf", "quantize_act_i2s", "quantize_act_tl"]

# Values that stress rounding: exact halves after scaling, +-max, zeros, tiny and huge.
special = st.sampled_from([0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 63.5 / 127, -63.5 / 127,
                           1e-7, -1e-7, 3e4, -3e4, 0.25, 1.5 / 127])
floats = st.floats(-100, 100, width=32, allow_nan=False, allow_infinity=False)
values = st.one_of(special, floats)


def act_matrices(max_t=4, max_k=64, k_multiple=1):
    return st.tuples(st.integers(1, max_t), st.integers(1, max_k)).flatmap(
        lambda tk: hnp.arrays(np.float32, (tk[0], tk[1] * k_multiple), elements=values))


# ---- hand-worked answers ---------------------------------------------------------------

def test_hf_worked_example_rounds_ties_to_even():
    q, s = quant.quantize_act_hf(np.array([[0.5, -1.0, 0.25, 0.0]], np.float32))
    assert s.tolist() == [127.0]
    assert q.tolist() == [[64, -127, 32, 0]]           # 63.5 -> 64 (even), 31.75 -> 32


def test_hf_tie_down_to_even():
    # 2.5 / 127 * 127 is 2.5 in float32 only if exact; build x so that x*s == 0.5 exactly
    x = np.array([[1.0, 0.5 / 127 * 1.0]], np.float32)
    q, s = quant.quantize_act_hf(x)
    prod = np.float32(x[0, 1]) * s[0]
    assert q[0, 1] == np.rint(prod)                      # half to even, not away from zero


def test_hf_scale_is_127_times_the_reciprocal():
    # torch evaluates ActQuant's 127 / t as 127 * (1 / t): two roundings.  For max|x| =
    # 3.053238 the one-division 127 / 3.053238 is 41.59519 but torch's scale is 41.595184.
    amax = np.float32(3.053238)
    assert np.float32(127) / amax != np.float32(127) * (np.float32(1) / amax)
    _, s = quant.quantize_act_hf(np.array([[amax, -1.0]], np.float32))
    assert s[0] == np.float32(127) * (np.float32(1) / amax) == np.float32(41.595184)


@given(x=act_matrices(max_t=6, max_k=300))
def test_hf_quantizer_equals_torch_actquant(x):
    """The hf quantizer against transformers' own ActQuant formula run by torch in float32:
    s = 127 / clamp(max|x|, 1e-5), q = clamp(round(x * s), -128, 127): the same codes and
    scales, bit for bit."""
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(x.copy())
    ts = 127 / t.abs().max(dim=-1, keepdim=True).values.clamp(min=1e-5)
    tq = (t * ts).round().clamp(-128, 127)
    q, s = quant.quantize_act_hf(x)
    assert_same_bytes(s, ts[:, 0].numpy(), "scale")
    assert_same_bytes(q, tq.numpy().astype(np.int8), "codes")


def test_i2s_epsilon_floor_and_sums():
    x = np.array([[1e-7, -2e-7, 0.0, 0.0]], np.float32)   # max|x| < 1e-5: floor applies
    q, s, sums = quant.quantize_act_i2s(x)
    assert s[0] == np.float32(127.0 / 1e-5)
    assert q.tolist() == [[1, -3, 0, 0]]                 # 1e-7*1.27e7 = 1.27 -> 1; -2.54 -> -3
    assert sums.tolist() == [-2]


def test_tl_has_no_epsilon_floor_and_zero_rows_stay_zero():
    x = np.array([[1e-7, -2e-7], [0.0, 0.0]], np.float32)
    q, s = quant.quantize_act_tl(x)
    assert q[0].tolist() == [64, -127] or q[0].tolist() == [63, -127]
    assert np.float32(127) / np.float32(2e-7) == s[0]
    assert q[1].tolist() == [0, 0] and np.isinf(s[1])


def test_q8_k_worked_block():
    x = np.zeros((1, 256), np.float32)
    x[0, 3] = -2.0      # the signed extreme: iscale = -127 / -2 = 63.5
    x[0, 7] = 1.0       # 63.5 -> 64 (tie, even)
    x[0, 9] = 2.0       # same magnitude as -2 but later: not chosen; 127 -> min(127, 127)
    x[0, 20] = -0.5     # -31.75 -> -32
    q, d, bsums = quant.quantize_q8_k(x)
    assert q[0, 3] == -127 and q[0, 7] == 64 and q[0, 9] == 127 and q[0, 20] == -32
    assert d[0, 0] == np.float32(1) / np.float32(63.5)
    assert bsums[0, 0].tolist() == [-127 + 64 + 127, -32] + [0] * 14


def test_q8_k_sign_flip_keeps_values_in_range():
    x = np.full((1, 256), 3.0, np.float32)               # max > 0: iscale negative
    q, d, _ = quant.quantize_q8_k(x)
    assert (q == -127).all() and d[0, 0] < 0
    assert np.allclose(q * d[0, 0], 3.0)


def test_q8_k_rejects_partial_block():
    with pytest.raises(minibit.FormatError, match="multiple of 256"):
        quant.quantize_q8_k(np.ones((1, 100), np.float32))


def test_activations_reject_non_finite():
    with pytest.raises(minibit.FormatError, match="non-finite"):
        quant.quantize_act_hf(np.array([[1.0, np.nan]], np.float32))


def test_absmean_worked_example():
    w = np.array([[0.9, -0.2, 0.05, -1.3]], np.float32)   # mean|w| = 0.6125
    codes, scale = quant.absmean_ternarize(w)
    assert codes.tolist() == [[1, 0, 0, -1]]            # 0.9/0.6125=1.47->1, -0.33->0, 0.08->0
    gamma = np.float32(0.6125)
    assert scale == np.float32(1) / (np.float32(1) / gamma)


def test_absmean_all_zero_uses_floor():
    codes, scale = quant.absmean_ternarize(np.zeros((2, 3), np.float32))
    assert not codes.any() and scale == np.float32(1) / (np.float32(1) / np.float32(1e-5))


# ---- twin == reference ------------------------------------------------------------------

@pytest.mark.parametrize("name", FUNCS)
@given(x=act_matrices(max_k=100))
def test_activation_quantizers_twin_equal(name, x):
    ref, fast = twin_pair("quant")
    before = x.copy()
    a = getattr(ref, name)(x)

    def check(simd):
        b = getattr(fast, name)(x)
        assert np.array_equal(x, before, equal_nan=True)    # input never mutated
        for i, (u, v) in enumerate(zip(a, b)):
            assert_same_bytes(u, v, f"{name} output {i} simd={simd}")
    each_simd(fast, check)


@given(x=act_matrices(max_t=3, max_k=2, k_multiple=256))
def test_q8_k_twin_equal(x):
    ref, fast = twin_pair("quant")
    want = ref.quantize_q8_k(x)

    def check(simd):
        for i, (u, v) in enumerate(zip(want, fast.quantize_q8_k(x))):
            assert_same_bytes(u, v, f"quantize_q8_k output {i} simd={simd}")
    each_simd(fast, check)


def test_quantizers_twin_ties_and_tiny_blocks():
    """Products exactly halfway (ties to even), a repeated maximum (the first wins in Q8_K),
    and a block whose max is subnormal (Q8_K's iscale overflows: q = 0) on both loops."""
    ref, fast = twin_pair("quant")
    x = np.zeros((3, 512), np.float32)
    x[0, :256] = np.arange(256, dtype=np.float32) / 2 - 64       # many exact .5 products
    x[0, 256:] = -x[0, :256]
    x[1, 5], x[1, 9], x[1, 300] = 3.0, -3.0, 1.0                   # |max| twice: +3 first
    x[2, :256] = np.float32(1e-40) * (np.arange(256) % 3 - 1)      # subnormal block
    x[2, 256:] = np.linspace(-1, 1, 256, dtype=np.float32)
    for name in FUNCS + ["quantize_q8_k"]:
        want = getattr(ref, name)(x)

        def check(simd):
            for i, (u, v) in enumerate(zip(want, getattr(fast, name)(x))):
                assert_same_bytes(u, v, f"{name} output {i} simd={simd}")
        each_simd(fast, check)
    q, d, _ = ref.quantize_q8_k(x)
    assert d[1, 0] == np.float32(1) / (np.float32(-127) / np.float32(3))   # max is +3.0
    assert not q[2, :256].any()


@given(w=st.tuples(st.integers(1, 12), st.integers(1, 40)).flatmap(
    lambda s: hnp.arrays(np.float32, s, elements=values)))
def test_absmean_twin_equal(w):
    ref, fast = twin_pair("quant")
    before = w.copy()
    (c1, s1), (c2, s2) = ref.absmean_ternarize(w), fast.absmean_ternarize(w)
    assert np.array_equal(w, before)
    assert_same_bytes(c1, c2, "codes")
    assert_same_bytes(np.float32(s1), np.float32(s2), "scale")


@given(x=act_matrices())
def test_hf_dequantized_error_is_bounded(x):
    q, s = quant.quantize_act_hf(x)
    # |x - q/s| <= 0.5/s (one half step) everywhere: the definition of rounding to nearest,
    # applied to the float32 product x*s, which is off by at most |x*s| * 2^-24 <= 127 * 2^-24
    # (x = 0.15, s = 423.33: x*s rounds to exactly 63.5, a tie, from 63.5000025)
    err = np.abs(x.astype(np.float64) - q / s[:, None].astype(np.float64))
    assert (err <= (0.5 + 127 * 2.0**-24) / s[:, None] + 1e-30).all()


def test_q8_k_subnormal_block_emulates_nearest_int():
    # -127 / 1e-40 overflows float32: ggml's nearest_int then yields low byte 0 for every q.
    x = np.zeros((1, 256), np.float32)
    x[0, 0] = np.float32(1e-40)
    q, d, _ = quant.quantize_q8_k(x)
    assert not q.any() and d[0, 0] == 0 and np.signbit(d[0, 0])


def test_tl_overflowing_scale_counts_as_zero_row():
    q, s = quant.quantize_act_tl(np.array([[1e-40, -1e-40]], np.float32))
    assert not q.any() and np.isinf(s[0])
