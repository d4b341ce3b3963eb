"""The bugs issue 19 reproduced, each on both backends: they raise clear errors now."""

import os
import subprocess
import sys

import numpy as np
import pytest

import minibit
from minibit import _backend, formats

BACKENDS = ["numpy"] + (["cython"] if all(_backend.twins().values()) else [])


@pytest.fixture(scope="module")
def demo():
    return minibit.load("demo")


@pytest.mark.parametrize("be", BACKENDS)
def test_read_only_mapped_kv_cache(demo, be, tmp_path):
    """A cache layer swapped for a read-only memory map: FormatError (was exit 139 on Cython)."""
    c = demo.new_cache(16)
    np.save(tmp_path / "k.npy", c.k)
    c.k = np.load(tmp_path / "k.npy", mmap_mode="r")
    with _backend.use(be), pytest.raises(minibit.FormatError, match="read-only"):
        demo.forward([1, 2, 3], c)


@pytest.mark.parametrize("be", BACKENDS)
def test_write_protected_kv_cache_is_not_written(demo, be):
    """setflags(write=False): FormatError, and the array keeps its bytes (the twin used to
    write into it silently)."""
    c = demo.new_cache(16)
    c.v[...] = 7
    c.v.setflags(write=False)
    with _backend.use(be), pytest.raises(minibit.FormatError, match="read-only"):
        demo.forward([1, 2, 3], c)
    assert (c.v == 7).all()


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("shape, data", [((-1, 128), np.zeros(0, np.uint8)),
                                         ((0, 128), np.zeros(32, np.uint8)),
                                         ((1.0, 128), np.zeros(64, np.uint8)),
                                         ((1, 128), np.zeros(64, np.int8)),
                                         ((1, 128), np.zeros(63, np.uint8))])
def test_bad_packed_is_a_format_error(be, shape, data):
    """formats.decode(Packed("i2_s", (-1, 128), ...)) raised IndexError (NumPy) or ValueError
    (Cython); the Packed now refuses itself, the same way on both backends."""
    with _backend.use(be), pytest.raises(minibit.FormatError, match="i2_s"):
        formats.decode(formats.Packed("i2_s", shape, data))


def test_inspect_demo(tmp_path):
    """`minibit inspect demo` lists the bundled model (it said "no such file or directory").
    Run outside the checkout, so the installed package answers."""
    r = subprocess.run([sys.executable, "-m", "minibit", "inspect", "demo"], capture_output=True,
                       text=True, timeout=120, cwd=str(tmp_path))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "model.embed_tokens.weight" in r.stdout and "# 74 tensors" in r.stdout


def test_readme_tutorial_line_installs_the_tutorials_extra():
    """Tutorials 03 and 05 import matplotlib: the README's command to run them installs it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    section = readme.split("## Tutorials", 1)[1].split("\n## ", 1)[0]
    assert "pip install '.[tutorials]'" in section
    with open(os.path.join(root, "setup.py"), encoding="utf-8") as f:
        assert '"tutorials": [' in f.read() and "matplotlib" in readme.split("## Tutorials", 1)[1]


def test_readme_quotes_real_output_of_command_1(capsys):
    """The README's "Real output of command 1" is what `minibit generate` prints (a prefix of
    it, whitespace folded), on whichever backend runs the suite."""
    from minibit.cli import main
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    block = readme.split("Real output of command 1", 1)[1].split("\n\n", 2)[1]
    quoted = " ".join(line[2:] for line in block.splitlines() if line.startswith("> "))
    assert main(["generate", "It was a fine morning", "--seed", "7"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert len(quoted) > 100 and printed.startswith(" ".join(quoted.split()))
