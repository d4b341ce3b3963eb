#!/usr/bin/env python3
"""Coverage-guided fuzzing of minibit's file loaders with atheris (libFuzzer for Python).

Not part of the test suite (pytest does not collect this file) and not run in CI: it is for
long campaigns.  See README.md beside it.  In short::

    pip install atheris
    python tests/fuzz/fuzz_loaders.py --make-corpus /tmp/corpus        # seed files
    python tests/fuzz/fuzz_loaders.py /tmp/corpus -max_total_time=600 -timeout=20 \\
        -rss_limit_mb=3072 -artifact_prefix=/tmp/findings/

Each input is written to a file and handed to one target, chosen by ``--target``
(default ``all``: by the input's first bytes):

gguf         ``GGUFFile`` (the parser), ``inspect_lines`` (``minibit inspect``), then
             ``minibit.load`` and, when it loads, ``logits`` on 3 ids
safetensors  ``SafetensorsFile``: every tensor read and summed; then ``minibit.load`` of a
             model directory holding it (with a valid config.json and tokenizer.json)
config       ``read_json`` + ``from_hf_config`` (config.json)
tokenizer    ``Tokenizer.from_file`` (tokenizer.json)

``minibit.FormatError`` is the expected answer to a bad input.  Anything else escaping a
target is a finding: libFuzzer stops, prints the traceback and saves the input as
``crash-<sha1>`` (under ``-artifact_prefix``).  So are a hang (``-timeout``), a giant
allocation (MemoryError: the address space is capped at ``--memory-mb`` above what the
process uses after start-up, so a lying size field cannot hide in lazily-touched pages),
and, with ``--check-finite``, a model that loads but computes non-finite logits.

Reproduce a finding without fuzzing: ``python tests/fuzz/fuzz_loaders.py crash-<sha1>``
(libFuzzer runs the given files once) or ``--replay FILE...`` (plain Python, full traceback).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import warnings

# one thread per BLAS / kernel pool: faster start-up, steadier memory, a fuzzer's own cores
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "MINIBIT_THREADS"):
    os.environ.setdefault(_v, "1")

# the libraries minibit uses, imported before instrumentation (coverage is minibit's only)
import json  # noqa: E402,F401
import numpy as np  # noqa: E402

try:
    import gguf  # noqa: F401
except ImportError:
    gguf = None
try:
    import tokenizers  # noqa: F401
except ImportError:
    tokenizers = None

TARGETS = ("all", "gguf", "safetensors", "config", "tokenizer")


def _import_minibit(instrument: bool):
    """Import every minibit module a target reaches (instrumented for coverage when fuzzing;
    modules imported later, lazily, would not be)."""
    mods = ["minibit", "minibit.io.gguf", "minibit.io.safetensors", "minibit.io.hf",
            "minibit.io.resolve", "minibit.model.config", "minibit.model.model",
            "minibit.model.transformer", "minibit.model.layers", "minibit.tokenizer",
            "minibit.formats", "minibit.kernels", "minibit.kernels.fit", "minibit.quant"]
    import importlib
    if instrument:
        import atheris
        with atheris.instrument_imports(include=["minibit"]):
            for m in mods:
                importlib.import_module(m)
    else:
        for m in mods:
            importlib.import_module(m)


class Targets:
    """The targets, each taking a path to the input's bytes on disk."""

    def __init__(self, workdir: str, model_dir: str | None, check_finite: bool, load: bool):
        import minibit
        self.minibit = minibit
        self.workdir = workdir
        self.model_dir = model_dir          # config.json + tokenizer.json for safetensors loads
        self.check_finite = check_finite
        self.load = load

    def _logits(self, m):
        V = m.config.vocab_size
        try:
            out = m.logits([256 % V, 1 % V, 2 % V])
        except self.minibit.FormatError:        # the forward's non-finite activation check
            return
        assert out.shape == (3, V), out.shape
        if self.check_finite and not np.isfinite(out).all():
            raise AssertionError("the file loaded but its logits are not finite")

    def gguf(self, path):
        from minibit.io.gguf import GGUFFile, inspect_lines
        g = GGUFFile(path)
        for name in g.tensors:
            g.raw(name)
        g.close()
        inspect_lines(path)
        if self.load:
            self._logits(self.minibit.load(path))

    def safetensors(self, path):
        from minibit.io.safetensors import SafetensorsFile, as_float32
        f = SafetensorsFile(path)
        try:
            for n in f.names:
                a = f.get(n)
                np.asarray(a).sum()
                dtype = f.info(n)[0]
                if dtype in ("F32", "F16", "BF16", "F64"):
                    as_float32(a, dtype)
        finally:
            f.close()
        if self.load and self.model_dir:
            dst = os.path.join(self.model_dir, "model.safetensors")
            os.replace(path, dst)
            self._logits(self.minibit.load(self.model_dir))

    def config(self, path):
        from minibit.io.hf import read_json
        from minibit.model.config import from_hf_config
        from_hf_config(read_json(path), path)

    def tokenizer(self, path):
        from minibit.tokenizer import Tokenizer
        t = Tokenizer.from_file(path)
        t.decode(t.encode("Hello, world \u00e9\u4e2d"))

    def pick(self, data: bytes) -> str:
        if data[:4] == b"GGUF":
            return "gguf"
        s = data.lstrip()[:1]
        if s in (b"{", b"["):
            return "tokenizer" if b'"model"' in data or b'"added_tokens"' in data else "config"
        return "safetensors"

    def run(self, target: str, data: bytes) -> None:
        if target == "all":
            target = self.pick(data)
        suffix = {"gguf": ".gguf", "safetensors": ".safetensors"}.get(target, ".json")
        path = os.path.join(self.workdir, "input" + suffix)
        with open(path, "wb") as f:
            f.write(data)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                getattr(self, target)(path)
        except self.minibit.FormatError:
            pass                                # the expected answer to a bad file


