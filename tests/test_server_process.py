"""`minibit serve` as a person runs it: the command in a subprocess on 127.0.0.1.

* the openai client gets the library's greedy text from the command's server;
* SIGTERM while a reply streams: the reply still arrives whole, then the process ends;
  SIGINT on an idle server: exit 130 and "stopped", no traceback;
* bad arguments: one line and exit 2; a port in use or a missing model: one line, exit 1;
* soak: 300 mixed requests (whole, streamed, chat, disconnects, bad input) against one
  server; every answer is checked, and the server's resident memory must stay flat.
"""

import concurrent.futures
import json
import signal
import socket
import subprocess
import tempfile
import sys
import time

import pytest

import minibit
from serverkit import ServeProcess, require, sse_events

openai, httpx = require("openai", "httpx")
require("starlette", "uvicorn", "pydantic")


@pytest.fixture(scope="module")
def model():
    return minibit.load("demo")


def _client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_command_serves_greedy_text_and_finishes_a_stream_on_sigterm(model):
    prompt = "It was a fine morning"
    want = model.generate(prompt, max_new_tokens=40, temperature=0.0)
    with ServeProcess("--slots", "2", "--shutdown-timeout", "60") as p:
        c = _client(p.url)
        r = c.completions.create(model="demo", prompt=prompt, max_tokens=40, temperature=0)
        assert r.choices[0].text == want
        chat = [{"role": "user", "content": "Good morning"}]
        r = c.chat.completions.create(model="demo", messages=chat, max_tokens=20, temperature=0)
        assert r.choices[0].message.content == model.chat(chat, max_new_tokens=20, temperature=0.0)
        with httpx.Client(timeout=120) as h:
            body = {"model": "demo", "prompt": prompt, "max_tokens": 40, "temperature": 0, "stream": True}
            with h.stream("POST", p.url + "/v1/completions", json=body) as resp:
                events = sse_events(resp.iter_lines())
                got = [next(events)]
                p.proc.send_signal(signal.SIGTERM)       # mid-stream
                got += list(events)
        assert got[-1] == "[DONE]"
        assert "".join(e["choices"][0]["text"] for e in got[:-1]) == want
        assert p.wait(60) == -signal.SIGTERM             # uvicorn re-raises it once shut down
        assert "Traceback" not in p.stderr_text


def test_sigint_stops_with_130():
    with ServeProcess() as p:
        assert httpx.get(p.url + "/health", timeout=60).json()["status"] == "ok"
        p.proc.send_signal(signal.SIGINT)
        assert p.wait(60) == 130
        assert "minibit serve: stopped" in p.stderr_text and "Traceback" not in p.stderr_text


def _serve_cmd(*args):
    return subprocess.run([sys.executable, "-m", "minibit", "serve", *args], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL, cwd=tempfile.gettempdir())


