"""What the evaluation report says, section by section, in a form both renderers share
(tunelab.evaluate.report writes it as Markdown and HTML).

Each builder reads its part of the report.json dict and returns tables, notes and charts, or
None when the run has no such part (a generative run has no confusion matrix; robustness,
fairness, latency ... are null when not measured), so the two formats always say the same
thing. The section model and both renderers are tunelab.report_shell's; strings stay raw here:
the renderers escape them."""
from __future__ import annotations

import math
from typing import Any

from tunelab import charts
from tunelab.evaluate.report_explanations import explanation_section
from tunelab.evaluate.report_preference import preference_section
from tunelab.evaluate.report_reward import reward_section, training_rewards_section
from tunelab.report_shell import Bullets, Chart, Note, Section, Status, Table, anchor, format_value

METRIC_ORDER = ("accuracy", "macro_f1", "mcc", "ece", "brier", "exact_match", "token_f1", "bleu", "chrf", "rouge1",
                "rouge2", "rougeL", "log_likelihood", "perplexity")
METRIC_NAMES = {"accuracy": "accuracy", "macro_f1": "macro-F1", "mcc": "MCC", "ece": "ECE", "brier": "Brier",
                "exact_match": "exact match", "token_f1": "token F1", "bleu": "BLEU", "chrf": "chrF",
                "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "log_likelihood": "log-likelihood",
                "perplexity": "perplexity", "tpr": "true-positive rate", "preference_accuracy": "preference accuracy",
                "margin": "margin (nats)", "chosen_log_likelihood": "chosen log-likelihood",
                "rejected_log_likelihood": "rejected log-likelihood"}
PRIMARY_METRICS = ("macro_f1", "exact_match", "token_f1")  # what a slice chart shows first
OPTIONAL_PARTS = {"baselines": "baselines", "calibration": "calibration", "slices": "slices",
                  "robustness": "robustness", "fairness": "fairness (no meta.group in the data)",
                  "forgetting": "forgetting (no general data given)", "overfitting": "over-fitting",
                  "explanations": "explanations (set eval.explain.examples)", "latency": "latency",
                  "kpi": "KPI and cost", "gate": "deploy gate (run with --gate)"}


def build_sections(report: dict[str, Any]) -> list[Section]:
    builders = (verdict_section, headline_section, comparisons_section, reward_section, preference_section,
                calibration_section,
                confusion_section, per_class_section, slices_section, robustness_section, fairness_section,
                forgetting_section, overfitting_section, training_rewards_section, explanation_section,
                latency_section, kpi_section, gate_section, timing_section)
    return [section for section in (build(report) for build in builders) if section]


def verdict_section(r: dict[str, Any]) -> Section:
    blocks: list = [Note(r.get("verdict") or "no verdict recorded", "verdict")]
    gate = r.get("gate")
    if gate:
        passed = sum(bool(c.get("passed")) for c in gate.get("checks") or [])
        blocks.append(Note(Status(bool(gate.get("passed")), f"Deploy gate {'passed' if gate.get('passed') else 'FAILED'}"
                                  f": {passed} of {len(gate.get('checks') or [])} checks pass.")))
    flags = r.get("flags") or []
    blocks.append(Bullets([str(flag) for flag in flags], "flags") if flags else Note("No flags raised.", "muted"))
    missing = [name for key, name in OPTIONAL_PARTS.items() if not r.get(key)]
    if missing:
        blocks.append(Note(f"Not in this run: {', '.join(missing)}.", "muted"))
    return Section("verdict", "Verdict", blocks)


def headline_section(r: dict[str, Any]) -> Section | None:
    if not r.get("metrics"):
        return None
    systems = {"tuned": {**r["metrics"], "source": r.get("model")}, **(r.get("baselines") or {})}
    columns = _metric_columns(systems.values())
    rows = [[name, *(m.get(c) for c in columns), m.get("examples"), m.get("source")] for name, m in systems.items()]
    return Section("headline", "Headline: tuned vs baselines",
                   [Table(["system", *map(_pretty, columns), "examples", "source"], rows)])


