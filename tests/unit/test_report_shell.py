"""The page every report is written on (tunelab.report_shell): every string reaches the page
escaped, every section gets its own anchor the navigation links to, figures are right-aligned in
both formats, and the page is self-contained."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from tunelab import charts
from tunelab.report_shell import (Bullets, Chart, Note, Section, Status, Table, format_value, render_html,
                                  render_markdown, section_anchors)

EVIL = '<script>alert("x")</script>'
PIPE = "a|b"


def evil_sections() -> list[Section]:
    return [Section("one", f"Title {EVIL}", [
        Note(f"note {EVIL}"), Note(Status(False, f"status {EVIL}"), "verdict"), Bullets([f"item {EVIL}", PIPE], "flags"),
        Table([f"head {EVIL}", "value"], [[EVIL, 1], [PIPE, Status(True, f"ok {EVIL}")], ["multi\nline", 2.5]])])]


def test_every_string_is_escaped_in_html():
    page = render_html(f"Report {EVIL}", evil_sections(), [(f"name {EVIL}", f"value {EVIL}")])
    assert "<script" not in page.lower()
    escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"
    # title, h1, meta name and value, nav link and h2, two notes, a bullet, a header, two cells
    assert page.count(escaped) == 12


def test_markdown_escapes_html_and_neutralises_pipes_and_newlines():
    markdown = render_markdown(f"Report {EVIL}", evil_sections(), [("name", f"value {EVIL}")])
    assert "<" not in markdown and ">" not in markdown.replace("&gt;", "")
    assert "&lt;script&gt;" in markdown
    table = [line for line in markdown.splitlines() if line.startswith("|")]
    # a pipe inside a cell is escaped, so every row keeps its two columns
    assert all(len(re.split(r"(?<!\\)\|", row)) == 4 for row in table), table
    assert "| a\\|b | ok &lt;script&gt;alert(\"x\")&lt;/script&gt; |" in markdown
    assert "| multi line | 2.5 |" in markdown and "- a\\|b" in markdown


def test_sections_get_unique_url_safe_anchors_the_navigation_links_to():
    sections = [Section("summary", "Summary"), Section("by label", "By label"), Section("by label", "Again"),
                Section('"><b>', "Odd key"), Section("", "Empty key")]
    assert section_anchors(sections) == ["summary", "by-label", "by-label-2", "b", "x"]
    page = render_html("t", sections)
    nav = re.search(r"<nav>(.*?)</nav>", page).group(1)
    links = re.findall(r'<a href="#([^"]+)">(.*?)</a>', nav)
    ids = re.findall(r'<section id="([^"]+)"><h2>(.*?)</h2>', page)
    assert links == ids == [("summary", "Summary"), ("by-label", "By label"), ("by-label-2", "Again"),
                            ("b", "Odd key"), ("x", "Empty key")]


def test_figures_are_right_aligned_in_both_formats():
    table = Table(["name", "count", "score", "change", "share", "missing", "mixed"],
                  [["a", 1234, 0.5, "+0.0123", "10.0%", None, "3"],
                   ["b", 7, None, "-0.5", "2.5%", None, "three"]])
    page = render_html("t", [Section("s", "S", [table])])
    head = re.findall(r"<th( class=\"num\")?>([^<]*)</th>", page)
    assert [name for num, name in head if num] == ["count", "score", "change", "share"]
    first_row = re.search(r"<tbody><tr>(.*?)</tr>", page).group(1)
    assert re.findall(r"<td( class=\"num\")?>", first_row) == ["", ' class="num"', ' class="num"', ' class="num"',
                                                               ' class="num"', "", ""]
    assert "<td class=\"num\">1,234</td>" in first_row and "<td class=\"num\">0.5000</td>" in first_row
    markdown = render_markdown("t", [Section("s", "S", [table])])
    assert "|---|---:|---:|---:|---:|---|---|" in markdown
    assert "| b | 7 | n/a | -0.5 | 2.5% | n/a | three |" in markdown


def test_charts_are_html_only_and_a_chart_only_section_is_left_out_of_markdown():
    chart = charts.bar_chart("bars", {"a": 1, "b": 2}, chart_id="bars")
    sections = [Section("numbers", "Numbers", [Table(["k", "v"], [["a", 1]], markdown_only=True), Chart(chart)]),
                Section("pictures", "Pictures", [Chart(chart)])]
    page, markdown = render_html("t", sections), render_markdown("t", sections)
    assert page.count(chart) == 2 and "<table" not in page  # the markdown-only table is the chart's numbers
    for svg in re.findall(r"<svg\b.*?</svg>", page, re.S):
        ET.fromstring(svg)
    assert "<svg" not in markdown and "| a | 1 |" in markdown
    assert "## Numbers" in markdown and "## Pictures" not in markdown


def test_the_page_is_self_contained_and_empty_meta_adds_nothing():
    page = render_html("t", evil_sections())
    assert page.startswith("<!doctype html>") and "<style>" in page and 'class="meta"' not in page
    assert not re.search(r"(src|href)=\"(?!#)", page) and "<script" not in page and "@import" not in page
    assert render_markdown("t", []) == "# t\n"


def test_figures_are_formatted_once_for_every_report():
    assert [format_value(v) for v in (3, 1234567, 0.12345, 123.456, float("nan"), False, [1, "a"], "text")] == \
        ["3", "1,234,567", "0.1235", "123.5", "nan", "no", '[1, "a"]', "text"]
