"""The engines minibit copies, built from source and run through a small harness.

    python tools/peers/peers.py build [bitnet.cpp] [llama.cpp]     # build or locate (cached)
    python tools/peers/peers.py dump PEER MODEL.gguf OUT --tokens 1,2,3 [--mode seq] [--threads 2]
    python tools/peers/peers.py quantize PEER IN.gguf OUT.gguf FTYPE [--nthread 1]

PEER is ``bitnet.cpp`` (microsoft/BitNet's Oct-2024 release with its llama.cpp fork, built by
``shared/peers/build-bitnetcpp``) or ``llama.cpp`` (the llama.cpp vendored in llama-cpp-python's
PyPI sdist, built by ``minibit._llama_build``).  Both are built for x86 AVX2 without AVX-512
(``-DGGML_NATIVE=OFF``), the float order minibit's engine profiles copy, and cached outside the
repository (``~/.cache/bitnet-peers/2024-avx2``, ``~/.cache/minibit/peers``; override with
MINIBIT_PEERS_CACHE).  ``harness.cpp`` beside this file is compiled against each peer's
libllama (cached by its hash) and writes every position's logits and every tensor the
engine's eval callback names; :func:`evaluate` turns that into a ``minibit dump`` directory so
``minibit compare`` diffs minibit against the engine and names the first tensor that differs.

Plain functions; the tests (tests/test_peers.py) and tools/peers/table.py import this file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
try:                                   # the installed minibit (CI), else this checkout's
    import minibit  # noqa: F401
except ImportError:
    sys.path.insert(0, REPO)

from minibit import _llama_build as lb  # noqa: E402

__all__ = ["Peer", "PeerUnavailable", "bitnet_cpp", "llama_cpp", "get", "harness", "evaluate",
           "quantize", "to_dump", "PEER_NAMES", "FTYPES", "RUNS", "PROFILE_OF", "FLASH_ATTN",
           "token_ids", "synthetic_models", "minibit_logits", "agreement", "meets_done_when"]

PEER_NAMES = ("bitnet.cpp", "llama.cpp")
# llama_ftype numbers (llama.h): what `quantize` writes
FTYPES = {"tq1_0": 36, "tq2_0": 37, "i2_s": 40}
BITNET_AVX2_CMAKE = "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"


class PeerUnavailable(RuntimeError):
    """A peer could not be built or located (no compiler, no source, a failed build)."""


@dataclass
class Peer:
    name: str                   # "bitnet.cpp" | "llama.cpp"
    version: str                # "2024" | the llama-cpp-python version
    include: list               # header directories (llama.h, ggml.h, ggml-backend.h)
    libdirs: list               # where libllama.so and the ggml libraries are
    libs: list                  # -l names
    defines: list = field(default_factory=list)     # the harness's API switch
    cache: str = ""             # where the compiled harness goes

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


def cache_root() -> str:
    return os.path.expanduser(os.environ.get("MINIBIT_PEERS_CACHE") or "~/.cache/minibit/peers")


def _jobs() -> str:
    return os.environ.get("JOBS") or str(min(os.cpu_count() or 2, 2))


def _build_script() -> str:
    cands = [os.environ.get("MINIBIT_BUILD_BITNETCPP", ""),
             os.path.join(REPO, "..", "shared", "peers", "build-bitnetcpp"),
             "/work/shared/peers/build-bitnetcpp"]
    for c in cands:
        if c and os.access(c, os.X_OK):
            return os.path.abspath(c)
    raise PeerUnavailable("bitnet.cpp: no build-bitnetcpp script (set MINIBIT_BUILD_BITNETCPP to "
                          "shared/peers/build-bitnetcpp)")


def bitnet_cpp(build: bool = True, log=print, tl2: bool = False) -> Peer:
    """bitnet.cpp's Oct-2024 release, AVX2 build with libllama (target llama-quantize).
    tl2: the build with its TL2 kernels (-DBITNET_X86_TL2=ON), generated for the
    bitnet_b1_58-large preset's shapes only (1536x4096, 1536x1536, 4096x1536)."""
    out = os.path.expanduser(os.environ.get("MINIBIT_BITNET_CACHE") or "~/.cache/bitnet-peers/2024-avx2")
    if tl2:
        out += "-tl2"
    if build:
        env = dict(os.environ, JOBS=_jobs(), BITNET_TARGETS="llama-quantize",
                   BITNET_CMAKE_ARGS=BITNET_AVX2_CMAKE + (" -DBITNET_X86_TL2=ON" if tl2 else ""))
        r = subprocess.run([_build_script(), "2024", out], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            raise PeerUnavailable("bitnet.cpp build failed:\n" + r.stderr[-3000:])
    srcs = [d for d in (os.listdir(out) if os.path.isdir(out) else [])
            if d.startswith("bitnet.cpp-") and os.path.isdir(os.path.join(out, d))]
    if not srcs:
        raise PeerUnavailable(f"bitnet.cpp: no build in {out}")
    fork = os.path.join(out, srcs[0], "3rdparty", "llama.cpp")
    bld = os.path.join(out, "build", "3rdparty", "llama.cpp")
    p = Peer("bitnet.cpp", "2024" + (" TL2" if tl2 else ""),
             [os.path.join(fork, "include"), os.path.join(fork, "ggml", "include")],
             [os.path.join(bld, "src"), os.path.join(bld, "ggml", "src")], ["llama", "ggml"],
             ["-DMB_API_2024"], os.path.join(out, "minibit-harness"))
    if not os.path.exists(os.path.join(p.libdirs[0], "libllama.so")):
        raise PeerUnavailable(f"bitnet.cpp: no libllama.so in {p.libdirs[0]}")
    return p


def llama_cpp(build: bool = True, log=print) -> Peer:
    """llama.cpp from llama-cpp-python's sdist, AVX2 build of the shared libllama."""
    root = cache_root()
    ver = lb.LLAMA_CPP_PYTHON
    bdir = os.path.join(root, f"llama.cpp-{ver}-avx2", "build")
    src = os.path.join(root, "src", f"llama_cpp_python-{ver}", "vendor", "llama.cpp")
    if build:
        try:
            src = lb.llama_cpp_source(root, ver, log=log)
            lb.build(src, bdir, ["llama"], lb.LEAN_ARGS + lb.AVX2_ARGS + [
                "-DBUILD_SHARED_LIBS=ON", "-DGGML_OPENMP=OFF", "-DLLAMA_BUILD_COMMON=OFF",
                "-DLLAMA_BUILD_TOOLS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF"], jobs=int(_jobs()), log=log)
        except (OSError, subprocess.CalledProcessError, RuntimeError) as e:
            raise PeerUnavailable(f"llama.cpp build failed: {e}") from None
    libdir = os.path.join(bdir, "bin")
    if not os.path.exists(os.path.join(libdir, "libllama.so")):
        raise PeerUnavailable(f"llama.cpp: no libllama.so in {libdir}")
    return Peer("llama.cpp", ver, [os.path.join(src, "include"), os.path.join(src, "ggml", "include")],
                [libdir], ["llama", "ggml", "ggml-base"], [],
                os.path.join(root, f"llama.cpp-{ver}-avx2", "minibit-harness"))


def get(name: str, build: bool = True, log=print) -> Peer:
    if name == "bitnet.cpp":
        return bitnet_cpp(build, log)
    if name == "bitnet.cpp-tl2":
        return bitnet_cpp(build, log, tl2=True)
    if name == "llama.cpp":
        return llama_cpp(build, log)
    raise ValueError(f"unknown peer {name!r}; one of {PEER_NAMES + ('bitnet.cpp-tl2',)}")


def _cxx() -> str:
    for c in (os.environ.get("CXX"), "c++", "g++", "clang++-19", "clang++"):
        if c and shutil.which(c):
            return c
    raise PeerUnavailable("no C++ compiler (set CXX)")


def harness(peer: Peer) -> str:
    """The harness binary for this peer, compiled once per (source, peer, compiler)."""
    src = os.path.join(HERE, "harness.cpp")
    cxx = _cxx()
    lib = os.path.join(peer.libdirs[0], "libllama.so")
    key = hashlib.sha256(open(src, "rb").read() + repr((cxx, peer.include, peer.libdirs,
                         peer.defines, os.path.getmtime(lib))).encode()).hexdigest()[:16]
    exe = os.path.join(peer.cache, f"mb_peer_harness-{key}")
    if os.access(exe, os.X_OK):
        return exe
    os.makedirs(peer.cache, exist_ok=True)
    cmd = [cxx, "-O2", "-std=c++17", *peer.defines, *[f"-I{d}" for d in peer.include], src,
           "-o", f"{exe}.{os.getpid()}.tmp", *[f"-L{d}" for d in peer.libdirs], *[f"-l{x}" for x in peer.libs],
           "-Wl,-rpath," + ":".join(peer.libdirs)]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise PeerUnavailable(f"{peer.label}: the harness did not compile:\n{' '.join(cmd)}\n"
                              f"{r.stdout[-3000:]}")
    os.replace(f"{exe}.{os.getpid()}.tmp", exe)   # (older harnesses stay: another checkout may use one)
    return exe


def _run(peer: Peer, args: list, what: str) -> None:
    r = subprocess.run([harness(peer), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{peer.label}: {what} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")


def quantize(peer: Peer, src: str, dst: str, fmt: str, nthread: int = 1,
             f16_embeddings: bool = False) -> str:
    """The peer's own quantizer (llama_model_quantize): src (F32/F16 GGUF) -> dst in fmt.
    nthread 0 is the library's default (all cores).  f16_embeddings keeps token_embd/output
    F16 (llama-quantize --token-embedding-type f16 --output-tensor-type f16); llama.cpp's
    default for TQ file types is Q4_K, bitnet.cpp forces F16 for I2_S anyway."""
    args = ["quantize", src, dst, str(FTYPES[fmt]), str(nthread)] + (["1"] if f16_embeddings else [])
    _run(peer, args, f"quantize to {fmt}")
    return dst


# ---- ggml names -> minibit dump names -------------------------------------------------------

# the same tensor under the engine's name (first occurrence in a decode call); Qcur/Kcur are
# named twice (projection, then after RoPE): the first is Qcur, the last Qcur_rope
RENAME = {"attn_o_out": "attn_out", "ffn_sub_out": "ffn_gate_par", "ffn_swiglu": "ffn_gate_par",
          "ffn_down": "ffn_out"}
MINIBIT_STAGES = {"inp_embd", "attn_norm", "Qcur", "Kcur", "Vcur", "kqv_out", "attn_sub_norm",
                  "attn_out", "ffn_inp", "ffn_norm", "ffn_gate", "ffn_up", "ffn_gate_par",
                  "ffn_sub_norm", "ffn_out", "l_out", "result_norm", "result_output"}


def _read_tsv(raw: str) -> list:
    rows = []
    with open(os.path.join(raw, "tensors.tsv")) as f:
        for line in f:
            name, typ, n0, n1, n2, n3, off, nbytes, call = line.rstrip("\n").split("\t")
            rows.append(dict(name=name, type=typ, ne=[int(n0), int(n1), int(n2), int(n3)],
                             offset=int(off), nbytes=int(nbytes), call=int(call)))
    return rows


def to_dump(raw: str, out: str, tokens: list, mode: str, model: str, peer_label: str,
            extra: bool = True) -> dict:
    """Turn the harness's tensors.bin/tsv (raw dir) into a minibit dump in ``out``.

    Tensors minibit also dumps get minibit's names (RENAME; Qcur/Kcur's last occurrence is
    Qcur_rope/Kcur_rope), token positions first, the decode calls of a token-by-token run
    concatenated along positions.  With ``extra``, the engine's other named tensors are kept
    as ``ggml.<name>`` (``ggml.<name>.<k>`` for the k-th repeat; token by token, one per
    decode call: ``ggml.<name>@<position>``), e.g. ``ggml.kq_soft_max_ext-0``, so compare
    lists them too."""
    rows = _read_tsv(raw)
    blob = np.fromfile(os.path.join(raw, "tensors.bin"), dtype="<f4")
    seen_in_call: dict = {}
    for r in rows:                            # how often each name occurs per call
        seen_in_call.setdefault((r["call"], r["name"]), []).append(r)
    # bitnet.cpp 2024's llama graph multiplies by wo inside its attention helper: there
    # "kqv_out" is o_proj's output and "kqv_merged_cont" its input (minibit's kqv_out)
    layer_names: dict = {}
    for call, name in seen_in_call:
        base, _, layer = name.rpartition("-")
        layer_names.setdefault((call, layer), set()).add(base)
    wo_inside = {k for k, v in layer_names.items()
                 if "kqv_merged_cont" in v and "kqv_out" in v and not v & {"attn_o_out", "attn_out"}}
    parts: dict = {}                           # minibit name -> [(call, array)]
    order: list = []
    raw_names: dict = {}
    for (call, name), occ in seen_in_call.items():
        base, sep, layer = name.rpartition("-")
        if not sep or not layer.isdigit():
            base, layer = name, None
        for k, r in enumerate(occ):
            stage = RENAME.get(base, base)
            if (call, layer) in wo_inside and base in ("kqv_out", "kqv_merged_cont"):
                stage = "attn_out" if base == "kqv_out" else "kqv_out"
            if stage in ("Qcur", "Kcur") and len(occ) > 1 and k == len(occ) - 1:
                stage, dims = stage + "_rope", 3
            elif stage in MINIBIT_STAGES and k == 0:
                dims = 2
            elif extra:
                stage = f"ggml.{base}" + (f".{k}" if k else "") + (f"@{call}" if mode == "seq" else "")
                dims = 4
            else:
                continue
            mname = stage if layer is None else f"{stage}-{layer}"
            ne = r["ne"]
            a = blob[r["offset"] // 4:(r["offset"] + r["nbytes"]) // 4]
            if dims == 4:
                shape = [x for x in reversed(ne)]
                while len(shape) > 1 and shape[0] == 1:
                    shape = shape[1:]
            else:
                shape = list(reversed(ne[:dims]))
            a = a.reshape(shape)
            if mname not in parts:
                parts[mname] = []
                order.append(mname)
                raw_names[mname] = name
            parts[mname].append((call, a))
    os.makedirs(out, exist_ok=True)
    entries = []
    for mname in order:
        arrs = [a for _, a in sorted(parts[mname], key=lambda t: t[0])]
        a = np.ascontiguousarray(np.concatenate(arrs, axis=0) if len(arrs) > 1 else arrs[0])
        fn = mname + ".npy"
        np.save(os.path.join(out, fn), a)
        base, sep, layer = mname.rpartition("-")
        entries.append(dict(name=mname, file=fn, shape=list(a.shape), dtype=str(a.dtype),
                            layer=int(layer) if sep and layer.isdigit() else -1,
                            kind="logits" if mname == "result_output" else "activation",
                            llama_cpp=raw_names[mname]))
    manifest = {"format": "minibit-dump", "version": 1, "producer": f"{peer_label} (minibit "
                "peer harness, tools/peers)", "model": {"source": os.path.abspath(model)},
                "profile": None, "engine": peer_label, "mode": mode, "token_ids": list(tokens),
                "n_tokens": len(tokens), "entries": entries}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def evaluate(peer: Peer, model: str, tokens, mode: str = "batch", threads: int = 1,
             dump_dir: str | None = None, kv: str = "f16", flash_attn: str = "default",
             extra: bool = True) -> dict:
    """Run ``tokens`` through the peer.  Returns {"logits": float32 [T, vocab], "info": {...},
    "dump": dump_dir or None}.  With dump_dir, every named tensor is written there as a
    minibit dump (the raw harness output goes to dump_dir/.raw)."""
    import tempfile
    tokens = [int(t) for t in tokens]
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(dump_dir, ".raw") if dump_dir else tmp
        os.makedirs(raw, exist_ok=True)
        args = ["eval", model, raw, "--tokens", ",".join(map(str, tokens)), "--mode", mode,
                "--threads", str(threads), "--kv", kv, "--flash-attn", flash_attn]
        if not dump_dir:
            args.append("--no-tensors")
        _run(peer, args, f"eval of {os.path.basename(model)}")
        info = dict(line.rstrip("\n").split("=", 1) for line in open(os.path.join(raw, "info.txt")))
        logits = np.fromfile(os.path.join(raw, "logits.f32"), dtype="<f4").reshape(
            len(tokens), int(info["n_vocab"]))
        if dump_dir:
            to_dump(raw, dump_dir, tokens, mode, model, peer.label, extra=extra)
    return {"logits": logits, "info": info, "dump": dump_dir}


# ---- the models and the measures the tests and table.py share ---------------------------

# Well-conditioned synthetic models (minibit.io.synthetic: projections ~ 1/sqrt(fan_in), norms
# near 1), small enough for a fast test: 3 layers, hidden 256, FFN 512, 4 heads of 64.
MODEL_SHAPE = dict(hidden=256, intermediate=512, layers=3, heads=4, vocab=300)
ARCH_KV_HEADS = {"bitnet": 4, "llama": 2}            # 1bitLLM has no GQA; Falcon3 has
ARCH_SEED = {"bitnet": 11, "llama": 12}
# what each engine runs (GGUF arch x ternary type); bitnet.cpp 2024 has no "bitnet-b1.58"
RUNS = {"bitnet.cpp": [(a, f) for a in ("bitnet", "llama") for f in ("i2_s", "tq2_0", "tq1_0")],
        "llama.cpp": [(a, f) for a in ("bitnet", "llama") for f in ("tq2_0", "tq1_0")]}
PROFILE_OF = {"i2_s": "bitnet.cpp", "tq1_0": "llama.cpp", "tq2_0": "llama.cpp"}
# the flash-attention settings held against each engine, its default last: bitnet.cpp 2024
# runs without (its default); llama.cpp with (its default "auto" on the CPU) and without
FLASH_ATTN = {"bitnet.cpp": ["off"], "llama.cpp": ["off", "on"]}
N_POSITIONS = 40


def token_ids(n: int = N_POSITIONS, seed: int = 5) -> list:
    """BOS (256) and n-1 byte tokens: the synthetic byte-level vocabulary's ids."""
    rng = np.random.default_rng(seed)
    return [256] + [int(x) for x in rng.integers(0, 256, n - 1)]


def synthetic_models(root: str) -> dict:
    """{(arch, fmt): path} for arch "bitnet"/"llama" and fmt i2_s, tq1_0, tq2_0 (minibit's own
    writer) and "f32" (the pre-quantization twin the peers' quantizers read); written once."""
    import minibit
    from minibit.io.synthetic import write_checkpoint
    sys.path.insert(0, HERE) if HERE not in sys.path else None
    from f32_twin import write_f32_twin

    out = {}
    for arch in ("bitnet", "llama"):
        d = os.path.join(root, f"{arch}-v1")
        paths = {f: os.path.join(d, f"model.{f}.gguf") for f in ("i2_s", "tq1_0", "tq2_0", "f32")}
        if not all(os.path.exists(p) for p in paths.values()):
            write_checkpoint(os.path.join(d, "hf"), arch=arch, kv_heads=ARCH_KV_HEADS[arch],
                             seed=ARCH_SEED[arch], **MODEL_SHAPE)
            m = minibit.load(os.path.join(d, "hf"))
            for f in ("i2_s", "tq1_0", "tq2_0"):
                minibit.save_gguf(m, paths[f], weight_format=f, progress=False)
            write_f32_twin(minibit.load(paths["i2_s"]), paths["tq2_0"], paths["f32"])
        out.update({(arch, f): p for f, p in paths.items()})
    return out


def minibit_logits(path: str, ids, mode: str = "batch", kv: str = "f16",
                   profile: str | None = None, flash_attn: str = "default") -> np.ndarray:
    """minibit's logits for ids on a GGUF file: one forward (batch) or one token per step
    through the KV cache (seq), with the engines' default F16 KV cache.  flash_attn as
    evaluate's: "default" (the profile's engine default), "on" or "off"."""
    import minibit
    m = minibit.load(path, profile=profile)
    m.kv_cache = kv
    m.flash_attn = {"default": None, "on": True, "off": False}[flash_attn]
    if mode == "batch":
        return m.logits(ids)
    cache = m.new_cache(len(ids))
    return np.concatenate([m.forward([t], cache, last_only=True)[-1:] for t in ids])


def agreement(mine: np.ndarray, engine: np.ndarray) -> dict:
    """Per position (row): bit-identical?, same argmax?, relative error ||a - b|| / ||b||
    (float64, the engine as reference).  Returns counts and the median / max error."""
    a, b = np.asarray(mine, np.float32), np.asarray(engine, np.float32)
    if a.shape != b.shape:
        raise ValueError(f"logits shapes differ: {a.shape} vs {b.shape}")
    d = a.astype(np.float64) - b.astype(np.float64)
    rel = np.linalg.norm(d, axis=1) / np.linalg.norm(b.astype(np.float64), axis=1)
    same = np.array([x.tobytes() == y.tobytes() for x, y in zip(a, b)])
    return dict(positions=int(a.shape[0]), identical=int(same.sum()),
                argmax=int((a.argmax(1) == b.argmax(1)).sum()), rel_median=float(np.median(rel)),
                rel_max=float(rel.max()), rel=rel)


def meets_done_when(agr: dict, exact: bool) -> bool:
    """Issue 17's bar: bit-identical at every position where the engine's float order is
    copied (exact), else argmax at every position, median rel err <= 1e-6, max <= 1e-4."""
    if exact:
        return agr["identical"] == agr["positions"]
    return (agr["argmax"] == agr["positions"] and agr["rel_median"] <= 1e-6
            and agr["rel_max"] <= 1e-4)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="tools/peers/peers.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build or locate the peers (cached)")
    b.add_argument("peers", nargs="*", default=list(PEER_NAMES))
    d = sub.add_parser("dump", help="run tokens through a peer; write a minibit dump")
    d.add_argument("peer", choices=PEER_NAMES)
    d.add_argument("model")
    d.add_argument("out")
    g = d.add_mutually_exclusive_group(required=True)
    g.add_argument("--tokens", help="comma-separated token ids")
    g.add_argument("--prompt", help="text, tokenized by minibit from the GGUF's own tokenizer")
    d.add_argument("--mode", choices=["batch", "seq"], default="batch")
    d.add_argument("--threads", type=int, default=1)
    d.add_argument("--kv", choices=["f16", "f32"], default="f16")
    q = sub.add_parser("quantize", help="the peer's own quantizer")
    q.add_argument("peer", choices=PEER_NAMES)
    q.add_argument("src")
    q.add_argument("dst")
    q.add_argument("fmt", choices=sorted(FTYPES))
    q.add_argument("--nthread", type=int, default=1)
    q.add_argument("--f16-embeddings", action="store_true")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "build":
            for name in a.peers:
                p = get(name, build=True)
                print(f"{p.label}: libllama in {p.libdirs[0]}; harness {harness(p)}")
        elif a.cmd == "dump":
            p = get(a.peer, build=False)
            if a.tokens:
                ids = [int(t) for t in a.tokens.split(",") if t.strip()]
            else:
                import minibit
                ids = minibit.load(a.model).tokenizer.encode(a.prompt)
            res = evaluate(p, a.model, ids, a.mode, a.threads, dump_dir=a.out, kv=a.kv)
            print(f"{p.label}: {len(ids)} tokens ({a.mode}) -> {a.out}; logits {res['logits'].shape}")
        else:
            p = get(a.peer, build=False)
            quantize(p, a.src, a.dst, a.fmt, a.nthread, a.f16_embeddings)
            print(f"{p.label}: wrote {a.dst}")
    except (PeerUnavailable, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