def comparisons_section(r: dict[str, Any]) -> Section | None:
    comparisons = r.get("comparisons") or {}
    if not comparisons:
        return None
    blocks, intervals = [], {}
    for name, by_metric in comparisons.items():
        first = next(iter(by_metric.values()), {})
        blocks.append(Note(f"tuned minus {name}: paired bootstrap over the same examples, "
                           f"{format_value(first.get('resamples'))} resamples, "
                           f"{_percent(first.get('confidence', 0.95), 0)} "
                           "intervals."))
        rows = []
        for metric, c in by_metric.items():
            verdict = c.get("verdict", "")
            rows.append([_pretty(metric), _signed(c.get("difference")),
                         f"{_signed(c.get('ci_low'))} to {_signed(c.get('ci_high'))}",
                         Status(True if verdict == "better" else False if verdict == "worse" else None, verdict)])
            scale = "unit" if all(abs(v) <= 1 for v in _numbers(c, "difference", "ci_low", "ci_high")) else metric
            intervals.setdefault(scale, []).append((f"{_pretty(metric)} vs {name}", c.get("difference"),
                                                    c.get("ci_low"), c.get("ci_high")))
        blocks.append(Table(["metric", "difference", "interval", "verdict"], rows))
    # metrics on a 0-1 scale share one plot; any other (perplexity, BLEU in points) gets its own
    plots = [Chart(charts.interval_plot("Difference tuned minus baseline, with its interval" +
                                        ("" if scale == "unit" else f": {_pretty(scale)}"), rows,
                                        chart_id=f"chart-comparisons-{anchor(scale)}"))
             for scale, rows in intervals.items()]
    return Section("comparisons", "Comparisons with intervals", plots + blocks)


def calibration_section(r: dict[str, Any]) -> Section | None:
    calibration = r.get("calibration")
    if not calibration:
        return None
    blocks: list = [Table(["figure", "value"], [["expected calibration error (ECE)", calibration.get("ece")],
                                                ["Brier score", calibration.get("brier")]])]
    bins = [b for b in calibration.get("bins") or [] if b.get("count")]
    if bins:
        blocks.append(Chart(charts.reliability_diagram("Reliability diagram", bins, chart_id="chart-reliability")))
        blocks.append(Table(["confidence", "examples", "mean confidence", "accuracy"],
                            [[f"{_fixed(b.get('low'))} to {_fixed(b.get('high'))}", b.get("count"), b.get("confidence"),
                              b.get("accuracy")] for b in bins]))
    return Section("calibration", "Calibration", blocks)


def confusion_section(r: dict[str, Any]) -> Section | None:
    metrics = r.get("metrics") or {}
    matrix = metrics.get("confusion_matrix")
    if not matrix:
        return None
    labels = [str(label) for label in r.get("labels") or metrics.get("per_class") or []]
    if len(labels) != len(matrix):
        labels = [str(i) for i in range(len(matrix))]
    return Section("confusion", "Confusion matrix", [
        Note("Rows are true labels, columns predicted labels (tuned model)."),
        Chart(charts.heatmap("Confusion matrix: shading is the share of the true label's row", matrix, labels, labels,
                             chart_id="chart-confusion")),
        Table(["true \\ predicted", *labels], [[label, *row] for label, row in zip(labels, matrix)],
              markdown_only=True)])


def per_class_section(r: dict[str, Any]) -> Section | None:
    per_class = (r.get("metrics") or {}).get("per_class")
    if not per_class:
        return None
    rows = [[label, m.get("precision"), m.get("recall"), m.get("f1"), m.get("support")] for label, m in per_class.items()]
    return Section("per-class", "Per class", [Table(["label", "precision", "recall", "F1", "support"], rows)])


def slices_section(r: dict[str, Any]) -> Section | None:
    slices = r.get("slices") or {}
    if not slices:
        return None
    blocks = []
    for kind, values in slices.items():
        columns = _metric_columns(values.values())
        blocks.append(Table([str(kind), "examples", *map(_pretty, columns)],
                            [[value, m.get("examples"), *(m.get(c) for c in columns)] for value, m in values.items()]))
        if columns:
            main = next((m for m in PRIMARY_METRICS if m in columns), columns[0])
            bars = {"all examples": {_pretty(main): (r.get("metrics") or {}).get(main)},
                    **{str(value): {_pretty(main): m.get(main)} for value, m in values.items()}}
            blocks.append(Chart(charts.grouped_bars(f"{_pretty(main)} by {kind}", bars,
                                                    chart_id=f"chart-slices-{anchor(kind)}")))
    return Section("slices", "Slices", blocks)


