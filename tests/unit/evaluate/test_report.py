"""report.md and report.html from report.json dicts: a synthetic report with every section filled
(classification, baselines, a label that is an HTML tag), a generative one, and a minimal one
with only metrics and a verdict. Every section shows its heading and figures, every SVG parses
as XML, and nothing from the data reaches the page unescaped."""
from __future__ import annotations

import copy
import re
import xml.etree.ElementTree as ET

import pytest

from tunelab import charts
from tunelab.evaluate.report import render_html, render_markdown
from tunelab.report_shell import format_value

EVIL = "<script>alert(1)</script>"
LABELS = ["negative", "neutral", EVIL]


def _per_class(values):
    return {label: {"precision": p, "recall": r, "f1": f, "support": s} for label, (p, r, f, s) in zip(LABELS, values)}


def _comparison(difference, low, high, verdict):
    return {"difference": difference, "ci_low": low, "ci_high": high, "confidence": 0.95, "resamples": 1000,
            "verdict": verdict}


def full_report() -> dict:
    metrics = {"accuracy": 0.8125, "macro_f1": 0.7931, "mcc": 0.7012, "ece": 0.0734, "brier": 0.2871,
               "per_class": _per_class([(0.9, 0.85, 0.8743, 20), (0.7, 0.75, 0.7241, 16), (0.8, 0.78, 0.7899, 12)]),
               "confusion_matrix": [[17, 2, 1], [3, 12, 1], [1, 2, 9]], "examples": 48}
    return {
        "task": "classification", "model": "runs/sentiment-lora", "data": "prepared/test.jsonl",
        "device": "cpu: AMD EPYC 7B13, 2 threads", "labels": LABELS, "metrics": metrics,
        "baselines": {
            "probe": {**metrics, "accuracy": 0.6875, "macro_f1": 0.6512, "mcc": 0.5123, "source": "MiniLM-L6"},
            "base": {**metrics, "accuracy": 0.3333, "macro_f1": 0.1667, "mcc": 0.0,
                     "source": "MiniLM-L6 (untrained head)"}},
        "comparisons": {
            "probe": {"accuracy": _comparison(0.125, 0.0417, 0.2083, "better"),
                      "macro_f1": _comparison(0.1419, 0.0391, 0.2377, "better"),
                      "mcc": _comparison(0.1889, -0.0211, 0.3712, "no significant difference")},
            "base": {"accuracy": _comparison(0.4792, 0.3542, 0.6042, "better"),
                     "macro_f1": _comparison(0.6264, 0.5128, 0.7391, "better"),
                     "mcc": _comparison(0.7012, 0.5531, 0.8307, "better")}},
        "calibration": {"ece": 0.0734, "brier": 0.2871, "bins": [
            {"low": 0.4, "high": 0.6, "count": 10, "confidence": 0.5213, "accuracy": 0.4},
            {"low": 0.6, "high": 0.8, "count": 18, "confidence": 0.7102, "accuracy": 0.7778},
            {"low": 0.8, "high": 1.0, "count": 20, "confidence": 0.8931, "accuracy": 0.95},
            {"low": 0.0, "high": 0.2, "count": 0, "confidence": None, "accuracy": None}]},
        "slices": {"group": {"en": {"accuracy": 0.84, "macro_f1": 0.8213, "mcc": 0.7514, "examples": 25},
                             "de": {"accuracy": 0.7826, "macro_f1": 0.7607, "mcc": 0.6633, "examples": 23}}},
        "robustness": {"metric": "macro_f1", "original": 0.7931, "examples": 48, "perturbations": {
            "typos": {"score": 0.7012, "flip_rate": 0.1282, "flipped": 5, "originally_correct": 39},
            "casing": {"score": 0.7931, "flip_rate": 0.0, "flipped": 0, "originally_correct": 39}}},
        "fairness": {"metric": "tpr", "groups": {
            "en": {"examples": 25, "tpr": {"negative": 0.9, "neutral": 0.8, EVIL: None}, "macro_f1": 0.8213},
            "de": {"examples": 23, "tpr": {"negative": 0.8, "neutral": 0.7, EVIL: 0.75}, "macro_f1": 0.7607}},
            "equal_opportunity_difference": {"negative": 0.1, "neutral": 0.1, EVIL: 0.0},
            "max_gap": 0.1, "threshold": 0.03, "flagged": True},
        "forgetting": {"measure": "perplexity", "tuned": 41.27, "base": 35.02, "retention": 0.8486,
                       "min_retention": 0.9, "flagged": True, "data": "general.jsonl"},
        "overfitting": {"train_loss": 0.1123, "eval_loss": 0.6521, "gap": 0.5398, "trend": "rising", "best_step": 40,
                        "turned_at_step": 60, "flagged": True,
                        "curves": {"train": [[10, 1.05], [20, 0.71], [30, 0.45], [40, 0.31], [50, 0.2], [60, 0.15],
                                             [70, 0.1123]],
                                   "eval": [[20, 0.81], [40, 0.58], [60, 0.6], [70, 0.6521]]}},
        "latency": {"device": "cpu: AMD EPYC 7B13, 2 threads", "by_batch_size": {
            "8": {"p50_ms": 21.4, "p95_ms": 25.9, "p99_ms": 31.0, "requests_per_s": 371.2, "tokens_per_s": None,
                  "samples_ms": [20.1, 21.4, 22.0, 25.9, 31.0, 21.0, 20.7, 58.3]},
            "1": {"p50_ms": 4.12, "p95_ms": 5.31, "p99_ms": 6.02, "requests_per_s": 241.7, "tokens_per_s": None,
                  "samples_ms": [4.1, 4.12, 4.3, 5.31, 6.02, 3.98, 4.05]}}},
        "kpi": {"quality": {"metric": "macro_f1", "tuned": {"value": 0.7931, "source": "report.metrics.macro_f1"},
                            "baselines": {"probe": {"value": 0.6512, "source": "report.baselines.probe.macro_f1"}},
                            "differences": {"probe": {"value": 0.1419, "source": "report.comparisons.probe.macro_f1",
                                                      "ci_low": 0.0391, "ci_high": 0.2377, "verdict": "better"}}},
                "latency": {"p95_ms": {"value": 5.31, "source": "measured: latency at batch 1 on cpu"}},
                "cost": {"inputs": {"gpu_hour_usd": {"value": 2.5, "source": "config eval.cost.gpu_hour_usd"}},
                         "training_usd": {"value": 412.5, "source": "training_hours x gpu_hour_usd"},
                         "payback_months": {"value": None, "source": "training_usd / monthly_saving_usd",
                                            "reason": "self-hosting saves nothing per month"},
                         "missing": ["eval.cost.monthly_requests"],
                         "omitted": {"monthly_api_usd": "needs eval.cost.monthly_requests"}}},
        "gate": {"passed": False, "checks": [
            {"metric": "macro_f1", "op": ">=", "threshold": 0.7, "value": 0.7931, "passed": True},
            {"metric": "ece", "op": "<=", "threshold": 0.05, "value": 0.0734, "passed": False,
             "reason": "ece 0.0734 is above the maximum 0.05"}]},
        "flags": ["fairness: the true-positive-rate gap between groups is 10.0%, above the 3.0% threshold",
                  "over-fitting: validation loss turned up"],
        "explanations": {
            "method": "integrated_gradients", "steps": 16, "examples": 40, "unit": "word", "integration_error": 0.0213,
            "by_class": {"negative": [{"token": "refund", "total": 3.2145, "mean": 0.4018, "examples": 8}],
                         "neutral": [], EVIL: [{"token": "<b>", "total": 0.5, "mean": 0.5, "examples": 1}]},
            "errors": [{"text": f"great {EVIL} service", "label": "negative", "predicted": "neutral", "confidence": 0.61,
                        "explanation": [{"token": "great", "start": 0, "end": 5, "score": 0.4},
                                        {"token": EVIL, "start": 6, "end": 31, "score": -0.2},
                                        {"token": "service", "start": 32, "end": 39, "score": 0.05}]}],
            "faithfulness": {"k": 3, "examples": 38, "top_k_drop": 0.2734, "random_drop": 0.0412,
                             "top_k_beats_random": 0.8947, "random_draws": 5}},
        "timing_s": {"tuned": 1.25, "probe": 0.4, "base": 0.31},
        "verdict": "tuned macro-F1 0.793, MCC 0.701; vs probe 0.651: better (diff +0.142, 95% CI +0.039 to +0.238)",
    }


