"""The preparation report's report.md and report.html, rendered from a report.json dict: both
formats carry the same figures (counts, rejects, duplicates, PII, length percentiles, labels per
split, leakage, the template audit), the page draws one chart per distribution, and labels and
warnings from the data (user text) reach neither format unescaped."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from tunelab.data.report import render_html, render_markdown

EVIL = "<script>alert(1)</script>"


def lengths(count: int, mean: float, p50: int, top: int) -> dict:
    return {"count": count, "mean": mean, "min": 1, "p50": p50, "p90": top - 2, "p95": top - 1, "p99": top, "max": top,
            "histogram": {"edges": [1.0, top / 2, float(top)], "counts": [count - 1, 1]}}


def report() -> dict:
    return {
        "kind": "classification",
        "counts": {"input": 1210, "kept": 1200, "rejected": 6, "duplicates": 4, "pii_redacted": 3},
        "splits": {"train": 1000, "val": 120, "test": 80},
        "rejects_by_reason": {"unparsable": 4, "empty_content": 2},
        "duplicates_by_kind": {"exact": 3, "near": 1},
        "label_conflicts": 0,
        "pii": {"by_type": {"email": 2, "phone": 1}},
        "lengths": {"unit": "characters", "train": lengths(1000, 12345.6, 90, 400), "val": lengths(120, 88.5, 85, 300),
                    "test": {"count": 0}},
        "labels": {"found": ["neg", "pos", f"a|b {EVIL}"],
                   "distribution": {"train": {"neg": 500, "pos": 490, f"a|b {EVIL}": 10}, "val": {"neg": 60, "pos": 60},
                                    "test": {"neg": 40, "pos": 40}}},
        "leakage": {"threshold": 0.8, "val_vs_train": 2, "test_vs_train": 0},
        "template_audit": {"tokenizer": "tiny", "checked": 12, "ok": False, "problems": [f"problem {EVIL}"]},
        "warnings": [f"labels in val/test but never in train: {EVIL}"],
    }


def test_markdown_holds_every_figure_in_its_table():
    markdown = render_markdown(report())
    assert re.findall(r"^## (.*)$", markdown, re.M) == [
        "Counts", "Warnings", "Rejects by reason", "Duplicates", "PII found (by type)", "Lengths (characters)",
        "Labels", "Leakage", "Chat-template audit"]
    for row in ("| input records | 1,210 |", "| test split | 80 |", "| unparsable | 4 |", "| near | 1 |",
                "| phone | 1 |", "| train | 1,000 | 12345.6 | 90 | 398 | 399 | 400 | 400 |",
                "| val | 120 | 88.5 | 85 | 298 | 299 | 300 | 300 |", "| neg | 500 | 60 | 40 |",
                "| a\\|b &lt;script&gt;alert(1)&lt;/script&gt; | 10 | 0 | 0 |", "| val | 2 |",
                "| conversations checked | 12 |", "| verdict | problems found |"):
        assert row in markdown, row
    assert "| test | 0 |" not in markdown.split("## Lengths")[1].split("## Labels")[0]  # an empty split has no row
    assert "<" not in markdown and "|---|---:|---:|---:|---:|---:|---:|---:|" in markdown


def test_html_draws_each_distribution_and_escapes_the_data():
    page = render_html(report())
    figures = re.findall(r'<figure id="([^"]+)"', page)
    assert figures == ["rejects", "pii", "lengths-train", "lengths-val", "labels-train", "labels-val", "labels-test"]
    for svg in re.findall(r"<svg\b.*?</svg>", page, re.S):
        ET.fromstring(svg)
    assert EVIL not in page and page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4
    assert '<td class="num">12345.6</td>' in page and '<td class="num">1,210</td>' in page
    assert re.findall(r'<section id="([^"]+)">', page) == ["counts", "warnings", "rejects", "duplicates", "pii",
                                                          "lengths", "labels", "leakage", "audit"]


def test_nothing_found_reads_as_none_and_an_unaudited_run_has_no_audit():
    quiet = {**report(), "rejects_by_reason": {}, "duplicates_by_kind": {}, "pii": {"by_type": {}}, "warnings": [],
             "template_audit": None, "labels": None, "kind": "generative"}
    markdown = render_markdown(quiet)
    assert markdown.startswith("# Data preparation report (generative)\n")
    assert markdown.count("_none_") == 3 and "_No warnings._" in markdown
    assert "## Labels" not in markdown and "## Chat-template audit" not in markdown
