"""The one page every tunelab report is written on (data preparation, evaluation, drift): the
section model a report builds from its report.json dict, and the two renderers that turn a list
of sections into report.md and report.html.

A report module only says what to show: sections of notes, bullet lists, tables and charts
(inline SVG from tunelab.charts). This module says how: one page skeleton (title, meta line,
a navigation bar linking every section, the sections), one stylesheet, one way to format and
align figures. Strings stay raw in the sections and are escaped here, on the way out: HTML-escaped
in the page, and in Markdown too (viewers render inline HTML), with table pipes neutralised.
Charts are the one exception: their SVG is built by tunelab.charts, which escapes every string it
draws. The page is self-contained (no script, no network) and prints cleanly. A live page (the jobs
server's) may hold Actions: buttons that its own script sends as POST requests; a report on disk
has none."""
from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

STATUS_CLASSES = {True: "pass", False: "fail", None: "neutral"}
NUMBER = re.compile(r"^[+\-\u2212]?\d[\d,]*(\.\d+)?(e[+-]?\d+)?%?$|^n/a$|^nan$")
NUM_CLASS = ' class="num"'  # right-aligned figures
esc = html.escape


@dataclass
class Status:
    """A result a reader should see at a glance: ok True (pass), False (fail) or None (neutral)."""
    ok: bool | None
    text: str


@dataclass
class Note:
    text: str | Status
    style: str = ""  # verdict, muted


@dataclass
class Bullets:
    items: list[str]
    style: str = ""  # flags


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Any]]
    markdown_only: bool = False  # the HTML page shows the same numbers as a chart


@dataclass
class Chart:
    svg: str  # one <figure> from tunelab.charts; HTML only (Markdown carries the numbers in tables)


@dataclass
class Highlighted:
    """A text with scored spans ({"start", "end", "score", "token"}), such as an explained
    prediction: each span shaded by its score in the page (green positive, red negative, the
    exact score in its tooltip); the caption, the text and the strongest spans in Markdown."""
    caption: str
    text: str
    spans: list[dict[str, Any]]


@dataclass
class Action:
    label: str
    post: str  # the URL the page's script POSTs to when the button is clicked
    confirm: str = ""  # a question asked first (e.g. before a cancel), empty for none


@dataclass
class Actions:
    """A row of buttons (HTML only: a Markdown report has nothing to click)."""
    items: list[Action]


@dataclass
class Section:
    key: str  # the section's anchor in the page (made URL-safe and unique when rendered)
    title: str
    blocks: list = field(default_factory=list)


Meta = Sequence[tuple[str, Any]]  # (name, value) pairs shown under the title


def render_markdown(title: str, sections: Iterable[Section], meta: Meta = ()) -> str:
    lines = [f"# {_md(title)}", ""]
    if meta:
        lines += [f"- {_md(name)}: {_md(format_value(value))}" for name, value in meta] + [""]
    for section in sections:
        body = [line for block in section.blocks for line in _markdown_block(block)]
        if body:  # a section of charts alone has nothing to say in Markdown
            lines += [f"## {_md(section.title)}", "", *body]
    return "\n".join(lines).rstrip() + "\n"


def render_html(title: str, sections: Iterable[Section], meta: Meta = ()) -> str:
    sections = list(sections)
    anchors = section_anchors(sections)
    nav = "".join(f'<a href="#{key}">{esc(section.title)}</a>' for key, section in zip(anchors, sections))
    meta_line = "".join(f"<span><b>{esc(str(name))}</b> {esc(format_value(value))}</span>" for name, value in meta)
    body = "".join(f'<section id="{key}"><h2>{esc(section.title)}</h2>'
                   + "".join(_html_block(block) for block in section.blocks) + "</section>"
                   for key, section in zip(anchors, sections))
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n<h1>{esc(title)}</h1>"
            + (f'<p class="meta">{meta_line}</p>' if meta_line else "")
            + f"<nav>{nav}</nav>\n{body}\n</body></html>\n")


