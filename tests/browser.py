"""A headless Chromium driven over the DevTools protocol on a pipe (no extra packages).

`Browser().load(path)` opens a local file and returns what the page logged to the
console, the exceptions it threw, the network requests it tried, and the values of a
few DOM expressions; `screenshot` writes a PNG. Chromium is Debian's `chromium`
package (`apt-get install chromium`); `find()` returns None where it is absent.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-pipe")


def find() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    def __init__(self, exe: str, width: int = 1400, height: int = 1000) -> None:
        self.profile = tempfile.mkdtemp(prefix="adamconf-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # the DevTools pipe is fd 3 (commands in) and fd 4 (replies out) of the browser
        self.proc = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4), preexec_fn=lambda: _move_fds(to_chrome_r, from_chrome_w))
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []
        self.session = self._attach()

    # -- the protocol ------------------------------------------------------------

    def _send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> int:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        return self._id

    def _read(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buf:
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\0")
        return json.loads(raw)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 60) -> dict[str, Any]:
        want = self._send(method, params, session)
        while True:
            msg = self._read(timeout)
            if msg.get("id") == want:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def _attach(self) -> str:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=session)
        return session

    # -- what the tests use --------------------------------------------------------

    def load(self, path: Path, expressions: dict[str, str] | None = None, timeout: float = 60) -> dict[str, Any]:
        """Open a file, wait for its load event, and report console messages, uncaught
        exceptions, failed loads, every non-file request, and each expression's value."""
        self.events.clear()
        self.call("Page.navigate", {"url": Path(path).resolve().as_uri()}, self.session)
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._read(max(0.1, deadline - time.monotonic())))
        values = {k: self.call("Runtime.evaluate", {"expression": v, "returnByValue": True}, self.session)
                  ["result"].get("value") for k, v in (expressions or {}).items()}
        ev = self.events
        return {
            "console": [e["params"] for e in ev if e.get("method") == "Runtime.consoleAPICalled"],
            "exceptions": [e["params"] for e in ev if e.get("method") == "Runtime.exceptionThrown"],
            "log": [e["params"]["entry"] for e in ev if e.get("method") == "Log.entryAdded"],
            "failed": [e["params"] for e in ev if e.get("method") == "Network.loadingFailed"],
            "requests": [e["params"]["request"]["url"] for e in ev if e.get("method") == "Network.requestWillBeSent"
                         and not e["params"]["request"]["url"].startswith(("file:", "data:", "about:"))],
            "values": values,
        }

    def screenshot(self, dest: Path, full_page: bool = False) -> None:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            m = self.call("Page.getLayoutMetrics", session=self.session)["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": m["width"], "height": min(m["height"], 8000), "scale": 1}
        data = self.call("Page.captureScreenshot", params, self.session)["data"]
        Path(dest).write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self._send("Browser.close")
            self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001 - closing is best effort; kill below
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)
        shutil.rmtree(self.profile, ignore_errors=True)


def _move_fds(read_end: int, write_end: int) -> None:
    """In the child: the pipe ends become fds 3 and 4, where Chromium looks for them."""
    r, w = os.dup(read_end), os.dup(write_end)
    os.dup2(r, 3)
    os.dup2(w, 4)