def generative_report() -> dict:
    metrics = {"exact_match": 0.62, "token_f1": 0.75, "bleu": 41.3, "chrf": 58.2, "rouge1": 0.71, "rouge2": 0.52,
               "rougeL": 0.69, "log_likelihood": -1.21, "perplexity": 3.35, "examples": 50}
    return {"task": "generative", "model": "runs/llama", "data": "test.jsonl", "device": "cuda: NVIDIA H100",
            "metrics": metrics,
            "baselines": {"base": {**metrics, "exact_match": 0.1, "bleu": 12.0, "perplexity": 9.8, "source": "base"}},
            "comparisons": {"base": {"exact_match": _comparison(0.52, 0.4, 0.64, "better"),
                                     "bleu": _comparison(29.3, 21.0, 37.5, "better")}},
            "calibration": None, "slices": {}, "robustness": None, "fairness": None, "forgetting": None,
            "overfitting": None, "latency": None, "kpi": None, "gate": None, "flags": [], "timing_s": {},
            "verdict": "tuned exact match 0.620, token F1 0.750"}


def minimal_report() -> dict:
    return {"metrics": {"accuracy": 0.5, "macro_f1": 0.4}, "verdict": "tuned macro-F1 0.400"}


def svgs_of(page: str) -> list[ET.Element]:
    return [ET.fromstring(svg) for svg in re.findall(r"<svg\b.*?</svg>", page, re.S)]


