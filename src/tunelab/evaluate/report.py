"""The evaluation report for people: report.md, and report.html (one self-contained page with
inline SVG charts: no script, no network, print-friendly), both rendered from the report.json
dict through the same sections (tunelab.evaluate.report_sections). Every string from the data is
escaped on the way out: HTML-escaped in the page, and in Markdown too (viewers render inline
HTML), with table pipes neutralised."""
from __future__ import annotations

import html
import re
from typing import Any

from tunelab.evaluate.report_sections import (Bullets, Chart, Note, Status, build_sections, format_value,
                                              meta_fields)

STATUS_CLASSES = {True: "pass", False: "fail", None: "neutral"}
NUMBER = re.compile(r"^[+\-\u2212]?\d[\d,]*(\.\d+)?(e[+-]?\d+)?%?$|^n/a$|^nan$")
NUM_CLASS = ' class="num"'  # right-aligned figures
esc = html.escape


def render_markdown(report: dict[str, Any]) -> str:
    lines = ["# Evaluation report", ""] + [f"- {name}: {_md(value)}" for name, value in meta_fields(report)] + [""]
    for section in build_sections(report):
        lines += [f"## {_md(section.title)}", ""]
        for block in section.blocks:
            lines += _markdown_block(block)
    return "\n".join(lines).rstrip() + "\n"


def render_html(report: dict[str, Any]) -> str:
    sections = build_sections(report)
    nav = "".join(f'<a href="#{section.key}">{esc(section.title)}</a>' for section in sections)
    meta = "".join(f"<span><b>{esc(name)}</b> {esc(str(value))}</span>" for name, value in meta_fields(report))
    body = "".join(f'<section id="{section.key}"><h2>{esc(section.title)}</h2>'
                   + "".join(_html_block(block) for block in section.blocks) + "</section>" for section in sections)
    title = f"Evaluation report: {report.get('model') or ''}"
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n<h1>{esc(title)}</h1><p class=\"meta\">{meta}</p>"
            f"<nav>{nav}</nav>\n{body}\n</body></html>\n")


def _markdown_block(block) -> list[str]:
    if isinstance(block, Chart):
        return []
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
    if isinstance(block, Note):
        return f'<p class="{block.style or "note"}">{_html_cell(block.text)}</p>'
    if isinstance(block, Bullets):
        return f'<ul class="{block.style}">' + "".join(f"<li>{esc(item)}</li>" for item in block.items) + "</ul>"
    if block.markdown_only:
        return ""
    cells = [[_cell(value) for value in row] for row in block.rows]
    numeric = [_numeric_column(cells, i) for i in range(len(block.headers))]
    head = "".join(f'<th{NUM_CLASS if n else ""}>{esc(h)}</th>' for h, n in zip(block.headers, numeric))
    body = "".join("<tr>" + "".join(f'<td{NUM_CLASS if n else ""}>{_html_cell(value)}</td>'
                                    for value, n in zip(row, numeric)) + "</tr>" for row in block.rows)
    return f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _html_cell(value) -> str:
    if isinstance(value, Status):
        return f'<span class="{STATUS_CLASSES[value.ok]}">{esc(value.text)}</span>'
    return esc(_cell(value))


def _cell(value) -> str:
    return value.text if isinstance(value, Status) else format_value(value)


def _numeric_column(cells: list[list[str]], column: int) -> bool:
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
thead th { background: #f6f8fa; white-space: nowrap; } .num { text-align: right; }
figure { margin: .6rem 0 1rem; } figcaption { font-weight: 600; margin-bottom: .3rem; }
svg { max-width: 100%; height: auto; }
@media print {
  body { max-width: none; padding: 0; font-size: 10.5pt; } nav { display: none; }
  section, figure, table { break-inside: avoid; } h2 { break-after: avoid; }
  .verdict { background: none; } .table { overflow: visible; } a { color: inherit; }
}
"""
