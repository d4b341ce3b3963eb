"""`minibit bench model` machinery on a tiny model: the worker, the thread check, the report.

No timing is asserted (timings belong in the benchmark, not the tests); these check that
the bench measures what it says: the same logits hash for 1 and 2 threads, RSS and rates
present, and a report that prints the table and the determinism line.
"""

import os

import pytest

import minibit
from minibit import bench_model
from minibit.cli import bench as bench_cli
from minibit.io.synthetic import write_checkpoint


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    pytest.importorskip("gguf")
    d = write_checkpoint(str(tmp_path_factory.mktemp("bm") / "hf"), hidden=256, intermediate=256,
                         heads=4, kv_heads=2, layers=2, vocab=300, hidden_act="silu",
                         embed_dtype="float16", seed=3)
    files = {"hf": d}
    for fmt in ("tq2_0", "i2_s"):
        files[fmt] = str(tmp_path_factory.mktemp("bm") / f"m-{fmt}.gguf")
        minibit.save_gguf(minibit.load(d), files[fmt], fmt, progress=False)
    return files


@pytest.mark.parametrize("kv", ["f32", "f16"])
@pytest.mark.parametrize("fmt", ["tq2_0", "i2_s"])
def test_worker_same_bits_for_1_and_2_threads(tiny_gguf, fmt, kv):
    res = bench_model.worker_minibit(dict(path=tiny_gguf[fmt], threads=[1, 2], prefill=12, decode=5,
                                          kv=kv))
    assert res["engine"] == "minibit" and res["backend"] == minibit.backend() and res["kv"] == kv
    assert [r["threads"] for r in res["rows"]] == [1, 2]
    assert res["rows"][0]["hash"] == res["rows"][1]["hash"]
    assert all(r["prefill"] > 0 and r["decode"] > 0 for r in res["rows"])
    assert res["load_s"] >= 0 and res["rss_mb"] > 0


def test_worker_subprocess_and_report(tiny_gguf, capsys):
    spec = dict(path=tiny_gguf["tq2_0"], threads=[1, 2], prefill=8, decode=3)
    res = bench_model.run_worker("minibit", spec, {"MINIBIT_PUREPYTHON": "1"})
    assert "error" not in res, res
    assert res["backend"] == "numpy"
    res["file"] = "tq2_0"
    broken = dict(engine="llama.cpp (llama-bench)", file="tq2_0", error="not built")
    status = bench_model.report("tiny", tiny_gguf, [res, broken], 8, 3)
    out = capsys.readouterr().out
    assert status == 0
    assert "| minibit | tq2_0 | numpy | f32 | 1 |" in out and "| minibit | tq2_0 | numpy | f32 | 2 |" in out
    assert "bit-identical across threads 1,2" in out
    assert "not built" in out


def test_worker_failure_is_reported(tmp_path):
    res = bench_model.run_worker("minibit", dict(path=str(tmp_path / "missing.gguf"), threads=[1],
                                                 prefill=4, decode=2))
    assert "error" in res and "missing.gguf" in res["error"]


@pytest.mark.parametrize("argv, name", [(["--threads", "0"], "--threads"),
                                        (["--kv-cache", "bf16"], "--kv-cache")])
def test_bad_arguments_exit_2(capsys, argv, name):
    with pytest.raises(SystemExit) as e:
        bench_cli.model(argv)
    assert e.value.code == 2
    assert name in capsys.readouterr().err


def test_cache_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIBIT_BENCH_CACHE", str(tmp_path))
    assert bench_model.cache_root() == str(tmp_path)
    assert bench_model.find_llama_bench(str(tmp_path)) is None or os.environ.get("MINIBIT_LLAMA_BENCH")


def test_report_over_runs_prints_median_range_roofline_and_ratios(tiny_gguf, capsys):
    """Three runs of made-up figures: medians with their range, the roofline fraction, and
    the within-run ratios against each peer and the best peer on the same file."""
    def mine(dec, h="abc"):
        return dict(engine="minibit", backend="cython", kv="f16", file="i2_s", tensor_bytes=10**9,
                    rows=[dict(threads=1, prefill=100.0, decode=dec, hash=h),
                          dict(threads=2, prefill=150.0, decode=dec * 1.5, hash=h)])

    def peer(name, dec):
        return dict(engine=name, backend="ggml", file="i2_s", tensor_bytes=10**9,
                    rows=[dict(threads=1, prefill=50.0, decode=dec),
                          dict(threads=2, prefill=100.0, decode=dec * 2)])

    runs = [[mine(d), peer("bitnet.cpp (llama-bench)", p), peer("other", 1.0)]
            for d, p in ((10.0, 10.0), (12.0, 8.0), (11.0, 11.0))]
    status = bench_model.report("tiny", tiny_gguf, runs, 8, 3, bandwidth={1: 20.0, 2: 30.0},
                                loads=["1.00", "2.00", "3.00"])
    out = capsys.readouterr().out
    assert status == 0
    assert "load average (1 min) at the start of each run: 1.00, 2.00, 3.00" in out
    # decode 10, 12, 11 tok/s x 1 GB: median 11.0 (10.0-12.0) GB/s, 0.55 of 20 GB/s
    assert "| minibit | i2_s | cython | f16 | 1 | 100.0 (100.0-100.0) | 11.0 (10.0-12.0) | " \
           "11.0 (10.0-12.0) | 0.55 (0.50-0.60) |" in out
    # within-run ratios 1.0, 1.5, 1.0 at 1 thread; 0.75, 1.125, 0.75 at 2
    assert ("# minibit i2_s kv f16 / bitnet.cpp (llama-bench) (i2_s): 1 thread: decode 1.00x "
            "(1.00-1.50x), prefill 2.00x (2.00-2.00x); 2 threads: decode 0.75x (0.75-1.12x)") in out
    assert "/ the best peer in the run (i2_s): 1 thread: decode 1.00x (1.00-1.50x)" in out
    assert "bit-identical across threads 1,2 in every run" in out
    runs[1][0]["rows"][1]["hash"] = "other"
    assert bench_model.report("tiny", tiny_gguf, runs, 8, 3) == 1
    assert "DIFFER" in capsys.readouterr().out