def test_full_report_html_has_every_section_its_figures_and_charts():
    page = render_html(full_report())
    headings = re.findall(r"<h2>(.*?)</h2>", page)
    assert headings == ["Verdict", "Headline: tuned vs baselines", "Comparisons with intervals", "Calibration",
                        "Confusion matrix", "Per class", "Slices", "Robustness", "Fairness", "Forgetting",
                        "Over-fitting", "Explanations", "Latency", "KPI and cost", "Deploy gate", "Timing"]
    for figure in ["0.7931", "0.6512", "+0.1419", "+0.0391 to +0.2377", "no significant difference", "0.0734",
                   "0.2871", "0.7899", "0.7607", "0.1282", "5 of 39", "10.0%", "0.8486", "rising", "21.4", "25.9",
                   "412.5", "training_hours x gpu_hour_usd", "differences / probe", "ci low 0.0391",
                   "self-hosting saves nothing per month", "inputs / gpu hour usd", "FAIL",
                   "ece 0.0734 is above the maximum 0.05", "MiniLM-L6 (untrained head)",
                   "cpu: AMD EPYC 7B13, 2 threads", "over-fitting: validation loss turned up"]:
        assert figure in page, figure
    assert page.index("tuned macro-F1 0.793") < page.index("<h2>Headline")  # verdict and flags lead
    charts_by_id = {re.search(r'<figure id="([^"]+)"', m).group(1): m
                    for m in re.findall(r"<figure .*?</figure>", page, re.S)}
    assert set(charts_by_id) == {"chart-comparisons-unit", "chart-reliability", "chart-confusion", "chart-slices-group",
                                 "chart-robustness", "chart-fairness", "chart-loss", "chart-latency"}
    svgs = svgs_of(page)
    assert len(svgs) == 8
    ns = "{http://www.w3.org/2000/svg}"
    for svg in svgs:
        assert any(element.tag in {f"{ns}rect", f"{ns}path", f"{ns}circle"} for element in svg.iter())
    loss = ET.fromstring(re.search(r"<svg\b.*?</svg>", charts_by_id["chart-loss"], re.S).group(0))
    assert len(loss.findall(f"{ns}path")) == 2  # train and eval curves
    assert "turned up at step 60" in charts_by_id["chart-loss"] and "best step 40" in charts_by_id["chart-loss"]
    forest = charts_by_id["chart-comparisons-unit"]
    assert forest.count("<circle") == 6  # 3 metrics x 2 baselines
    assert "<script" not in page.lower() and "<img" not in page


