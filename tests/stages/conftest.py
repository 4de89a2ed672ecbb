"""The `browser` fixture: headless Chromium opening a report.html as a person would, for the data,
eval and drift report tests. It hands back what Chromium built (the DOM, parsed into a
PageOutline: text, tables, SVG shapes per chart, links) and the colours of a screenshot; for a
live page (the jobs server's), a Tab driven over Chrome's DevTools protocol runs the page's
scripts, clicks its buttons as a mouse does and reads the DOM they change. Tests that use it skip
when no Chromium is installed; `.ci/run` installs Debian's chromium so CI runs them."""
from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from collections import Counter
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
SHAPES = ("svg", "rect", "path", "circle", "line")
WHITE = (255, 255, 255)


class PageOutline(HTMLParser):
    """What the rendered DOM holds: its text, each table's rows of cell texts (by the id of the
    section around it), the shapes inside each figure's <svg>, every <img> source and every
    attribute that points at a URL."""

    def __init__(self):
        super().__init__()
        self.text, self.images, self.links = [], [], []
        self.shapes: dict[str, Counter] = {}
        self.tables: dict[str, list[list[list[str]]]] = {}
        self.figure = self.section = self.cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.section = attrs.get("id")
        elif tag == "figure":
            self.figure = attrs.get("id")
            self.shapes[self.figure] = Counter()
        elif self.figure and tag in SHAPES:
            self.shapes[self.figure][tag] += 1
        elif tag == "table":
            self.tables.setdefault(self.section, []).append([])
        elif tag == "tr" and self.section in self.tables:
            self.tables[self.section][-1].append([])
        elif tag in ("td", "th") and self.section in self.tables:
            self.cell = []
        if tag == "img":
            self.images.append(attrs.get("src"))
        self.links += [value for name, value in attrs.items() if name in ("src", "href") and value]

    def handle_endtag(self, tag):
        if tag == "figure":
            self.figure = None
        elif tag == "section":
            self.section = None
        elif tag in ("td", "th") and self.cell is not None:
            self.tables[self.section][-1][-1].append(" ".join("".join(self.cell).split()))
            self.cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self.cell is not None:
            self.cell.append(data)

    @property
    def page_text(self) -> str:
        return " ".join("".join(self.text).split())

    def table(self, section: str, index: int = 0) -> list[list[str]]:
        """The rows (header row first) of a section's index-th table."""
        return self.tables[section][index]

    def assert_charts(self, expected: dict[str, str]) -> None:
        """Each chart id holds one <svg> with at least one of its expected shape."""
        for chart, shape in expected.items():
            assert self.shapes.get(chart, {}).get("svg") == 1, f"{chart} missing from the DOM"
            assert self.shapes[chart][shape] >= 1, f"{chart} has no <{shape}>"

    def assert_self_contained(self) -> None:
        assert all(src and src.startswith("data:") for src in self.images)  # no image that could break
        assert [link for link in self.links if not link.startswith(("#", "data:"))] == []


class Browser:
    def __init__(self, binary: str, workdir: Path):
        self.binary, self.workdir = binary, workdir

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        # a profile of its own: no shared lock with another Chromium, nothing written to $HOME
        return subprocess.run([self.binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                               f"--user-data-dir={self.workdir / 'profile'}", *args], capture_output=True, text=True,
                              timeout=60, check=True, cwd=self.workdir)

    def open(self, page: Path) -> PageOutline:
        """The DOM Chromium builds from the page (after parsing, as a person's browser shows it)."""
        outline = PageOutline()
        outline.feed(self._run("--dump-dom", page.as_uri()).stdout)
        return outline

    def screenshot_colours(self, page: Path, width: int = 1280, height: int = 4000) -> dict[tuple, int]:
        """How many pixels of each colour a screenshot of the page's top width x height holds."""
        image_module = pytest.importorskip("PIL.Image", reason="Pillow decodes the screenshot")
        path = self.workdir / f"{page.stem}.png"
        self._run(f"--screenshot={path}", f"--window-size={width},{height}", page.as_uri())
        with image_module.open(path) as image:
            pixels = image.convert("RGB")
            assert pixels.size == (width, height)
            return {colour: count for count, colour in pixels.getcolors(maxcolors=1 << 20)}

    def assert_painted(self, page: Path, colours: dict[str, tuple[int, int, int]], *, height: int = 4000) -> None:
        """The screenshot is not (nearly) blank and each named chart colour is painted: the SVG
        charts were drawn, not just present in the DOM."""
        counts = self.screenshot_colours(page, height=height)
        not_white = sum(count for colour, count in counts.items() if colour != WHITE)
        assert len(counts) > 50 and not_white > 0.03 * 1280 * height, "the screenshot is (nearly) blank"
        for name, colour in colours.items():
            assert counts.get(colour, 0) > 100, f"no {name} pixels: the charts were not painted"


    @contextmanager
    def tab(self, url: str):
        """A Tab showing `url` in a Chromium of its own, closed afterwards."""
        tab = Tab(self.binary, self.workdir / f"profile-{time.monotonic_ns()}")
        try:
            tab.open(url)
            yield tab
        finally:
            tab.close()


