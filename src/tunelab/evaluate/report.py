"""The evaluation report for people: report.md, and report.html (one self-contained page with
inline SVG charts), both rendered from the report.json dict through the same sections
(tunelab.evaluate.report_sections) on the page every tunelab report shares
(tunelab.report_shell: skeleton, stylesheet, escaping)."""
from __future__ import annotations

from typing import Any

from tunelab import report_shell
from tunelab.evaluate.report_sections import build_sections, meta_fields


def render_markdown(report: dict[str, Any]) -> str:
    return report_shell.render_markdown("Evaluation report", build_sections(report), meta_fields(report))


def render_html(report: dict[str, Any]) -> str:
    return report_shell.render_html(f"Evaluation report: {report.get('model') or ''}", build_sections(report),
                                    meta_fields(report))
