"""`minibit bench formats`: encode/decode speed of every weight format, both backends.

Benchmarks live here and never in the tests: a timed test fails on a busy machine and
proves nothing on an idle one.  Every row states its shape, backend and thread count.
"""

from __future__ import annotations

import time

import numpy as np

from . import _backend, formats
from .kernels.bench import machine

FORMAT_SHAPE = (2560, 6912)     # BitNet-2B4T's largest projection (rows x cols)


def best_time(fn, repeat: int, min_time: float = 0.2) -> float:
    """The fastest of `repeat` timed calls (seconds), running at least min_time in total."""
    best, total, n = float("inf"), 0.0, 0
    while n < repeat or total < min_time:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, total, n = min(best, dt), total + dt, n + 1
        if n >= 50:
            break
    return best


def bench_formats(shape=FORMAT_SHAPE, repeat: int = 3, backends=None, fmts=formats.FORMATS):
    """Encode and decode MB/s (of float32 weights) per format and backend; returns rows."""
    rows, cols = shape
    w = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    mb = w.nbytes / 1e6
    if backends is None:
        backends = ["numpy"] + (["cython"] if all(_backend.twins().values()) else [])
    out = []
    for fmt in fmts:
        packed = {}
        for be in backends:
            with _backend.use(be):
                try:
                    p = formats.encode(fmt, w)
                except Exception as e:          # a shape this layout cannot hold
                    out.append(dict(fmt=fmt, backend=be, error=str(e)))
                    continue
                t_enc = best_time(lambda: formats.encode(fmt, w), repeat)
                t_dec = best_time(lambda: formats.decode(p), repeat)
                packed[be] = p.data.tobytes()
                out.append(dict(fmt=fmt, backend=be, enc=mb / t_enc, dec=mb / t_dec,
                                bpw=p.bits_per_weight))
        if len(set(packed.values())) > 1:
            raise AssertionError(f"{fmt}: backends wrote different bytes")
    return out


def print_format_table(results, shape) -> None:
    print(f"# formats: encode / decode throughput, MB/s of float32 weights, {shape[0]}x{shape[1]}")
    print(f"# machine: {machine()}")
    print("| format | backend | bits/weight | encode MB/s | decode MB/s |")
    print("|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['fmt']} | {r['backend']} | - | {r['error']} | |")
        else:
            print(f"| {r['fmt']} | {r['backend']} | {r['bpw']:.4f} | {r['enc']:.0f} | {r['dec']:.0f} |")
    by = {(r["fmt"], r["backend"]): r for r in results if "error" not in r}
    for fmt in dict.fromkeys(r["fmt"] for r in results):
        a, b = by.get((fmt, "numpy")), by.get((fmt, "cython"))
        if a and b:
            print(f"# {fmt}: cython / numpy = {b['enc'] / a['enc']:.1f}x encode, "
                  f"{b['dec'] / a['dec']:.1f}x decode")
