"""Headless Chromium for the tests that check pages we write (``zf report``, ``zf atlas``): Debian's
``/usr/bin/chromium`` driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: no
port, no network). :class:`Browser` opens a file (or a page of a server on this machine), lists its
images (loaded or not), the requests it made and its console errors, clicks, chooses files for a
file input, and takes screenshots; :func:`pixels` reads a screenshot.

Run as a script it takes a screenshot for the docs::

    python tests/browser.py PAGE.html SHOT.png [HEIGHT]
"""

import base64
import fcntl
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed (make test installs it with apt-get where apt is available)"
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--mute-audio",
    "--remote-debugging-pipe",
]


class Browser:
    """Headless Chromium with a fresh profile, spoken to over ``--remote-debugging-pipe``
    (commands on the child's fd 3, answers and events on its fd 4, each message ending in NUL)."""

    def __init__(self, timeout=60, flags=()):
        """``flags``: more Chromium switches, e.g. a fake webcam (``--use-fake-device-for-media-stream``)."""
        self.profile = tempfile.mkdtemp(prefix="zf-chromium-")
        to_child, self.send_fd = os.pipe()
        self.read_fd, from_child = os.pipe()
        # Move the child's ends above 4 so dup2 into 3 and 4 cannot clobber one with the other.
        child_in, child_out = fcntl.fcntl(to_child, fcntl.F_DUPFD, 10), fcntl.fcntl(from_child, fcntl.F_DUPFD, 10)
        os.close(to_child), os.close(from_child)

        def wire():
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        self.process = subprocess.Popen(
            [CHROMIUM, *FLAGS, *flags, f"--user-data-dir={self.profile}", "about:blank"],
            preexec_fn=wire,
            pass_fds=(3, 4),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(child_in), os.close(child_out)
        self.timeout, self.buffer, self.next_id, self.events = timeout, b"", 0, []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)

    def _message(self):
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self.buffer:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"chromium gave no answer (exit code {self.process.poll()})")
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method, session=False, **params):
        """Send one DevTools command and return its result; events that arrive meanwhile are kept."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self.send_fd, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._message()
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_for(self, method):
        while not any(event.get("method") == method for event in self.events):
            self.events.append(self._message())

    def open(self, path, width=1400, height=1000):
        """Load a file, or an ``http://`` address (a server on this machine), and wait for its load event."""
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height, deviceScaleFactor=1, mobile=False)
        self.events.clear()
        url = path if str(path).startswith(("http://", "https://")) else "file://" + os.path.abspath(path)
        self.call("Page.navigate", session=True, url=url)
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def errors(self):
        """Console errors, uncaught exceptions and failed loads reported since the last :meth:`open`."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                found.append(params["exceptionDetails"].get("text", "exception"))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append(f"{params['entry'].get('text')} {params['entry'].get('url', '')}")
        return found

    def images(self):
        """``[{src, width}]`` of every <img>, after each has finished loading or failing."""
        return self.evaluate(
            "Promise.all([...document.images].map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })))"
            ".then(() => [...document.images].map(i => ({src: i.getAttribute('src'), width: i.naturalWidth})))"
        )

    def requests(self):
        """URLs of every request the page made since the last :meth:`open` (documents, images,
        style sheets, scripts, fonts: anything fetched)."""
        return [event["params"]["request"]["url"] for event in self.events if event.get("method") == "Network.requestWillBeSent"]

    def click(self, x, y):
        """A left click at viewport pixel ``(x, y)``, as a mouse makes it (press, then release)."""
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", session=True, type=kind, x=x, y=y, button="left", clickCount=1)

    def choose_files(self, selector, paths):
        """Set the files of the ``<input type=file>`` matching CSS ``selector`` as a person choosing
        them would (the page gets its change event)."""
        root = self.call("DOM.getDocument", session=True)["root"]["nodeId"]
        node = self.call("DOM.querySelector", session=True, nodeId=root, selector=selector)["nodeId"]
        self.call("DOM.setFileInputFiles", session=True, nodeId=node, files=[os.path.abspath(p) for p in paths])

    def links(self):
        """``href`` of every ``<a>`` and ``<link>`` of the page, as written."""
        return self.evaluate("[...document.querySelectorAll('a[href], link[href]')].map(a => a.getAttribute('href'))")

    def screenshot(self, height=None):
        """PNG bytes of the viewport, or of the page's top ``height`` pixels."""
        params = {"format": "png"}
        if height:
            width = self.evaluate("document.documentElement.scrollWidth")
            params.update(clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1}, captureBeyondViewport=True)
        return base64.b64decode(self.call("Page.captureScreenshot", session=True, **params)["data"])

    def close(self):
        try:
            self.call("Browser.close")
        except RuntimeError:
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.send_fd), os.close(self.read_fd)
        shutil.rmtree(self.profile, ignore_errors=True)


def pixels(png):
    """A screenshot (PNG bytes) as a float array ``[H, W, 4]`` in [0, 1]."""
    import matplotlib.image

    return matplotlib.image.imread(io.BytesIO(png), format="png")


@pytest.fixture(scope="module")
def browser():
    """One :class:`Browser` per test module (skipped without Chromium)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (make test installs it with apt-get where apt is available)")
    chrome = Browser()
    yield chrome
    chrome.close()


if __name__ == "__main__":  # python tests/browser.py PAGE.html SHOT.png [HEIGHT]: a screenshot for the docs
    chrome = Browser()
    try:
        chrome.open(sys.argv[1])
        assert chrome.errors() == [], chrome.errors()
        with open(sys.argv[2], "wb") as handle:
            handle.write(chrome.screenshot(int(sys.argv[3]) if len(sys.argv) > 3 else None))
    finally:
        chrome.close()
