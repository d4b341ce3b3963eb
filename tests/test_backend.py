"""Backend selection: MINIBIT_PUREPYTHON, backend(), use(), references importable by name."""

import os
import subprocess
import sys

import pytest

import minibit
from minibit import _backend


def _backend_in_subprocess(env_value):
    env = dict(os.environ)
    env.pop("MINIBIT_PUREPYTHON", None)
    if env_value is not None:
        env["MINIBIT_PUREPYTHON"] = env_value
    out = subprocess.run([sys.executable, "-c", "import minibit; print(minibit.backend())"],
                         env=env, capture_output=True, text=True, cwd=os.path.dirname(__file__),
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_purepython_forces_numpy():
    assert _backend_in_subprocess("1") == "numpy"
    built = _backend.twins().values()
    expected = "cython" if all(built) else "partial" if any(built) else "numpy"
    assert _backend_in_subprocess("0") == expected
    assert _backend_in_subprocess(None) == expected


def test_use_switches_and_restores():
    before = minibit.backend()
    with _backend.use("numpy"):
        assert minibit.backend() == "numpy"
        from minibit.formats import tq2_0
        assert _backend.select("tq2_0", tq2_0) is tq2_0
    assert minibit.backend() == before
    with pytest.raises(ValueError):
        with _backend.use("fortran"):
            pass


def test_references_importable_by_name():
    from minibit.formats import hf_packed, i2_s, tl1, tl2, tq1_0, tq2_0  # noqa: F401
    from minibit import quant, sampling  # noqa: F401
    assert callable(tq2_0.quantize) and callable(quant.quantize_act_hf)


def test_backend_reports_every_twin():
    """backend(detail=True) names every twin; CI (MINIBIT_REQUIRE_FAST=1) needs all built."""
    detail = minibit.backend(detail=True)
    assert set(detail) == set(_backend.TWINS)
    on_disk = {os.path.splitext(n)[0] for n in os.listdir(os.path.join(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__))), "_fast")) if n.endswith(".pyx")
               and not n.startswith("_")}           # _rt: the shared runtime, no twin
    assert on_disk == set(_backend.TWINS)          # a new .pyx must be listed in TWINS
    if _backend.forced_pure():
        assert set(detail.values()) == {"numpy"}
    elif os.environ.get("MINIBIT_REQUIRE_FAST") == "1":
        missing = [n for n, ok in _backend.twins().items() if not ok]
        assert missing == [], f"twins not built: {missing}"
        assert set(detail.values()) == {"cython"} and minibit.backend() == "cython"