@pytest.mark.parametrize("args, needle", [
    (["--port", "70000"], "--port"), (["--port", "http"], "--port"), (["--slots", "0"], "--slots"),
    (["--ctx", "-5"], "--ctx"), (["--shutdown-timeout", "nan"], "--shutdown-timeout"),
    (["--profile", "fast"], "--profile"), (["--nonsense"], "--nonsense"),
])
def test_bad_arguments_exit_2_with_one_line(args, needle):
    r = _serve_cmd(*args)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_port_in_use_and_missing_model_exit_1(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        r = _serve_cmd("--port", str(taken.getsockname()[1]))
    finally:
        taken.close()
    assert r.returncode == 1 and "cannot listen on 127.0.0.1" in r.stderr and "Traceback" not in r.stderr
    r = _serve_cmd("--model", str(tmp_path / "nothing-here"))
    assert r.returncode == 1 and "nothing-here" in r.stderr and "Traceback" not in r.stderr


def test_help_names_the_routes():
    r = _serve_cmd("--help")
    assert r.returncode == 0 and "/v1/chat/completions" in r.stdout and "--slots" in r.stdout


# -- soak --------------------------------------------------------------------------------

SOAK_REQUESTS = 300
SOAK_TOKENS = 3                  # per request: the soak is about requests, not tokens
SOAK_PROMPTS = ["It was a fine morning", "Mr. Darcy", "Emma", "She said that", "The letter", "A single man"]


@pytest.mark.slow
def test_soak_300_requests_memory_steady(model):
    """300 requests from 4 client threads, six kinds in turn; RSS is sampled after the first
    60 (one-time costs: imports, first buffers) and at the end."""
    want = {(kind, p): (model.chat([{"role": "user", "content": p}], max_new_tokens=SOAK_TOKENS, temperature=0.0)
                        if kind == "chat" else model.generate(p, max_new_tokens=SOAK_TOKENS, temperature=0.0))
            for kind in ("text", "chat") for p in SOAK_PROMPTS}

    def one(url, i):
        p = SOAK_PROMPTS[i % len(SOAK_PROMPTS)]
        kind = i % 6
        with httpx.Client(timeout=120) as h:
            if kind == 0:
                r = h.post(url + "/v1/completions", json={"model": "demo", "prompt": p, "max_tokens": SOAK_TOKENS, "temperature": 0})
                return r.json()["choices"][0]["text"] == want["text", p]
            if kind == 1:
                r = h.post(url + "/v1/chat/completions", json={"model": "demo", "max_tokens": SOAK_TOKENS, "temperature": 0,
                                                               "messages": [{"role": "user", "content": p}]})
                return r.json()["choices"][0]["message"]["content"] == want["chat", p]
            if kind in (2, 3):
                body = {"model": "demo", "max_tokens": SOAK_TOKENS, "temperature": 0, "stream": True}
                path = "/v1/completions" if kind == 2 else "/v1/chat/completions"
                body.update({"prompt": p} if kind == 2 else {"messages": [{"role": "user", "content": p}]})
                with h.stream("POST", url + path, json=body) as r:
                    ev = list(sse_events(r.iter_lines()))
                key = "text" if kind == 2 else "chat"
                text = "".join((e["choices"][0]["text"] if kind == 2 else e["choices"][0]["delta"].get("content", ""))
                               for e in ev[:-1] if e["choices"])
                return ev[-1] == "[DONE]" and text == want[key, p]
            if kind == 4:                                # leave after the first event
                body = {"model": "demo", "prompt": p, "max_tokens": 32, "temperature": 0, "stream": True}
                with h.stream("POST", url + "/v1/completions", json=body) as r:
                    return bool(next(sse_events(r.iter_lines()))["choices"][0]["text"])
            r = h.post(url + "/v1/completions", content=b'{"model": "demo", "prompt": ' + json.dumps(p).encode()
                       + b', "max_tokens": -1}', headers={"content-type": "application/json"})
            return r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"

    # one kernel thread: two OpenMP threads spinning against the 4 client threads on a
    # 2-core machine made this soak 3x slower, and it is about memory, not speed
    with ServeProcess("--slots", "4", "--threads", "1") as p:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            warm = list(pool.map(lambda i: one(p.url, i), range(60), timeout=600))
            rss_start = p.rss_kib()
            rest = list(pool.map(lambda i: one(p.url, i), range(60, SOAK_REQUESTS), timeout=1200))
        rss_end = p.rss_kib()
        # the last disconnected stream may still hold its slot for one token: a bounded poll
        deadline = time.monotonic() + 60
        while True:
            health = httpx.get(p.url + "/health", timeout=60).json()
            if (health["active"], health["queued"]) == (0, 0) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert all(warm) and all(rest), [i for i, ok in enumerate(warm + rest) if not ok]
    assert health["submitted"] == SOAK_REQUESTS * 5 // 6
    assert health["failed"] == 0 and health["active"] == 0 and health["queued"] == 0
    assert health["completed"] + health["cancelled"] == health["submitted"]
    growth = (rss_end - rss_start) / 1024
    print(f"soak: {SOAK_REQUESTS} requests, RSS {rss_start / 1024:.1f} -> {rss_end / 1024:.1f} MiB")
    assert growth < 16, f"RSS grew by {growth:.1f} MiB over {SOAK_REQUESTS - 60} requests"


def test_without_the_server_extra_one_line_says_what_to_install():
    code = ("import sys; sys.modules['uvicorn'] = None\n"      # `import uvicorn` now fails
            "from minibit.cli import main; sys.exit(main(['serve', '--port', '0']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "pip install 'minibit[server]'" in r.stderr and "uvicorn" in r.stderr
