"""`minibit serve` through the official `openai` client and raw HTTP, on 127.0.0.1.

The server's text must be the library's text: every request here is compared with
``Model.generate`` / ``Model.chat`` called in this process with the same options (greedy
for most, seeded sampling for one), whole and streamed, alone and with 8 clients at once.
Bad requests must get a 4xx with OpenAI's error body and leave the server answering as
before.  The concurrency tests use a model whose forward passes wait for the test's permit
(serverkit.GatedModel), so "the worker is inside a generation" is a fact the test arranges,
not a timing it hopes for.
"""

import concurrent.futures
import json

import pytest

import minibit
from minibit.generate import GenerationResult
from serverkit import GatedModel, LiveServer, require, sse_events

openai, httpx = require("openai", "httpx")
require("starlette", "uvicorn", "pydantic")
from minibit.server import create_app  # noqa: E402  (after the dependency check)

FINISH = {"eos": "stop", "stop": "stop", "length": "length", "context": "length"}
PROMPTS = ["It was a fine morning", "Mr. Darcy", "Emma", "She said that", "The letter",
           "In the evening the family", "A single man", "He walked to the window"]


@pytest.fixture(scope="module")
def model():
    return minibit.load("demo")


@pytest.fixture(scope="module")
def live(model):
    with LiveServer(create_app(model, model_id="demo", slots=4)) as s:
        yield s


def client(live, **kw):
    return openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0,
                         timeout=kw.pop("timeout", 120), **kw)


def expected(model, prompt, chat=False, **kw):
    """(text, finish_reason as the API says it, prompt tokens, completion tokens)."""
    res = GenerationResult(text="")
    if chat:
        text = model.chat(prompt, result=res, **kw)
    else:
        text = model.generate(prompt, result=res, **kw)
    return text, FINISH[res.finish_reason], res.prompt_tokens, len(res.tokens)


# -- the openai client: the library's text, whole and streamed ---------------------------

def test_models_and_health(live):
    c = client(live)
    assert [m.id for m in c.models.list().data] == ["demo"]
    assert c.models.retrieve("demo").id == "demo"
    r = httpx.get(live.url + "/health", timeout=30)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["model"] == "demo" and body["context"] == 256


@pytest.mark.parametrize("prompt", PROMPTS[:3])
def test_completion_greedy_equals_library(live, model, prompt):
    text, finish, n_prompt, n_out = expected(model, prompt, max_new_tokens=24, temperature=0.0)
    r = client(live).completions.create(model="demo", prompt=prompt, max_tokens=24, temperature=0)
    assert r.choices[0].text == text
    assert r.choices[0].finish_reason == finish
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (
        n_prompt, n_out, n_prompt + n_out)
    assert r.object == "text_completion" and r.model == "demo"