def robustness_section(r: dict[str, Any]) -> Section | None:
    robust = r.get("robustness")
    if not robust:
        return None
    metric, original = _pretty(robust.get("metric", "score")), robust.get("original")
    rows, bars = [["none (original)", original, None, None, None]], {"original": {metric: original}}
    for kind, p in (robust.get("perturbations") or {}).items():
        change = p.get("score") - original if _is_number(p.get("score")) and _is_number(original) else None
        rows.append([kind, p.get("score"), _signed(change), p.get("flip_rate"),
                     f"{format_value(p.get('flipped'))} of {format_value(p.get('originally_correct'))}"])
        bars[str(kind)] = {metric: p.get("score"), "flip rate": p.get("flip_rate")}
    return Section("robustness", "Robustness", [
        Note(f"The first {format_value(robust.get('examples'))} test examples re-run under each perturbation; "
             "the flip rate is the share of originally correct answers that became wrong."),
        Table(["perturbation", metric, "change", "flip rate", "correct answers flipped"], rows),
        Chart(charts.grouped_bars(f"{metric} and flip rate per perturbation", bars, chart_id="chart-robustness"))])


def fairness_section(r: dict[str, Any]) -> Section | None:
    fairness = r.get("fairness")
    if not fairness:
        return None
    groups = fairness.get("groups") or {}
    labels = list(dict.fromkeys(label for g in groups.values() for label in (g.get("tpr") or {})))
    columns = _metric_columns(groups.values(), exclude=("examples", "tpr"))
    threshold = fairness.get("threshold")
    blocks: list = [
        Note(Status(not fairness.get("flagged"), f"Largest true-positive-rate gap between groups "
                    f"{_percent(fairness.get('max_gap'))} (threshold {_percent(threshold)}): "
                    f"{'flagged' if fairness.get('flagged') else 'within the threshold'}.")),
        Table(["group", "examples", *(f"TPR {label}" for label in labels), *map(_pretty, columns)],
              [[group, g.get("examples"), *((g.get("tpr") or {}).get(label) for label in labels),
                *(g.get(c) for c in columns)] for group, g in groups.items()])]
    gaps = fairness.get("equal_opportunity_difference") or {}
    if gaps:
        blocks.append(Table(["label", "equal-opportunity difference (TPR gap)"],
                            [[label, Status(None if not _is_number(gap) or not _is_number(threshold) else
                                            gap <= threshold, format_value(gap))] for label, gap in gaps.items()]))
    if groups and labels:
        blocks.append(Chart(charts.grouped_bars("True-positive rate per group and label",
                                                {str(g): data.get("tpr") or {} for g, data in groups.items()},
                                                chart_id="chart-fairness")))
    return Section("fairness", "Fairness", blocks)


def forgetting_section(r: dict[str, Any]) -> Section | None:
    kept = r.get("forgetting")
    if not kept:
        return None
    return Section("forgetting", "Forgetting", [Table(["figure", "value"], [
        ["measure", kept.get("measure")], ["general data", kept.get("data")], ["base model", kept.get("base")],
        ["tuned model", kept.get("tuned")], ["retention (tuned / base)", kept.get("retention")],
        ["minimum retention", kept.get("min_retention")],
        ["result", Status(not kept.get("flagged"), "flagged" if kept.get("flagged") else "kept")]])])


def overfitting_section(r: dict[str, Any]) -> Section | None:
    fit = r.get("overfitting")
    if not fit:
        return None
    turned, best = fit.get("turned_at_step"), fit.get("best_step")
    rows = [["final train loss", fit.get("train_loss")], ["final validation loss", fit.get("eval_loss")],
            ["gap (validation minus train)", fit.get("gap")], ["validation-loss trend", fit.get("trend")],
            ["best step", best], ["validation loss turned up at step", turned],
            ["result", Status(not fit.get("flagged"), "flagged" if fit.get("flagged") else "no over-fitting seen")]]
    if fit.get("reason"):
        rows.append(["reason", fit["reason"]])
    blocks: list = [Table(["figure", "value"], rows)]
    curves = {str(name): points for name, points in (fit.get("curves") or {}).items() if points}
    if curves:
        markers = {f"turned up at step {turned}": turned} if _is_number(turned) else {}
        if _is_number(best) and best != turned:
            markers[f"best step {best}"] = best
        blocks.append(Chart(charts.line_chart("Training and validation loss", curves, chart_id="chart-loss",
                                              x_label="step", y_label="loss", markers=markers)))
    return Section("overfitting", "Over-fitting", blocks)


def latency_section(r: dict[str, Any]) -> Section | None:
    latency = r.get("latency")
    if not latency or not latency.get("by_batch_size"):
        return None
    by_size = sorted(latency["by_batch_size"].items(), key=lambda item: _sort_key(item[0]))
    rows = [[size, m.get("p50_ms"), m.get("p95_ms"), m.get("p99_ms"), m.get("requests_per_s"), m.get("tokens_per_s"),
             len(m.get("samples_ms") or [])] for size, m in by_size]
    blocks: list = [Note(f"Measured on {latency.get('device') or r.get('device') or 'an unrecorded device'}."),
                    Table(["batch size", "p50 (ms)", "p95 (ms)", "p99 (ms)", "requests/s", "tokens/s", "samples"], rows)]
    samples = {str(size): m.get("samples_ms") or [] for size, m in by_size}
    if any(samples.values()):
        blocks.append(Chart(charts.box_plot("Latency distribution per batch size", samples, chart_id="chart-latency",
                                            value_label="latency (ms)", category_label="batch size")))
    return Section("latency", "Latency", blocks)


