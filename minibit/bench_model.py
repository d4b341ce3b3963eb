"""`minibit bench model`: whole-model speed and memory, side by side with llama.cpp.

    minibit bench model --synthetic large            # bitnet_b1_58-large shape (~730M)
    minibit bench model --synthetic 2b4t --threads 1,2
    minibit bench model --synthetic large --llama-bench build   # also time llama.cpp's own tool
    minibit bench model --synthetic large --runs 5 --backends cython --kv-cache f16

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
5. When bitnet.cpp is built (``--bitnet-cpp``, default: ``~/.cache/bitnet-peers/2024/build/bin``,
   what ``../shared/peers/build-bitnetcpp 2024`` makes), the I2_S file is bitnet.cpp's own:
   its ``llama-quantize --allow-requantize model-tq2_0.gguf ... I2_S 1`` writes it once (one
   thread: bitnet.cpp's multi-threaded I2_S quantization corrupts tensors), and bitnet.cpp's
   ``llama-bench`` runs it beside minibit.  ``--ik-llama DIR`` (a build of ik_llama.cpp's
   llama-bench and llama-quantize) adds ik_llama.cpp on an IQ2_BN file it writes the same way.

Everything is measured ``--runs`` times (default 3), engines interleaved within a run, and
each cell prints the median with the range over runs; ratios are taken within a run (minibit
/ peer on the same file), then their median and range.  The 1-minute load average is printed
at the start of every run.  The roofline column is the decode rate times the bytes of every
tensor in the file (each is read once per token: the tied embedding as the LM head), as a
fraction of the machine's read bandwidth at that many threads, measured here (NumPy sums of
a 256 MB buffer, one per thread).  "RSS after load / file" = (RSS after
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
import statistics
import subprocess
import sys
import tempfile
import threading
import time


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
    from .io import load, save_gguf
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
    from . import _backend, kernels
    from .io import load
    import importlib
    for mod in ("minibit.io.gguf", "minibit.tokenizer", "tokenizers"):
        importlib.import_module(mod)            # imports are not the model's memory
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    m = load(spec["path"], threads=spec["threads"][0])
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
    return dict(engine="minibit", backend=_backend.backend(), profile=m.profile, kv=m.kv_cache,
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


def run_llama_bench(binary: str, path: str, threads, n_pre: int, n_dec: int, reps: int = 1,
                    extra=None) -> list:
    """llama-bench's pp/tg tokens/s per thread count, from its JSON output (the same tool in
    llama.cpp, bitnet.cpp and ik_llama.cpp); `extra`: more llama-bench arguments."""
    r = subprocess.run([binary, "-m", path, "-p", str(n_pre), "-n", str(n_dec), "-t",
                        ",".join(map(str, threads)), "-r", str(reps), "-o", "json"] + list(extra or []),
                       capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"llama-bench failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    out = r.stdout[r.stdout.index("["):]                      # some builds print a banner first
    # ik_llama.cpp prints warnings ("WARNING: Behavior may be unexpected ...") into the JSON
    out = "\n".join(ln for ln in out.splitlines() if ln.strip()[:1] in ("", "[", "]", "{", "}", '"'))
    got: dict = {}
    for rec in json.loads(out):
        row = got.setdefault(rec["n_threads"], dict(threads=rec["n_threads"]))
        row["prefill" if rec["n_prompt"] else "decode"] = rec["avg_ts"]
    return [got[t] for t in sorted(got)]


# ---- bitnet.cpp and ik_llama.cpp: their own files, their own llama-bench ---------------------

BITNET_CPP_BIN = "~/.cache/bitnet-peers/2024/build/bin"


def peer_bin(arg: str, default: str | None, env: str) -> str | None:
    """A peer's bin directory holding llama-bench and llama-quantize, or None."""
    if arg == "off":
        return None
    d = os.environ.get(env) if arg == "auto" else arg
    d = d or default
    if not d:
        return None
    d = os.path.expanduser(d)
    ok = all(os.access(os.path.join(d, b), os.X_OK) for b in ("llama-bench", "llama-quantize"))
    if not ok and arg != "auto":
        raise FileNotFoundError(f"no llama-bench and llama-quantize in {d}")
    return d if ok else None


def peer_file(bin_dir: str, src: str, dst: str, qtype: str, log=print, flags=("--allow-requantize",)) -> str:
    """Write dst once with the peer's own quantizer from src (the TQ2_0 file, dequantized to
    float and quantized again, or its F32 twin: the ternary codes survive, the scales are the
    peer's)."""
    if not os.path.exists(dst):
        log(f"# writing {os.path.basename(dst)} with {bin_dir}/llama-quantize {qtype} (once)")
        tmp = dst + ".part"
        r = subprocess.run([os.path.join(bin_dir, "llama-quantize"), *flags, src,
                            tmp, qtype, "1"], capture_output=True, text=True, timeout=3600)
        if r.returncode != 0 or not os.path.exists(tmp):
            raise RuntimeError(f"llama-quantize {qtype} failed: "
                               f"{(r.stderr.strip().splitlines() or ['?'])[-1]}")
        os.replace(tmp, dst)
    return dst


