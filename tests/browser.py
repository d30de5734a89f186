"""Headless Chromium over the DevTools protocol (a pipe, no extra package): load a page, record
what it asked the network for and what it logged, optionally save a screenshot.

Debian's `chromium` is installed by `.ci/run`. One browser serves many pages: `Browser.load`
opens each page in a fresh tab, waits for its load event and a short settle, and returns
every request the page made (its own file and `data:` images aside) and every console error,
uncaught exception and failed load.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOCAL_SCHEMES = ("file:", "data:", "about:", "blob:")


@dataclass
class PageLoad:
    url: str
    requests: list[str] = field(default_factory=list)  # anything but the page's own file and data: URIs
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads
    title: str = ""
    seconds: float = 0.0


class Browser:
    """`with Browser() as browser: browser.load(path)`; skips nothing: a missing chromium is an error."""

    def __init__(self, width: int = 1200, height: int = 900) -> None:
        binary = shutil.which("chromium")
        if binary is None:
            raise RuntimeError("Debian's chromium is not installed (.ci/run installs it)")
        self._profile = tempfile.mkdtemp(prefix="bentley-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # The child's ends above fd 9, so that putting them on fds 3 and 4 cannot overwrite one another
        # (bash, not dash, takes two-digit fds in a redirection).
        to_browser_r, from_browser_w = (_above_nine(fd) for fd in (to_browser_r, from_browser_w))
        # The browser reads commands on fd 3 and writes replies on fd 4: bash puts the pipes there.
        self._process = subprocess.Popen(
            [
                "bash",
                "-c",
                f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w}',
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-extensions",
                "--disable-default-apps",
                f"--user-data-dir={self._profile}",
                f"--window-size={width},{height}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            pass_fds=(to_browser_r, from_browser_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._send("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - a browser already gone is closed; the wait below reaps it
            pass
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    # ------------------------------------------------------------------ protocol

    def _send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None, timeout: float = 30
    ) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        wanted = self._next_id
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply is None:
                raise TimeoutError(f"no reply to {method} in {timeout} s")
            if reply.get("id") == wanted:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def _read(self, deadline: float) -> dict[str, Any] | None:
        import select

        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if not ready:
                return None
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed its DevTools pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def _pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            event = self._read(deadline)
            if event is None:
                return
            self._events.append(event)

    # ------------------------------------------------------------------ pages

    def load(
        self,
        page: Path | str,
        screenshot: Path | None = None,
        settle_s: float = 0.3,
        timeout: float = 30,
        full_page: bool = False,
    ) -> PageLoad:
        url = page if isinstance(page, str) else Path(page).resolve().as_uri()
        clock = time.monotonic()
        target = self._send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self._send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        try:
            for domain in ("Page", "Network", "Runtime", "Log"):
                self._send(f"{domain}.enable", session=session)
            self._events = []
            self._send("Page.navigate", {"url": url}, session=session)
            deadline = time.monotonic() + timeout
            while not any(
                e.get("method") == "Page.loadEventFired" and e.get("sessionId") == session for e in self._events
            ):
                event = self._read(deadline)
                if event is None:
                    raise TimeoutError(f"{url} did not finish loading in {timeout} s")
                self._events.append(event)
            self._pump(settle_s)
            result = PageLoad(url)
            title = self._send(
                "Runtime.evaluate", {"expression": "document.title", "returnByValue": True}, session=session
            )
            result.title = str(title.get("result", {}).get("value", ""))
            if screenshot is not None:
                if full_page:
                    size = self._send(
                        "Runtime.evaluate",
                        {
                            "expression": "[document.documentElement.scrollWidth,"
                            "document.documentElement.scrollHeight]",
                            "returnByValue": True,
                        },
                        session=session,
                    )["result"]["value"]
                    self._send(
                        "Emulation.setDeviceMetricsOverride",
                        {"width": int(size[0]), "height": int(size[1]), "deviceScaleFactor": 1, "mobile": False},
                        session=session,
                    )
                shot = self._send(
                    "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": full_page}, session=session
                )
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                screenshot.write_bytes(base64.b64decode(shot["data"]))
            for event in self._events:
                if event.get("sessionId") != session:
                    continue
                _collect(event, url, result)
            result.seconds = time.monotonic() - clock
            return result
        finally:
            self._send("Target.closeTarget", {"targetId": target})


def _above_nine(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


def _collect(event: dict[str, Any], url: str, result: PageLoad) -> None:
    method, params = event.get("method"), event.get("params", {})
    if method == "Network.requestWillBeSent":
        requested = params.get("request", {}).get("url", "")
        if requested != url and not requested.startswith(LOCAL_SCHEMES):
            result.requests.append(requested)
    elif method == "Network.loadingFailed":
        result.errors.append(f"load failed: {params.get('errorText')} ({params.get('type')})")
    elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        args = params.get("args", [])
        result.errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in args))
    elif method == "Runtime.exceptionThrown":
        details = params.get("exceptionDetails", {})
        result.errors.append(
            "exception: " + str(details.get("exception", {}).get("description") or details.get("text"))
        )
    elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
        entry = params["entry"]
        result.errors.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())
