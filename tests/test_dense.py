"""The LM head's float product (minibit.kernels.dense): the defined order, both backends.

The reference and the compiled twin must agree bit for bit (any dtype, any tail, SIMD or
portable C, any thread count); both must be a float32 dot product (within float32
rounding of a float64 product); and the docstring's worked example must hold.
"""

import numpy as np
import pytest
from hypothesis import given, strategies as st

import minibit.kernels as kernels
from minibit import FormatError
from minibit.kernels import dense

from conftest import assert_same_bytes, twin_pair


def _matrix(rng, n, k, dtype, scale=1.0):
    w = (scale * rng.standard_normal((n, k))).astype(np.float32)
    if dtype == "BF16":
        return (w.view(np.uint32) >> 16).astype(np.uint16)
    return w.astype(np.float16 if dtype == "F16" else np.float32)


def test_worked_example():
    """K = 3, x = [1, 2, 3], w = [0.5, 0.25, -1]: the lanes give -2.0 (module docstring)."""
    x = np.array([[1, 2, 3]], np.float32)
    w = np.array([[0.5, 0.25, -1]], np.float16)
    assert dense.matmul_t(x, w, "F16")[0, 0] == np.float32(-2.0)


def test_order_is_the_documented_one():
    """An input where the order shows: 1e8 + 1 - 1e8 in one lane is 0, across lanes 1."""
    x = np.zeros((1, 64), np.float32)
    w = np.ones((1, 64), np.float32)
    x[0, 0], x[0, 32], x[0, 1] = 1e8, 1.0, -1e8    # lane 0: 1e8 then +1 (lost); lane 1: -1e8
    assert dense.matmul_t(x, w, "F32")[0, 0] == np.float32(0.0)
    x[0, 32], x[0, 33] = 0.0, 1.0                   # lane 1 now -1e8 + 1 (lost) too
    assert dense.matmul_t(x, w, "F32")[0, 0] == np.float32(0.0)
    x2 = np.zeros((1, 64), np.float32)
    x2[0, 0], x2[0, 8] = 1e8, -1e8                   # lanes 0 and 8 meet first in the tree
    x2[0, 1] = 1.0
    assert dense.matmul_t(x2, w, "F32")[0, 0] == np.float32(1.0)


@given(T=st.integers(1, 4), N=st.integers(1, 80), K=st.integers(1, 200),
       dtype=st.sampled_from(["F32", "F16", "BF16"]), seed=st.integers(0, 2**31 - 1))
def test_twin_same_bits(T, N, K, dtype, seed):
    ref, fast = twin_pair("dense")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, K)).astype(np.float32)
    W = _matrix(rng, N, K, dtype)
    want = ref.matmul_t(x, W, dtype)
    old = fast._set_simd(True)
    try:
        for simd in (True, False):
            fast._set_simd(simd)
            assert_same_bytes(fast.matmul_t(x, W, dtype), want, f"{dtype} simd={simd}")
    finally:
        fast._set_simd(old)
    exact = x.astype(np.float64) @ dense.widen(W, dtype).astype(np.float64).T
    bound = 4e-7 * (K + 8) * (np.abs(x).astype(np.float64) @ np.abs(dense.widen(W, dtype)).T + 1e-30)
    assert np.all(np.abs(want - exact) <= bound)


def test_special_values_same_bits():
    """Signed zeros, subnormal F16 weights, infinities and NaN go the same way in both."""
    ref, fast = twin_pair("dense")
    h = np.arange(65536, dtype=np.uint16).view(np.float16).reshape(-1, 64)     # every F16 value
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 64)).astype(np.float32)
    x[0, :8] = -0.0
    want = ref.matmul_t(x, h, "F16")
    for simd in (True, False):
        old = fast._set_simd(simd)
        try:
            got = fast.matmul_t(x, h, "F16")
        finally:
            fast._set_simd(old)
        nan = np.isnan(want)
        assert np.array_equal(np.isnan(got), nan)
        assert_same_bytes(np.where(nan, 0, got), np.where(nan, 0, want), f"simd={simd}")
    neg0 = np.full((1, 40), -0.0, np.float32)
    for impl in (ref, fast):
        y = impl.matmul_t(neg0, np.ones((1, 40), np.float32), "F32")
        assert y[0, 0] == 0 and not np.signbit(y[0, 0])        # the +0.0 padding of the tail


def test_threads_do_not_change_bits():
    ref, fast = twin_pair("dense")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 512)).astype(np.float32)
    W = _matrix(rng, 3000, 512, "F16")
    want = ref.matmul_t(x, W, "F16")
    old = kernels.get_threads()
    try:
        for n in (1, 2, 3, 7):
            kernels.set_threads(n)
            assert_same_bytes(fast.matmul_t(x, W, "F16"), want, f"{n} threads")
    finally:
        kernels.set_threads(old)


@pytest.mark.parametrize("impl", ["ref", "fast"])
def test_bad_input_is_a_format_error(impl):
    ref = dense
    mod = ref if impl == "ref" else twin_pair("dense")[1]
    W = np.ones((4, 8), np.float16)
    with pytest.raises(FormatError, match="F16"):
        mod.matmul_t(np.ones((1, 8), np.float32), W.astype(np.float32), "F16")
    with pytest.raises(FormatError, match="do not fit"):
        mod.matmul_t(np.ones((1, 9), np.float32), W, "F16")
    with pytest.raises(FormatError, match="float32"):
        mod.matmul_t(np.ones((1, 8), np.float64), W, "F16")
    with pytest.raises(FormatError, match="dtype"):
        mod.matmul_t(np.ones((1, 8), np.float32), W, "Q8_0")
    if impl == "fast":
        with pytest.raises(FormatError, match="out must be"):
            mod.matmul_t(np.ones((1, 8), np.float32), W, "F16", out=np.empty((1, 5), np.float32))
