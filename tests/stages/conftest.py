"""The `browser` fixture: headless Chromium opening a report.html as a person would, for the data,
eval and drift report tests. It hands back what Chromium built (the DOM, parsed into a
PageOutline: text, tables, SVG shapes per chart, links) and the colours of a screenshot. Tests
that use it skip when no Chromium is installed; `.ci/run` installs Debian's chromium so CI runs
them."""
from __future__ import annotations

import shutil
import subprocess
from collections import Counter
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


@pytest.fixture(scope="session")
def browser(tmp_path_factory) -> Browser:
    """Headless Chromium; the test skips when none is installed (Debian: apt-get install chromium).
    Session-scoped so that it is set up, and skips, before any module fixture (a training run)."""
    if CHROMIUM is None:
        pytest.skip("no chromium binary on PATH (Debian: apt install chromium; .ci/run installs it)")
    return Browser(CHROMIUM, tmp_path_factory.mktemp("browser"))
