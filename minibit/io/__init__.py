"""Loaders, one per source, all of one shape: read and check a checkpoint, then
``assemble`` the Model.

    safetensors.py   the validated safetensors parser (memory-mapped views)
    hf.py            HF snapshot directories -> load_hf(path, profile)
    gguf/            GGUF: reader (parser), vocab (tokenizer <-> metadata), names (archs,
                     q/k permutation), load (-> load_gguf), writer (save_gguf)
    assemble.py      checked weights -> Model (the step both loaders share)
    resolve.py       "demo" / directory / .gguf / cached repo id -> (kind, path)
    inspect.py       what a checkpoint holds, without loading it
    synthetic.py     random ternary checkpoints for tests and benchmarks

``load(source, profile, threads)`` is ``minibit.load``: it resolves the source and hands it to
its loader.  ``save_gguf`` is ``minibit.save_gguf``.
"""

from __future__ import annotations

__all__ = ["load", "save_gguf"]


def load(source="demo", profile: str | None = None, threads: int | None = None):
    """Load a ternary model: "demo", a HF snapshot dir, a .gguf file, or a cached repo id.

    profile: "hf" | "bitnet.cpp" | "llama.cpp"; None picks the source's natural one (HF dir
    -> "hf", I2_S/TL GGUF -> "bitnet.cpp", TQ GGUF -> "llama.cpp").  threads: kernel threads
    (default: MINIBIT_THREADS, else every core).  Never downloads.
    """
    from .. import kernels
    from .resolve import resolve

    if threads is not None:
        kernels.set_threads(threads)
    kind, path = resolve(source)
    if kind == "gguf":
        from .gguf import load_gguf
        return load_gguf(path, profile)
    from .hf import load_hf
    return load_hf(path, profile)


def save_gguf(model, path, weight_format: str = "tq2_0", progress: bool = True,
              model_name: str | None = None) -> str:
    """Write ``model`` as a GGUF file: "tq2_0" / "tq1_0" (llama.cpp) or "i2_s" (bitnet.cpp)."""
    from .gguf import save_gguf as _save
    return _save(model, path, weight_format=weight_format, progress=progress,
                 model_name=model_name)
