"""The bundled demo model: it loads from anywhere, its greedy tokens are pinned on both
backends (as llama2.c's test_all.py pins its stories model), and its held-out perplexity
stays where training left it."""

import os
import subprocess
import sys

import numpy as np
import pytest

import minibit
from minibit import _backend, oracle

PROMPT = "It was a fine morning"
PROMPT_IDS = [0, 1034, 307, 261, 1557, 974]
# greedy continuation measured when the model was trained (tools/train_demo.py, seed 1234)
GOLDEN = [14, 285, 269, 2363, 307, 275, 288, 857, 16, 201, 0, 4, 43, 447, 745, 321, 459, 316,
          672, 323, 472, 480, 283, 14]
GOLDEN_TEXT = ', and the weather was to be done.\n"I am sure you will not like it," said he,'
HELD_OUT = os.path.join(os.path.dirname(__file__), "data", "austen_valid_head.txt")
PPL_MEASURED = 54.25          # `minibit perplexity tests/data/austen_valid_head.txt --ctx 256`


@pytest.fixture(scope="module")
def demo():
    return minibit.load("demo")


def test_demo_is_the_packed_2b4t_layout(demo):
    c = demo.config
    assert (c.arch, c.hidden_act, c.num_layers, c.hidden_size, c.vocab_size) == \
        ("bitnet-b1.58", "relu2", 4, 256, 4096)
    assert {lin.packed.fmt for L in demo.transformer.layers for lin in L.linears()} == {"hf_packed"}
    assert demo.transformer.embed_dtype == "BF16"


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_golden_greedy_tokens(demo, backend):
    if backend == "cython" and _backend.fast_module("mad") is None:
        if os.environ.get("MINIBIT_REQUIRE_FAST") == "1":
            pytest.fail("Cython twins missing")
        pytest.skip("Cython twins not built")
    assert demo.tokenizer.encode(PROMPT) == PROMPT_IDS
    with _backend.use(backend):
        cache = demo.new_cache(64)
        logits = demo.forward(PROMPT_IDS, cache, last_only=True)
        out = []
        for _ in range(len(GOLDEN)):
            out.append(int(np.argmax(logits[-1])))
            logits = demo.forward([out[-1]], cache, last_only=True)
        assert out == GOLDEN
        assert demo.generate(PROMPT, max_new_tokens=len(GOLDEN), temperature=0) == GOLDEN_TEXT


def test_held_out_perplexity(demo):
    res = oracle.perplexity(demo, open(HELD_OUT, encoding="utf-8").read(), ctx=256, progress=False)
    assert res.ppl < PPL_MEASURED * 1.01, res


def test_loads_from_any_directory_and_generates(tmp_path):
    r = subprocess.run([sys.executable, "-m", "minibit", "generate", PROMPT, "-n", "20", "--seed", "1"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(PROMPT) and len(r.stdout.split()) > 8
