"""`minibit bench kernels`: ternary mpGEMM speed, every kernel x backend x thread count.

Measures ``minibit.kernels.linear`` end to end (activation quantization, integer product,
scales) on the projection shapes of BitNet-2B4T and bitnet_b1_58-large, for T = 1 (decode,
GEMV) and T = 128 (prefill, GEMM).  Every row states format, profile, kernel, backend and
threads; GMAC/s counts rows * cols * T multiply-adds; weight GB/s is the packed weight bytes
read per second (float32 bytes for the NumPy baseline).  The baseline is a NumPy float32
matmul on weights decoded once (BLAS, its own threads).  The single-thread read bandwidth
of the machine (a NumPy sum over a large array) frames the GB/s column.

By default the weights are hot in the caches (the same weight is called again and again);
``--cold`` cycles through enough copies to overflow the last-level cache, as a model does.

Kept out of the tests on purpose: a timed test proves nothing on an idle machine and fails
on a busy one.  Numbers are from whatever else the machine is running; every table prints
the load average next to the machine.
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np

from .. import _backend, formats
from . import available, get_threads, linear, natural_profile, set_threads

SHAPES = {
    "2b4t": [(2560, 2560), (640, 2560), (6912, 2560), (2560, 6912)],
    "large": [(1536, 1536), (4096, 1536), (1536, 4096)],
}
FORMATS_DEFAULT = ("i2_s", "hf_packed", "tq2_0", "tq1_0")
NUMPY_REF_MAX_MAC = 4e8      # NumPy integer references above this are skipped (seconds per call)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = ", load average %.2f" % os.getloadavg()[0]
    except OSError:
        load = ""
    return f"{cpu}, {os.cpu_count()} cores{load}, Python {platform.python_version()}"


def best_time(fn, min_time: float = 0.15, min_runs: int = 3, max_runs: int = 200) -> float:
    """The fastest of several timed calls (seconds): at least min_runs and min_time in total."""
    fn()                                                     # warm-up (imports, page faults)
    best, total, n = float("inf"), 0.0, 0
    while (n < min_runs or total < min_time) and n < max_runs:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, total, n = min(best, dt), total + dt, n + 1
    return best


def read_bandwidth(mb: int = 256) -> float:
    """Single-thread read bandwidth, GB/s: the best of a few NumPy sums over `mb` MB."""
    a = np.ones(mb * 2 ** 20 // 8, dtype=np.int64)
    t = best_time(lambda: np.add.reduce(a), min_time=0.5, min_runs=3, max_runs=8)
    return a.nbytes / t / 1e9


def _weights(fmt: str, rows: int, cols: int, rng) -> formats.Packed:
    codes = rng.integers(-1, 2, (rows, cols)).astype(np.int8)
    return formats.pack_codes(fmt, codes, 0.0625)


def _copies(p: formats.Packed, cold: bool):
    """The weight, or enough copies of it (new byte arrays) to overflow a 64 MB cache."""
    if not cold:
        return [p]
    n = max(1, int(np.ceil(128e6 / p.nbytes)))
    return [formats.Packed(p.fmt, p.shape, p.data.copy(), None if p.scale is None
                           else p.scale.copy(), dict(p.params)) for _ in range(n)]


def bench(shapes, Ts=(1, 128), fmts=FORMATS_DEFAULT, threads=(1, 2), numpy_rows=True,
          cold=False, log=None):
    """Measure every (shape, T, format, kernel, backend, threads); returns a list of dicts."""
    rng = np.random.default_rng(0)
    have_fast = _backend.fast_module("quant") is not None
    results = []
    old_threads = get_threads()
    try:
        for rows, cols in shapes:
            for T in Ts:
                mac = rows * cols * T
                x = rng.standard_normal((T, cols)).astype(np.float32)
                w = rng.standard_normal((rows, cols)).astype(np.float32)
                t = best_time(lambda: x @ w.T)               # [T, K] · [K, N] float32, BLAS
                results.append(dict(shape=(rows, cols), T=T, fmt="float32", profile="-",
                                    kernel="numpy matmul", backend="numpy", threads="BLAS",
                                    sec=t, gmac=mac / t / 1e9, gbs=w.nbytes / t / 1e9))
                if log:
                    log(results[-1])
                for fmt in fmts:
                    if cols % (256 if fmt.startswith("tq") else 128) and fmt != "hf_packed":
                        continue
                    p = _weights(fmt, rows, cols, rng)
                    prof = natural_profile(fmt)
                    ws = _copies(p, cold)
                    for kern in available(fmt):
                        bes = ["numpy"] if kern == "v0" else ["numpy"] + (["cython"] if have_fast else [])
                        for be in bes:
                            if be == "numpy" and (not numpy_rows or (kern != "v0" and mac > NUMPY_REF_MAX_MAC)):
                                results.append(dict(shape=(rows, cols), T=T, fmt=fmt, profile=prof,
                                                    kernel=kern, backend=be, threads="-",
                                                    skipped="--no-numpy" if not numpy_rows
                                                    else f"> {NUMPY_REF_MAX_MAC:.0e} MAC"))
                                continue
                            for th in (threads if be == "cython" else ["-"]):
                                if th != "-":
                                    set_threads(int(th))
                                i = [0]

                                def call():
                                    i[0] = (i[0] + 1) % len(ws)
                                    linear(x, ws[i[0]], profile=prof, kernel=kern)
                                with _backend.use(be):
                                    t = best_time(call, min_time=0.15 if be == "cython" else 0.3)
                                results.append(dict(shape=(rows, cols), T=T, fmt=fmt, profile=prof,
                                                    kernel=kern, backend=be, threads=th, sec=t,
                                                    gmac=mac / t / 1e9, gbs=p.data.nbytes / t / 1e9))
                                if log:
                                    log(results[-1])
    finally:
        set_threads(old_threads)
    return results


def _row(r) -> str:
    shape = f"{r['shape'][0]}x{r['shape'][1]}"
    head = f"| {shape} | {r['T']} | {r['fmt']} | {r['profile']} | {r['kernel']} | {r['backend']} | {r['threads']} |"
    if r.get("skipped"):
        return head + f" skipped ({r['skipped']}) | | |"
    return head + f" {r['sec'] * 1e3:.3f} | {r['gmac']:.2f} | {r['gbs']:.2f} |"


def print_table(results, bandwidth=None, cold=False) -> None:
    print("# kernels: minibit.kernels.linear end to end (quantize + integer product + scales)")
    print(f"# machine: {machine()}")
    if bandwidth is not None:
        print(f"# single-thread read bandwidth (NumPy int64 sum of 256 MB): {bandwidth:.1f} GB/s")
    print(f"# weights: {'cold (cycling copies > 64 MB; the float32 baseline stays hot)' if cold else 'hot in cache (one weight, called repeatedly)'}; "
          f"v0 has no twin (its matmul is NumPy/BLAS), so it appears once")
    try:
        busy = os.getloadavg()[0] > 1.2          # this benchmark itself accounts for ~1
    except OSError:
        busy = False
    if busy:
        print("# WARNING: the machine is busy (load average above 1.2): rows with 2+ threads share "
              "the cores with other work, and a chunk held by a descheduled thread waits a scheduler tick")
    print("| rows x cols | T | format | profile | kernel | backend | threads | ms | GMAC/s | weight GB/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(_row(r))
    _skipped_note(results)
    _summary(results)


def _skipped_note(results) -> None:
    n = sum(1 for r in results if str(r.get("skipped", "")).startswith(">"))
    if n:
        print(f"# skipped: {n} NumPy-reference rows of mad/tq above {NUMPY_REF_MAX_MAC:.0e} MAC: "
              f"their integer loops take seconds per call there (v0 is still measured)")


def _summary(results) -> None:
    by = {(r["shape"], r["T"], r["fmt"], r["kernel"], r["backend"], str(r["threads"])): r
          for r in results if not r.get("skipped")}
    for (shape, T, fmt, kern, be, th), r in by.items():
        if be != "cython" or th != "1":
            continue
        parts = []
        two = by.get((shape, T, fmt, kern, "cython", "2"))
        if two:
            parts.append(f"2 threads / 1 = {two['gmac'] / r['gmac']:.2f}x")
        ref = by.get((shape, T, fmt, kern, "numpy", "-"))
        if ref:
            parts.append(f"cython(1 thread) / numpy reference = {r['gmac'] / ref['gmac']:.0f}x")
        v0 = by.get((shape, T, fmt, "v0", "numpy", "-"))
        if v0:
            parts.append(f"/ v0 = {r['gmac'] / v0['gmac']:.0f}x")
        if parts and shape in ((6912, 2560), (1536, 4096)):
            print(f"# {shape[0]}x{shape[1]} T={T} {fmt} {kern}: " + ", ".join(parts))


def run(shapes=None, Ts=(1, 128), fmts=FORMATS_DEFAULT, threads=(1, 2), numpy_rows=True,
        cold=False, quick=False, stream=True):
    """Measure and print the table; returns the result rows.  quick: one shape, fewer rows."""
    if shapes is None:
        shapes = [(6912, 2560)] if quick else SHAPES["2b4t"] + SHAPES["large"]
    if quick:
        fmts = tuple(f for f in fmts if f in ("i2_s", "tq2_0")) or fmts
    bw = read_bandwidth(64 if quick else 256)
    if stream:                                   # print rows as they come: a long run shows progress
        print_table([], bw, cold)
        res = bench(shapes, Ts, fmts, threads, numpy_rows, cold, log=lambda r: print(_row(r), flush=True))
        for r in res:
            if r.get("skipped"):
                print(_row(r))
        _skipped_note(res)
        _summary(res)
        return res
    res = bench(shapes, Ts, fmts, threads, numpy_rows, cold)
    print_table(res, bw, cold)
    return res
