"""Generation: same seed same text on both backends, streaming, stop strings, EOS, chat, CLI."""

import os
import subprocess
import sys

import numpy as np
import pytest

import minibit
from minibit import _backend
from minibit.generate import _holdback, render_chat
from minibit.io.synthetic import write_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = write_checkpoint(str(tmp_path_factory.mktemp("gen") / "tiny"), arch="bitnet-b1.58",
                         hidden=64, heads=4, kv_heads=2, intermediate=96, seed=3)
    return minibit.load(d)


def test_same_seed_same_text_on_both_backends(tiny):
    texts = []
    backends = ["numpy"] + (["cython"] if _backend.fast_module("quant") is not None else [])
    for be in backends:
        with _backend.use(be):
            texts.append(tiny.generate("Hello", max_new_tokens=20, temperature=0.9, top_k=50,
                                       top_p=0.95, seed=42))
    assert all(t == texts[0] for t in texts) and len(texts[0]) > 0
    again = tiny.generate("Hello", max_new_tokens=20, temperature=0.9, top_k=50, top_p=0.95, seed=42)
    assert again == texts[0]


def test_stream_equals_non_stream(tiny):
    kw = dict(max_new_tokens=24, temperature=0.7, seed=5)
    whole = tiny.generate("abc", **kw)
    pieces = list(tiny.generate("abc", stream=True, **kw))
    assert "".join(pieces) == whole and len(pieces) > 1


def test_greedy_matches_argmax_loop(tiny):
    ids = tiny.tokenizer.encode("The")
    cache = tiny.new_cache(64)
    logits = tiny.forward(ids, cache, last_only=True)
    out = []
    for _ in range(10):
        t = int(np.argmax(logits[-1]))
        if t in tiny.tokenizer.eos_ids:
            break
        out.append(t)
        logits = tiny.forward([t], cache, last_only=True)
    assert tiny.generate("The", max_new_tokens=10, temperature=0) == tiny.tokenizer.decode(out)


def test_stop_strings_across_tokens(tiny):
    # the byte-level tokenizer emits one character per token, so every stop string of
    # length > 1 spans several tokens
    full = tiny.generate("x", max_new_tokens=30, temperature=0)
    assert len(full) > 6
    stop = full[3:6]
    cut = tiny.generate("x", max_new_tokens=30, temperature=0, stop=[stop])
    assert cut == full[:full.find(stop)]
    streamed = "".join(tiny.generate("x", max_new_tokens=30, temperature=0, stop=[stop], stream=True))
    assert streamed == cut


def test_holdback_keeps_possible_stop_prefixes():
    assert _holdback("hello wor", ["world"]) == 3
    assert _holdback("hello", ["xyz"]) == 0
    assert _holdback("ab", ["abc", "b!"]) == 2


def test_eos_ends_generation(tiny):
    from minibit.generate import GenerationResult
    first = tiny.tokenizer.encode(tiny.generate("q", max_new_tokens=1, temperature=0), bos=False)[0]
    old = list(tiny.tokenizer.eos_ids)
    tiny.tokenizer.eos_ids = old + [first]          # the greedy first token now ends the text
    try:
        res = GenerationResult(text="")
        text = tiny.generate("q", max_new_tokens=10, temperature=0, result=res)
    finally:
        tiny.tokenizer.eos_ids = old
    assert res.finish_reason == "eos" and res.tokens == [] and text == ""


def test_context_limit(tiny):
    with pytest.raises(minibit.FormatError, match="context"):
        tiny.generate("a" * 300, max_new_tokens=1)
    from minibit.generate import GenerationResult
    res = GenerationResult(text="")
    tiny.generate("a" * 250, max_new_tokens=20, temperature=0, result=res)
    # the cache holds 256 positions; the token sampled from the last one is still returned
    if res.finish_reason == "context":
        assert res.prompt_tokens + len(res.tokens) == 257
    else:
        assert res.finish_reason == "eos" and res.prompt_tokens + len(res.tokens) <= 257


def test_chat_template_2b4t_renders_exactly(tiny, tmp_path):
    # the BitNet-2B4T template (tokenizer_config.json) and its documented rendering
    tmpl = ("{% for message in messages %}{{ message['role'] | capitalize + ': ' + "
            "message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
            "{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}")
    tiny.chat_template = tmpl
    try:
        text = render_chat(tiny, [{"role": "system", "content": "Be brief. "},
                                  {"role": "user", "content": " Hey, are you conscious?"}])
    finally:
        tiny.chat_template = None
    assert text == "System: Be brief.<|eot_id|>User: Hey, are you conscious?<|eot_id|>Assistant: "
    fallback = render_chat(tiny, [{"role": "user", "content": "hi"}])
    assert fallback == "User: hi</s>Assistant: "
    assert isinstance(tiny.chat([{"role": "user", "content": "hi"}], max_new_tokens=5, seed=1), str)
    with pytest.raises(minibit.FormatError, match="messages"):
        render_chat(tiny, [{"role": "user"}])


def test_template_is_sandboxed(tiny):
    tiny.chat_template = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    try:
        with pytest.raises(minibit.FormatError, match="chat template"):
            render_chat(tiny, [{"role": "user", "content": "x"}])
    finally:
        tiny.chat_template = None


# ---- the command line ------------------------------------------------------------------

def run_cli(*args, stdin=""):
    return subprocess.run([sys.executable, "-m", "minibit", *args], input=stdin, text=True,
                          capture_output=True, timeout=300, cwd=os.path.dirname(__file__))


def test_cli_generate_and_chat(tiny):
    r = run_cli("generate", "Hi", "--model", tiny.source, "-n", "8", "--seed", "1", "--verbose")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Hi") and "tok/s" in r.stderr
    again = run_cli("generate", "Hi", "--model", tiny.source, "-n", "8", "--seed", "1")
    assert again.stdout == r.stdout
    c = run_cli("chat", "--model", tiny.source, "-n", "4", "--seed", "2", stdin="hello\nworld\n")
    assert c.returncode == 0, c.stderr
    assert c.stdout.count("> ") == 2


def test_cli_errors(tmp_path):
    r = run_cli("generate")
    assert r.returncode == 2 and "the following arguments are required: prompt" in r.stderr
    assert "--help" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("generate", "x", "--model", str(tmp_path / "missing"))
    assert r.returncode == 1 and "no such file" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("frobnicate")
    assert r.returncode == 2
