"""Shared machinery for the `minibit serve` tests: a live server on 127.0.0.1, a gated model.

Every server here listens on 127.0.0.1 only, on a port the OS picks, and is stopped by the
test that started it.  The listening socket is bound before the server starts, so a client
may connect at once (the connection waits in the backlog until uvicorn accepts it): no test
polls or sleeps to wait for a server.

When the `server` extra or the test clients are missing, the tests skip, unless
MINIBIT_REQUIRE_SERVER=1 (set by .ci/run), where they fail: CI must run them.
"""

import os
import socket
import threading

import pytest


def require(*names):
    """Import and return the named modules; skip (or fail under MINIBIT_REQUIRE_SERVER=1)."""
    mods = []
    for name in names:
        try:
            mods.append(__import__(name))
        except ImportError:
            if os.environ.get("MINIBIT_REQUIRE_SERVER") == "1":
                pytest.fail(f"{name} is missing but MINIBIT_REQUIRE_SERVER=1 "
                            f"(pip install '.[test,server]')")
            pytest.skip(f"{name} is not installed (pip install '.[test,server]')",
                        allow_module_level=True)
    return mods[0] if len(mods) == 1 else mods


def listening_socket():
    """A TCP socket listening on 127.0.0.1 on a free port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


class LiveServer:
    """``with LiveServer(app) as s:`` serves the ASGI app on s.url from a uvicorn thread;
    leaving the block stops it and checks that it stopped."""

    def __init__(self, app, shutdown_timeout=5.0):
        import uvicorn

        self.app = app
        self.sock = listening_socket()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=shutdown_timeout)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="uvicorn-test", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()
        assert not self.thread.is_alive(), "the test server did not stop within 30 s"

    @property
    def scheduler(self):
        return self.app.state.scheduler


class GatedModel:
    """A model whose every forward pass waits for a permit from the test.

    ``release(n)`` lets n more forward passes run (the prefill is one, then one per token);
    ``wait_arrivals(k)`` blocks until k forward passes have been asked for, so a test knows
    the worker is parked inside a generation.  ``calls`` lists the KV cache of each pass
    that ran, which tells the passes of different requests apart.  Everything else is the
    wrapped model's; ``generate`` is minibit.generate.generate on this wrapper, exactly what
    Model.generate runs.
    """

    def __init__(self, model, timeout=60.0):
        self._model = model
        self._permits = threading.Semaphore(0)
        self._cv = threading.Condition()
        self.arrivals = 0
        self.calls = []
        self.timeout = timeout

    def __getattr__(self, name):
        return getattr(self._model, name)

    def release(self, n=1):
        self._permits.release(n)

    def wait_arrivals(self, k, timeout=30.0):
        with self._cv:
            ok = self._cv.wait_for(lambda: self.arrivals >= k, timeout)
        assert ok, f"only {self.arrivals} forward passes were asked for within {timeout} s, expected {k}"

    def forward(self, ids, cache, last_only=False, trace=None):
        with self._cv:
            self.arrivals += 1
            self._cv.notify_all()
        if not self._permits.acquire(timeout=self.timeout):
            raise RuntimeError("GatedModel: no permit within the timeout (a test forgot release())")
        self.calls.append(cache)
        return self._model.forward(ids, cache, last_only=last_only, trace=trace)

    def generate(self, prompt, **kw):
        from minibit.generate import generate
        return generate(self, prompt, **kw)


def sse_events(lines):
    """The JSON payloads of a server-sent event stream's ``data:`` lines, up to [DONE]
    (which is yielded as the string "[DONE]")."""
    import json
    for line in lines:
        if not line.startswith("data: "):
            continue
        data = line[len("data: "):]
        if data == "[DONE]":
            yield data
            return
        yield json.loads(data)


class ServeProcess:
    """``with ServeProcess("--slots", "2") as p:`` runs ``python -m minibit serve --port 0 ...``
    in a subprocess; p.url is read from the line it prints (select with a deadline), p.proc
    is the Popen, p.stderr_text what it printed (a thread drains the pipe).  Leaving the
    block kills the server if it still runs."""

    def __init__(self, *args, timeout=120.0):
        import re
        import subprocess
        import tempfile
        import sys
        import time

        env = dict(os.environ)
        env.pop("PYTHONWARNINGS", None)
        # from outside the checkout, so the installed package (twins, data) answers
        self.proc = subprocess.Popen([sys.executable, "-m", "minibit", "serve", "--port", "0", *args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, bufsize=0, env=env,
                                     cwd=tempfile.gettempdir())
        self._buf = b""
        self.url = None
        deadline = time.monotonic() + timeout
        try:
            while self.url is None:
                if not self._read_some(deadline):
                    raise AssertionError(f"minibit serve printed no address: {self.stderr_text}")
                m = re.search(r"on (http://127\.0\.0\.1:\d+)/", self.stderr_text)
                if m:
                    self.url = m.group(1)
        except BaseException:
            self.kill()
            raise
        self._drain = threading.Thread(target=self._drain_rest, daemon=True)
        self._drain.start()

    @property
    def stderr_text(self):
        return self._buf.decode(errors="replace")

    def _read_some(self, deadline):
        """Append what the server printed; False at EOF or when the deadline passes."""
        import select
        import time
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([self.proc.stderr], [], [], left)[0]:
            return False
        chunk = os.read(self.proc.stderr.fileno(), 1 << 16)
        self._buf += chunk
        return bool(chunk)

    def _drain_rest(self):
        while True:
            chunk = os.read(self.proc.stderr.fileno(), 1 << 16)
            if not chunk:
                return
            self._buf += chunk

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS line")

    def wait(self, timeout):
        rc = self.proc.wait(timeout)
        if hasattr(self, "_drain"):
            self._drain.join(10)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()
