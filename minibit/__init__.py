"""minibit: a readable, exact reference for 1.58-bit (ternary) LLM inference.

Every kernel exists twice: a NumPy reference in this package (the spec) and a Cython twin in
``minibit._fast`` that gives the same bits.  ``minibit.backend()`` says which one runs;
``MINIBIT_PUREPYTHON=1`` forces the references.
"""

from ._backend import backend
from ._errors import FormatError
from . import quant, formats

__version__ = "0.1.0"

__all__ = ["backend", "FormatError", "quant", "formats", "load", "save_gguf", "__version__"]


def save_gguf(model, path, weight_format: str = "tq2_0", progress: bool = True):
    """Write ``model`` as a GGUF file: "tq2_0" / "tq1_0" (llama.cpp) or "i2_s" (bitnet.cpp)."""
    from .io.gguf import save_gguf as _save
    return _save(model, path, weight_format=weight_format, progress=progress)


def load(source: str = "demo", profile: str | None = None, threads: int | None = None):
    """Load a ternary model: "demo", a HF snapshot dir, a .gguf file, or a cached repo id.

    profile: "hf" | "bitnet.cpp" | "llama.cpp" | "a4.8" | "trilm"; None picks the source's
    natural one (HF dir -> "hf", or the profile its config.json names as "minibit_profile";
    a TriLM LLaMA dir -> "trilm"; I2_S/TL GGUF -> "bitnet.cpp", TQ GGUF -> "llama.cpp").  threads: kernel threads
    (default: MINIBIT_THREADS, else every core).  Never downloads.
    """
    import os

    from . import kernels
    from .io.resolve import resolve
    from .model import Model

    if threads is not None:
        kernels.set_threads(threads)
    kind, path = resolve(source)
    if kind == "gguf":
        try:
            from .io.gguf import load_gguf
        except ImportError:
            raise FormatError(f"{path}: GGUF models cannot be loaded by this version of "
                              f"minibit yet; convert the HF checkpoint instead") from None
        return load_gguf(path, profile)
    from .io.hf import HFCheckpoint, read_json
    from .model.model import build_from_hf
    from .tokenizer import Tokenizer

    raw = read_json(os.path.join(path, "config.json"))
    if isinstance(raw, dict):
        from .io.trilm import is_float_llama, load_trilm
        if is_float_llama(raw):                 # TriLM (ternary per shard) or a float LLaMA
            return load_trilm(path, raw, profile)
    ckpt = HFCheckpoint(path)
    # a config may name the numerics it was trained for (data/demo-a4.8: "a4.8")
    named = raw.get("minibit_profile") if isinstance(raw, dict) else None
    if named is not None and not isinstance(named, str):
        raise FormatError(f"{path}/config.json: minibit_profile must be a string, got {named!r}")
    prof = profile or named or "hf"
    transformer = build_from_hf(ckpt, prof)
    cfg = ckpt.config
    tok = None
    tj = os.path.join(path, "tokenizer.json")
    if os.path.exists(tj):
        tok = Tokenizer.from_file(tj, bos_id=cfg.bos_token_id, eos_ids=cfg.eos_token_ids)
    template = None
    tc = os.path.join(path, "tokenizer_config.json")
    if os.path.exists(tc):
        from .io.hf import read_json
        t = read_json(tc).get("chat_template")
        template = t if isinstance(t, str) else None
    return Model(transformer, tok, prof, source=path, chat_template=template)
