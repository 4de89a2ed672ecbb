"""The preparation report as a person opens it: `tunelab data prepare` runs on a classification
file with rejects, duplicates, PII and a label that is an HTML tag, and headless Chromium loads the
report.html it wrote. The DOM must hold report.json's counts and label table, one drawn chart per
distribution (lengths and labels per split, rejects, PII), the label as text rather than markup,
and nothing that needs the network; the screenshot must show the charts painted."""
from __future__ import annotations

import json
import random

from cli_helpers import tunelab, write_jsonl

EVIL = '<img src="x" onerror="alert(1)">'
WORDS = "refund order account invoice delivery contract payment policy customer notice warranty claim".split()
HISTOGRAM_ORANGE = (0xF5, 0x85, 0x18)  # charts.histogram's bars
BAR_BLUE = (0x4C, 0x78, 0xA8)  # charts.bar_chart's bars


def rows() -> list:
    rng = random.Random(0)
    good = [{"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 40))) + f" {i}",
             "label": ("pos", "neg", EVIL)[i % 3]} for i in range(150)]
    return good + [good[0], {"text": "write to jane.roe@example.org", "label": "pos"}, {"text": 7, "label": "neg"},
                   b'{"text": "cut off']  # a line cut short


def test_data_report_renders_in_chromium_with_its_tables_and_charts(browser, tmp_path):
    out = tmp_path / "prepared"
    tunelab("data", "prepare", write_jsonl(tmp_path / "raw.jsonl", rows()), "--out", out, "-q")
    report = json.loads((out / "report.json").read_text())
    assert report["counts"]["rejected"] == 2 and report["counts"]["duplicates"] == 1 and report["pii"]["by_type"]

    outline = browser.open(out / "report.html")
    text = outline.page_text
    for heading in ("Counts", "Warnings", "Rejects by reason", "Duplicates", "PII found (by type)",
                    "Lengths (characters)", "Labels", "Leakage"):
        assert heading in text
    counts = dict(outline.table("counts")[1:])
    assert counts["input records"] == f"{report['counts']['input']:,}" and counts["kept"] == str(report["counts"]["kept"])
    labels = outline.table("labels")
    assert labels[0] == ["label", "train", "val", "test"]
    assert {row[0]: row[1] for row in labels[1:]} == {label: str(n) for label, n in
                                                      report["labels"]["distribution"]["train"].items()}
    assert EVIL in text and outline.images == []  # the label is shown as text, never parsed as an <img>
    lengths = outline.table("lengths")
    assert [row[0] for row in lengths[1:]] == [s for s in ("train", "val", "test") if report["lengths"][s]["count"]]
    splits = [s for s in ("train", "val", "test") if report["splits"][s]]
    outline.assert_charts({"rejects": "rect", "pii": "rect", **{f"lengths-{s}": "rect" for s in splits},
                           **{f"labels-{s}": "rect" for s in splits}})
    assert outline.shapes["labels-train"]["rect"] == 3  # one bar per label
    outline.assert_self_contained()
    browser.assert_painted(out / "report.html", {"histogram orange": HISTOGRAM_ORANGE, "bar blue": BAR_BLUE})