def test_latency_rows_are_ordered_by_batch_size_and_the_box_plot_marks_the_outlier():
    page = render_html(full_report())
    latency = page[page.index('id="latency"'):page.index('id="kpi"')]
    assert latency.index("4.12") < latency.index("21.4")  # batch 1 before batch 8 although "8" came first
    assert "58.3" in latency.split('id="chart-latency"')[1]  # the 58.3 ms sample lies beyond 1.5 IQR: a dot


def test_data_strings_are_escaped_everywhere():
    report = full_report()
    report["model"] = 'run"<b>bold</b>'
    report["flags"].append("<img src=x onerror=alert(1)>")
    page = render_html(report)
    assert EVIL not in page and "<b>bold</b>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    markdown = render_markdown(report)
    assert EVIL not in markdown and "&lt;script&gt;" in markdown and "<img" not in markdown


def test_full_report_markdown_has_every_section_and_table():
    markdown = render_markdown(full_report())
    headings = re.findall(r"^## (.*)$", markdown, re.M)
    assert headings == ["Verdict", "Headline: tuned vs baselines", "Comparisons with intervals", "Calibration",
                        "Confusion matrix", "Per class", "Slices", "Robustness", "Fairness", "Forgetting",
                        "Over-fitting", "Explanations", "Latency", "KPI and cost", "Deploy gate", "Timing"]
    assert "| tuned | 0.8125 | 0.7931 | 0.7012 | 0.0734 | 0.2871 | 48 | runs/sentiment-lora |" in markdown
    assert "| negative | 17 | 2 | 1 |" in markdown  # the confusion matrix as a table: no charts in Markdown
    assert "| macro-F1 | +0.1419 | +0.0391 to +0.2377 | better |" in markdown
    assert "| 1 | 4.12 | 5.31 | 6.02 | 241.7 | n/a | 7 |" in markdown
    assert "| ece | <= 0.0500 | 0.0734 | FAIL | ece 0.0734 is above the maximum 0.05 |" in markdown.replace("&lt;", "<")
    assert "| cost | missing | eval.cost.monthly_requests |  |  |" in markdown
    assert "<svg" not in markdown
    assert "| negative | refund | 3.215 | 0.4018 | 8 |" in markdown
    assert "towards the prediction: great (+0.400), service (+0.050); against it: &lt;script&gt;" in markdown