# ====================================================================== seed corpus

def make_corpus(out: str) -> None:
    """Valid files of every kind: GGUF in every weight format (save_gguf), safetensors and
    config.json of every architecture (write_checkpoint), a tokenizer.json."""
    import shutil

    import minibit
    from minibit.io.synthetic import write_checkpoint

    os.makedirs(out, exist_ok=True)
    tmp = tempfile.mkdtemp()
    n = 0
    for arch in ("bitnet-b1.58", "bitnet", "llama"):
        small = write_checkpoint(os.path.join(tmp, arch + "-small"), arch, hidden=32, heads=2,
                                 kv_heads=1, intermediate=64, layers=1, vocab=260, seed=1)
        shutil.copy(os.path.join(small, "model.safetensors"), os.path.join(out, f"{arch}.safetensors"))
        shutil.copy(os.path.join(small, "config.json"), os.path.join(out, f"{arch}-config.json"))
        n += 2
        if arch == "bitnet-b1.58":
            shutil.copy(os.path.join(small, "tokenizer.json"), os.path.join(out, "tokenizer.json"))
            n += 1
        for hidden, fmts in ((256, ("tq2_0", "tq1_0", "i2_s", "tl1", "tl2")), (128, ("i2_s",))):
            d = write_checkpoint(os.path.join(tmp, f"{arch}-{hidden}"), arch, hidden=hidden, heads=2,
                                 kv_heads=1, intermediate=hidden, layers=1, vocab=260, seed=1)
            m = minibit.load(d)
            for fmt in fmts:
                try:
                    minibit.save_gguf(m, os.path.join(out, f"{arch}-{hidden}-{fmt}.gguf"), fmt,
                                      progress=False)
                    n += 1
                except minibit.FormatError as e:     # a format this shape cannot hold
                    print(f"skipped {arch} {hidden} {fmt}: {e}", file=sys.stderr)
    shutil.rmtree(tmp)
    print(f"wrote {n} seed files to {out}", file=sys.stderr)


def _model_dir(workdir: str) -> str:
    """A model directory whose model.safetensors each safetensors input replaces."""
    from minibit.io.synthetic import write_checkpoint
    return write_checkpoint(os.path.join(workdir, "model"), hidden=32, heads=2, kv_heads=1,
                            intermediate=64, layers=1, vocab=260, seed=1)


def _cap_memory(mb: int) -> None:
    """Cap the address space at what the process maps now + ``mb``: an allocation a lying
    size field asks for fails at once as MemoryError (a finding), touched or not."""
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) for line in f if line.startswith("VmSize:")) * 1024
    limit = vm + (mb << 20)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(
        description="atheris fuzzing of minibit's loaders; other arguments (corpus directories, "
                    "-max_total_time=S, -timeout=S, ...) go to libFuzzer")
    ap.add_argument("--target", choices=TARGETS, default="all")
    ap.add_argument("--make-corpus", metavar="DIR", help="write seed files to DIR and exit")
    ap.add_argument("--replay", nargs="+", metavar="FILE",
                    help="run the target on these files in plain Python and exit")
    ap.add_argument("--no-load", action="store_true",
                    help="parsers only: skip minibit.load and logits (faster)")
    ap.add_argument("--check-finite", action="store_true",
                    help="also a finding: a file that loads but computes non-finite logits")
    ap.add_argument("--memory-mb", type=int, default=1024,
                    help="address space allowed above start-up (default 1024; 0 = no cap)")
    args, rest = ap.parse_known_args(argv)
    if args.make_corpus:
        make_corpus(args.make_corpus)
        return 0

    workdir = tempfile.mkdtemp(prefix="minibit-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    if args.replay:
        _import_minibit(instrument=False)
        t = Targets(workdir, _model_dir(workdir), args.check_finite, not args.no_load)
        for p in args.replay:
            with open(p, "rb") as f:
                t.run(args.target, f.read())
            print(f"{p}: ok (FormatError or a clean load)")
        return 0

    try:
        import atheris
    except ImportError:
        print("atheris is not installed: pip install atheris (see tests/fuzz/README.md)",
              file=sys.stderr)
        return 2
    _import_minibit(instrument=True)
    t = Targets(workdir, _model_dir(workdir), args.check_finite, not args.no_load)
    if args.memory_mb:
        _cap_memory(args.memory_mb)

    def one_input(data: bytes) -> None:
        t.run(args.target, data)

    atheris.Setup([sys.argv[0]] + rest, one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
