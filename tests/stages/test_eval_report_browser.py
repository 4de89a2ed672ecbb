"""report.html as a person opens it: a tiny BERT classifier is trained here for a few steps,
`tunelab.evaluate.run.run` evaluates it (baselines, calibration, slices, fairness, robustness,
latency, gate), and headless Chromium loads the report.html it wrote. The DOM Chromium builds
must hold the verdict and every chart the report has data for (SVG with shapes), and nothing
that needs the network; the screenshot must show the drawn charts, not a blank page."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import write_jsonl

from tunelab.config import EvalConfig, load_config

TOKENIZER = Path(__file__).resolve().parents[1] / "assets" / "tiny-chat-tokenizer"
WORDS = {"negative": "bad awful poor", "neutral": "table chair door", "positive": "good great fine"}
CHART_BLUE = (0x4C, 0x78, 0xA8)  # charts.PALETTE[0]: legend squares are drawn in it, opaque


def records(n: int, start: int) -> list[dict]:
    labels = list(WORDS)
    return [{"text": f"{WORDS[labels[i % 3]]} {i}", "label": labels[i % 3], "meta": {"group": "en" if i % 2 else "de"}}
            for i in range(start, start + n)]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> Path:
    """The eval output directory of a real run: tiny BERT (2 blocks, hidden 32) fully fine-tuned
    for 8 steps with an evaluation every 2, evaluated against the probe and base baselines."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from tunelab.evaluate.run import run as evaluate
    from tunelab.train import run as train_run
    root = tmp_path_factory.mktemp("eval-report")
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=128,
                         pad_token_id=tokenizer.pad_token_id)).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    data = root / "data"
    data.mkdir()
    write_jsonl(data / "train.jsonl", records(48, 0))
    write_jsonl(data / "val.jsonl", records(12, 100))
    write_jsonl(data / "test.jsonl", records(24, 200))
    settings = {"model": root / "base", "data": data, "method": "full", "output_dir": root / "run", "max_steps": 8,
                "eval_steps": 2, "batch_size": 4, "max_length": 64, "warmup": 0, "logging_steps": 1, "lr": 5e-3,
                "tracking.backend": "none", "seed": 0}
    with pytest.MonkeyPatch.context() as patch:  # a model of a few kB: no free-memory pre-flight
        patch.setattr(train_run, "preflight_memory", lambda *args, **kwargs: None)
        train_run.run(load_config(None, [f"train.{key}={value}" for key, value in settings.items()]))
    cfg = EvalConfig(model=str(root / "run"), data=str(data / "test.jsonl"), out_dir=str(root / "eval"),
                     baselines=["probe", "base"], resamples=200, latency={"batch_sizes": [1, 8], "requests": 16},
                     gate={"min": {"macro_f1": 0.5}, "max": {"ece": 0.05}, "enforce": True})
    evaluate(cfg)
    return root / "eval"


@pytest.mark.slow
def test_report_html_renders_in_chromium_with_its_charts(browser, evaluated):
    # `browser` (tests/stages/conftest.py) is session-scoped: without Chromium this skips before training
    page = evaluated / "report.html"
    report = json.loads((evaluated / "report.json").read_text())
    assert page.is_file(), "run() writes report.html beside report.json"

    outline = browser.open(page)
    text = outline.page_text
    assert report["verdict"] in text and "Deploy gate FAILED" in text  # ece 0.05 is out of reach of 8 steps
    for heading in ("Headline: tuned vs baselines", "Comparisons with intervals", "Calibration", "Confusion matrix",
                    "Per class", "Slices", "Robustness", "Fairness", "Latency", "KPI and cost", "Deploy gate"):
        assert heading in text
    expected = {"chart-comparisons-unit": "circle", "chart-reliability": "rect", "chart-confusion": "rect",
                "chart-slices-group": "rect", "chart-robustness": "rect", "chart-fairness": "rect",
                "chart-latency": "rect"}
    if (report["overfitting"] or {}).get("curves"):
        expected["chart-loss"] = "path"
    outline.assert_charts(expected)
    assert outline.shapes["chart-confusion"]["rect"] == 9  # 3 x 3 cells
    assert outline.shapes["chart-comparisons-unit"]["circle"] == 6  # 3 headline metrics x 2 baselines
    assert outline.shapes["chart-latency"]["rect"] == 2  # one box per batch size
    per_class = outline.table("per-class")
    assert per_class[0] == ["label", "precision", "recall", "F1", "support"]
    assert sorted(row[0] for row in per_class[1:]) == sorted(report["metrics"]["per_class"])
    outline.assert_self_contained()
    browser.assert_painted(page, {"chart blue": CHART_BLUE})  # SVG fills painted