def kpi_section(r: dict[str, Any]) -> Section | None:
    kpi = r.get("kpi")
    if not kpi:
        return None
    rows = []
    for area, figures in kpi.items():
        if isinstance(figures, dict):
            rows += _kpi_rows(str(area), figures, ())
        else:
            rows.append([area, "", figures, "", "not computed: no eval.cost setting given" if figures is None else ""])
    return Section("kpi", "KPI and cost", [Note("Each figure with where it comes from."),
                                           Table(["area", "figure", "value", "source", "note"], rows)])


def _kpi_rows(area: str, figures: dict[str, Any], path: tuple[str, ...]) -> list[list[Any]]:
    """Figures ({"value", "source", extras...}) as rows, nested groups (baselines, inputs ...)
    flattened into "group / name"; lists and plain values (missing settings) as they are."""
    rows = []
    for name, item in figures.items():
        label = " / ".join(path + (str(name).replace("_", " "),))
        if isinstance(item, dict) and "value" in item:
            extras = ", ".join(f"{key.replace('_', ' ')} {format_value(value)}" for key, value in item.items()
                               if key not in ("value", "source"))
            rows.append([area, label, item["value"], item.get("source"), extras])
        elif isinstance(item, dict):
            rows += _kpi_rows(area, item, path + (str(name).replace("_", " "),))
        else:
            rows.append([area, label, ", ".join(map(str, item)) if isinstance(item, list) else item, "", ""])
    return rows


def gate_section(r: dict[str, Any]) -> Section | None:
    gate = r.get("gate")
    if not gate:
        return None
    checks = gate.get("checks") or []
    reasons = any(c.get("reason") for c in checks)
    rows = [[c.get("metric"), f"{c.get('op', '')} {format_value(c.get('threshold'))}", c.get("value"),
             Status(bool(c.get("passed")), "pass" if c.get("passed") else "FAIL"),
             *([c.get("reason") or ""] if reasons else [])] for c in checks]
    return Section("gate", "Deploy gate", [Note(Status(bool(gate.get("passed")),
                                                       "passed" if gate.get("passed") else "FAILED")),
                                           Table(["metric", "condition", "value", "result",
                                                  *(["reason"] if reasons else [])], rows)])


def timing_section(r: dict[str, Any]) -> Section | None:
    timing = r.get("timing_s")
    if not timing:
        return None
    return Section("timing", "Timing", [Table(["part", "seconds"], [[name, s] for name, s in timing.items()])])


def meta_fields(r: dict[str, Any]) -> list[tuple[str, Any]]:
    fields = [("task", r.get("task")), ("model", r.get("model")), ("data", r.get("data")), ("device", r.get("device")),
              ("test examples", format_value((r.get("metrics") or {}).get("examples"))), ("export", _export(r))]
    return [(name, value) for name, value in fields if value not in (None, "n/a")]


def _export(r: dict[str, Any]) -> str | None:
    export = r.get("export")
    if not export:
        return None
    kind = f"{export['format']}{' int8' if export.get('int8') else ''}"
    return f"{kind} export of {export['source_run']} (compared with it below)"


def _metric_columns(systems, exclude=("examples", "source")) -> list[str]:
    present = list(dict.fromkeys(key for m in systems for key, value in m.items()
                                 if key not in exclude and _is_number(value)))
    return [m for m in METRIC_ORDER if m in present] + [m for m in present if m not in METRIC_ORDER]


def _signed(value) -> str:
    return f"{value:+.4f}" if _is_number(value) else "n/a"


def _fixed(value) -> str:
    return f"{value:.2f}" if _is_number(value) else "n/a"


def _percent(value, decimals: int = 1) -> str:
    return f"{value:.{decimals}%}" if _is_number(value) else "n/a"


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers(mapping: dict, *keys: str) -> list[float]:
    return [mapping[k] for k in keys if _is_number(mapping.get(k)) and math.isfinite(mapping[k])]


def _pretty(metric) -> str:
    return METRIC_NAMES.get(str(metric), str(metric).replace("_", " "))


def _sort_key(size: str):
    return (0, int(size), "") if str(size).isdigit() else (1, 0, str(size))
