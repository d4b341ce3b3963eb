"""Pick each kernel's Cython twin or its NumPy reference, once, at import.

Every compiled module ``minibit._fast.NAME`` is the twin of a reference module in
``minibit/`` of the same NAME: same function names, same signatures, same results to the
bit.  Callers ask :func:`select` for the module to use; it returns the twin when one was
built and ``MINIBIT_PUREPYTHON`` is unset, otherwise the reference.  The references stay
importable by name (``minibit.formats.tq2_0.quantize`` always runs NumPy), so tests can
put the two side by side.

Environment
-----------
MINIBIT_PUREPYTHON=1   force the NumPy references everywhere.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import types

__all__ = ["backend", "forced_pure", "fast_module", "select", "use", "twins", "TWINS"]

# Every twin: minibit._fast.NAME -> its reference module.  setup.py builds one extension per
# _fast/NAME.pyx; a name missing here, or a twin that did not build, shows in twins().
TWINS = {
    "quant": "minibit.quant",
    "hf_packed": "minibit.formats.hf_packed",
    "i2_s": "minibit.formats.i2_s",
    "tq2_0": "minibit.formats.tq2_0",
    "tq1_0": "minibit.formats.tq1_0",
    "tl1": "minibit.formats.tl1",
    "tl2": "minibit.formats.tl2",
    "mad": "minibit.kernels.mad",
    "tq": "minibit.kernels.tq",
    "lut": "minibit.kernels.lut",
    "dense": "minibit.kernels.dense",
    "layers": "minibit.model.layers",
    "sampling": "minibit.sampling",
    "quant_a48": "minibit.quant_a48",
    "float_ternary": "minibit.kernels.float_ternary",
    "ggml": "minibit.model.ggml",
}


def forced_pure() -> bool:
    """True when MINIBIT_PUREPYTHON asks for the NumPy path (any value but '', '0')."""
    return os.environ.get("MINIBIT_PUREPYTHON", "").strip() not in ("", "0")


_FORCED_PURE = forced_pure()
_fast_cache: dict[str, types.ModuleType | None] = {}


def fast_module(name: str) -> types.ModuleType | None:
    """The compiled twin ``minibit._fast.NAME``, or None if it was not built.

    This ignores MINIBIT_PUREPYTHON on purpose: the twin-equality tests compare the two
    implementations directly in either mode.
    """
    if name not in _fast_cache:
        try:
            _fast_cache[name] = importlib.import_module(f"minibit._fast.{name}")
        except ImportError:
            _fast_cache[name] = None
    return _fast_cache[name]


_override: str | None = None


@contextlib.contextmanager
def use(which: str):
    """Run a block on one backend: ``with use("numpy"): ...`` (benchmarks, tutorials).

    "cython" raises RuntimeError when the twins were not built.  Not thread-safe: it sets a
    process-wide switch for the duration of the block.
    """
    global _override
    if which not in ("numpy", "cython"):
        raise ValueError(f"backend must be 'numpy' or 'cython', got {which!r}")
    missing = [n for n, built in twins().items() if not built]
    if which == "cython" and missing:
        raise RuntimeError(f"the Cython twins {', '.join(missing)} are not built "
                           f"(pip install . with a C compiler)")
    old, _override = _override, which
    try:
        yield
    finally:
        _override = old


def select(name: str, reference: types.ModuleType) -> types.ModuleType:
    """The module that runs NAME: the twin unless forced pure or not built."""
    if _override == "numpy" or (_FORCED_PURE and _override is None):
        return reference
    twin = fast_module(name)
    return twin if twin is not None else reference


def twins() -> dict:
    """{twin name: True when minibit._fast.NAME was built and imports} for every twin."""
    return {name: fast_module(name) is not None for name in TWINS}


_built_summary: str | None = None


def _built() -> str:
    """"all", "some" or "none": which twins import.  Computed once: fast_module keeps every
    answer, so the set of built twins cannot change in a process (backend() runs per layer
    call in the decode loop; twins() builds a dict of every twin)."""
    global _built_summary
    if _built_summary is None:
        built = twins().values()
        _built_summary = "all" if all(built) else ("some" if any(built) else "none")
    return _built_summary


def backend(detail: bool = False):
    """'cython' when every compiled twin is built and active, 'numpy' when the references run
    (forced, or nothing built), 'partial' when only some twins were built (a failed compile;
    each missing one runs its reference).  detail=True: {twin name: 'cython' | 'numpy'}."""
    if detail:
        pure = _override == "numpy" or (_FORCED_PURE and _override is None)
        return {name: "numpy" if pure or not ok else "cython" for name, ok in twins().items()}
    if _override is not None:
        return _override
    if _FORCED_PURE or _built() == "none":
        return "numpy"
    return "cython" if _built() == "all" else "partial"