# ---- bandwidth and bytes per token ------------------------------------------------------------

def read_bandwidth(threads: int, mb: int = 256, reps: int = 5) -> float:
    """Read bandwidth in GB/s with `threads` threads, each summing its own mb-MB int64 buffer
    with NumPy (which releases the GIL); the best of `reps`."""
    import numpy as np
    bufs = [np.ones(mb * 2**20 // 8, dtype=np.int64) for _ in range(threads)]
    best = 0.0
    for _ in range(reps):
        barrier = threading.Barrier(threads + 1)

        def work(b):
            barrier.wait()
            b.sum()

        ts = [threading.Thread(target=work, args=(b,)) for b in bufs]
        for t in ts:
            t.start()
        t0 = time.perf_counter()
        barrier.wait()
        for t in ts:
            t.join()
        best = max(best, threads * mb * 2**20 / (time.perf_counter() - t0) / 1e9)
    return best


def tensor_bytes(path: str) -> int:
    """Bytes of every tensor in a GGUF file: what one decode step reads (each weight once; the
    tied embedding as the LM head).  The file's size for types minibit cannot read."""
    from .io.gguf import tensor_rows
    try:
        return sum(int(row[3]) for row in tensor_rows(path))
    except Exception:             # a type minibit's reader does not know (a peer's): the file
        return os.path.getsize(path)


def loadavg() -> str:
    try:
        return "%.2f" % os.getloadavg()[0]
    except OSError:
        return "?"


# ---- the report ----------------------------------------------------------------------------

def _fmt(v, spec=".1f"):
    return "-" if v is None else format(v, spec)


def _key(res):
    return (res.get("engine", "?"), res["file"], res.get("backend", "-"), res.get("kv", "f16"))


def _spread(vals, spec=".1f", unit=""):
    """'median (min-max)' of the values; one value prints alone."""
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    med = format(statistics.median(vals), spec) + unit
    if len(vals) == 1:
        return med
    return f"{med} ({format(min(vals), spec)}-{format(max(vals), spec)}{unit})"


def report(shape: str, files: dict, runs: list, n_pre: int, n_dec: int,
           bandwidth: dict | None = None, loads: list | None = None) -> int:
    """The table over runs (a list of each run's results) -> exit status (1 if any thread
    count changed a bit)."""
    from .kernels.bench import machine
    if runs and isinstance(runs[0], dict):         # one run's results
        runs = [runs]
    bandwidth = bandwidth or {}
    print(f"# model: synthetic {shape}, prefill {n_pre} tokens, decode {n_dec} tokens (tok/s)")
    print(f"# machine: {machine()}")
    print(f"# {len(runs)} run(s): each cell is the median (min-max over runs); "
          f"load average (1 min) at the start of each run: {', '.join(loads or ['?'])}")
    if bandwidth:
        print("# read bandwidth (NumPy sums of 256 MB per thread): " +
              ", ".join(f"{t} thread{'s' if t > 1 else ''} {bw:.1f} GB/s" for t, bw in sorted(bandwidth.items())))
    print("# roofline: decode tok/s x tensor bytes of the file (read once per token), and that as a "
          "fraction of the read bandwidth at the same thread count")
    print("# KV cache: minibit's as the kv column says; llama.cpp's, bitnet.cpp's, ik_llama.cpp's are F16")
    print("| engine | file | backend | kv | threads | prefill tok/s | decode tok/s | decode GB/s | "
          "of read bw | load s | RSS after load / file | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    status = 0
    order, cells, errors = [], {}, []
    for run in runs:
        for res in run:
            if "error" in res:
                errors.append(res)
                continue
            k = _key(res)
            if k not in cells:
                order.append(k)
                cells[k] = dict(res=res, rows={})
            for row in res["rows"]:
                c = cells[k]["rows"].setdefault(row["threads"], dict(prefill=[], decode=[], hash=set()))
                c["prefill"].append(row.get("prefill"))
                c["decode"].append(row.get("decode"))
                if "hash" in row:
                    c["hash"].add(row["hash"])
    for k in order:
        res = cells[k]["res"]
        path = files[res["file"]]
        fsize = os.path.getsize(path) / 2**20
        nbytes = res.get("tensor_bytes")
        after = res.get("rss_after_load_mb")
        ratio = after / fsize if after is not None else None
        for th, c in sorted(cells[k]["rows"].items()):
            dec = [v for v in c["decode"] if v is not None]
            gbs = [v * nbytes / 1e9 for v in dec] if nbytes else []
            bw = bandwidth.get(th)
            frac = [g / bw for g in gbs] if bw else []
            print(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {th} | {_spread(c['prefill'])} | "
                  f"{_spread(c['decode'])} | {_spread(gbs)} | {_spread(frac, '.2f')} | "
                  f"{_fmt(res.get('load_s'), '.2f')} | {_fmt(ratio, '.2f')} | "
                  f"{_fmt(res.get('rss_mb'), '.0f')} |")
    for res in errors:
        print(f"| {res.get('engine', '?')} | {res['file']} | - | - | - | {res['error']} | | | | | | |")
    # same bits on any thread count (every run)
    for k in order:
        if k[0] != "minibit" or len(cells[k]["rows"]) < 2:
            continue
        hashes = set().union(*(c["hash"] for c in cells[k]["rows"].values()))
        same = len(hashes) == 1
        status |= 0 if same else 1
        ths = ",".join(str(t) for t in sorted(cells[k]["rows"]))
        print(f"# {k[1]} {k[2]} kv {k[3]}: logits of every step {'bit-identical' if same else 'DIFFER'} "
              f"across threads {ths} in every run (sha256 {sorted(hashes)[0]})")
    # ratios within each run: minibit (cython) / each peer on the same file, and / the best peer
    peers = [k for k in order if k[0] != "minibit"]
    mine = [k for k in order if k[0] == "minibit" and k[2] == "cython"]

    def per_run(k):
        out = []
        for run in runs:
            got = {}
            for res in run:
                if "error" not in res and _key(res) == k:
                    got = {row["threads"]: row for row in res["rows"]}
            out.append(got)
        return out

    for m in mine:
        mr = per_run(m)
        same_file = [p for p in peers if p[1] == m[1]]
        targets = [(p[0], [per_run(p)]) for p in same_file]
        if len(same_file) > 1:
            targets.append(("the best peer in the run", [per_run(p) for p in same_file]))
        for name, prs in targets:
            parts = []
            for th in sorted(cells[m]["rows"]):
                dec, pre = [], []
                for i, row in enumerate(mr):
                    if th not in row:
                        continue
                    cand = [pr[i][th] for pr in prs if th in pr[i]]
                    if not cand:
                        continue
                    bd = max((c.get("decode") or 0) for c in cand)
                    bp = max((c.get("prefill") or 0) for c in cand)
                    if bd:
                        dec.append(row[th]["decode"] / bd)
                    if bp:
                        pre.append(row[th]["prefill"] / bp)
                if dec or pre:
                    parts.append(f"{th} thread{'s' if th > 1 else ''}: decode {_spread(dec, '.2f', 'x')}, "
                                 f"prefill {_spread(pre, '.2f', 'x')}")
            if parts:
                print(f"# minibit {m[1]} kv {m[3]} / {name} ({m[1]}): " + "; ".join(parts))
    return status


def run(synthetic: str = "large", threads=(1, 2), prefill: int = 128, decode: int = 128,
        numpy_decode: int = 8, backends=("cython", "numpy"), fmts=("tq2_0", "i2_s"),
        llama_cpp: bool = True, llama_bench: str = "auto", kvs=("f32", "f16"),
        cache: str | None = None, runs: int = 3, bitnet_cpp: str = "auto",
        ik_llama: str = "off") -> int:
    """Measure and print the table (the body of ``minibit bench model``); returns 0, or 1 when
    minibit's logits differ across thread counts.  Everything runs ``runs`` times, interleaved.
    llama_bench: "auto" (a cached binary), "build", "off" or a path; bitnet_cpp / ik_llama:
    "auto" / "off" / a bin dir (FileNotFoundError when a named one is missing).  The Cython
    backend runs every KV cache type in ``kvs``, the NumPy backend the first."""
    threads, fmts, kvs = list(threads), list(fmts), list(kvs)
    bitnet = peer_bin(bitnet_cpp, BITNET_CPP_BIN, "MINIBIT_BITNET_CPP")
    ik = peer_bin(ik_llama, None, "MINIBIT_IK_LLAMA")
    root = cache_root(cache)
    files = model_files(synthetic, root)
    d = os.path.dirname(files["tq2_0"])
    if bitnet:
        files["i2_s"] = peer_file(bitnet, files["tq2_0"], os.path.join(d, "model-i2_s-bitnetcpp.gguf"), "I2_S")
        print(f"# I2_S file: bitnet.cpp's own ({bitnet}/llama-quantize --allow-requantize "
              f"model-tq2_0.gguf ... I2_S 1)", file=sys.stderr)
    if ik:
        # ik_llama.cpp numbers ggml's types its own way and cannot read a TQ2_0 file: its
        # quantizer starts from the F32 twin (minibit's codes times the scale), embedding and
        # output kept F16 as in the other files
        f32 = os.path.join(d, "model-f32.gguf")
        if not os.path.exists(f32):
            from .io import load
            from .io.gguf.f32_twin import write_f32_twin
            write_f32_twin(load(files["tq2_0"]), files["tq2_0"], f32 + ".part")
            os.replace(f32 + ".part", f32)
        files["iq2_bn"] = peer_file(ik, f32, os.path.join(d, "model-iq2_bn-ik.gguf"), "IQ2_BN",
                                    flags=("--token-embedding-type", "f16",
                                           "--output-tensor-type", "f16"))
    nbytes = {f: tensor_bytes(p) for f, p in files.items() if f != "hf"}
    lb = llama_bench
    binary = None
    if lb == "build":
        binary = find_llama_bench(root) or build_llama_bench(root)
    elif lb == "auto":
        binary = find_llama_bench(root)
    elif lb != "off":
        binary = lb
    from . import _backend
    import importlib.util
    has_llcpp = llama_cpp and importlib.util.find_spec("llama_cpp") is not None
    if llama_cpp and not has_llcpp:
        print("# llama-cpp-python not installed: no side-by-side (pip install llama-cpp-python)",
              file=sys.stderr)
    bench_bins = [("llama.cpp (llama-bench)", binary, "tq2_0")]
    if bitnet:      # bitnet.cpp's fork runs llama.cpp's TQ2_0 too
        bench_bins += [("bitnet.cpp (llama-bench)", os.path.join(bitnet, "llama-bench"), f)
                       for f in ("tq2_0", "i2_s")]
    if ik:
        bench_bins.append(("ik_llama.cpp (llama-bench)", os.path.join(ik, "llama-bench"), "iq2_bn"))
        bench_bins.append(("ik_llama.cpp (llama-bench -rtr: IQ2_BN_R4)", os.path.join(ik, "llama-bench"), "iq2_bn"))
    bandwidth = {t: read_bandwidth(t) for t in sorted(set(threads))}
    measured, loads = [], []
    for r in range(runs):
        loads.append(loadavg())
        print(f"# run {r + 1}/{runs}, load average {loads[-1]}", file=sys.stderr)
        results = []
        for fmt in fmts:
            for be in backends:
                if be == "cython" and not all(_backend.twins().values()):
                    print("# cython backend not built: skipped", file=sys.stderr)
                    continue
                for kv in kvs if be == "cython" else kvs[:1]:
                    spec = dict(path=files[fmt], threads=threads if be == "cython" else threads[:1],
                                prefill=prefill, kv=kv,
                                decode=decode if be == "cython" else numpy_decode)
                    env = {"MINIBIT_PUREPYTHON": "1" if be == "numpy" else "0"}
                    res = run_worker("minibit", spec, env)
                    res.update(file=fmt, tensor_bytes=nbytes[fmt])
                    res.setdefault("kv", kv)
                    results.append(res)
        if has_llcpp:
            res = run_worker("llama_cpp", dict(path=files["tq2_0"], threads=threads,
                                               prefill=prefill, decode=decode))
            res.update(file="tq2_0", tensor_bytes=nbytes["tq2_0"])
            results.append(res)
        for name, exe, fmt in bench_bins:
            if not exe:
                continue
            try:
                rows = run_llama_bench(exe, files[fmt], threads, prefill, decode,
                                       extra=["-rtr", "1"] if "-rtr" in name else None)
                results.append(dict(engine=name, backend="ggml", file=fmt, rows=rows, load_s=None,
                                    rss_mb=None, tensor_bytes=nbytes[fmt]))
            except (OSError, RuntimeError, ValueError, KeyError, subprocess.SubprocessError) as e:
                results.append(dict(engine=name, file=fmt, error=str(e)))
        measured.append(results)
    return report(synthetic, files, measured, prefill, decode, bandwidth, loads)


def _worker_main(kind: str, spec_json: str) -> int:
    spec = json.loads(spec_json)
    fn = {"minibit": worker_minibit, "llama_cpp": worker_llama_cpp}[kind]
    print(json.dumps(fn(spec)))
    return 0


if __name__ == "__main__":        # `python -m minibit.bench_model --worker KIND SPEC_JSON`
    if len(sys.argv) != 4 or sys.argv[1] != "--worker":
        sys.exit("usage: python -m minibit.bench_model --worker minibit|llama_cpp SPEC_JSON "
                 "(run `minibit bench model` instead)")
    sys.exit(_worker_main(sys.argv[2], sys.argv[3]))
