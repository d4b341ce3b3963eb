"""The chat page in a real headless Chromium: typed messages, streamed replies, Stop.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON
messages separated by NUL bytes, commands on the browser's fd 3, answers on its fd 4), so
no driver or websocket library is needed.  The test types into the page, presses Enter or
clicks Send with synthetic input events, waits for the page's own "idle" state (a
MutationObserver, not a sleep), and compares the text on the page with ``Model.chat``.
A screenshot is saved (to MINIBIT_SCREENSHOT_DIR when set, else the test's tmp dir).

Skips when no Chromium is installed, unless MINIBIT_REQUIRE_BROWSER=1 (.ci/run installs
Debian's `chromium` and sets it), where that is a failure.
"""

import base64
import fcntl
import json
import os
import select
import shutil
import struct
import subprocess
import time

import pytest

import minibit
from serverkit import GatedModel, LiveServer, require

require("starlette", "uvicorn", "pydantic")
from minibit.server import create_app  # noqa: E402

WIDTH, HEIGHT = 1000, 720


def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("MINIBIT_REQUIRE_BROWSER") == "1":
        pytest.fail("no Chromium found but MINIBIT_REQUIRE_BROWSER=1 (apt-get install chromium)")
    pytest.skip("no Chromium installed (Debian: apt-get install chromium)")


class Browser:
    """A headless Chromium with one page, spoken to over the DevTools pipe."""

    def __init__(self, path, profile_dir, timeout=60.0):
        self.timeout = timeout
        cmd_r, cmd_w = os.pipe()           # we write commands, the browser reads them on fd 3
        out_r, out_w = os.pipe()           # the browser writes answers on fd 4, we read them
        # move the browser's ends above 9 so the shell's "3<&A 4>&B" cannot clobber one
        # with the other, then let bash (dash takes no two-digit fds) put them on fds 3 and 4
        hi_r = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10)
        hi_w = fcntl.fcntl(out_w, fcntl.F_DUPFD, 10)
        for fd in (cmd_r, out_w):
            os.close(fd)
        args = [path, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-dev-shm-usage",
                f"--user-data-dir={profile_dir}", f"--window-size={WIDTH},{HEIGHT}",
                "--remote-debugging-pipe", "about:blank"]
        self.proc = subprocess.Popen(
            [shutil.which("bash") or "/bin/bash", "-c", 'a=$1; b=$2; shift 2; exec "$@" 3<&"$a" 4>&"$b"', "sh",
             str(hi_r), str(hi_w), *args],
            pass_fds=(hi_r, hi_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(hi_r)
        os.close(hi_w)
        self.w, self.r = cmd_w, out_r
        self.buf = b""
        self.next_id = 0
        self.events = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=WIDTH, height=HEIGHT,
                  deviceScaleFactor=1, mobile=False)

    def _read_message(self, deadline):
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.r], [], [], left)[0]:
                raise TimeoutError("the browser did not answer in time")
            chunk = os.read(self.r, 1 << 16)
            if not chunk:
                raise RuntimeError("the browser closed its DevTools pipe")
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method, session=False, timeout=None, **params):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            m = self._read_message(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for i, m in enumerate(self.events):
                if m.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._read_message(deadline))

    def js(self, expression, timeout=None):
        """Evaluate in the page (awaiting a promise); the value, JSON-serialisable."""
        r = self.call("Runtime.evaluate", session=True, timeout=timeout, expression=expression,
                      awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page script failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    def navigate(self, url):
        self.events.clear()
        self.call("Page.navigate", session=True, url=url)
        self.wait_event("Page.loadEventFired")

    def type_text(self, selector, text):
        self.js(f"document.querySelector({json.dumps(selector)}).focus()")
        self.call("Input.insertText", session=True, text=text)

    def press_enter(self):
        for kind in ("keyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", session=True, type=kind, key="Enter", code="Enter",
                      windowsVirtualKeyCode=13, nativeVirtualKeyCode=13)

    def click(self, selector):
        box = self.js(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                      f".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", session=True, type=kind, x=box[0], y=box[1],
                      button="left", clickCount=1)

    def screenshot(self, path):
        data = base64.b64decode(self.call("Page.captureScreenshot", session=True, format="png")["data"])
        with open(path, "wb") as f:
            f.write(data)
        return data

    def close(self):
        try:
            self.call("Browser.close", timeout=10)
        except Exception:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.w)
        os.close(self.r)


# resolves once the page is idle and shows `n` assistant messages (or an error)
WAIT_REPLIES = """new Promise((resolve) => {
  const done = () => document.body.dataset.state === "idle" &&
      (document.querySelectorAll(".msg.assistant").length >= %d || document.querySelector(".msg.error"));
  if (done()) return resolve(true);
  new MutationObserver((_, obs) => { if (done()) { obs.disconnect(); resolve(true); } })
    .observe(document.body, {attributes: true, childList: true, subtree: true});
})"""

