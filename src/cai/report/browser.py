"""Drive headless Chromium over the DevTools protocol on a pipe (``--remote-debugging-pipe``):
open a page, collect its console errors, evaluate JavaScript, take a screenshot.

Used by the report's tests and by ``cai report --screenshot``. No Playwright and no websocket
library: Chromium reads NUL-terminated JSON commands on fd 3 and writes replies on fd 4.
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

from cai.errors import CAIError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """The browser binary: ``$CAI_CHROMIUM`` or the first of the usual names on PATH."""
    env = os.environ.get("CAI_CHROMIUM")
    if env:
        return env if Path(env).exists() or shutil.which(env) else None
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Page:
    """One headless browser with one tab. Use as a context manager; ``errors`` collects console
    errors, uncaught exceptions and failed loads in the order they happened."""

    def __init__(self, binary: str | None = None, *, width: int = 1280, height: int = 900,
                 timeout: float = 30.0) -> None:
        self.binary = binary or find_chromium()
        if not self.binary:
            raise CAIError("no Chromium found; install it (Debian: apt-get install chromium) or set CAI_CHROMIUM")
        self.width, self.height, self.timeout = width, height, timeout
        self.errors: list[str] = []
        self._id = 0
        self._buf = b""
        self._events: list[dict[str, Any]] = []

    # -- process and pipe ----------------------------------------------------------------------
    def __enter__(self) -> "Page":
        self._profile = tempfile.TemporaryDirectory(prefix="cai-chromium-")
        to_child_r, self._to_child_w = os.pipe()
        self._from_child_r, from_child_w = os.pipe()

        def wire() -> None:  # in the child: the pipe ends become fds 3 and 4, as Chromium expects
            hi_r, hi_w = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        args = [self.binary, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-dev-shm-usage", "--hide-scrollbars",
                f"--user-data-dir={self._profile.name}", f"--window-size={self.width},{self.height}", "about:blank"]
        from cai.allocator import without_preload

        # Chromium brings its own allocator: not the TCMalloc the cai command preloads for itself.
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, preexec_fn=wire, close_fds=False,
                                      env=without_preload(os.environ))
        os.close(to_child_r)
        os.close(from_child_w)
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.send(domain, session=True)
        self.send("Emulation.setDeviceMetricsOverride", session=True, width=self.width, height=self.height,
                  deviceScaleFactor=1, mobile=False)
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.send("Browser.close")
        except Exception:  # noqa: BLE001 - the browser may already be gone; killing it below suffices
            pass
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for fd in (self._to_child_w, self._from_child_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self._profile.cleanup()

    def _read_message(self, deadline: float) -> dict[str, Any]:
        import select

        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_child_r], [], [], left)
            if ready:
                chunk = os.read(self._from_child_r, 1 << 20)
                if not chunk:
                    raise CAIError(f"Chromium exited (code {self._proc.poll()})")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def _note(self, msg: dict[str, Any]) -> None:
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            self.errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.errors.append("exception: " + str(d.get("exception", {}).get("description") or d.get("text")))
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            self.errors.append("log: " + str(p["entry"].get("text")))
        self._events.append(msg)

    def send(self, method: str, *, session: bool = False, **params: Any) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._to_child_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise CAIError(f"Chromium: {method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            self._note(reply)

    def _wait_event(self, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        for i, ev in enumerate(self._events):
            if ev.get("method") == method:
                return self._events.pop(i)
        while True:
            msg = self._read_message(deadline)
            self._note(msg)
            if msg.get("method") == method:
                self._events.remove(msg)
                return msg

    # -- what a test or the CLI needs ----------------------------------------------------------
    def open(self, url: str) -> None:
        """Navigate and wait for the load event (scripts that run at load have run)."""
        self._events.clear()
        self.send("Page.navigate", session=True, url=url)
        self._wait_event("Page.loadEventFired")

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression (JSON-serialisable values only)."""
        r = self.send("Runtime.evaluate", session=True, expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise CAIError(f"JavaScript error: {d.get('exception', {}).get('description') or d.get('text')}")
        return r.get("result", {}).get("value")

    def png(self, *, full_page: bool = False) -> bytes:
        """The page as PNG bytes; the caller writes them (``cai report`` writes whole or not at all)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.send("Page.getLayoutMetrics", session=True)["cssContentSize"]
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        return base64.b64decode(self.send("Page.captureScreenshot", session=True, **params)["data"])

    def screenshot(self, path: str | Path, *, full_page: bool = False) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(self.png(full_page=full_page))
        return p
