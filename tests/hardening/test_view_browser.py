"""Issue 16: `tfshrink view --no-browser` opened in a real headless Chromium.

The command runs as a user runs it (a subprocess; its URL read from what it prints), serving a
frozen .pb from a folder that also holds private files. Chromium is driven over the DevTools
protocol on a pipe (`--remote-debugging-pipe`: no port, no extra package), which gives the page's
DOM and every request the page made. Checked: the graph renders (every GraphDef node is a drawn
element of Netron's SVG, nothing waits on a consent banner), the page calls nothing but the local
server (no ipinfo.io, no Google Analytics), other files of the model's folder are 404 from the
page, a DNS-rebound host name gets 403, and SIGTERM leaves no temporary folder.

Skipped only where no Chromium binary is installed (.ci/run installs one).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.builders import chromium
from tfshrink import _tf

REBIND_HOST = "rebind.example"  # resolved to 127.0.0.1 by the browser only: a DNS-rebinding page


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe: JSON messages separated by
    NUL, commands written to the browser's fd 3, answers and events read from its fd 4."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        # fds >= 10 in the child, so that moving them to 3 and 4 cannot overwrite one with the other
        child_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
        child_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
        for fd in (to_browser_r, from_browser_w):
            os.close(fd)
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--remote-debugging-pipe", f"--user-data-dir={profile}", "--window-size=1200,900",
                f"--host-resolver-rules=MAP {REBIND_HOST} 127.0.0.1", "about:blank"]
        # a Python trampoline puts them on fds 3 and 4 (sh cannot name fds above 9) and execs Chromium
        trampoline = "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); " \
                     "os.execv(sys.argv[3], sys.argv[3:])"
        self.proc = subprocess.Popen([sys.executable, "-c", trampoline, str(child_r), str(child_w), *args],
                                     pass_fds=(child_r, child_w), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(child_r)
        os.close(child_w)
        self._out, self._in = to_browser_w, from_browser_r
        self._buffer = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def _message(self, timeout: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._in], [], [], max(timeout, 0.0))
            if not ready:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise EOFError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict[str, Any]:
        self._id += 1
        command: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            command["sessionId"] = session
        os.write(self._out, json.dumps(command).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            message = self._message(deadline - time.monotonic())
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def page(self) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Network", "Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        return Page(self, session)

    def close(self) -> None:
        with contextlib.suppress(OSError, TimeoutError, EOFError, RuntimeError):
            self.send("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._out)
        os.close(self._in)


@dataclass
class Page:
    browser: Chromium
    session: str

    def evaluate(self, expression: str, timeout: float = 30.0) -> Any:
        result = self.browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                        "awaitPromise": True}, self.session, timeout)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def navigate(self, url: str) -> None:
        answer = self.browser.send("Page.navigate", {"url": url}, self.session)
        assert not answer.get("errorText"), answer

    def wait_for(self, expression: str, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"never true: {expression}")

    def events(self, method: str) -> list[dict[str, Any]]:
        return [e["params"] for e in self.browser.events
                if e.get("method") == method and e.get("sessionId") == self.session]


@dataclass
class Served:
    url: str
    port: int
    model: Path
    folder: Path
    tmp: Path
    proc: subprocess.Popen[str]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    binary = chromium()
    if binary is None:
        pytest.skip("no Chromium installed (chromium, chromium-browser or google-chrome on PATH)")
    driven = Chromium(binary, tmp_path_factory.mktemp("chromium_profile"))
    try:
        yield driven
    finally:
        driven.close()


@pytest.fixture(scope="module")
def served(keras_pb: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`tfshrink view MODEL --no-browser` running in a subprocess, MODEL beside private files, its
    TMPDIR a folder of its own (checked empty once SIGTERM has stopped it)."""
    root = tmp_path_factory.mktemp("view_browser")
    folder = root / "models"
    (folder / ".ssh").mkdir(parents=True)
    (folder / ".ssh" / "id_rsa").write_text("PRIVATE KEY")
    (folder / "notes.txt").write_text("secret notes")
    model = folder / "two_io.pb"
    shutil.copy(keras_pb, model)
    tmp = root / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tfshrink", "view", str(model), "--no-browser"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        line = proc.stdout.readline() if ready else ""
        found = re.search(r" at (http://\S+)", line)
        assert found, (line, proc.poll(), proc.stderr.read() if proc.poll() is not None else "")
        url = found.group(1)
        yield Served(url, int(urlsplit(url).port or 80), model, folder, tmp, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, proc.stderr.read() if proc.stderr else ""  # "terminated"
    assert not list(tmp.iterdir()), list(tmp.iterdir())  # the private copy's folder is gone


@pytest.fixture(scope="module")
def rendered(browser: Chromium, served: Served) -> Page:
    """The served page, once Netron has drawn the graph."""
    page = browser.page()
    page.navigate(served.url)
    try:
        page.wait_for("!!document.body && document.body.classList.contains('default') && "
                      "document.querySelectorAll('#canvas [id^=\"node-name-\"]').length > 0")
    except TimeoutError:
        shown = page.evaluate("(document.body ? document.body.className : '') + ': ' + "
                              "((document.getElementById('message-text') || {}).innerText || '')")
        pytest.fail(f"Netron did not draw the graph within 60 s; the page shows {shown!r}")
    return page


def test_the_graph_renders(rendered: Page, served: Served) -> None:
    graph_def = _tf.graph_pb2().GraphDef.FromString(served.model.read_bytes())
    drawn = rendered.evaluate(
        "Object.fromEntries(Array.from(document.querySelectorAll('#canvas [id^=\"node-name-\"]'))"
        ".map(e => { const r = e.getBoundingClientRect();"
        " return [e.id.slice('node-name-'.length), [r.width, r.height, e.textContent]]; }))")
    assert set(drawn) == {n.name for n in graph_def.node if n.op != "Const"}  # Netron draws constants inside their users
    conv = next(n.name for n in graph_def.node if n.op == "Conv2D")
    width, height, text = drawn[conv]
    assert width > 0 and height > 0 and "Conv2D" in text and conv in text
    # nothing stands in front of the graph: no consent banner, no "Please update" prompt
    assert rendered.evaluate("document.body.className") == "default"
    assert rendered.evaluate("(document.getElementById('message-text') || {}).innerText || ''") == ""
    assert "consent=" in rendered.evaluate("document.cookie")
    assert rendered.evaluate("document.querySelector('meta[name=date]') === null")  # no build date to age


def test_the_page_is_sent_with_a_content_security_policy(rendered: Page, served: Served) -> None:
    page = next(e["response"] for e in rendered.events("Network.responseReceived")
                if e["response"]["url"].rstrip("/") == served.url.rstrip("/"))
    headers = {k.lower(): v for k, v in page["headers"].items()}
    policy = {d.split()[0]: d.split()[1:] for d in headers["content-security-policy"].split("; ")}
    for directive in ("default-src", "script-src", "connect-src"):
        assert policy[directive] == ["'self'"], (directive, policy)


def test_the_page_calls_nothing_but_the_local_server(rendered: Page, served: Served) -> None:
    requested = [e["request"]["url"] for e in rendered.events("Network.requestWillBeSent")]
    assert any("/data/two_io.pb" in url for url in requested)
    origin = served.url.rstrip("/")
    assert [u for u in requested if not (u == origin or u.startswith(origin + "/"))] == []
    failed = [e for e in rendered.events("Network.loadingFailed") if not e.get("canceled")]
    assert failed == []
    # what Netron still tries (its Google Analytics beacon) is refused by the page's CSP, in the
    # browser, before any connection; ipinfo.io is not even tried (the consent cookie is preset)
    logged = [e["entry"]["text"] for e in rendered.events("Log.entryAdded")]
    assert not [t for t in logged if "ipinfo.io" in t]
    assert all("Content Security Policy" in t for t in logged if "analytics.google.com" in t), logged


def test_other_files_of_the_folder_are_not_served_to_the_page(rendered: Page, served: Served) -> None:
    fetch = ("(async () => { const r = await fetch(%s, {cache: 'no-store'});"
             " return [r.status, await r.text()]; })()")
    status, body = rendered.evaluate(fetch % json.dumps("/data/two_io.pb"))
    assert status == 200  # the model itself
    for path in ("/data/notes.txt", "/data/.ssh/id_rsa", "/data/%2e%2e/models/notes.txt",
                 "/data/..%2fmodels%2fnotes.txt", f"/data/{served.folder}/notes.txt"):
        status, body = rendered.evaluate(fetch % json.dumps(path))
        assert status in (403, 404) and "secret" not in body and "PRIVATE" not in body, (path, status)


def test_a_dns_rebound_host_is_refused(browser: Chromium, served: Served) -> None:
    page = browser.page()
    page.navigate(f"http://{REBIND_HOST}:{served.port}/data/two_io.pb")
    page.wait_for("document.readyState === 'complete'")
    statuses = {e["response"]["url"].split("/", 3)[-1]: e["response"]["status"]
                for e in page.events("Network.responseReceived")
                if e["response"]["url"].startswith(f"http://{REBIND_HOST}:")}
    assert statuses.pop("data/two_io.pb") == 403 and set(statuses.values()) <= {403}, statuses  # favicon.ico too
    assert "answers only to localhost" in page.evaluate("document.body.innerText")