WAIT_CHUNKS = """new Promise((resolve) => {
  const done = () => { const m = document.querySelector(".msg.assistant");
                       return m && Number(m.dataset.chunks) >= %d; };
  if (done()) return resolve(true);
  new MutationObserver((_, obs) => { if (done()) { obs.disconnect(); resolve(true); } })
    .observe(document.body, {attributes: true, childList: true, subtree: true});
})"""

READ_PAGE = """[...document.querySelectorAll(".msg")].map(m => ({
  cls: m.className, text: (m.querySelector(".text") || m).textContent,
  chunks: Number(m.dataset.chunks || 0), finish: m.dataset.finish || null}))"""


@pytest.fixture(scope="module")
def model():
    return minibit.load("demo")


@pytest.fixture
def browser(tmp_path):
    b = Browser(_browser(), tmp_path / "profile")
    yield b
    b.close()


def _png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def _screenshot_path(tmp_path, name):
    out = os.environ.get("MINIBIT_SCREENSHOT_DIR")
    if out:
        os.makedirs(out, exist_ok=True)
        return os.path.join(out, name)
    return str(tmp_path / name)


def test_chat_page_streams_the_library_reply(model, browser, tmp_path):
    q1, q2 = "Who is Emma?", "And Mr. Knightley?"
    with LiveServer(create_app(model, model_id="demo")) as live:
        browser.navigate(live.url + "/")
        assert browser.js("document.title") == "minibit chat"
        browser.js(WAIT_REPLIES % 0)                         # the model list has loaded
        assert browser.js("document.getElementById('model').textContent") == "demo"
        browser.js("document.getElementById('temperature').value = '0';"
                   "document.getElementById('max_tokens').value = '24'")
        browser.type_text("#input", q1)
        browser.press_enter()
        browser.js(WAIT_REPLIES % 1, timeout=120)
        browser.type_text("#input", q2)
        browser.click("#send")
        browser.js(WAIT_REPLIES % 2, timeout=120)
        shot = browser.screenshot(_screenshot_path(tmp_path, "chat_page.png"))
        msgs = browser.js(READ_PAGE)
    assert [m["cls"] for m in msgs] == ["msg user", "msg assistant", "msg user", "msg assistant"], msgs
    reply1 = model.chat([{"role": "user", "content": q1}], max_new_tokens=24, temperature=0.0)
    reply2 = model.chat([{"role": "user", "content": q1}, {"role": "assistant", "content": reply1},
                         {"role": "user", "content": q2}], max_new_tokens=24, temperature=0.0)
    assert (msgs[0]["text"], msgs[2]["text"]) == (q1, q2)
    assert msgs[1]["text"] == reply1 and msgs[3]["text"] == reply2
    assert msgs[1]["chunks"] > 1 and msgs[3]["chunks"] > 1, "the replies were not streamed"
    assert msgs[1]["finish"] in ("stop", "length")
    assert _png_size(shot) == (WIDTH, HEIGHT) and len(shot) > 10_000


def test_chat_page_stop_frees_the_slot_and_shows_errors(model, browser, tmp_path):
    gate = GatedModel(model)
    with LiveServer(create_app(gate, model_id="demo", slots=1)) as live:
        try:
            browser.navigate(live.url + "/")
            browser.js(WAIT_REPLIES % 0)
            browser.js("document.getElementById('max_tokens').value = '200'")
            browser.type_text("#input", "Tell me a long story")
            browser.press_enter()
            gate.release(3)                                  # prefill + 2 decode passes: 3 tokens
            browser.js(WAIT_CHUNKS % 3, timeout=60)
            gate.wait_arrivals(4)                            # the worker is parked mid-reply
            browser.click("#stop")
            assert live.scheduler.wait_until(lambda s: s["cancelled"] == 1)
            gate.release(10_000)
            assert live.scheduler.wait_until(lambda s: s["active"] == 0)
            browser.js(WAIT_REPLIES % 1)
            msgs = browser.js(READ_PAGE)
            assert msgs[-1]["finish"] == "stopped" and msgs[-1]["chunks"] == 3
            # a request the server refuses shows its error message on the page
            browser.js("document.getElementById('temperature').value = '7'")
            browser.type_text("#input", "Hello")
            browser.click("#send")
            browser.js(WAIT_REPLIES % 1)
            browser.screenshot(_screenshot_path(tmp_path, "chat_page_error.png"))
            err = browser.js("document.querySelector('.msg.error').textContent")
        finally:
            gate.release(10_000)
    assert "temperature" in err and "less than or equal to 2" in err
