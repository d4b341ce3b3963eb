"""Shared test machinery: both backends, hypothesis profiles.

Every twin test runs the NumPy reference and the Cython twin side by side (STYLE.md §6).
``twin_pair(name)`` returns (reference module, compiled twin).  When the twin was not
built the Cython half is skipped, unless MINIBIT_REQUIRE_FAST=1 (set by .ci/run), where a
missing twin is a failure: CI must never pass by skipping the comparison.
"""

import importlib
import os

# the hf profile copies transformers in eager mode: torch.compile (transformers decorates
# ActQuant / WeightQuant with it) must be off before any test imports torch
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import numpy as np
import pytest
from hypothesis import HealthCheck, settings, strategies as st

from minibit import _backend

settings.register_profile(
    "ci", derandomize=True, max_examples=60, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev", max_examples=300, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough", max_examples=3000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# reference module path for each twin name (the package's own table)
REFERENCES = _backend.TWINS


def twin_pair(name):
    """(reference module, compiled twin) for NAME; skips or fails when the twin is absent."""
    ref = importlib.import_module(REFERENCES[name])
    fast = _backend.fast_module(name)
    if fast is None:
        if os.environ.get("MINIBIT_REQUIRE_FAST") == "1":
            pytest.fail(f"compiled twin minibit._fast.{name} is missing but MINIBIT_REQUIRE_FAST=1")
        pytest.skip(f"compiled twin minibit._fast.{name} not built")
    return ref, fast


def assert_same_bytes(a, b, what="output"):
    """Exact equality with a useful message: count and first position of differences."""
    a = np.asarray(a)
    b = np.asarray(b)
    assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} != {b.dtype}"
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    if a.dtype.kind == "f":
        diff = a.view(np.uint32 if a.itemsize == 4 else np.uint16) != b.view(
            np.uint32 if b.itemsize == 4 else np.uint16)
    else:
        diff = a != b
    if diff.any():
        idx = np.argwhere(diff)
        first = tuple(int(i) for i in idx[0])
        pytest.fail(f"{what}: {int(diff.sum())} of {a.size} elements differ; first at {first}: "
                    f"{a[first]!r} vs {b[first]!r}")


def each_simd(fast, fn):
    """fn(simd) with a twin's AVX2 code allowed, then forbidden (the setting is restored)."""
    old = fast._set_simd(True)
    try:
        for simd in (True, False):
            fast._set_simd(simd)
            fn(simd)
    finally:
        fast._set_simd(old)


def assert_model_backends_agree(m, ids, twin):
    """m.logits(ids) on the NumPy path and on the Cython twins give the same bits.  twin: the
    twin the model's own kernels need (skipped when it is not built, failed under
    MINIBIT_REQUIRE_FAST=1, as twin_pair does)."""
    twin_pair(twin)
    with _backend.use("numpy"):
        a = m.logits(ids)
    with _backend.use("cython"):
        b = m.logits(ids)
    assert_same_bytes(b, a, f"logits with the {twin} twin vs NumPy")


@st.composite
def tl1_tilings(draw, max_strips=2):
    """(M, K, params) of a valid TL1 tiling: bm in {32, 64}, BM = 1..max_strips strips of bm
    rows, BK a multiple of by = 256 / bm (up to 4), M and K whole tiles (1-2 and 1-3)."""
    bm = draw(st.sampled_from([32, 64]))
    by = 256 // bm
    BM = bm * draw(st.integers(1, max_strips))
    BK = by * draw(st.integers(1, 4))
    M, K = BM * draw(st.integers(1, 2)), BK * draw(st.integers(1, 3))
    return M, K, {"BM": BM, "BK": BK, "bm": bm}
