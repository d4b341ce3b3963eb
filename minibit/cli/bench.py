"""``minibit bench formats|kernels|model``: measured speed, both backends, printed as tables.

The measuring lives below the face: ``minibit/bench.py`` (formats), ``minibit/kernels/bench.py``
(kernels) and ``minibit/bench_model.py`` (whole model beside llama.cpp); this module only reads
the options."""

from __future__ import annotations

from ._common import Parser

HELP = "measure speed: formats | kernels | model"


def _ints(ap, flag: str, text: str) -> tuple:
    """A comma list of positive integers, or one argparse error line."""
    try:
        vals = tuple(int(t) for t in text.split(",") if t.strip())
        if not vals or min(vals) < 1:
            raise ValueError
    except ValueError:
        ap.error(f"{flag} must be positive integers separated by commas, got {text!r}")
    return vals


def _shapes(ap, text: str) -> list:
    from ..kernels.bench import SHAPES
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        if part in SHAPES:
            out += SHAPES[part]
        elif part == "all":
            out += SHAPES["2b4t"] + SHAPES["large"]
        elif "x" in part:
            r, c = part.split("x", 1)
            out.append((_ints(ap, "--shapes", r)[0], _ints(ap, "--shapes", c)[0]))
        elif part:
            ap.error(f"--shapes: {part!r} is not 2b4t, large, all or ROWSxCOLS")
    return out


def kernels(argv) -> int:
    from ..kernels.bench import FORMATS_DEFAULT, run
    ap = Parser(prog="minibit bench kernels",
                description="Ternary mpGEMM speed per kernel, backend and threads.")
    ap.add_argument("--shapes", default=None,
                    help="comma list of 2b4t, large, all or ROWSxCOLS (default: 2b4t,large)")
    ap.add_argument("--threads", default="1,2", help="thread counts for the Cython rows (default 1,2)")
    ap.add_argument("--T", default="1,128", help="tokens per call (default 1,128)")
    ap.add_argument("--formats", default=",".join(FORMATS_DEFAULT),
                    help=f"weight formats (default {','.join(FORMATS_DEFAULT)})")
    ap.add_argument("--no-numpy", action="store_true", help="skip the NumPy-reference rows")
    ap.add_argument("--cold", action="store_true", help="cycle weight copies past the caches")
    ap.add_argument("--quick", action="store_true", help="one shape (6912x2560), i2_s and tq2_0")
    args = ap.parse_args(argv)
    shapes = _shapes(ap, args.shapes) if args.shapes else None
    run(shapes=shapes, Ts=_ints(ap, "--T", args.T),
        fmts=tuple(f.strip() for f in args.formats.split(",") if f.strip()),
        threads=_ints(ap, "--threads", args.threads), numpy_rows=not args.no_numpy,
        cold=args.cold, quick=args.quick)
    return 0


def model(argv) -> int:
    from .. import bench_model
    ap = Parser(prog="minibit bench model", description=bench_model.__doc__.split("\n\n")[0])
    ap.add_argument("--synthetic", choices=["large", "2b4t"], default="large",
                    help="the shape of the random ternary model (default large)")
    ap.add_argument("--threads", default="1,2", help="thread counts, comma-separated (default 1,2)")
    ap.add_argument("--prefill", type=int, default=128)
    ap.add_argument("--decode", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3,
                    help="measure everything this many times, interleaved (default 3)")
    ap.add_argument("--numpy-decode", type=int, default=8,
                    help="decode steps for the NumPy backend (it is ~30x slower; default 8)")
    ap.add_argument("--backends", default="cython,numpy", help="minibit backends (default both)")
    ap.add_argument("--files", default="tq2_0,i2_s", help="which GGUF files minibit runs")
    ap.add_argument("--llama-cpp", choices=["auto", "off"], default="auto",
                    help="llama-cpp-python side by side when installed (default auto)")
    ap.add_argument("--llama-bench", default="auto",
                    help="'auto' (use a cached binary), 'build' (compile one from the PyPI "
                         "sdist into the cache), 'off', or a path to llama-bench")
    ap.add_argument("--bitnet-cpp", default="auto",
                    help="bitnet.cpp's bin dir (llama-bench, llama-quantize): 'auto' "
                         f"(MINIBIT_BITNET_CPP or {bench_model.BITNET_CPP_BIN}), 'off', or a path")
    ap.add_argument("--ik-llama", default="off",
                    help="ik_llama.cpp's bin dir (llama-bench, llama-quantize), or 'off' (default)")
    ap.add_argument("--kv-cache", default="f32,f16",
                    help="minibit KV cache types to run on the Cython backend, comma-separated "
                         "(default f32,f16; the NumPy backend runs the first)")
    ap.add_argument("--cache", default=None, help="where models and llama-bench are cached")
    args = ap.parse_args(argv)
    threads = _ints(ap, "--threads", args.threads)
    if args.prefill < 1 or args.decode < 1 or args.numpy_decode < 1 or args.runs < 1:
        ap.error("--prefill, --decode, --numpy-decode and --runs must be at least 1")
    kvs = tuple(k for k in args.kv_cache.split(",") if k.strip())
    if not kvs or any(k not in ("f32", "f16") for k in kvs):
        ap.error(f"--kv-cache takes f32 and/or f16, got {args.kv_cache!r}")
    files = tuple(f for f in args.files.split(",") if f)
    if any(f not in ("tq2_0", "i2_s") for f in files):
        ap.error(f"--files takes tq2_0 and/or i2_s, got {args.files!r}")
    try:
        return bench_model.run(args.synthetic, threads, args.prefill, args.decode,
                               args.numpy_decode, tuple(b for b in args.backends.split(",") if b),
                               files, llama_cpp=args.llama_cpp == "auto",
                               llama_bench=args.llama_bench, kvs=kvs, cache=args.cache,
                               runs=args.runs, bitnet_cpp=args.bitnet_cpp, ik_llama=args.ik_llama)
    except FileNotFoundError as e:        # a --bitnet-cpp / --ik-llama dir that is not there
        ap.error(str(e))


def main(argv) -> int:
    argv = list(argv)
    if argv and argv[0].startswith("--synthetic"):      # `minibit bench --synthetic large`
        argv = ["model"] + argv
    ap = Parser(prog="minibit bench", description="Measure minibit's speed.")
    ap.add_argument("what", choices=["formats", "kernels", "model"], help="what to measure")
    ap.add_argument("--quick", action="store_true", help="a smaller shape, fewer repeats")
    ap.add_argument("--repeat", type=int, default=3)
    args, rest = ap.parse_known_args(argv)
    if args.what == "model":
        return model(rest)
    if args.what == "kernels":
        return kernels(rest + (["--quick"] if args.quick else []))
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    from ..bench import FORMAT_SHAPE, bench_formats, print_format_table
    shape = (512, 1536) if args.quick else FORMAT_SHAPE
    print_format_table(bench_formats(shape, repeat=args.repeat), shape)
    return 0
