"""Evaluation by a grader: the training-reward curves read from metrics.jsonl, the report's reward
sections, and `tunelab eval` with a grader on chat and on prompt records (the mean reward of tuned
and baseline, each answer graded, compared with a paired bootstrap interval)."""
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tunelab.config import load_config
from tunelab.errors import TunelabError
from tunelab.evaluate import run as eval_run
from tunelab.evaluate.overfitting import reward_curves
from tunelab.evaluate.report import render_html, render_markdown
from tunelab.graders import grade


def test_reward_curves_read_the_last_rft_stage_of_metrics_jsonl(tmp_path):
    rows = [{"step": 1, "stage": "sft", "loss": 2.0},
            {"step": 1, "stage": "rft", "loss": 0.0, "reward": 0.1, "reward_std": 0.3, "kl": 0.0,
             "completions/mean_length": 6.0},
            {"step": 2, "stage": "rft", "loss": 0.0, "reward": 0.2, "reward_std": 0.4, "kl": 0.05,
             "completions/mean_length": 5.0},
            {"step": 2, "stage": "rft", "loss": 0.0, "reward": 0.25, "reward_std": 0.4, "kl": 0.06,  # resumed: wins
             "completions/mean_length": 5.5},
            {"step": 2, "stage": "rft", "eval_reward": 0.3, "eval_kl": 0.07},
            {"step": 2, "stage": "rft", "train_loss": 0.0, "train_runtime": 3.0}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    curves = reward_curves(path)
    assert curves["stage"] == "rft"
    assert curves["curves"]["reward"] == [[1, 0.1], [2, 0.25]]
    assert curves["curves"]["completion_length"] == [[1, 6.0], [2, 5.5]] and curves["curves"]["kl"][-1] == [2, 0.06]
    assert curves["curves"]["eval_reward"] == [[2, 0.3]]
    assert curves["first"]["reward"] == 0.1 and curves["last"]["reward"] == 0.25
    path.write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
    assert reward_curves(path) is None and reward_curves(tmp_path / "missing.jsonl") is None


def reward_report() -> dict:
    systems = {"tuned": {"mean": 0.79, "ci_low": 0.74, "ci_high": 0.83, "pass_rate": None, "grader_failures": 0},
               "base": {"mean": 0.51, "ci_low": 0.45, "ci_high": 0.57, "pass_rate": None, "grader_failures": 2}}
    return {"task": "rft", "model": "runs/rft", "metrics": {"reward": 0.79, "reward_std": 0.41, "examples": 300},
            "baselines": {"base": {"reward": 0.51, "source": "runs/sft"}},
            "comparisons": {"base": {"reward": {"difference": 0.28, "ci_low": 0.217, "ci_high": 0.337,
                                                "confidence": 0.95, "resamples": 1000, "verdict": "better"}}},
            "reward": {"grader": {"name": "reversed", "type": "string_check", "pass_threshold": None},
                       "confidence": 0.95, "systems": systems, "errors_by_kind": {"sample_parse_error": 3},
                       "worst": [{"example": 2, "score": 0.0, "reason": "'<b>x</b>' is not equal to 'y'",
                                  "answer": "<b>x</b>", "prompt": "frnehv"}]},
            "training_rewards": {"stage": None, "curves": {"reward": [[1, 0.03], [40, 0.3], [80, 0.34]],
                                                           "kl": [[1, 0.0], [80, 0.24]],
                                                           "completion_length": [[1, 6.5], [80, 5.6]]},
                                 "first": {"reward": 0.03, "kl": 0.0, "completion_length": 6.5},
                                 "last": {"reward": 0.34, "kl": 0.24, "completion_length": 5.6}},
            "flags": [], "verdict": "tuned mean reward 0.790; vs base 0.510: better"}


def test_the_report_shows_the_reward_and_training_reward_sections():
    report = reward_report()
    page, markdown = render_html(report), render_markdown(report)
    for title in ("Reward (grader)", "Training rewards (reinforcement fine-tuning)"):
        assert f"<h2>{title}</h2>" in page and f"## {title}" in markdown
    assert "0.7400 to 0.8300" in markdown and "sample_parse_error" in markdown
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page  # model output escaped
    assert 'id="chart-rft-reward"' in page and 'id="chart-rft-kl"' in page and 'id="chart-rft-tokens"' in page
    for svg in re.findall(r"<svg\b.*?</svg>", page, re.S):
        ET.fromstring(svg)
    assert "| mean reward (sampled answers) | 0.0300 | 0.3400 |" in markdown


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    from transformers import AutoTokenizer

    from tiny_models import build_tiny_llama
    root = tmp_path_factory.mktemp("reward-eval")
    tokenizer = AutoTokenizer.from_pretrained(Path(__file__).parents[2] / "assets" / "tiny-chat-tokenizer")
    return (build_tiny_llama(root / "tuned", tokenizer, hidden=32, intermediate=64, seed=1),
            build_tiny_llama(root / "other", tokenizer, hidden=32, intermediate=64, seed=2))


FUZZY = {"type": "text_similarity", "name": "close", "input": "{{ sample.output_text }}",
         "reference": "{{ item.answer }}", "evaluation_metric": "fuzzy_match", "pass_threshold": 0.1}
FAST = ["eval.resamples=200", "eval.latency.batch_sizes=[1]", "eval.latency.requests=2",
        "eval.generation.max_new_tokens=6", "eval.robustness.max_examples=4"]


def test_eval_with_a_grader_on_chat_records_adds_the_reward(two_models, tmp_path, write_jsonl):
    tuned, other = two_models
    records = [{"messages": [{"role": "user", "content": f"what is {i} plus one"},
                             {"role": "assistant", "content": f"it is {i + 1}"}], "answer": f"it is {i + 1}"}
               for i in range(12)]
    grader = tmp_path / "grader.json"
    grader.write_text(json.dumps(FUZZY))
    settings = load_config(None, [*FAST, f"eval.grader={grader}", f"eval.baselines=[{other}]", f"eval.model={tuned}",
                                  f"eval.data={write_jsonl('test.jsonl', records)}",
                                  f"eval.out_dir={tmp_path / 'eval'}"]).eval
    report = eval_run.run(settings).report
    assert report["task"] == "generative" and "exact_match" in report["metrics"]
    predictions = [json.loads(line)["prediction"] for line in (tmp_path / "eval" / "predictions.jsonl").open()]
    expected = sum(grade(FUZZY, p, r).score for p, r in zip(predictions, records)) / len(records)
    assert report["metrics"]["reward"] == pytest.approx(expected)  # each answer graded against its record
    assert {"reward", "exact_match"} <= report["comparisons"][str(other)].keys()
    assert report["reward"]["systems"]["tuned"]["mean"] == pytest.approx(expected)
    assert "pass_rate" in report["metrics"] and len(report["reward"]["worst"]) == 10


def test_eval_on_prompt_records_makes_the_reward_the_headline(two_models, tmp_path, write_jsonl):
    tuned, other = two_models
    prompts = [{"messages": [{"role": "user", "content": f"what is {i} plus one"}], "answer": f"it is {i + 1}"}
               for i in range(12)]
    data = write_jsonl("prompts.jsonl", prompts)
    where = [f"eval.model={tuned}", f"eval.data={data}"]
    with pytest.raises(TunelabError, match="only a grader can score, and none is given; set eval.grader"):
        eval_run.run(load_config(None, [*FAST, *where, f"eval.out_dir={tmp_path / 'none'}"]).eval)
    grader = tmp_path / "grader.json"
    grader.write_text(json.dumps(FUZZY))
    settings = load_config(None, [*FAST, *where, f"eval.grader={grader}", f"eval.baselines=[{other}]",
                                  f"eval.out_dir={tmp_path / 'eval'}"]).eval
    report = eval_run.run(settings).report
    assert report["task"] == "rft" and set(report["comparisons"][str(other)]) == {"reward", "pass_rate"}
    assert report["verdict"].startswith("tuned mean reward") and report["kpi"]["quality"]["metric"] == "reward"
    assert (tmp_path / "eval" / "report.html").is_file()
