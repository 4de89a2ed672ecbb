"""The drift report as Markdown and as HTML (self-contained inline SVG: reference and current
distributions side by side for each feature), both rendered from the report.json dict through
the same sections on the page every tunelab report shares (tunelab.report_shell). Every string
from the log or the data is escaped there: prediction inputs are user text."""
from __future__ import annotations

from typing import Any

from tunelab import report_shell
from tunelab.charts import bar_chart, histogram, line_chart
from tunelab.report_shell import Bullets, Chart, Note, Section, Status, Table

TITLE = "Drift report"


def render_markdown(report: dict[str, Any]) -> str:
    return report_shell.render_markdown(TITLE, build_sections(report), _meta(report))


def render_html(report: dict[str, Any]) -> str:
    return report_shell.render_html(TITLE, build_sections(report), _meta(report))


def build_sections(report: dict[str, Any]) -> list[Section]:
    sections = [Section("verdict", "Verdict", [Note(Status(not report["drifted"], _verdict(report)), "verdict"),
                                               Note(_rollback_line(report["rollback"]))]),
                Section("alerts", "Alerts", [Bullets(list(report["alerts"]), "flags") if report["alerts"]
                                             else Note("No alerts.", "muted")])]
    if report["notes"]:
        sections.append(Section("notes", "Notes", [Bullets(list(report["notes"]))]))
    sections.append(_features_section(report))
    content = next((f for f in report["features"] if f["feature"] == "content"), None)
    if content and content.get("farthest"):
        sections.append(Section("content", "Inputs farthest from the reference", [
            Note(content["reason"]),
            Table(["cosine distance to the nearest reference input", "input"],
                  [[_figure(item["distance"]), item["text"]] for item in content["farthest"]])]))
    if report.get("quality"):
        sections.append(_quality_section(report["quality"]))
    if report.get("webhook"):
        hook = report["webhook"]
        done = (f"delivered (HTTP {hook['status']}, {hook['attempts']} attempt(s))" if hook["delivered"]
                else f"NOT delivered after {hook['attempts']} attempt(s): {hook['error']}")
        sections.append(Section("webhook", "Webhook", [Note(Status(hook["delivered"], f"{hook['url']}: {done}"))]))
    charts = [Chart(svg) for feature in report["features"] for svg in _charts(feature)]
    if charts:
        sections.append(Section("distributions", "Reference and current distributions", charts))
    return sections


def _meta(report: dict[str, Any]) -> list[tuple[str, str]]:
    w, ref = report["window"], report["reference"]
    asked = f"the last {w['size']}" if isinstance(w["size"], str) else f"{w['size']:,} asked for"
    return [("window", f"the last {w['predictions']:,} predictions ({asked}) in {report['log']}"),
            ("reference", f"{ref['source']} ({ref['records']:,} records)"),
            ("traffic before the window used as a reference", f"{w['earlier_predictions']:,} predictions")]


def _features_section(report: dict[str, Any]) -> Section:
    # figures pre-formatted as the drift sentences print them: PSI and statistic to 3 decimals, p to 2 digits
    rows = [[f["feature"], f.get("reference_source") or "-", _figure(f["psi"]), _figure(f.get("kl")),
             _figure(f["statistic"]), _p(f["p_value"]), Status(False, "yes") if f["drifted"] else Status(True, "no"),
             f["reason"]]
            for f in report["features"]]
    t = report["thresholds"]
    content = f"; content ROC AUC > {t['content_auc']:g}" if t.get("content_auc") else ""
    return Section("features", "Features", [
        Table(["feature", "compared with", "PSI", "KL", "statistic", "p", "drifted", "why"], rows),
        Note(f"Thresholds: inputs PSI > {t['psi']:g}, outputs (predicted label, output length) KL > {t['kl']:g}, "
             f"each with p < {t['p_value']:g}; confidence drop >= {t['min_confidence_drop']:g}; error rate > "
             f"{t['max_error_rate']:.1%}{content}; at least {t['min_samples']} values per side.", "muted")])


def _figure(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2g}"


def _verdict(report: dict[str, Any]) -> str:
    drifted = [f["feature"] for f in report["features"] if f["drifted"]]
    if drifted:
        return f"Drift found in {', '.join(drifted)}."
    return "No drift found."


def _rollback_line(rollback: dict[str, Any] | None) -> str:
    if rollback is None:
        return "No rollback."
    if rollback.get("error"):
        return f"Rollback requested but not done: {rollback['error']}"
    return f"Rolled back from {rollback['from']} to {rollback['to']}."


def _charts(feature: dict[str, Any]) -> list[str]:
    name = feature["feature"]
    if feature.get("bins"):
        bins = feature["bins"]
        return [histogram(f"{name}: {side} (% per PSI bin)", bins["edges"],
                          [round(100 * s, 1) for s in bins[side]], chart_id=f"{name}-{side}")
                for side in ("reference", "current")]
    if feature.get("reference_shares"):
        return [bar_chart(f"{name}: {side} (%)", {k: round(100 * v, 1) for k, v in feature[f"{side}_shares"].items()},
                          chart_id=f"{name}-{side}") for side in ("reference", "current")]
    return []


def _quality_section(quality: dict[str, Any]) -> Section:
    """Live quality from feedback: the window's figures, then one row (and chart point) per bucket."""
    import time
    rows = [[time.strftime("%Y-%m-%d %H:%M", time.gmtime(b["start_ts"])), b["labelled"], _figure(b["accuracy"]),
             _figure(b["macro_f1"]), b["rated"], _figure(b["mean_rating"])] for b in quality["over_time"]]
    w = quality["window"]
    blocks = [Note(f"In the current window: {w['labelled']} answers with a feedback label (accuracy "
                   f"{_figure(w['accuracy'])}, macro-F1 {_figure(w['macro_f1'])}), {w['rated']} rated (mean rating "
                   f"{_figure(w['mean_rating'])} of the scale: thumbs up = 1, 5 stars = 1)."),
              Table([f"bucket ({quality['bucket']}, UTC)", "labelled", "accuracy", "macro-F1", "rated", "mean rating"],
                    rows)]
    first = quality["over_time"][0]["start_ts"] if quality["over_time"] else 0.0
    series = {name: [((b["start_ts"] - first) / 3600, b[key]) for b in quality["over_time"] if b[key] is not None]
              for name, key in (("accuracy", "accuracy"), ("macro-F1", "macro_f1"), ("mean rating", "mean_rating"))}
    if sum(len(points) for points in series.values()) > 1:
        blocks.append(Chart(line_chart("Quality on feedback over time", series, chart_id="quality-over-time",
                                       x_label="hours since the first bucket", y_label="share")))
    return Section("quality", "Live quality (feedback)", blocks)
