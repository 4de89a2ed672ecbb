"""The preparation report: report.json (stable keys), report.md and report.html (histograms a
person opens in a browser; self-contained inline SVG, no network needed to view it)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab import __version__, report_shell
from tunelab.charts import bar_chart, histogram
from tunelab.data.split import SPLITS
from tunelab.data.stats import LENGTH_METHOD, PERCENTILES, SplitStats
from tunelab.files import write_json, write_text
from tunelab.report_shell import Bullets, Chart, Note, Section, Status, Table
from tunelab.train.assistant_spans import LOSS_MASK_WAYS


def build_report(*, kind, counts, split_stats: dict[str, SplitStats], inputs, rejects_by_reason, duplicates_by_kind,
                 label_conflicts, cleaning, pii, leakage, audit, cfg, length_unit) -> dict[str, Any]:
    """The report from statistics gathered while the records streamed past (data.stats)."""
    labels = _label_section(split_stats, cfg) if kind == "classification" else None
    report = {
        "tunelab_version": __version__,
        "kind": kind,
        "counts": counts,
        "splits": {s: split_stats[s].lengths.count for s in SPLITS},
        "inputs": inputs,
        "rejects_by_reason": rejects_by_reason,
        "duplicates_by_kind": duplicates_by_kind,
        "label_conflicts": label_conflicts,
        "cleaning": cleaning,
        "pii": pii,
        "lengths": {"unit": length_unit, "method": LENGTH_METHOD,
                    **{s: split_stats[s].lengths.summary() for s in SPLITS}},
        "labels": labels,
        "fields": _field_types(split_stats),
        "leakage": leakage,
        "template_audit": audit,
    }
    report["warnings"] = _warnings(report, cfg)
    return report


def _field_types(split_stats: dict[str, SplitStats]) -> dict[str, Any]:
    """Which fields (with their JSON types, meta keys included) each split's records carry, and
    whether the splits agree: a field present in train but not in test is a silent mismatch."""
    per_split = {split: sorted(split_stats[split].fields) for split in SPLITS}
    present = [set(fields) for fields in per_split.values() if fields]
    return {"by_split": per_split, "agree": all(p == present[0] for p in present)}


def _label_section(split_stats: dict[str, SplitStats], cfg) -> dict[str, Any]:
    distribution = {s: dict(sorted(split_stats[s].labels.items())) for s in SPLITS}
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


# Rendering: report.md and report.html say the same thing through the same sections, on the page
# every tunelab report shares (tunelab.report_shell escapes every string from the data).

def render_markdown(report: dict[str, Any]) -> str:
    return report_shell.render_markdown(_title(report), build_sections(report))


def render_html(report: dict[str, Any]) -> str:
    return report_shell.render_html(_title(report), build_sections(report))


def _title(report: dict[str, Any]) -> str:
    return f"Data preparation report ({report['kind']})"


def build_sections(report: dict[str, Any]) -> list[Section]:
    sections = [_counts_section(report), _warnings_section(report),
                _counted_section("rejects", "Rejects by reason", ["reason", "records"], report["rejects_by_reason"],
                                 "rejects by reason"),
                _counted_section("duplicates", "Duplicates", ["kind", "records"], report["duplicates_by_kind"], None),
                _counted_section("pii", "PII found (by type)", ["type", "found"], report["pii"]["by_type"],
                                 "PII found by type"),
                _lengths_section(report), _labels_section(report), _leakage_section(report),
                _audit_section(report)]
    return [section for section in sections if section]


def _summary_rows(report: dict[str, Any]) -> list[tuple[str, Any]]:
    c = report["counts"]
    return [("input records", c["input"]), ("kept", c["kept"]), ("rejected", c["rejected"]),
            ("duplicates", c["duplicates"]), ("PII-redacted records", c["pii_redacted"]),
            *((f"{s} split", n) for s, n in report["splits"].items())]


def _counts_section(report: dict[str, Any]) -> Section:
    return Section("counts", "Counts", [Table(["records", "count"], [list(row) for row in _summary_rows(report)]),
                                        Note("input = kept + rejected + duplicates holds.", "muted")])


def _warnings_section(report: dict[str, Any]) -> Section:
    warnings = report["warnings"]
    return Section("warnings", "Warnings", [Bullets(list(warnings), "flags") if warnings
                                            else Note("No warnings.", "muted")])


def _counted_section(key: str, title: str, headers: list[str], counts: dict[str, int], chart: str | None) -> Section:
    if not counts:
        return Section(key, title, [Note("none", "muted")])
    blocks: list = [Table(headers, [[name, n] for name, n in counts.items()])]
    if chart:
        blocks.append(Chart(bar_chart(chart, counts, chart_id=key)))
    return Section(key, title, blocks)


def _lengths_section(report: dict[str, Any]) -> Section:
    unit, rows, charts = report["lengths"]["unit"], [], []
    for split in SPLITS:
        s = report["lengths"][split]
        if s["count"]:
            # the mean as report.json holds it (one decimal), not rounded further for display
            rows.append([split, s["count"], str(s["mean"]), *(s[f"p{p}"] for p in PERCENTILES), s["max"]])
            charts.append(Chart(histogram(f"{split}: length in {unit}", s["histogram"]["edges"], s["histogram"]["counts"],
                                          chart_id=f"lengths-{split}")))
    return Section("lengths", f"Lengths ({unit})",
                   [Table(["split", "count", "mean", *(f"p{p}" for p in PERCENTILES), "max"], rows), *charts])


def _labels_section(report: dict[str, Any]) -> Section | None:
    labels = report["labels"]
    if not labels:
        return None
    dist = labels["distribution"]
    rows = [[label, *(dist[s].get(label, 0) for s in SPLITS)] for label in labels["found"]]
    charts = [Chart(bar_chart(f"{split}: labels", dist[split], chart_id=f"labels-{split}")) for split in SPLITS
              if dist[split]]
    return Section("labels", "Labels", [Table(["label", *SPLITS], rows), *charts])


def _leakage_section(report: dict[str, Any]) -> Section:
    leak = report["leakage"]
    return Section("leakage", "Leakage", [
        Table(["held-out records near-duplicating train", "records"],
              [["val", leak["val_vs_train"]], ["test", leak["test_vs_train"]]]),
        Note(f"A near duplicate has a Jaccard similarity of at least {leak['threshold']} with a train record.",
             "muted")])


def _audit_section(report: dict[str, Any]) -> Section | None:
    audit = report["template_audit"]
    if not audit:
        return None
    blocks: list = [Table(["figure", "value"], [
        ["tokenizer", audit["tokenizer"]], ["conversations checked", audit["checked"]],
        ["verdict", Status(audit["ok"], "ok" if audit["ok"] else "problems found")],
        *([["assistant-only loss", LOSS_MASK_WAYS[audit["loss_mask"]]]] if audit.get("loss_mask") else [])])]
    blocks.append(Bullets(list(audit["problems"]), "flags") if audit["problems"]
                  else Note("No problems found.", "muted"))
    return Section("audit", "Chat-template audit", blocks)