def test_completion_streamed_equals_library(live, model):
    prompt = PROMPTS[0]
    text, finish, n_prompt, n_out = expected(model, prompt, max_new_tokens=30, temperature=0.0)
    chunks = list(client(live).completions.create(
        model="demo", prompt=prompt, max_tokens=30, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    pieces = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(pieces) == text
    assert sum(1 for p in pieces if p) > 1, "the text came in one piece: not streamed"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == finish and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == n_out
    assert chunks[-1].usage.prompt_tokens == n_prompt


def test_completion_default_max_tokens_is_16(live, model):
    text, finish, _, n_out = expected(model, PROMPTS[1], max_new_tokens=16, temperature=0.0)
    r = client(live).completions.create(model="demo", prompt=PROMPTS[1], temperature=0)
    assert (r.choices[0].text, r.choices[0].finish_reason, r.usage.completion_tokens) == (text, finish, n_out)


@pytest.mark.parametrize("stream", [False, True])
def test_chat_greedy_equals_library(live, model, stream):
    messages = [{"role": "system", "content": "You are a character in a novel."},
                {"role": "user", "content": "Who is Emma?"}]
    text, finish, n_prompt, n_out = expected(model, messages, chat=True, max_new_tokens=32,
                                             temperature=0.0)
    c = client(live)
    if stream:
        chunks = list(c.chat.completions.create(model="demo", messages=messages, max_tokens=32,
                                                temperature=0, stream=True))
        assert chunks[0].choices[0].delta.role == "assistant"
        got = "".join(ch.choices[0].delta.content or "" for ch in chunks)
        assert sum(1 for ch in chunks if ch.choices[0].delta.content) > 1
        assert chunks[-1].choices[0].finish_reason == finish
        assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    else:
        r = c.chat.completions.create(model="demo", messages=messages, max_tokens=32, temperature=0)
        got = r.choices[0].message.content
        assert r.choices[0].message.role == "assistant"
        assert r.choices[0].finish_reason == finish
        assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (n_prompt, n_out)
    assert got == text


def test_chat_text_parts_and_developer_role(live, model):
    """Content as a list of text parts is their concatenation; "developer" is "system"."""
    plain = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    parts = [{"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
             {"role": "user", "content": [{"type": "text", "text": "Hello "},
                                          {"type": "text", "text": "there"}]}]
    text, *_ = expected(model, plain, chat=True, max_new_tokens=12, temperature=0.0)
    r = client(live).chat.completions.create(model="demo", messages=parts, max_tokens=12, temperature=0)
    assert r.choices[0].message.content == text


def test_stop_strings_as_library(live, model):
    full, *_ = expected(model, PROMPTS[0], max_new_tokens=40, temperature=0.0)
    stop = full.split()[4]                       # a word from the middle of the greedy text
    text, finish, _, n_out = expected(model, PROMPTS[0], max_new_tokens=40, temperature=0.0,
                                      stop=(stop, "zzz"))
    assert finish == "stop" and text == full[:full.index(stop)]
    c = client(live)
    r = c.completions.create(model="demo", prompt=PROMPTS[0], max_tokens=40, temperature=0,
                             stop=[stop, "zzz"])
    assert (r.choices[0].text, r.choices[0].finish_reason, r.usage.completion_tokens) == (text, "stop", n_out)
    chunks = list(c.completions.create(model="demo", prompt=PROMPTS[0], max_tokens=40, temperature=0,
                                       stop=stop, stream=True))
    assert "".join(ch.choices[0].text for ch in chunks) == full[:full.index(stop)]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_seeded_sampling_equals_library(live, model):
    kw = dict(temperature=0.9, top_p=0.9, seed=1234)
    text, *_ = expected(model, PROMPTS[2], max_new_tokens=24, **kw)
    other, *_ = expected(model, PROMPTS[2], max_new_tokens=24, temperature=0.9, top_p=0.9, seed=99)
    assert text != other                         # the seed matters, so the check below can fail
    c = client(live)
    for stream in (False, True):
        r = c.completions.create(model="demo", prompt=PROMPTS[2], max_tokens=24, stream=stream, **kw)
        got = "".join(ch.choices[0].text for ch in r) if stream else r.choices[0].text
        assert got == text


def test_minibit_sampling_extensions(live, model):
    """top_k, min_p, repeat_penalty (minibit's own options) reach the sampler."""
    kw = dict(temperature=0.7, top_k=20, min_p=0.05, repeat_penalty=1.3, seed=5)
    text, *_ = expected(model, PROMPTS[3], max_new_tokens=20, **kw)
    r = httpx.post(live.url + "/v1/completions", timeout=60,
                   json={"model": "demo", "prompt": PROMPTS[3], "max_tokens": 20, **kw})
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == text


# -- many clients at once -----------------------------------------------------------------

def test_eight_concurrent_clients(live, model):
    """8 clients x 3 requests each, streamed and not, completions and chat, all at once:
    every answer is the library's, and /health answers while they run."""
    def job(i, k):
        prompt = PROMPTS[(i + k) % len(PROMPTS)]
        n = 6 + (i * 3 + k) % 10
        c = client(live)
        if (i + k) % 2:
            msgs = [{"role": "user", "content": prompt}]
            s = c.chat.completions.create(model="demo", messages=msgs, max_tokens=n, temperature=0,
                                          stream=bool(k % 2))
            got = "".join(ch.choices[0].delta.content or "" for ch in s) if k % 2 else s.choices[0].message.content
            return ("chat", prompt, n), got
        s = c.completions.create(model="demo", prompt=prompt, max_tokens=n, temperature=0,
                                 stream=bool(k % 2))
        got = "".join(ch.choices[0].text for ch in s) if k % 2 else s.choices[0].text
        return ("text", prompt, n), got

    before = live.scheduler.stats()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(lambda i=i: [job(i, k) for k in range(3)]) for i in range(8)]
        health = httpx.get(live.url + "/health", timeout=30)
        results = [r for f in futures for r in f.result(timeout=600)]
    assert health.status_code == 200
    assert len(results) == 24
    for (kind, prompt, n), got in results:
        if kind == "chat":
            want = model.chat([{"role": "user", "content": prompt}], max_new_tokens=n, temperature=0.0)
        else:
            want = model.generate(prompt, max_new_tokens=n, temperature=0.0)
        assert got == want, (kind, prompt, n)
    after = live.scheduler.stats()
    assert after["completed"] - before["completed"] == 24
    assert after["failed"] == before["failed"] and after["active"] == 0 and after["queued"] == 0


@pytest.fixture
def gated(model):
    g = GatedModel(model)
    with LiveServer(create_app(g, model_id="demo", slots=1, max_queue=1)) as s:
        s.gate = g
        yield s
        g.release(10_000)                        # never leave the worker parked


def _stream_request(url, body):
    """An open streaming request (httpx): returns (client, response, line iterator)."""
    c = httpx.Client(timeout=60)
    r = c.send(c.build_request("POST", url + "/v1/completions", json=body), stream=True)
    return c, r, r.iter_lines()


def test_health_answers_during_a_generation(gated, model):
    """The worker is parked inside a forward pass; /health and /v1/models still answer."""
    c, r, lines = _stream_request(gated.url, {"model": "demo", "prompt": PROMPTS[0],
                                              "max_tokens": 12, "temperature": 0, "stream": True})
    try:
        gated.gate.release(3)                    # the prefill and two decode passes: 3 tokens
        gated.gate.wait_arrivals(4)              # the fourth token's pass waits for a permit
        h = httpx.get(gated.url + "/health", timeout=10)
        assert h.status_code == 200 and h.json()["active"] == 1
        assert httpx.get(gated.url + "/v1/models", timeout=10).status_code == 200
        gated.gate.release(100)
        events = list(sse_events(lines))
    finally:
        r.close()
        c.close()
    assert events[-1] == "[DONE]"
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == model.generate(
        PROMPTS[0], max_new_tokens=12, temperature=0.0)


def test_disconnect_mid_stream_frees_the_slot(gated, model):
    """A streaming client leaves after its first token: the worker computes at most the
    token it was on, then the next client, waiting for the only slot, gets its answer."""
    gate = gated.gate
    c, r, lines = _stream_request(gated.url, {"model": "demo", "prompt": PROMPTS[0],
                                              "max_tokens": 200, "temperature": 0, "stream": True})
    gate.release(2)                              # prefill + one decode pass
    first = next(sse_events(lines))
    assert first["choices"][0]["text"]
    gate.wait_arrivals(3)                        # parked before the next token
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        second = pool.submit(httpx.post, gated.url + "/v1/completions", timeout=120,
                             json={"model": "demo", "prompt": PROMPTS[1], "max_tokens": 10, "temperature": 0})
        assert gated.scheduler.wait_until(lambda s: s["queued"] == 1)
        r.close()                                # the first client goes away
        c.close()
        assert gated.scheduler.wait_until(lambda s: s["cancelled"] == 1)
        gate.release(1000)
        answer = second.result(timeout=120)
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["text"] == model.generate(PROMPTS[1], max_new_tokens=10, temperature=0.0)
    first_cache = gate.calls[0]
    assert sum(1 for k in gate.calls if k is first_cache) == 3, "the cancelled job kept decoding"
    assert gated.scheduler.wait_until(lambda s: s["active"] == 0 and s["completed"] == 1)


def test_disconnect_while_queued_leaves_the_queue(gated, model):
    gate = gated.gate
    c1, r1, lines1 = _stream_request(gated.url, {"model": "demo", "prompt": PROMPTS[0],
                                                 "max_tokens": 8, "temperature": 0, "stream": True})
    gate.wait_arrivals(1)                        # the first job holds the slot (in its prefill)
    c2, r2, _ = _stream_request(gated.url, {"model": "demo", "prompt": PROMPTS[1],
                                            "max_tokens": 8, "temperature": 0, "stream": True})
    assert gated.scheduler.wait_until(lambda s: s["queued"] == 1)
    # a third request finds the queue (max_queue=1) full: 503 with an error body
    full = httpx.post(gated.url + "/v1/completions", timeout=30,
                      json={"model": "demo", "prompt": "x", "max_tokens": 2})
    assert full.status_code == 503 and full.json()["error"]["code"] == "server_busy"
    r2.close()
    c2.close()
    assert gated.scheduler.wait_until(lambda s: s["queued"] == 0 and s["cancelled"] == 1)
    gate.release(100)
    events = list(sse_events(lines1))
    r1.close()
    c1.close()
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == model.generate(
        PROMPTS[0], max_new_tokens=8, temperature=0.0)
    assert gate.calls and all(k is gate.calls[0] for k in gate.calls), "the queued job ran"


def test_disconnect_while_waiting_for_a_whole_answer(gated, model):
    """A non-streamed request whose client leaves mid-generation is cancelled too."""
    import socket
    body = json.dumps({"model": "demo", "prompt": PROMPTS[2], "max_tokens": 50, "temperature": 0}).encode()
    host, port = gated.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        gated.gate.release(2)
        gated.gate.wait_arrivals(3)              # parked in the third forward pass
    assert gated.scheduler.wait_until(lambda s: s["cancelled"] == 1)
    gated.gate.release(1000)
    assert gated.scheduler.wait_until(lambda s: s["active"] == 0)
    assert len(gated.gate.calls) == 3
    r = httpx.post(gated.url + "/v1/completions", timeout=120,
                   json={"model": "demo", "prompt": PROMPTS[2], "max_tokens": 5, "temperature": 0})
    assert r.json()["choices"][0]["text"] == model.generate(PROMPTS[2], max_new_tokens=5, temperature=0.0)


def test_stopping_the_worker_ends_streams_and_waiting_requests_with_503(model):
    """Scheduler.stop() (the app's shutdown) cancels what runs and what waits: a stream gets
    an error event and [DONE], a waiting request a 503, and so does any later one."""
    import threading
    gate = GatedModel(model)
    with LiveServer(create_app(gate, model_id="demo", slots=1)) as s:
        c, r, lines = _stream_request(s.url, {"model": "demo", "prompt": PROMPTS[0],
                                              "max_tokens": 20, "temperature": 0, "stream": True})
        events = sse_events(lines)
        gate.release(1)
        assert next(events)["choices"][0]["text"]
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            whole = pool.submit(httpx.post, s.url + "/v1/completions", timeout=120,
                                json={"model": "demo", "prompt": "x", "max_tokens": 3})
            assert s.scheduler.wait_until(lambda st: st["queued"] == 1)
            stopper = threading.Thread(target=s.scheduler.stop)
            stopper.start()
            assert s.scheduler.wait_until(lambda st: st["cancelled"] == 2)
            gate.release(1000)
            stopper.join(30)
            rest = list(events)
            r.close()
            c.close()
            assert whole.result(timeout=60).status_code == 503
        assert rest[-1] == "[DONE]" and rest[-2]["error"]["code"] == "server_busy"
        later = httpx.post(s.url + "/v1/completions", json={"model": "demo", "prompt": "x"}, timeout=60)
        assert later.status_code == 503 and later.json()["error"]["code"] == "server_busy"


class BrokenModel(GatedModel):
    """The demo model, whose forward pass fails for prompts that mention "boom"."""

    def generate(self, prompt, **kw):
        self.boom = "boom" in prompt
        return super().generate(prompt, **kw)

    def forward(self, ids, cache, last_only=False, trace=None):
        if self.boom:
            raise RuntimeError("a kernel failed")
        return self._model.forward(ids, cache, last_only=last_only, trace=trace)


def test_a_failing_generation_is_a_500_and_the_server_goes_on(model):
    with LiveServer(create_app(BrokenModel(model), model_id="demo", slots=1)) as s:
        bad = {"model": "demo", "prompt": "boom", "max_tokens": 4}
        r = httpx.post(s.url + "/v1/completions", json=bad, timeout=60)
        assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
        assert "a kernel failed" in r.json()["error"]["message"]
        with httpx.stream("POST", s.url + "/v1/completions", json=dict(bad, stream=True), timeout=60) as st:
            events = list(sse_events(st.iter_lines()))
        assert events[-1] == "[DONE]" and events[0]["error"]["type"] == "server_error"
        ok = httpx.post(s.url + "/v1/completions", timeout=60,
                        json={"model": "demo", "prompt": "Emma", "max_tokens": 6, "temperature": 0})
        assert ok.json()["choices"][0]["text"] == model.generate("Emma", max_new_tokens=6, temperature=0.0)
        assert s.scheduler.stats()["failed"] == 2


# -- bad input: a 4xx with an OpenAI error body, and nothing changes ------------------------

LONG_PROMPT = " ".join(["word"] * 300)
OK = {"model": "demo", "prompt": "Mr. Darcy", "max_tokens": 3}
CHAT_OK = {"model": "demo", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}

BAD = [  # (name, path, raw body or dict, status, error code, param)
    ("not json", "/v1/completions", b'{"model": "demo", "prompt": ', 400, "invalid_json", None),
    ("not utf-8", "/v1/completions", b'{"model": "demo", "prompt": "\xff\xfe"}', 400, "invalid_json", None),
    ("empty body", "/v1/completions", b"", 400, "invalid_json", None),
    ("json array", "/v1/completions", b"[1, 2]", 400, "invalid_json", None),
    ("NaN literal", "/v1/completions", b'{"model": "demo", "prompt": "x", "temperature": NaN}', 400, "invalid_json", None),
    ("Infinity literal", "/v1/completions", b'{"model": "demo", "prompt": "x", "top_p": Infinity}', 400, "invalid_json", None),
    ("1e999 (inf)", "/v1/completions", b'{"model": "demo", "prompt": "x", "temperature": 1e999}', 400, "invalid_value", "temperature"),
    ("deep nesting", "/v1/completions", b"[" * 100000 + b"]" * 100000, 400, "invalid_json", None),
    ("missing model", "/v1/completions", {"prompt": "x"}, 400, "invalid_value", "model"),
    ("missing prompt", "/v1/completions", {"model": "demo"}, 400, "invalid_value", "prompt"),
    ("missing messages", "/v1/chat/completions", {"model": "demo"}, 400, "invalid_value", "messages"),
    ("unknown model", "/v1/completions", dict(OK, model="gpt-4o"), 404, "model_not_found", "model"),
    ("unknown model (chat)", "/v1/chat/completions", dict(CHAT_OK, model="x"), 404, "model_not_found", "model"),
    ("max_tokens string", "/v1/completions", dict(OK, max_tokens="5"), 400, "invalid_value", "max_tokens"),
    ("max_tokens float", "/v1/completions", dict(OK, max_tokens=5.5), 400, "invalid_value", "max_tokens"),
    ("max_tokens bool", "/v1/completions", dict(OK, max_tokens=True), 400, "invalid_value", "max_tokens"),
    ("max_tokens negative", "/v1/completions", dict(OK, max_tokens=-1), 400, "invalid_value", "max_tokens"),
    ("max_tokens zero", "/v1/completions", dict(OK, max_tokens=0), 400, "invalid_value", "max_tokens"),
    ("max_tokens huge", "/v1/completions", dict(OK, max_tokens=10 ** 12), 400, "invalid_value", "max_tokens"),
    ("max_tokens 400 digits", "/v1/completions", dict(OK, max_tokens=10 ** 400), 400, "invalid_value", "max_tokens"),
    ("max_tokens past context", "/v1/completions", dict(OK, max_tokens=255), 400, "context_length_exceeded", "max_tokens"),
    ("temperature string", "/v1/completions", dict(OK, temperature="hot"), 400, "invalid_value", "temperature"),
    ("temperature negative", "/v1/completions", dict(OK, temperature=-0.5), 400, "invalid_value", "temperature"),
    ("temperature huge", "/v1/completions", dict(OK, temperature=1e300), 400, "invalid_value", "temperature"),
    ("top_p zero", "/v1/completions", dict(OK, top_p=0), 400, "invalid_value", "top_p"),
    ("top_p above 1", "/v1/completions", dict(OK, top_p=1.5), 400, "invalid_value", "top_p"),
    ("seed negative", "/v1/completions", dict(OK, seed=-3), 400, "invalid_value", "seed"),
    ("seed huge", "/v1/completions", dict(OK, seed=2 ** 70), 400, "invalid_value", "seed"),
    ("n = 2", "/v1/completions", dict(OK, n=2), 400, "invalid_value", "n"),
    ("stream string", "/v1/completions", dict(OK, stream="yes"), 400, "invalid_value", "stream"),
    ("stop number", "/v1/completions", dict(OK, stop=5), 400, "invalid_value", "stop"),
    ("five stops", "/v1/completions", dict(OK, stop=list("abcde")), 400, "invalid_value", "stop"),
    ("prompt as tokens", "/v1/completions", dict(OK, prompt=[1, 2, 3]), 400, "invalid_value", "prompt"),
    ("two prompts", "/v1/completions", dict(OK, prompt=["a", "b"]), 400, "invalid_value", "prompt"),
    ("prompt null", "/v1/completions", dict(OK, prompt=None), 400, "invalid_value", "prompt"),
    ("prompt too long", "/v1/completions", dict(OK, prompt=LONG_PROMPT), 400, "context_length_exceeded", "prompt"),
    ("chat too long", "/v1/chat/completions", dict(CHAT_OK, messages=[{"role": "user", "content": LONG_PROMPT}]),
     400, "context_length_exceeded", "messages"),
    ("messages string", "/v1/chat/completions", dict(CHAT_OK, messages="hi"), 400, "invalid_value", "messages"),
    ("messages empty", "/v1/chat/completions", dict(CHAT_OK, messages=[]), 400, "invalid_value", "messages"),
    ("role unknown", "/v1/chat/completions", dict(CHAT_OK, messages=[{"role": "robot", "content": "x"}]),
     400, "invalid_value", "messages"),
    ("content missing", "/v1/chat/completions", dict(CHAT_OK, messages=[{"role": "user"}]), 400, "invalid_value", "messages"),
    ("image part", "/v1/chat/completions",
     dict(CHAT_OK, messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
     400, "invalid_value", "messages"),
    ("logprobs", "/v1/completions", dict(OK, logprobs=2), 400, "unsupported_parameter", "logprobs"),
    ("tools", "/v1/chat/completions", dict(CHAT_OK, tools=[{"type": "function"}]), 400, "unsupported_parameter", "tools"),
    ("body too large", "/v1/completions", dict(OK, prompt="x" * (5 << 20)), 413, "request_too_large", None),
]


def _post(url, path, body):
    if isinstance(body, bytes):
        return httpx.post(url + path, content=body, headers={"content-type": "application/json"}, timeout=60)
    return httpx.post(url + path, json=body, timeout=60)


def test_bad_inputs_get_4xx_and_change_nothing(live, model):
    greedy = model.generate(OK["prompt"], max_new_tokens=3, temperature=0.0)
    first = _post(live.url, "/v1/completions", dict(OK, temperature=0)).json()["choices"][0]["text"]
    assert first == greedy
    failures = []
    for name, path, body, status, code, param in BAD:
        before = live.scheduler.stats()
        r = _post(live.url, path, body)
        got = r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text
        err = got.get("error") if isinstance(got, dict) else None
        if (r.status_code != status or not isinstance(err, dict) or err.get("code") != code
                or err.get("param") != param or not err.get("message")
                or err.get("type") != "invalid_request_error"):
            failures.append((name, r.status_code, got))
        if live.scheduler.stats()["submitted"] != before["submitted"]:
            failures.append((name, "reached the worker"))
        again = _post(live.url, "/v1/completions", dict(OK, temperature=0))
        if again.status_code != 200 or again.json()["choices"][0]["text"] != greedy:
            failures.append((name, "changed a later answer", again.text))
    assert not failures, json.dumps(failures, indent=1, default=str)[:4000]


def test_openai_client_sees_the_errors(live):
    c = client(live)
    with pytest.raises(openai.NotFoundError) as e:
        c.completions.create(model="nope", prompt="x", max_tokens=2)
    assert e.value.status_code == 404 and e.value.code == "model_not_found" and e.value.param == "model"
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}], n=2)
    assert e.value.code == "invalid_value" and e.value.param == "n"
    with pytest.raises(openai.BadRequestError) as e:
        c.completions.create(model="demo", prompt=LONG_PROMPT, stream=True)
    assert e.value.code == "context_length_exceeded"


