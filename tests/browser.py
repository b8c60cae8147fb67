"""Pages as a person sees them: Debian's headless chromium, driven over the DevTools protocol,
loads a page from disk and reports what it drew (the body's visible text, images that did not
load, script errors) and every request the page made. Chromium's whole network goes to a
loopback proxy that refuses everything, so nothing leaves the machine whatever a page asks for."""

from __future__ import annotations

import itertools
import json
import shutil
import socketserver
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote, urlparse

# Keep chromium's own background traffic (updates, sync, field trials) down; what it still sends
# is not the page's and is told apart by the DevTools protocol, which names the page's requests.
_QUIET = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--disable-default-apps", "--disable-extensions", "--mute-audio", "--window-size=1280,900"]
# The page's state once it has loaded: visible text, images that failed, links to local files.
_INSPECT = """JSON.stringify({
  text: document.body ? document.body.innerText : "",
  broken_images: Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src),
  links: Array.from(document.querySelectorAll("a[href]")).map(a => a.href),
})"""


def chromium() -> str:
    """The chromium executable; AssertionError naming the fix when it is not installed."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium not found: bash infra/setup.sh installs it (as root), or apt-get install chromium"
    return found


class _Refuse(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.rfile.readline(4096)
        self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


@contextmanager
def _refusing_proxy() -> Iterator[str]:
    """A loopback HTTP proxy that answers every request and CONNECT with 403; yields its URL."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Refuse)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class PageView:
    """What chromium made of one page."""

    text: str
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    failed: list[str] = field(default_factory=list)  # requests that got no answer (missing files, refused)
    errors: list[str] = field(default_factory=list)  # uncaught script exceptions
    broken_images: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)

    @property
    def outside_requests(self) -> list[str]:
        """Requests for anything but the page's own files."""
        return [url for url in self.requests if not url.startswith(("file:", "data:", "blob:", "about:"))]


class _DevTools:
    """One DevTools websocket: commands by id, events kept by session."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self._socket = connect(url, max_size=None, open_timeout=30)
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 60) -> dict[str, Any]:
        number = next(self._ids)
        message: dict[str, Any] = {"id": number, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._socket.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self._socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") == number:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, session: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method and e.get("sessionId") == session for e in self.events):
            self.events.append(json.loads(self._socket.recv(timeout=max(0.1, deadline - time.monotonic()))))

    def close(self) -> None:
        self._socket.close()


@contextmanager
def headless_chromium(profile: Path) -> Iterator["Browser"]:
    """A headless chromium with its network sent to a refusing loopback proxy; stopped on exit."""
    profile.mkdir(parents=True, exist_ok=True)
    with _refusing_proxy() as proxy:
        process = subprocess.Popen(
            [chromium(), *_QUIET, f"--user-data-dir={profile}", f"--proxy-server={proxy}",
             "--proxy-bypass-list=<-loopback>", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port_file = profile / "DevToolsActivePort"
            deadline = time.monotonic() + 60
            while not (port_file.exists() and len(port_file.read_text().split()) == 2):
                assert process.poll() is None, f"chromium exited with {process.returncode}"
                assert time.monotonic() < deadline, "chromium did not open its DevTools port in 60 s"
                time.sleep(0.1)
            port, path = port_file.read_text().split()
            devtools = _DevTools(f"ws://127.0.0.1:{port}{path}")
            try:
                yield Browser(devtools)
            finally:
                devtools.close()
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Browser:
    def __init__(self, devtools: _DevTools) -> None:
        self._devtools = devtools

    def view(self, page: Path, settle_seconds: float = 1.0, timeout: float = 90) -> PageView:
        """Load ``page`` in a fresh tab, wait for its load event and ``settle_seconds`` for the
        scripts that draw after it, and report what the tab shows."""
        devtools = self._devtools
        target = devtools.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = devtools.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        try:
            for domain in ("Network", "Page", "Runtime"):
                devtools.call(f"{domain}.enable", session=session)
            devtools.call("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
            devtools.wait_for("Page.loadEventFired", session, timeout)
            time.sleep(settle_seconds)
            state = json.loads(devtools.call("Runtime.evaluate", {"expression": _INSPECT, "returnByValue": True},
                                             session=session)["result"]["value"])
            mine = [e for e in devtools.events if e.get("sessionId") == session]
            sent = {e["params"]["requestId"]: e["params"]["request"]["url"]
                    for e in mine if e.get("method") == "Network.requestWillBeSent"}
            return PageView(
                text=state["text"],
                requests=[url for url in sent.values() if url != "about:blank"],
                failed=[sent.get(e["params"]["requestId"], "?") for e in mine if e.get("method") == "Network.loadingFailed"],
                errors=[e["params"]["exceptionDetails"].get("text", "") + " "
                        + str(e["params"]["exceptionDetails"].get("exception", {}).get("description", ""))[:300]
                        for e in mine if e.get("method") == "Runtime.exceptionThrown"],
                broken_images=state["broken_images"],
                links=state["links"],
            )
        finally:
            devtools.call("Target.closeTarget", {"targetId": target})
            devtools.events = [e for e in devtools.events if e.get("sessionId") != session]


def assert_pages_render_offline(record: Path, profile: Path) -> list[Path]:
    """Every HTML page under ``record`` renders in chromium from disk with no network: visible text
    (Evidently's pages are an empty <div> until its script has drawn them), no request leaving
    the machine or failing, no script error, no broken image, no link to a missing file.
    Returns the pages checked."""
    pages = sorted(record.rglob("*.html"))
    with headless_chromium(profile) as browser:
        for page in pages:
            view = browser.view(page)
            where = page.relative_to(record)
            assert len(view.text.strip()) > 300, (where, view.text[:300], view.errors)
            assert not view.outside_requests and not view.failed, (where, view.outside_requests, view.failed)
            assert not view.errors and not view.broken_images, (where, view.errors, view.broken_images)
            local = [Path(unquote(urlparse(link).path)) for link in view.links if link.startswith("file:")]
            assert all(path.exists() for path in local), (where, [p for p in local if not p.exists()])
    return pages
