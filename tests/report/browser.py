"""Load a page in real headless Chromium over the DevTools protocol and report what happened.

What a person would see: whether every image decoded (naturalWidth > 0), every console
error, uncaught exception and CSP/network error the browser logged, every URL it requested,
and a screenshot of the whole page.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--window-size=1400,1000",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)

_IMAGES_JS = """JSON.stringify({
  title: document.title,
  text: document.body.innerText,
  images: Array.from(document.images).map(i => ({
    alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight,
    scheme: i.currentSrc.split(':')[0]})),
})"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageResult:
    title: str
    text: str
    images: list[dict[str, Any]]
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    screenshot: bytes = b""
    #: What the caller's `probe` expression returned (JSON), None without a probe.
    probed: Any = None


class _Chromium:
    """One headless Chromium process with its DevTools endpoint."""

    def __init__(self, binary: str, profile: Path, timeout_s: float) -> None:
        self.proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.ws_url = self._devtools_url(timeout_s)

    def _devtools_url(self, timeout_s: float) -> str:
        """Chromium prints `DevTools listening on ws://...` on stderr once it accepts clients."""
        found: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                if not found and "DevTools listening on " in line:
                    found.append(line.split("DevTools listening on ", 1)[1].strip())
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(timeout_s) or not found:
            self.close()
            raise RuntimeError("chromium did not open its DevTools endpoint")
        return found[0]

    def page_ws_url(self) -> str:
        port = self.ws_url.split("//", 1)[1].split("/", 1)[0]
        with urllib.request.urlopen(f"http://{port}/json/list", timeout=10) as reply:
            targets = json.loads(reply.read())
        return str(next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"))

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


class _Session:
    """Request/response and events over one DevTools websocket."""

    def __init__(self, url: str, timeout_s: float) -> None:
        import websocket

        self.ws = websocket.create_connection(url, timeout=timeout_s, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        call_id = self.next_id
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == call_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result
            self.events.append(msg)

    def wait_event(self, method: str, deadline: float) -> dict[str, Any]:
        for event in self.events:
            if event.get("method") == method:
                return event
        while time.monotonic() < deadline:
            msg: dict[str, Any] = json.loads(self.ws.recv())
            self.events.append(msg)
            if msg.get("method") == method:
                return msg
        raise TimeoutError(f"no {method} event")

    def close(self) -> None:
        self.ws.close()


def _errors(events: list[dict[str, Any]]) -> list[str]:
    errors = []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in {"error", "assert"}:
            errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            errors.append("exception: " + str(params["exceptionDetails"].get("text")))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            errors.append(f"log ({params['entry'].get('source')}): {params['entry'].get('text')}")
        elif method == "Network.loadingFailed":
            errors.append(f"network: {params.get('errorText')} {params.get('blockedReason', '')}".strip())
    return errors


@contextlib.contextmanager
def chromium(binary: str, profile: Path, timeout_s: float = 30.0) -> Iterator[_Chromium]:
    browser = _Chromium(binary, profile, timeout_s)
    try:
        yield browser
    finally:
        browser.close()


def load_page(
    binary: str, page: Path, profile: Path, *, timeout_s: float = 30.0, probe: str | None = None
) -> PageResult:
    """Open `page` (a local file), wait for its load event and collect what the browser saw;
    `probe`, a JavaScript expression that returns a JSON string, reads more of the rendered page."""
    with chromium(binary, profile, timeout_s) as browser:
        session = _Session(browser.page_ws_url(), timeout_s)
        try:
            for domain in ("Page", "Runtime", "Log", "Network"):
                session.call(f"{domain}.enable")
            session.call("Page.navigate", url=page.resolve().as_uri())
            session.wait_event("Page.loadEventFired", time.monotonic() + timeout_s)
            value = session.call("Runtime.evaluate", expression=_IMAGES_JS, returnByValue=True)["result"]["value"]
            state = json.loads(value)
            probed = None
            if probe is not None:
                raw = session.call("Runtime.evaluate", expression=probe, returnByValue=True)["result"]["value"]
                probed = json.loads(raw)
            shot = session.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            import base64

            requests = [
                e["params"]["request"]["url"] for e in session.events if e.get("method") == "Network.requestWillBeSent"
            ]
            return PageResult(
                title=state["title"],
                text=state["text"],
                images=state["images"],
                errors=_errors(session.events),
                requests=requests,
                screenshot=base64.b64decode(shot["data"]),
                probed=probed,
            )
        finally:
            session.close()
