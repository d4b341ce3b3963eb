"""Turn a ``source`` string into something to load: "demo", a directory, a .gguf, a repo id.

Resolution never touches the network: a repo id ("microsoft/bitnet-b1.58-2B-4T") is looked
up in the local Hugging Face cache only — ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
``~/.cache/huggingface/hub`` — as ``models--{org}--{name}/snapshots/{revision}``, the
revision named by ``refs/main`` when present, else the newest snapshot.
"""

from __future__ import annotations

import os

from .._errors import FormatError

__all__ = ["resolve", "demo_dir", "hf_cache_dir"]


DEMOS = ("demo", "demo-a4.8")      # bundled models: package data minibit.data/<name>


def demo_dir(name: str = "demo") -> str:
    """A bundled demo model's directory (package data minibit.data/demo, .../demo-a4.8).

    setup.py installs data/ as the package minibit.data.  Run from a source checkout without
    that mapping (``python -m minibit`` in the repository root imports the source tree), the
    package is data/ beside minibit/."""
    try:
        from .. import data
        root = os.path.dirname(os.path.abspath(data.__file__))
    except ImportError:
        root = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))), "data")
    return os.path.join(root, name)


def hf_cache_dir() -> str:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return os.path.join(home, "hub")


def _from_cache(repo_id: str) -> str | None:
    base = os.path.join(hf_cache_dir(), "models--" + repo_id.replace("/", "--"))
    snaps = os.path.join(base, "snapshots")
    if not os.path.isdir(snaps):
        return None
    ref = os.path.join(base, "refs", "main")
    if os.path.exists(ref):
        with open(ref, encoding="utf-8") as f:
            rev = f.read().strip()
        if rev and os.path.basename(rev) == rev and os.path.isdir(os.path.join(snaps, rev)):
            return os.path.join(snaps, rev)
    revs = [os.path.join(snaps, r) for r in os.listdir(snaps)]
    revs = [r for r in revs if os.path.isdir(r)]
    return max(revs, key=os.path.getmtime) if revs else None


def resolve(source: str) -> tuple[str, str]:
    """(kind, path) with kind "hf" (snapshot dir) or "gguf" (file)."""
    if not isinstance(source, (str, os.PathLike)):
        raise FormatError(f"model source must be a path or name, got {type(source).__name__}")
    source = os.fspath(source)
    if source in DEMOS:
        d = demo_dir(source)
        if not os.path.exists(os.path.join(d, "config.json")):
            raise FormatError(f"the bundled model {source!r} is not installed (data/{source} is "
                              f"missing); pass --model DIR or a .gguf file")
        return "hf", d
    if os.path.isdir(source):
        if not os.path.exists(os.path.join(source, "config.json")):
            raise FormatError(f"{source}: a model directory needs config.json")
        return "hf", source
    if os.path.isfile(source):
        if source.endswith(".gguf"):
            return "gguf", source
        raise FormatError(f"{source}: not a model (expected a HF snapshot directory or a .gguf file)")
    parts = source.split("/")
    if len(parts) == 2 and all(parts) and not source.startswith("."):
        snap = _from_cache(source)
        if snap:
            return "hf", snap
        raise FormatError(f"{source}: not found locally and not in the HF cache at {hf_cache_dir()} "
                          f"(minibit never downloads; fetch it with `huggingface-cli download {source}`)")
    raise FormatError(f"{source}: no such file or directory (try 'demo', a HF snapshot "
                      f"directory, a .gguf file, or a repo id in the local HF cache)")
