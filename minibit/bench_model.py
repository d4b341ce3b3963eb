"""`minibit bench model`: whole-model speed and memory, side by side with llama.cpp.

    minibit bench model --synthetic large            # bitnet_b1_58-large shape (~730M)
    minibit bench model --synthetic 2b4t --threads 1,2
    minibit bench model --synthetic large --llama-bench build   # also time llama.cpp's own tool

What it does, in one run:

1. Writes (once, cached under ``--cache``, default ``~/.cache/minibit/bench``) a random
   ternary checkpoint of the shape with ``minibit.io.synthetic.write_checkpoint``: packed
   weights, SiLU gated FFN with sub-norms (the 1bitLLM graph, which stock llama.cpp runs as
   arch "bitnet"), tied F16 embedding; then converts it with ``minibit.save_gguf`` to a
   TQ2_0 file (llama.cpp's format) and an I2_S file (bitnet.cpp's).
2. For each file and backend, in a fresh subprocess (clean RSS, its own backend): load
   time, RSS, then per thread count a prefill of ``--prefill`` tokens and ``--decode``
   greedy single-token steps, in tokens/s.  The logits of every step are hashed; the hashes
   must match across thread counts (minibit promises the same bits on any thread count).
3. When llama-cpp-python is importable, the same TQ2_0 file in llama.cpp through it: the
   same prefill and the same number of single-token steps from Python, same threads.
4. When a ``llama-bench`` binary is given or cached (``--llama-bench build`` compiles one
   from llama-cpp-python's sdist, which carries llama.cpp's source, into the cache), its
   pp/tg figures for the same file: llama.cpp without a Python loop.

Then one table, with minibit / llama.cpp ratios.  "RSS after load / file" = (RSS after
``minibit.load`` - RSS before it) / weight-file bytes: what holding the model costs (the
loader reads every weight page once to validate it, so the mapped file is resident);
peak RSS is the whole process at the end (KV cache, activations, interpreter included).
Nothing here runs in the test suite: timings belong in a benchmark, not a test.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

from .cli import Parser

LLAMA_CPP_PYTHON = "0.3.36"     # the sdist --llama-bench build compiles (PyPI)
CACHE_VERSION = "1"             # bump when the synthetic checkpoint's recipe changes


# ---- the model files -------------------------------------------------------------------------

def cache_root(arg: str | None = None) -> str:
    return os.path.abspath(os.path.expanduser(
        arg or os.environ.get("MINIBIT_BENCH_CACHE") or "~/.cache/minibit/bench"))


def model_files(shape: str, root: str, log=print) -> dict:
    """{"hf": dir, "tq2_0": gguf, "i2_s": gguf} for a synthetic shape, written when missing."""
    from .io.synthetic import SHAPES, write_checkpoint
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")
    d = os.path.join(root, f"{shape}-v{CACHE_VERSION}")
    out = {"hf": os.path.join(d, "hf"), "tq2_0": os.path.join(d, "model-tq2_0.gguf"),
           "i2_s": os.path.join(d, "model-i2_s.gguf")}
    done = os.path.join(d, "complete")
    if os.path.exists(done):
        return out
    shutil.rmtree(d, ignore_errors=True)
    sh = dict(SHAPES[shape])
    sh.pop("arch")
    log(f"# writing the synthetic {shape} checkpoint to {d} (once)")
    t0 = time.perf_counter()
    write_checkpoint(out["hf"], arch="bitnet-b1.58", hidden_act="silu", packed=True, tied=True,
                     embed_dtype="float16", max_position=4096, seed=0, **sh)
    from . import load, save_gguf
    m = load(out["hf"])
    for fmt in ("tq2_0", "i2_s"):
        save_gguf(m, out[fmt], fmt, progress=False)
    with open(done, "w") as f:
        f.write(f"written in {time.perf_counter() - t0:.0f} s\n")
    return out


# ---- one measurement, in its own process ---------------------------------------------------

def _rss_mb(peak: bool = False) -> float:
    key = "VmHWM:" if peak else "VmRSS:"
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _ids(n: int, vocab: int, salt: int = 0):
    """A fixed token sequence (the tokenizer plays no part in speed)."""
    import numpy as np
    return (np.arange(n, dtype=np.int64) * 7919 + 11 + salt) % min(vocab, 256)


def worker_minibit(spec: dict) -> dict:
    """Load spec["path"], then prefill/decode per thread count -> figures and logit hashes."""
    import numpy as np
    import minibit
    from minibit import kernels
    import importlib
    for mod in ("minibit.io.gguf", "minibit.tokenizer", "tokenizers"):
        importlib.import_module(mod)            # imports are not the model's memory
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    m = minibit.load(spec["path"], threads=spec["threads"][0])
    load_s = time.perf_counter() - t0
    m.kv_cache = spec.get("kv", "f32")
    rss_load = _rss_mb()
    n_pre, n_dec = spec["prefill"], spec["decode"]
    prompt = _ids(n_pre, m.config.vocab_size)
    rows = []
    for th in spec["threads"]:
        kernels.set_threads(th)
        cache = m.new_cache(n_pre + n_dec + 1)
        m.forward(prompt[:8], cache, last_only=True)              # warm: first-call costs
        cache.reset()
        h = hashlib.sha256()
        t0 = time.perf_counter()
        logits = m.forward(prompt, cache, last_only=True)
        pre_s = time.perf_counter() - t0
        h.update(logits.tobytes())
        tok = int(np.argmax(logits[-1]))
        t0 = time.perf_counter()
        for _ in range(n_dec):
            logits = m.forward(np.array([tok]), cache, last_only=True)
            h.update(logits.tobytes())
            tok = int(np.argmax(logits[-1]))
        dec_s = time.perf_counter() - t0
        rows.append(dict(threads=th, prefill=n_pre / pre_s, decode=n_dec / dec_s,
                         hash=h.hexdigest()[:16]))
    return dict(engine="minibit", backend=minibit.backend(), profile=m.profile, kv=m.kv_cache,
                load_s=load_s,
                rss_mb=_rss_mb(peak=True), rss_after_load_mb=rss_load - rss0, rows=rows)


def worker_llama_cpp(spec: dict) -> dict:
    """The same file through llama-cpp-python: prefill, then single-token steps from Python."""
    import numpy as np
    from llama_cpp import Llama
    rows = []
    load_s = None
    n_pre, n_dec = spec["prefill"], spec["decode"]
    for th in spec["threads"]:
        t0 = time.perf_counter()
        llm = Llama(model_path=spec["path"], n_ctx=n_pre + n_dec + 16, n_batch=512,
                    n_threads=th, n_threads_batch=th, verbose=False)
        load_s = load_s or time.perf_counter() - t0
        prompt = [int(i) for i in _ids(n_pre, llm.n_vocab())]
        llm.eval(prompt[:8])                                      # warm
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        pre_s = time.perf_counter() - t0
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        t0 = time.perf_counter()
        for _ in range(n_dec):
            llm.eval([tok])
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        dec_s = time.perf_counter() - t0
        rows.append(dict(threads=th, prefill=n_pre / pre_s, decode=n_dec / dec_s))
        del llm
    return dict(engine="llama.cpp (llama-cpp-python)", backend="ggml", profile="-",
                load_s=load_s, rss_mb=_rss_mb(peak=True), rss_after_load_mb=None, rows=rows)


def run_worker(kind: str, spec: dict, env: dict | None = None, timeout: float = 3600) -> dict:
    """Run a worker in a fresh interpreter and return its JSON answer (or {"error": ...})."""
    e = dict(os.environ, **(env or {}))
    r = subprocess.run([sys.executable, "-m", "minibit.bench_model", "--worker", kind,
                        json.dumps(spec)], capture_output=True, text=True, env=e, timeout=timeout)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"{kind} worker failed (exit {r.returncode}): {tail}"}
    return json.loads(lines[-1])


# ---- llama-bench ----------------------------------------------------------------------------

def find_llama_bench(root: str) -> str | None:
    env = os.environ.get("MINIBIT_LLAMA_BENCH")
    if env and os.access(env, os.X_OK):
        return env
    p = os.path.join(root, "llama-bench", "bin", "llama-bench")
    return p if os.access(p, os.X_OK) else None


def build_llama_bench(root: str, log=print) -> str:
    """Compile llama-bench once from llama-cpp-python's PyPI sdist (llama.cpp's source is in
    vendor/llama.cpp) with cmake; the binary goes to <root>/llama-bench/bin.  Needs pip,
    cmake and a C++ compiler; nothing is written inside the repository."""
    from . import _llama_build as lb
    dest = os.path.join(root, "llama-bench")
    src = lb.llama_cpp_source(root, LLAMA_CPP_PYTHON, log=log)
    build = os.path.join(dest, "build")
    log("# building llama-bench with cmake (a few minutes)")
    lb.build(src, build, ["llama-bench"], lb.LEAN_ARGS + [
        "-DLLAMA_BUILD_EXAMPLES=OFF", "-DGGML_NATIVE=ON", "-DBUILD_SHARED_LIBS=OFF"],
        jobs=os.cpu_count() or 2, log=log)
    os.makedirs(os.path.join(dest, "bin"), exist_ok=True)
    shutil.copy2(os.path.join(build, "bin", "llama-bench"), os.path.join(dest, "bin"))
    return os.path.join(dest, "bin", "llama-bench")


def run_llama_bench(binary: str, path: str, threads, n_pre: int, n_dec: int, reps: int = 3) -> list:
    """llama-bench's pp/tg tokens/s per thread count, from its JSON output."""
    r = subprocess.run([binary, "-m", path, "-p", str(n_pre), "-n", str(n_dec), "-t",
                        ",".join(map(str, threads)), "-r", str(reps), "-o", "json"],
                       capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"llama-bench failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    got: dict = {}
    for rec in json.loads(r.stdout):
        row = got.setdefault(rec["n_threads"], dict(threads=rec["n_threads"]))
        row["prefill" if rec["n_prompt"] else "decode"] = rec["avg_ts"]
    return [got[t] for t in sorted(got)]


# ---- the report ----------------------------------------------------------------------------

def _fmt(v, spec=".1f"):
    return "-" if v is None else format(v, spec)


def report(shape: str, files: dict, results: list, n_pre: int, n_dec: int) -> int:
    from .kernels.bench import machine
    print(f"# model: synthetic {shape}, prefill {n_pre} tokens, decode {n_dec} tokens (tok/s)")
    print(f"# machine: {machine()}")
    print("# KV cache: minibit's as the kv column says; llama.cpp's is its default, F16")
    print("| engine | file | backend | kv | threads | prefill tok/s | decode tok/s | load s | "
          "RSS after load / file | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    status = 0
    for res in results:
        fsize = os.path.getsize(files[res["file"]]) / 2**20
        if "error" in res:
            print(f"| {res.get('engine', '?')} | {res['file']} | - | - | - | {res['error']} | | | | |")
            continue
        after = res.get("rss_after_load_mb")
        ratio = after / fsize if after is not None else None
        for row in res["rows"]:
            print(f"| {res['engine']} | {res['file']} | {res['backend']} | {res.get('kv', 'f16')} | "
                  f"{row['threads']} | "
                  f"{_fmt(row.get('prefill'))} | {_fmt(row.get('decode'))} | "
                  f"{_fmt(res.get('load_s'), '.2f')} | {_fmt(ratio, '.2f')} | "
                  f"{_fmt(res.get('rss_mb'), '.0f')} |")
    # same bits on any thread count
    for res in results:
        if res.get("engine") == "minibit" and len(res.get("rows", ())) > 1:
            hashes = {r["hash"] for r in res["rows"]}
            same = len(hashes) == 1
            status |= 0 if same else 1
            print(f"# {res['file']} {res['backend']} kv {res['kv']}: logits of every step "
                  f"{'bit-identical' if same else 'DIFFER'} across threads "
                  f"{','.join(str(r['threads']) for r in res['rows'])} (sha256 {sorted(hashes)[0]})")
    # ratios against llama.cpp on the same TQ2_0 file
    peers = [r for r in results if r.get("engine", "").startswith("llama.cpp") and "rows" in r]
    mine = [r for r in results if r.get("engine") == "minibit" and r.get("backend") == "cython"
            and "rows" in r]
    for peer in peers:
        pr = {row["threads"]: row for row in peer["rows"]}
        for res in mine:
            both = [(row, pr[row["threads"]]) for row in res["rows"] if row["threads"] in pr]
            if not both:
                continue
            th = " / ".join(str(row["threads"]) for row, _ in both)
            dec = " / ".join(f"{row['decode'] / p['decode']:.2f}x" for row, p in both)
            pre = " / ".join(f"{row['prefill'] / p['prefill']:.2f}x" for row, p in both)
            print(f"# minibit {res['file']} kv {res['kv']} / {peer['engine']} tq2_0, threads {th}: "
                  f"decode {dec}, prefill {pre}")
    return status


def main(argv=None) -> int:
    ap = Parser(prog="minibit bench model", description=__doc__.split("\n\n")[0])
    ap.add_argument("--synthetic", choices=["large", "2b4t"], default="large",
                    help="the shape of the random ternary model (default large)")
    ap.add_argument("--threads", default="1,2", help="thread counts, comma-separated (default 1,2)")
    ap.add_argument("--prefill", type=int, default=128)
    ap.add_argument("--decode", type=int, default=128)
    ap.add_argument("--numpy-decode", type=int, default=8,
                    help="decode steps for the NumPy backend (it is ~30x slower; default 8)")
    ap.add_argument("--backends", default="cython,numpy", help="minibit backends (default both)")
    ap.add_argument("--files", default="tq2_0,i2_s", help="which GGUF files minibit runs")
    ap.add_argument("--llama-cpp", choices=["auto", "off"], default="auto",
                    help="llama-cpp-python side by side when installed (default auto)")
    ap.add_argument("--llama-bench", default="auto",
                    help="'auto' (use a cached binary), 'build' (compile one from the PyPI "
                         "sdist into the cache), 'off', or a path to llama-bench")
    ap.add_argument("--kv-cache", default="f32,f16",
                    help="minibit KV cache types to run on the Cython backend, comma-separated "
                         "(default f32,f16; the NumPy backend runs the first)")
    ap.add_argument("--cache", default=None, help="where models and llama-bench are cached")
    args = ap.parse_args(argv)
    try:
        threads = [int(t) for t in args.threads.split(",") if t.strip()]
        if not threads or min(threads) < 1:
            raise ValueError
    except ValueError:
        ap.error(f"--threads must be positive integers separated by commas, got {args.threads!r}")
    if args.prefill < 1 or args.decode < 1 or args.numpy_decode < 1:
        ap.error("--prefill, --decode and --numpy-decode must be at least 1")
    kvs = [k for k in args.kv_cache.split(",") if k.strip()]
    if not kvs or any(k not in ("f32", "f16") for k in kvs):
        ap.error(f"--kv-cache takes f32 and/or f16, got {args.kv_cache!r}")
    root = cache_root(args.cache)
    files = model_files(args.synthetic, root)
    results = []
    from . import _backend
    for fmt in [f for f in args.files.split(",") if f]:
        if fmt not in ("tq2_0", "i2_s"):
            ap.error(f"--files takes tq2_0 and/or i2_s, got {fmt!r}")
        for be in [b for b in args.backends.split(",") if b]:
            if be == "cython" and _backend.fast_module("quant") is None:
                print("# cython backend not built: skipped", file=sys.stderr)
                continue
            for kv in kvs if be == "cython" else kvs[:1]:
                spec = dict(path=files[fmt], threads=threads if be == "cython" else threads[:1],
                            prefill=args.prefill, kv=kv,
                            decode=args.decode if be == "cython" else args.numpy_decode)
                env = {"MINIBIT_PUREPYTHON": "1" if be == "numpy" else "0"}
                res = run_worker("minibit", spec, env)
                res["file"] = fmt
                res.setdefault("kv", kv)
                results.append(res)
                print(f"# measured minibit {fmt} {be} kv {kv}", file=sys.stderr)
    if args.llama_cpp == "auto":
        try:
            import importlib.util
            has = importlib.util.find_spec("llama_cpp") is not None
        except (ImportError, ValueError):
            has = False
        if has:
            res = run_worker("llama_cpp", dict(path=files["tq2_0"], threads=threads,
                                               prefill=args.prefill, decode=args.decode))
            res["file"] = "tq2_0"
            results.append(res)
        else:
            print("# llama-cpp-python not installed: no side-by-side (pip install llama-cpp-python)",
                  file=sys.stderr)
    lb = args.llama_bench
    binary = None
    if lb == "build":
        binary = find_llama_bench(root) or build_llama_bench(root)
    elif lb == "auto":
        binary = find_llama_bench(root)
    elif lb != "off":
        binary = lb
    if binary:
        try:
            rows = run_llama_bench(binary, files["tq2_0"], threads, args.prefill, args.decode)
            results.append(dict(engine="llama.cpp (llama-bench)", backend="ggml", file="tq2_0",
                                rows=rows, load_s=None, rss_mb=None))
        except (OSError, RuntimeError, ValueError, KeyError, subprocess.SubprocessError) as e:
            results.append(dict(engine="llama.cpp (llama-bench)", file="tq2_0", error=str(e)))
    return report(args.synthetic, files, results, args.prefill, args.decode)


def _worker_main(kind: str, spec_json: str) -> int:
    spec = json.loads(spec_json)
    fn = {"minibit": worker_minibit, "llama_cpp": worker_llama_cpp}[kind]
    print(json.dumps(fn(spec)))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        sys.exit(_worker_main(sys.argv[2], sys.argv[3]))
    sys.exit(main())