def test_routes_methods_and_page(live):
    r = httpx.get(live.url + "/v1/nothing", timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "http_404"
    r = httpx.get(live.url + "/v1/completions", timeout=30)
    assert r.status_code == 405 and "POST" in r.headers["allow"] and r.json()["error"]["message"]
    r = httpx.get(live.url + "/v1/models/other", timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    page = httpx.get(live.url + "/", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<title>minibit chat</title>" in page.text and "/v1/chat/completions" in page.text


def test_smaller_context(model):
    """ctx limits prompt + completion; a chat reply without max_tokens gets the rest of the
    context (here 5 tokens), exactly what Model.chat gives with that many."""
    messages = [{"role": "user", "content": "Hello"}]
    n_prompt = len(model.tokenizer.encode(minibit.generate.render_chat(model, messages)))
    ctx = n_prompt + 5
    with LiveServer(create_app(model, model_id="tiny", ctx=ctx)) as s:
        c = client(s)
        r = c.chat.completions.create(model="tiny", messages=messages, temperature=0)
        assert r.choices[0].message.content == model.chat(messages, max_new_tokens=5, temperature=0.0)
        assert r.usage.prompt_tokens + r.usage.completion_tokens <= ctx
        with pytest.raises(openai.BadRequestError) as e:
            c.chat.completions.create(model="tiny", messages=messages, max_tokens=6)
        assert e.value.code == "context_length_exceeded"
        h = httpx.get(s.url + "/health", timeout=30).json()
        assert h["context"] == ctx and h["model"] == "tiny"
