"""The preparation report: report.json (stable keys), report.md and report.html (histograms a
person opens in a browser; self-contained inline SVG, no network needed to view it)."""
from __future__ import annotations

import html
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from tunelab import __version__
from tunelab.charts import bar_chart, histogram
from tunelab.data.split import SPLITS
from tunelab.files import write_json, write_text

PERCENTILES = (50, 90, 95, 99)


def build_report(*, kind, counts, kept, rejects, duplicates, inputs, cleaning, pii, leakage, audit, cfg,
                 length_unit) -> dict[str, Any]:
    by_split = {s: [i for i in kept if i.split == s] for s in SPLITS}
    labels = _label_section(by_split, cfg) if kind == "classification" else None
    report = {
        "tunelab_version": __version__,
        "kind": kind,
        "counts": counts,
        "splits": {s: len(items) for s, items in by_split.items()},
        "inputs": inputs,
        "rejects_by_reason": dict(Counter(r["reason"] for r in rejects).most_common()),
        "duplicates_by_kind": dict(Counter(d["kind"] for d in duplicates).most_common()),
        "label_conflicts": sum("label_conflict" in d for d in duplicates),
        "cleaning": cleaning,
        "pii": pii,
        "lengths": {"unit": length_unit, **{s: _length_stats([i.length for i in items])
                                            for s, items in by_split.items()}},
        "labels": labels,
        "fields": _field_types(by_split),
        "leakage": leakage,
        "template_audit": audit,
    }
    report["warnings"] = _warnings(report, cfg)
    return report


def _length_stats(lengths: list[int]) -> dict[str, Any]:
    if not lengths:
        return {"count": 0}
    values = np.asarray(lengths)
    stats = {"count": int(values.size), "mean": round(float(values.mean()), 1), "min": int(values.min())}
    stats.update({f"p{p}": int(np.percentile(values, p, method="higher")) for p in PERCENTILES})
    stats["max"] = int(values.max())
    stats["histogram"] = _histogram_bins(values)
    return stats


def _histogram_bins(values: np.ndarray, bins: int = 20) -> dict[str, list]:
    counts, edges = np.histogram(values, bins=bins)
    return {"edges": [round(float(e), 1) for e in edges], "counts": [int(c) for c in counts]}


def _field_types(by_split) -> dict[str, Any]:
    """Which fields (with their JSON types, meta keys included) each split's records carry, and
    whether the splits agree: a field present in train but not in test is a silent mismatch."""
    per_split = {}
    for split, items in by_split.items():
        seen = set()
        for item in items:
            record = item.record
            seen.update(f"{k}:{type(v).__name__}" for k, v in record.items() if k != "meta")
            seen.update(f"meta.{k}" for k in record.get("meta", {}))
        per_split[split] = sorted(seen)
    present = [set(fields) for fields in per_split.values() if fields]
    return {"by_split": per_split, "agree": all(p == present[0] for p in present)}


def _label_section(by_split, cfg) -> dict[str, Any]:
    distribution = {s: dict(sorted(Counter(i.record["label"] for i in items).items())) for s, items in by_split.items()}
    train_labels = set(distribution["train"])
    all_labels = sorted(set().union(*distribution.values()))
    train_counts = [distribution["train"].get(label, 0) for label in all_labels]
    return {
        "declared": cfg.labels,
        "found": all_labels,
        "distribution": distribution,
        "only_in_eval": sorted(set(all_labels) - train_labels),
        "missing_from": {s: sorted(set(all_labels) - set(distribution[s])) for s in ("val", "test")},
        "imbalance_ratio": round(max(train_counts) / min(train_counts), 2) if train_counts and min(train_counts) else None,
        "rare": sorted(label for label, n in zip(all_labels, train_counts) if n < cfg.min_class_examples),
    }


def _warnings(report: dict[str, Any], cfg) -> list[str]:
    warnings = []
    leakage = report["leakage"]
    if leakage["val_vs_train"] or leakage["test_vs_train"]:
        warnings.append(f"leakage: {leakage['val_vs_train']} val and {leakage['test_vs_train']} test records are "
                        f"near duplicates of train records (Jaccard >= {leakage['threshold']})")
    if not report["fields"]["agree"]:
        fields = report["fields"]["by_split"]
        union = set().union(*map(set, fields.values()))
        gaps = "; ".join(f"{s} lacks {', '.join(sorted(union - set(f)))}" for s, f in fields.items()
                         if f and union - set(f))
        warnings.append(f"field types differ across splits: {gaps}")
    labels = report["labels"]
    if labels:
        if labels["rare"]:
            warnings.append(f"labels with fewer than {cfg.min_class_examples} training examples: "
                            f"{', '.join(labels['rare'])}")
        if labels["only_in_eval"]:
            warnings.append(f"labels in val/test but never in train: {', '.join(labels['only_in_eval'])}")
        if labels["imbalance_ratio"] and labels["imbalance_ratio"] >= 10:
            warnings.append(f"class imbalance: the largest class is {labels['imbalance_ratio']}x the smallest; "
                            "consider class weights")
    if report["label_conflicts"]:
        warnings.append(f"{report['label_conflicts']} duplicate texts carried a different label than the kept copy "
                        "(see duplicates.jsonl, label_conflict)")
    for split in ("val", "test"):
        if report["splits"][split] == 0 and getattr(cfg.split, split) > 0:
            warnings.append(f"the {split} split is empty: too few records for split.{split}={getattr(cfg.split, split)}")
    audit = report["template_audit"]
    if audit and not audit["ok"]:
        warnings += [f"chat template: {p}" for p in audit["problems"]]
    total = report["counts"]["input"]
    if total and report["counts"]["rejected"] / total > 0.2:
        warnings.append(f"{report['counts']['rejected']} of {total} records were rejected; see rejects.jsonl")
    return warnings


