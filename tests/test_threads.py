"""The twins' thread pool and shared switches (minibit._fast._rt, _fast/mb_pool.h).

- a process forked after a multi-threaded kernel call runs kernels again (the OpenMP pool
  used before deadlocked there); run in a subprocess with a timeout, so a hang fails;
- any thread count, including more threads than rows or cores, gives the same bits;
- two Python threads calling kernels at once both get their exact results;
- one SIMD switch for every twin.
"""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import minibit
from minibit import _backend, formats, kernels
from minibit.kernels import dense
from minibit.model import layers

needs_twins = pytest.mark.skipif(_backend.fast_module("_rt") is None,
                                 reason="the Cython twins are not built")

# parent: 2-thread kernel calls; then os.fork() and a multiprocessing "fork" pool, whose
# children call the same kernels on 2 threads and must get the parent's bytes
FORK_SCRIPT = r"""
import multiprocessing as mp, os, sys
import numpy as np
import minibit
from minibit import formats, kernels
from minibit.kernels import dense
from minibit.model import layers
from minibit._fast import _rt

rng = np.random.default_rng(0)
P = {f: formats.encode(f, rng.integers(-1, 2, (512, 1024)).astype(np.float32))
     for f in ("i2_s", "tq2_0")}
X = rng.standard_normal((3, 1024)).astype(np.float32)
W = rng.standard_normal((700, 1024)).astype(np.float16)
Q = rng.standard_normal((4, 8, 64)).astype(np.float32)
K = rng.standard_normal((2, 300, 64)).astype(np.float32)

def run():
    kernels.set_threads(2)
    out = [kernels.linear(X, P[f]) for f in P]
    out.append(dense.project(X, W, "F16"))
    out.append(minibit._backend.select("layers", layers).attention(Q, K, K, 296))
    return b"".join(a.tobytes() for a in out)

def child(_):
    return run(), _rt.workers()

want = run()
assert _rt.workers() >= 1, "the parent ran no worker thread"
pid = os.fork()
if pid == 0:
    got, workers = child(0)
    os._exit(0 if got == want and workers >= 1 else 3)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, f"forked child: exit {status}"
with mp.get_context("fork").Pool(2) as pool:
    for got, workers in pool.map(child, range(4)):
        assert got == want and workers >= 1
print("fork ok")
"""


@needs_twins
def test_forked_child_runs_multithreaded_kernels(tmp_path):
    # the same interpreter and environment, so it imports the minibit this test imports
    env = dict(os.environ, MINIBIT_PUREPYTHON="0")
    try:
        r = subprocess.run([sys.executable, "-c", FORK_SCRIPT], capture_output=True, text=True,
                           env=env, timeout=180, cwd=str(tmp_path))
    except subprocess.TimeoutExpired:
        pytest.fail("a forked child hung in a kernel call after the parent used 2 threads")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "fork ok" in r.stdout


def _all_kernels(rng, T):
    """(name, fn) pairs covering every twin that runs on the pool, on shapes with ragged
    tiles; each fn returns float32/int32 arrays to compare by bytes."""
    att = _backend.select("layers", layers).attention
    cases = []
    for fmt, rows, cols in (("i2_s", 333, 512), ("hf_packed", 301, 1024),
                            ("tq2_0", 300, 1024), ("tq1_0", 77, 4096)):
        p = formats.encode(fmt, rng.integers(-1, 2, (rows, cols)).astype(np.float32))
        x = rng.standard_normal((T, cols)).astype(np.float32)
        for prof in kernels.profiles(fmt):
            cases.append((f"{fmt} {prof}", lambda p=p, x=x, prof=prof: kernels.linear(x, p, profile=prof)))
    W = rng.standard_normal((1000, 512)).astype(np.float16)
    xd = rng.standard_normal((T, 512)).astype(np.float32)
    cases.append(("dense", lambda: dense.project(xd, W, "F16")))
    q = rng.standard_normal((T, 12, 64)).astype(np.float32)
    k = rng.standard_normal((3, 400 + T, 64)).astype(np.float32)
    v = rng.standard_normal((3, 400 + T, 64)).astype(np.float32)
    cases.append(("attention", lambda: att(q, k, v, 400)))
    return cases


@needs_twins
@pytest.mark.parametrize("T", [1, 5])
def test_every_thread_count_gives_the_same_bits(T):
    rng = np.random.default_rng(T)
    old = kernels.get_threads()
    try:
        for name, fn in _all_kernels(rng, T):
            kernels.set_threads(1)
            want = fn().tobytes()
            for n in (2, 3, 4, 7, 64, 100):
                kernels.set_threads(n)
                assert fn().tobytes() == want, f"{name}: {n} threads"
    finally:
        kernels.set_threads(old)


@needs_twins
def test_two_python_threads_at_once():
    """Kernels release the GIL: two callers may reach the pool together (the second runs
    its job inline); both results stay exact."""
    rng = np.random.default_rng(9)
    cases = _all_kernels(rng, 3)
    old = kernels.get_threads()
    kernels.set_threads(2)
    try:
        want = [fn().tobytes() for _, fn in cases]
        errors = []

        def worker():
            try:
                for _ in range(5):
                    for (name, fn), w in zip(cases, want):
                        if fn().tobytes() != w:
                            errors.append(name)
            except Exception as e:        # pragma: no cover - reported below
                errors.append(repr(e))

        ts = [threading.Thread(target=worker) for _ in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        assert not any(t.is_alive() for t in ts), "a kernel call hung"
        assert not errors, errors
    finally:
        kernels.set_threads(old)


@needs_twins
def test_one_simd_switch_for_every_twin():
    names = ["mad", "tq", "dense", "layers", "quant"]
    twins = [_backend.fast_module(n) for n in names]
    assert all(t is not None for t in twins)
    old = twins[0]._set_simd(False)
    try:
        assert {t._simd() for t in twins} == {"scalar"}
        twins[1]._set_simd(True)
        want = _backend.fast_module("_rt").simd()
        assert {t._simd() for t in twins} == {want}
    finally:
        twins[0]._set_simd(old)