def section_anchors(sections: Sequence[Section]) -> list[str]:
    """Each section's id: its key made URL-safe, with -2, -3 ... when two sections share one, so
    every navigation link lands on its own section."""
    seen: dict[str, int] = {}
    anchors = []
    for section in sections:
        key = anchor(section.key)
        seen[key] = seen.get(key, 0) + 1
        anchors.append(key if seen[key] == 1 else f"{key}-{seen[key]}")
    return anchors


def anchor(text) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", str(text)).strip("-") or "x"


def format_value(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        size = abs(value)
        if not math.isfinite(value):
            return str(value)
        # scores (0 to 1) keep four decimals so columns line up; larger figures four significant digits
        return (f"{value:,.0f}" if size >= 9_999.5 else f"{value:.4g}" if size > 1
                else f"{value:.4f}" if size >= 0.001 or size == 0 else f"{value:.3g}")
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _markdown_block(block) -> list[str]:
    if isinstance(block, (Chart, Actions)):
        return []
    if isinstance(block, Highlighted):
        return _highlighted_markdown(block)
    if isinstance(block, Note):
        text = _md(_cell(block.text))
        strong = block.style == "verdict" or isinstance(block.text, Status)
        return [f"**{text}**" if strong else f"_{text}_" if block.style == "muted" else text, ""]
    if isinstance(block, Bullets):
        return [f"- {_md(item)}" for item in block.items] + [""]
    cells = [[_cell(value) for value in row] for row in block.rows]
    align = ["---:" if _numeric_column(cells, i) else "---" for i in range(len(block.headers))]
    return (["| " + " | ".join(_md(h) for h in block.headers) + " |", "|" + "|".join(align) + "|"]
            + ["| " + " | ".join(_md(c) for c in row) + " |" for row in cells] + [""])


def _html_block(block) -> str:
    if isinstance(block, Chart):
        return f'<div class="chart">{block.svg}</div>'
    if isinstance(block, Highlighted):
        return _highlighted_html(block)
    if isinstance(block, Actions):
        return '<p class="actions">' + "".join(
            f'<button type="button" data-post="{esc(action.post)}" data-confirm="{esc(action.confirm)}">'
            f"{esc(action.label)}</button>" for action in block.items) + "</p>"
    if isinstance(block, Note):
        return f'<p class="{block.style or "note"}">{_html_cell(block.text)}</p>'
    if isinstance(block, Bullets):
        return f'<ul class="{block.style}">' + "".join(f"<li>{esc(str(item))}</li>" for item in block.items) + "</ul>"
    if block.markdown_only:
        return ""
    cells = [[_cell(value) for value in row] for row in block.rows]
    numeric = [_numeric_column(cells, i) for i in range(len(block.headers))]
    head = "".join(f'<th{NUM_CLASS if n else ""}>{esc(str(h))}</th>' for h, n in zip(block.headers, numeric))
    body = "".join("<tr>" + "".join(f'<td{NUM_CLASS if n else ""}>{_html_cell(value)}</td>'
                                    for value, n in zip(row, numeric)) + "</tr>" for row in block.rows)
    return f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _highlighted_markdown(block: Highlighted) -> list[str]:
    towards = sorted((s for s in block.spans if s["score"] > 0), key=lambda s: -s["score"])[:5]
    against = sorted((s for s in block.spans if s["score"] < 0), key=lambda s: s["score"])[:5]

    def listed(spans) -> str:
        return ", ".join(f"{_md(s['token'])} ({s['score']:+.3f})" for s in spans) or "none"
    return [f"**{_md(block.caption)}**", "", f"> {_md(block.text)}", "",
            f"towards the prediction: {listed(towards)}; against it: {listed(against)}", ""]


def _highlighted_html(block: Highlighted) -> str:
    """The text with each scored span in a <mark> shaded by |score| (relative to the text's
    largest); characters outside the spans as they are."""
    largest = max((abs(s["score"]) for s in block.spans), default=0) or 1
    parts, position = [], 0
    for span in sorted(block.spans, key=lambda s: s["start"]):
        if span["start"] < position:
            continue
        parts.append(esc(block.text[position:span["start"]]))
        alpha = round(0.08 + 0.6 * abs(span["score"]) / largest, 2)
        colour = "26,127,55" if span["score"] >= 0 else "207,34,46"
        parts.append(f'<mark style="background: rgba({colour},{alpha})" title="{span["score"]:+.4f}">'
                     f'{esc(block.text[span["start"]:span["end"]])}</mark>')
        position = span["end"]
    parts.append(esc(block.text[position:]))
    return f'<div class="explained"><p class="caption">{esc(block.caption)}</p><p>{"".join(parts)}</p></div>'


def _html_cell(value) -> str:
    if isinstance(value, Status):
        return f'<span class="{STATUS_CLASSES[value.ok]}">{esc(value.text)}</span>'
    return esc(_cell(value))


def _cell(value) -> str:
    return value.text if isinstance(value, Status) else format_value(value)


def _numeric_column(cells: list[list[str]], column: int) -> bool:
    """Right-align a column when every filled cell is a figure (n/a and blanks allowed)."""
    values = [row[column] for row in cells if column < len(row)]
    return bool(values) and any(v not in ("n/a", "") for v in values) and all(NUMBER.match(v) or not v for v in values)


def _md(text) -> str:
    """Markdown viewers render inline HTML and split tables on pipes: neutralise both."""
    return esc(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; background: #fff;
       max-width: 1080px; margin: 0 auto; padding: 1.5rem 2rem 3rem; }
h1 { font-size: 1.5rem; margin: 0 0 .3rem; word-break: break-all; }
h2 { font-size: 1.2rem; border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; margin: 2rem 0 .6rem; }
.meta span { margin-right: 1.2rem; color: #57606a; } .meta b { color: #1f2328; font-weight: 600; }
nav { display: flex; flex-wrap: wrap; gap: .2rem .9rem; margin: .8rem 0; padding: .5rem 0;
      border-top: 1px solid #eaeef2; border-bottom: 1px solid #eaeef2; }
nav a { color: #0969da; text-decoration: none; white-space: nowrap; }
.verdict { font-size: 1.1rem; font-weight: 600; background: #f1f8ff; border-left: 4px solid #0969da;
           padding: .7rem 1rem; margin: .5rem 0; }
.flags li { color: #9a3412; } .muted { color: #57606a; font-style: italic; }
.pass { color: #1a7f37; font-weight: 600; } .fail { color: #cf222e; font-weight: 600; } .neutral { color: #57606a; }
section > .chart, section > .table { display: inline-block; vertical-align: top; max-width: 100%;
                                     margin-right: 2rem; }
.table { overflow-x: auto; }
table { border-collapse: collapse; margin: .4rem 0 1rem; font-variant-numeric: tabular-nums; }
th, td { padding: .28rem .7rem; border-bottom: 1px solid #d8dee4; text-align: left; vertical-align: top; }
thead th { background: #f6f8fa; white-space: nowrap; } .num { text-align: right; white-space: nowrap; }
figure { margin: .6rem 0 1rem; } figcaption { font-weight: 600; margin-bottom: .3rem; }
svg { max-width: 100%; height: auto; }
.explained p { margin: .2rem 0 .8rem; line-height: 1.9; } .explained .caption { font-weight: 600; margin-bottom: 0; }
mark { color: inherit; padding: .05rem .1rem; border-radius: 3px; }
.actions button { font: inherit; margin-right: .6rem; padding: .25rem .9rem; border: 1px solid #d0d7de;
                  border-radius: 6px; background: #f6f8fa; cursor: pointer; }
.actions button:hover { background: #eaeef2; }
@media print {
  body { max-width: none; padding: 0; font-size: 10.5pt; } nav, .actions { display: none; }
  section, figure, table { break-inside: avoid; } h2 { break-after: avoid; }
  .verdict { background: none; } .table { overflow: visible; } a { color: inherit; }
}
"""