def write_report(out_dir: Path, report: dict[str, Any]) -> dict[str, Path]:
    paths = {"report_json": out_dir / "report.json", "report_md": out_dir / "report.md",
             "report_html": out_dir / "report.html"}
    write_json(paths["report_json"], report)
    write_text(paths["report_md"], render_markdown(report))
    write_text(paths["report_html"], render_html(report))
    return paths


def _summary_rows(report: dict[str, Any]) -> list[tuple[str, Any]]:
    c = report["counts"]
    return [("input records", c["input"]), ("kept", c["kept"]), ("rejected", c["rejected"]),
            ("duplicates", c["duplicates"]), ("PII-redacted records", c["pii_redacted"]),
            *((f"{s} split", n) for s, n in report["splits"].items())]


def render_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Data preparation report ({report['kind']})", "", "| | count |", "|---|---:|"]
    lines += [f"| {name} | {value:,} |" for name, value in _summary_rows(report)]
    lines += ["", "`input = kept + rejected + duplicates` holds.", ""]
    if report["warnings"]:
        lines += ["## Warnings", "", *[f"- {w}" for w in report["warnings"]], ""]
    sections = [("Rejects by reason", report["rejects_by_reason"]), ("Duplicates", report["duplicates_by_kind"]),
                ("PII found (by type)", report["pii"]["by_type"])]
    for title, table in sections:
        lines += [f"## {title}", ""] + ([f"- {k}: {v:,}" for k, v in table.items()] or ["- none"]) + [""]
    lines += [f"## Lengths ({report['lengths']['unit']})", "", "| split | count | mean | p50 | p90 | p95 | p99 | max |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for split in SPLITS:
        s = report["lengths"][split]
        if s["count"]:
            lines.append(f"| {split} | {s['count']:,} | {s['mean']} | {s['p50']} | {s['p90']} | {s['p95']} | "
                         f"{s['p99']} | {s['max']} |")
    if report["labels"]:
        dist = report["labels"]["distribution"]
        lines += ["", "## Labels", "", "| label | " + " | ".join(SPLITS) + " |", "|---|" + "---:|" * len(SPLITS)]
        for label in report["labels"]["found"]:
            lines.append(f"| {label} | " + " | ".join(f"{dist[s].get(label, 0):,}" for s in SPLITS) + " |")
    leak = report["leakage"]
    lines += ["", "## Leakage", "", f"- val records near-duplicating train: {leak['val_vs_train']}",
              f"- test records near-duplicating train: {leak['test_vs_train']}"]
    if report["template_audit"]:
        audit = report["template_audit"]
        lines += ["", "## Chat-template audit", "", f"- tokenizer: {audit['tokenizer']}",
                  f"- conversations checked: {audit['checked']}", f"- verdict: {'ok' if audit['ok'] else 'problems found'}"]
        lines += [f"- {p}" for p in audit["problems"]]
    return "\n".join(lines) + "\n"


def render_html(report: dict[str, Any]) -> str:
    esc = html.escape
    rows = "".join(f"<tr><th>{esc(name)}</th><td>{value:,}</td></tr>" for name, value in _summary_rows(report))
    warnings = "".join(f"<li>{esc(w)}</li>" for w in report["warnings"]) or "<li>none</li>"
    charts = []
    unit = report["lengths"]["unit"]
    for split in SPLITS:
        stats = report["lengths"][split]
        if stats["count"]:
            charts.append(histogram(f"{split}: length in {unit}", stats["histogram"]["edges"],
                                    stats["histogram"]["counts"], chart_id=f"lengths-{split}"))
    if report["labels"]:
        for split in SPLITS:
            dist = report["labels"]["distribution"][split]
            if dist:
                charts.append(bar_chart(f"{split}: labels", dist, chart_id=f"labels-{split}"))
    if report["rejects_by_reason"]:
        charts.append(bar_chart("rejects by reason", report["rejects_by_reason"], chart_id="rejects"))
    if report["pii"]["by_type"]:
        charts.append(bar_chart("PII found by type", report["pii"]["by_type"], chart_id="pii"))
    audit = report["template_audit"]
    audit_html = ""
    if audit:
        items = "".join(f"<li>{esc(p)}</li>" for p in audit["problems"]) or "<li>no problems found</li>"
        audit_html = (f"<h2>Chat-template audit</h2><p>{esc(audit['tokenizer'])}: {audit['checked']} conversations "
                      f"checked</p><ul id='audit'>{items}</ul>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tunelab data report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; }} th, td {{ padding: .25rem .75rem; border-bottom: 1px solid #ddd; text-align: left; }}
td {{ text-align: right; }} .charts {{ display: flex; flex-wrap: wrap; gap: 1.5rem; }}
figure {{ margin: 0; }} figcaption {{ font-weight: 600; margin-bottom: .25rem; }}
</style></head><body>
<h1>Data preparation report <small>({esc(report['kind'])})</small></h1>
<table id="counts">{rows}</table>
<p>input = kept + rejected + duplicates holds.</p>
<h2>Warnings</h2><ul id="warnings">{warnings}</ul>
<h2>Charts</h2><div class="charts">{''.join(charts)}</div>
{audit_html}
<h2>Leakage</h2><p id="leakage">{report['leakage']['val_vs_train']} val and {report['leakage']['test_vs_train']}
test records are near duplicates of train records (Jaccard &ge; {report['leakage']['threshold']}).</p>
</body></html>
"""