class Tab:
    """One page in headless Chromium, driven over the DevTools protocol on a pipe (Chromium's
    --remote-debugging-pipe: JSON messages ending in NUL on file descriptors 3 and 4), so no
    driver package is needed. The page's confirm() dialogs are accepted, and recorded."""

    def __init__(self, binary: str, profile: Path):
        to_chrome, self._write = os.pipe()
        self._read, from_chrome = os.pipe()
        # Chromium's ends above 10 first, so that moving them to 3 and 4 cannot overwrite each other
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_chrome, from_chrome)]
        os.close(to_chrome)
        os.close(from_chrome)

        def pipes_as_3_and_4():  # where --remote-debugging-pipe looks for them (dup2 leaves them inheritable)
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,2000",
             f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=False, preexec_fn=pipes_as_3_and_4)  # every other fd of ours is non-inheritable (PEP 446)
        for fd in high:
            os.close(fd)
        self._buffer, self._next_id, self.session = b"", 0, None
        self.dialogs: list[str] = []

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable")
        self.call("Page.navigate", {"url": url})
        self.wait_for("document.readyState === 'complete'")

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        reply = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in reply:
            raise AssertionError(f"{expression} raised {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def wait_for(self, expression: str, guard_s: float = 60) -> None:
        """Until the expression is true in the page; the guard only keeps a broken page from hanging."""
        deadline = time.monotonic() + guard_s
        while not self.evaluate(expression):
            assert time.monotonic() < deadline, f"never true in the page: {expression}"
            time.sleep(0.1)

    def click(self, selector: str) -> None:
        """A left click, pressed and released by the mouse at the middle of the element."""
        x, y = self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                             "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect(); "
                             "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def outline(self) -> "PageOutline":
        """The DOM as it is now (after the page's scripts), parsed like Browser.open's."""
        outline = PageOutline()
        outline.feed(self.evaluate("document.documentElement.outerHTML"))
        return outline

    def call(self, method: str, params: dict | None = None, guard_s: float = 60) -> dict:
        message_id = self._send(method, params)
        deadline = time.monotonic() + guard_s
        while True:
            message = self._receive(deadline)
            if message.get("method") == "Page.javascriptDialogOpening":
                self.dialogs.append(message["params"]["message"])
                self._send("Page.handleJavaScriptDialog", {"accept": True})
            elif message.get("id") == message_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message.get("result", {})

    def _send(self, method: str, params: dict | None) -> int:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        return self._next_id

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._read], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, "Chromium stopped answering"
            chunk = os.read(self._read, 1 << 20)
            assert chunk, "Chromium closed the pipe"
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def close(self) -> None:
        try:
            self._send("Browser.close", None)
            self.process.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            os.close(self._write)
            os.close(self._read)


@pytest.fixture(scope="session")
def browser(tmp_path_factory) -> Browser:
    """Headless Chromium; the test skips when none is installed (Debian: apt-get install chromium).
    Session-scoped so that it is set up, and skips, before any module fixture (a training run)."""
    if CHROMIUM is None:
        pytest.skip("no chromium binary on PATH (Debian: apt install chromium; .ci/run installs it)")
    return Browser(CHROMIUM, tmp_path_factory.mktemp("browser"))
