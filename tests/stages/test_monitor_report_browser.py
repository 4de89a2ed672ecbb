"""The drift report as a person opens it: `tunelab monitor` runs on a small prediction log whose
recent inputs are much longer than the reference data's (and whose model once answered with a
label that is an HTML tag), and headless Chromium loads the report.html it wrote. The DOM must
hold the verdict, report.json's features table, the reference and current distribution of every
binned feature as drawn charts, the label as text rather than markup, and nothing that needs the
network; the screenshot must show the charts painted."""
from __future__ import annotations

import json

from cli_helpers import tunelab
from unit.monitor.monitor_logs import classification_rows, reference_records, write_jsonl, write_log

EVIL = '<img src="x" onerror="alert(1)">'
HISTOGRAM_ORANGE = (0xF5, 0x85, 0x18)  # charts.histogram's bars
BAR_BLUE = (0x4C, 0x78, 0xA8)  # charts.bar_chart's bars


def test_drift_report_renders_in_chromium_with_its_tables_and_charts(browser, tmp_path):
    reference = write_jsonl(tmp_path / "reference.jsonl", reference_records(200))
    earlier, recent = classification_rows(100, seed=1), classification_rows(100, seed=2, words=(30, 60))
    recent[0]["output"] = recent[0]["label"] = EVIL
    write_log(tmp_path / "predictions.db", earlier, recent)
    tunelab("monitor", "--log", "predictions.db", "--reference", reference, "--window", 100, "--out", "drift",
            cwd=tmp_path)
    report = json.loads((tmp_path / "drift" / "report.json").read_text())
    drifted = [f["feature"] for f in report["features"] if f["drifted"]]
    assert {"input_chars", "input_words"} <= set(drifted)

    outline = browser.open(tmp_path / "drift" / "report.html")
    text = outline.page_text
    assert f"Drift found in {', '.join(drifted)}." in text and "No rollback." in text
    for alert in report["alerts"]:
        assert alert in text
    features = outline.table("features")
    assert features[0] == ["feature", "compared with", "PSI", "KL", "statistic", "p", "drifted", "why"]
    assert [(row[0], row[6]) for row in features[1:]] == [(f["feature"], "yes" if f["drifted"] else "no")
                                                          for f in report["features"]]
    assert EVIL in text and outline.images == []  # the logged label is text, never parsed as an <img>
    binned = [f["feature"] for f in report["features"] if f.get("bins")]
    shared = [f["feature"] for f in report["features"] if f.get("reference_shares")]
    assert {"input_chars", "input_words"} <= set(binned) and "predicted_label" in shared
    outline.assert_charts({f"{name}-{side}": "rect" for name in binned + shared for side in ("reference", "current")})
    outline.assert_self_contained()
    browser.assert_painted(tmp_path / "drift" / "report.html",
                           {"histogram orange": HISTOGRAM_ORANGE, "bar blue": BAR_BLUE})
