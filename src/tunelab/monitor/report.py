"""The drift report as Markdown and as HTML (self-contained inline SVG: reference and current
distributions side by side for each feature). Every string from the log or the data is
escaped: prediction inputs are user text."""
from __future__ import annotations

import html
from typing import Any

from tunelab.charts import bar_chart, histogram


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


def render_markdown(report: dict[str, Any]) -> str:
    w, ref = report["window"], report["reference"]
    lines = ["# Drift report", "", f"**{_verdict(report)}** {_rollback_line(report['rollback'])}", "",
             f"- window: the last {w['predictions']:,} predictions (of {w['size']:,} asked for) in {report['log']}",
             f"- reference: {ref['source']} ({ref['records']:,} records)",
             f"- traffic before the window used as a reference: {w['earlier_predictions']:,} predictions", ""]
    if report["alerts"]:
        lines += ["## Alerts", "", *[f"- {a}" for a in report["alerts"]], ""]
    if report["notes"]:
        lines += ["## Notes", "", *[f"- {n}" for n in report["notes"]], ""]
    lines += ["## Features", "", "| feature | compared with | PSI | statistic | p | drifted | why |",
              "|---|---|---:|---:|---:|---|---|"]
    for f in report["features"]:
        lines.append(f"| {f['feature']} | {f.get('reference_source') or '-'} | {_figure(f['psi'])} | "
                     f"{_figure(f['statistic'])} | {_p(f['p_value'])} | {'yes' if f['drifted'] else 'no'} | "
                     f"{f['reason'].replace('|', '/')} |")
    t = report["thresholds"]
    lines += ["", f"Thresholds: PSI > {t['psi']:g} and p < {t['p_value']:g}; confidence drop >= "
                  f"{t['min_confidence_drop']:g}; error rate > {t['max_error_rate']:.1%}; at least "
                  f"{t['min_samples']} values per side."]
    return "\n".join(lines) + "\n"


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


def render_html(report: dict[str, Any]) -> str:
    esc = html.escape
    w, ref = report["window"], report["reference"]
    rows, charts = [], []
    for f in report["features"]:
        rows.append(f"<tr class=\"{'drifted' if f['drifted'] else 'stable'}\"><th>{esc(f['feature'])}</th>"
                    f"<td>{esc(f.get('reference_source') or '-')}</td><td>{_figure(f['psi'])}</td>"
                    f"<td>{_figure(f['statistic'])}</td><td>{_p(f['p_value'])}</td>"
                    f"<td>{'yes' if f['drifted'] else 'no'}</td><td class=\"why\">{esc(f['reason'])}</td></tr>")
        charts += _charts(f)
    alerts = "".join(f"<li>{esc(a)}</li>" for a in report["alerts"]) or "<li>none</li>"
    notes = "".join(f"<li>{esc(n)}</li>" for n in report["notes"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tunelab drift report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; }} th, td {{ padding: .25rem .75rem; border-bottom: 1px solid #ddd; text-align: left; }}
tr.drifted {{ background: #fde8e8; }} td.why {{ font-size: .9em; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 1.5rem; }} figure {{ margin: 0; }}
figcaption {{ font-weight: 600; margin-bottom: .25rem; }}
</style></head><body>
<h1>Drift report</h1>
<p id="verdict"><strong>{esc(_verdict(report))}</strong> {esc(_rollback_line(report['rollback']))}</p>
<p>Window: the last {w['predictions']:,} predictions in {esc(report['log'])}; reference: {esc(ref['source'])}
({ref['records']:,} records); traffic before the window: {w['earlier_predictions']:,} predictions.</p>
<h2>Alerts</h2><ul id="alerts">{alerts}</ul>
{f'<h2>Notes</h2><ul id="notes">{notes}</ul>' if notes else ''}
<h2>Features</h2>
<table id="features"><tr><th>feature</th><th>compared with</th><th>PSI</th><th>statistic</th><th>p</th>
<th>drifted</th><th>why</th></tr>{''.join(rows)}</table>
<h2>Reference and current distributions</h2><div class="charts">{''.join(charts)}</div>
</body></html>
"""
