"""llama.cpp from source: its code as vendored in llama-cpp-python's PyPI sdist, built with cmake.

Two users: ``minibit bench model --llama-bench build`` (a native llama-bench) and the peer
harness in ``tools/peers/`` (an AVX2-only libllama to hold the ``llama.cpp`` profile against).
Everything goes under a cache directory outside the repository; nothing is downloaded but the
sdist, through pip.

    src = llama_cpp_source(root)                  # <root>/src/llama_cpp_python-X/vendor/llama.cpp
    build(src, "<root>/llama.cpp-X-avx2/build", ["llama"], AVX2_ARGS + SHARED_ARGS)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile

__all__ = ["LLAMA_CPP_PYTHON", "llama_cpp_source", "build", "AVX2_ARGS", "LEAN_ARGS"]

LLAMA_CPP_PYTHON = "0.3.36"     # the llama-cpp-python sdist whose vendored llama.cpp is built

# x86 AVX2 without AVX-512, whatever the build machine has (what most users' CPUs run)
AVX2_ARGS = ["-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_BMI2=ON",
             "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DGGML_AVX512=OFF"]
# only the library and the named targets: no tests, tools, server, curl or OpenSSL
LEAN_ARGS = ["-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",
             "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF"]


def llama_cpp_source(root: str, version: str = LLAMA_CPP_PYTHON, log=print) -> str:
    """llama.cpp's source tree from llama-cpp-python's sdist, downloaded (pip) and unpacked
    once under <root>/src; returns the vendor/llama.cpp directory."""
    top = os.path.join(root, "src", f"llama_cpp_python-{version}")
    src = os.path.join(top, "vendor", "llama.cpp")
    if os.path.isfile(os.path.join(src, "CMakeLists.txt")):
        return src
    os.makedirs(os.path.join(root, "src"), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=os.path.join(root, "src")) as tmp:
        log(f"# downloading llama-cpp-python {version} (sdist) for llama.cpp's source")
        # --no-binary for this package only: its build dependencies may come as wheels
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                        "llama-cpp-python", "-d", tmp, f"llama-cpp-python=={version}"],
                       check=True, stdout=subprocess.DEVNULL)
        sdist = [n for n in os.listdir(tmp) if n.endswith(".tar.gz")]
        if not sdist:
            raise RuntimeError("pip download gave no llama-cpp-python sdist")
        with tarfile.open(os.path.join(tmp, sdist[0])) as tf:
            tf.extractall(tmp, filter="data")
        os.replace(os.path.join(tmp, sdist[0][:-len(".tar.gz")]), top)
    return src


def build(src: str, build_dir: str, targets: list, cmake_args: list, jobs: int | None = None,
          log=print) -> str:
    """Configure (once per argument set) and build ``targets`` of a llama.cpp tree; returns
    build_dir.  cmake's own dependency tracking makes a rebuild with nothing changed quick."""
    os.makedirs(build_dir, exist_ok=True)
    stamp = os.path.join(build_dir, ".minibit-configure")
    want = "\n".join([src] + list(cmake_args))
    have = open(stamp).read() if os.path.exists(stamp) else None
    if have != want:
        log(f"# configuring llama.cpp in {build_dir}")
        subprocess.run(["cmake", "-S", src, "-B", build_dir, *cmake_args], check=True,
                       stdout=subprocess.DEVNULL)
        with open(stamp, "w") as f:
            f.write(want)
    jobs = jobs or int(os.environ.get("JOBS", 0)) or min(os.cpu_count() or 2, 2)
    log(f"# building {' '.join(targets)} (-j{jobs})")
    subprocess.run(["cmake", "--build", build_dir, "--config", "Release", "--target", *targets,
                    "-j", str(jobs)], check=True, stdout=subprocess.DEVNULL)
    return build_dir
