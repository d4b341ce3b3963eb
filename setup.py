"""Build minibit: the NumPy package, plus a Cython twin for every _fast/NAME.pyx.

Every ``_fast/NAME.pyx`` becomes the extension ``minibit._fast.NAME``, compiled with -O3.
Threads come from minibit's own pool (``_fast/mb_pool.h``, pthreads; not OpenMP, whose
worker pool deadlocks a forked child).  ``MINIBIT_NATIVE=1`` adds -march=native (the
wheel then runs only on CPUs like the build machine).  If Cython or the C compiler is missing
or a module fails to compile, the install still succeeds with a warning and minibit runs on
its NumPy references (``minibit.backend()`` says which).
"""

import glob
import os
import sys
import warnings

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def _extensions():
    try:
        from Cython.Build import cythonize
        from setuptools import Extension
        import numpy
    except ImportError as e:  # no Cython or NumPy at build time: NumPy path only
        warnings.warn(f"minibit: building without Cython twins ({e}); the NumPy path will run")
        return []
    # -ffp-contract=off: no product is fused into an add (the twins match NumPy to the bit)
    cflags = ["-O3", "-fno-strict-aliasing", "-ffp-contract=off", "-Wno-unused-function", "-Wno-unreachable-code"]
    if os.environ.get("MINIBIT_NATIVE") == "1":
        cflags.append("-march=native")
    lflags = []
    if os.name == "posix":
        cflags.append("-pthread")
        lflags.append("-pthread")
    exts = []
    for pyx in sorted(glob.glob(os.path.join("_fast", "*.pyx"))):
        name = os.path.splitext(os.path.basename(pyx))[0]
        exts.append(Extension(
            f"minibit._fast.{name}", [pyx],
            include_dirs=[numpy.get_include(), "_fast"],
            extra_compile_args=cflags, extra_link_args=lflags,
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        ))
    built = []
    for ext in exts:  # one at a time: a module that does not translate loses only its twin
        try:
            built += cythonize([ext], language_level=3, quiet=True,
                               compiler_directives={"boundscheck": False, "wraparound": False,
                                                    "cdivision": True, "initializedcheck": False})
        except Exception as e:
            warnings.warn(f"minibit: Cython translation of {ext.name} failed ({e}); "
                          f"its NumPy reference will run")
    return built


class OptionalBuildExt(build_ext):
    """build_ext that turns a failed compile into a warning instead of a failed install."""

    def run(self):
        try:
            super().run()
        except Exception as e:
            self._warn(f"the Cython twins could not be built ({e})")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as e:
            self._warn(f"{ext.name} could not be built ({e})")

    @staticmethod
    def _warn(msg):
        line = "*" * 78
        sys.stderr.write(f"\n{line}\nWARNING minibit: {msg}.\nThe install goes on; minibit "
                         f"will use its NumPy references (minibit.backend() == 'numpy').\n{line}\n\n")


def _read(path):
    with open(os.path.join(HERE, path), encoding="utf-8") as f:
        return f.read()


def _version():
    ns = {}
    exec(_read("minibit/_version.py"), ns)
    return ns["__version__"]


setup(
    name="minibit",
    version=_version(),
    description="A readable, exact reference for 1.58-bit (ternary) LLM inference",
    long_description=_read("README.md"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=["minibit", "minibit.formats", "minibit.kernels", "minibit.model", "minibit.io",
              "minibit.io.gguf", "minibit.oracle", "minibit.cli", "minibit.server", "minibit._fast",
              "minibit.data"],
    package_dir={"minibit": "minibit", "minibit._fast": "_fast", "minibit.data": "data"},
    package_data={"minibit.data": ["*.json", "*.safetensors", "*.txt", "*.md", "*/*"],
                  "minibit._fast": ["*.h", "*.pyx", "*.pxi"], "minibit.server": ["*.html"]},
    include_package_data=False,
    ext_modules=_extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
    install_requires=["numpy>=1.24", "tokenizers>=0.15", "safetensors>=0.4", "tqdm>=4.60",
                      "gguf>=0.10", "jinja2>=3.0"],
    extras_require={
        # the openai client and httpx drive `minibit serve` in tests/test_server*.py, so the
        # server's own dependencies come with the tests too
        "test": ["pytest>=7", "hypothesis>=6.80", "gguf>=0.10", "openai>=1.30", "httpx>=0.25",
                 "starlette>=0.37", "uvicorn>=0.30", "pydantic>=2.5"],
        # `minibit serve` (minibit/server): Starlette routes on uvicorn, pydantic schemas
        "server": ["starlette>=0.37", "uvicorn>=0.30", "pydantic>=2.5"],
        # independent oracles for the tests: transformers' BitNet (CPU torch, local wheel)
        "crosscheck": ["torch==2.13.0", "transformers>=4.51", "accelerate>=1.0"],
        # the executable tutorials (plots saved as PNG when headless)
        "tutorials": ["matplotlib>=3.5", "jupytext>=1.14"],
        # tools/train_demo.py
        "train": ["torch==2.13.0"],
    },
    entry_points={"console_scripts": ["minibit=minibit.cli:main"]},
)