def test_explanation_section_highlights_each_word_of_an_error_and_reports_the_deletion_test():
    page = render_html(full_report())
    section = page[page.index('<section id="explanations">'):page.index('<section id="latency">')]
    assert "removing the top-attributed 3 words lowers the predicted label&#x27;s probability by 0.273" in section
    assert "against 0.041 for 3 random words (faithful; larger in 89% of 38 texts)" in section
    assert "to within 2.1% (median)" in section and "true negative, predicted neutral (confidence 0.61)" in section
    marks = re.findall(r'<mark style="background: rgba\(([\d,]+),([\d.]+)\)" title="([^"]+)">(.*?)</mark>', section)
    assert [(colour, title, text) for colour, _, title, text in marks] == [
        ("26,127,55", "+0.4000", "great"), ("207,34,46", "-0.2000", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ("26,127,55", "+0.0500", "service")]
    assert float(marks[0][1]) > float(marks[1][1]) > float(marks[2][1])  # shade follows |score|
    report = full_report()
    report["explanations"]["faithfulness"].update(top_k_drop=0.01, random_drop=0.02)
    assert "NOT faithful" in render_html(report)


@pytest.mark.parametrize("make", [minimal_report, generative_report])
def test_partial_reports_render_only_the_sections_they_have(make):
    report = make()
    page, markdown = render_html(report), render_markdown(report)
    for svg in svgs_of(page):
        assert svg.tag.endswith("svg")
    assert report["verdict"] in page and report["verdict"] in markdown
    for absent in ("Calibration", "Confusion matrix", "Robustness", "Fairness", "Latency", "Deploy gate"):
        assert f"<h2>{absent}</h2>" not in page and f"## {absent}\n" not in markdown
    assert "Not in this run:" in page and "fairness" in page.split("Not in this run:")[1]


def test_generative_comparisons_plot_points_metrics_on_their_own_scale():
    page = render_html(generative_report())
    assert "BLEU" in page and "exact match" in page and "perplexity" in page
    # exact match differences (0-1) and BLEU differences (points) are not squeezed into one axis
    assert 'id="chart-comparisons-unit"' in page and 'id="chart-comparisons-bleu"' in page


def test_a_report_without_the_optional_keys_still_renders():
    report = copy.deepcopy(full_report())
    for key in ("baselines", "comparisons", "calibration", "slices", "robustness", "fairness", "forgetting",
                "overfitting", "explanations", "latency", "kpi", "gate", "flags", "timing_s", "labels"):
        report.pop(key)
    page = render_html(report)
    assert re.findall(r"<h2>(.*?)</h2>", page) == ["Verdict", "Headline: tuned vs baselines", "Confusion matrix",
                                                   "Per class"]
    assert "No flags raised." in page


def test_charts_cope_with_empty_and_non_finite_data():
    figures = [charts.line_chart("empty", {"train": []}, chart_id="a"),
               charts.line_chart("not finite", {"train": [[1, float("nan")], [2, 0.5]]}, chart_id="b",
                                 markers={"x": None}),
               charts.heatmap("zero", [[0, 0], [0, 0]], ["a", "b"], ["a", "b"], chart_id="c"),
               charts.reliability_diagram("none", [], chart_id="d"),
               charts.box_plot("empty", {"1": []}, chart_id="e"),
               charts.grouped_bars("neg", {"x": {"mcc": -0.4, "f1": None}}, chart_id="f"),
               charts.interval_plot("one", [("m", 0.0, 0.0, 0.0)], chart_id="g"),
               charts.bar_chart("bars", {"a": 1, "<b>": 2}, chart_id="h"),
               charts.histogram("hist", [0, 1, 2], [3, 4], chart_id="i")]
    for figure in figures:
        ET.fromstring(re.search(r"<svg\b.*?</svg>", figure, re.S).group(0))
        assert "nan" not in figure.lower() and "inf" not in figure.lower()


def test_ticks_are_round_and_cover_the_values():
    assert charts._ticks([0.0, 0.93]) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert charts._ticks([3.98, 58.3]) == [0, 20, 40, 60]
    ticks = charts._ticks([-0.021, 0.7391])
    assert ticks[0] <= -0.021 and ticks[-1] >= 0.7391 and 0 in ticks


def test_figures_are_formatted_for_reading():
    # scores keep four decimals (a perfect 1.0 too, so columns line up); other figures 4 significant digits
    assert [format_value(v) for v in (1.0, 0.0, 0.73412, 0.00012, 21.4, 241.66, 12345.6, 48, None, True)] == \
        ["1.0000", "0.0000", "0.7341", "0.00012", "21.4", "241.7", "12,346", "48", "n/a", "yes"]
    plot = charts.interval_plot("d", [("bleu", 29.3, 21.0, 37.5), ("f1", 0.0, -0.02, 0.05)], chart_id="x")
    assert "+29.3 [+21.0, +37.5]" in plot and "+0.000 [-0.020, +0.050]" in plot
