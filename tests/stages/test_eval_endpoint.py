"""`tunelab eval` with a model behind an OpenAI-compatible endpoint (`endpoint:URL#MODEL`) as a
baseline and as the tuned side, against a live `tunelab serve` of the same run on 127.0.0.1: the
endpoint's column must show the figures evaluating the run locally shows (the served model
answers greedily what the local one answers), for a chat model (chat.completions) and a
classifier (/v1/classify, and the chat fallback that maps a generated label)."""
from __future__ import annotations

import json

import pytest
from cli_helpers import tunelab, write_jsonl
from serve_helpers import free_port, live_server, serve_config
from tiny_models import make_task_examples

from tunelab.config import EvalConfig
from tunelab.errors import TunelabError
from tunelab.evaluate import run as eval_run

FAST = {"resamples": 200, "latency": {"batch_sizes": [1, 2], "requests": 2},
        "robustness": {"perturbations": ["casing"], "max_examples": 6}}
NO_GUARD = {"redact_pii": False, "block_injection": False}  # the endpoint must see the prompt unchanged
GENERATIVE = ("exact_match", "token_f1", "chrf", "rougeL", "bleu")
CLASSIFICATION = ("accuracy", "macro_f1", "mcc", "ece", "brier")


@pytest.fixture(scope="module")
def chat_server(tiny_llama_run, tmp_path_factory):
    with live_server(serve_config(tiny_llama_run, tmp_path_factory.mktemp("serve-chat"), model_name="tiny",
                                  guard=NO_GUARD)) as live:
        yield live


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("chat-data") / "test.jsonl", make_task_examples(12, seed=3))


def evaluate(model, data, out_dir, **settings):
    cfg = EvalConfig(model=str(model), data=str(data), out_dir=str(out_dir),
                     **{**FAST, "generation": {"max_new_tokens": 12}, **settings})
    return eval_run.run(cfg).report


def test_endpoint_baseline_of_the_served_run_shows_the_local_figures(tiny_llama_run, chat_server, chat_data,
                                                                     tmp_path):
    spec = f"endpoint:{chat_server.base_url}/v1#tiny"
    report = evaluate(tiny_llama_run, chat_data, tmp_path / "eval", baselines=[spec])
    endpoint = report["baselines"][spec]
    assert endpoint["source"] == spec and endpoint["examples"] == 12
    for metric in GENERATIVE:
        assert endpoint[metric] == pytest.approx(report["metrics"][metric], abs=1e-12), metric
    assert report["metrics"]["chrf"] > 0  # the (random) answers share characters with the references
    for comparison in report["comparisons"][spec].values():
        assert comparison["difference"] == 0 and comparison["verdict"] == "no significant difference"
    # an endpoint scores no reference reply, so no perplexity; the local model does
    assert endpoint["perplexity"] is None and report["metrics"]["perplexity"] > 1
    assert report["latency"]["baseline"]["device"] == f"endpoint: {chat_server.base_url}/v1 (tiny)"
    html = (tmp_path / "eval" / "report.html").read_text()
    assert spec in html


def test_endpoint_as_the_tuned_side_through_the_cli(tiny_llama_run, chat_server, chat_data, tmp_path):
    local = evaluate(tiny_llama_run, chat_data, tmp_path / "local")
    spec = f"endpoint:{chat_server.base_url}/v1#tiny"
    proc = tunelab("eval", spec, "--data", chat_data, "--out", tmp_path / "remote", "--resamples", "200",
                   "eval.latency.requests=2", "eval.latency.batch_sizes=[1]", "eval.robustness.max_examples=6",
                   "eval.generation.max_new_tokens=12", "eval.robustness.perturbations=[casing]")
    assert "tuned exact match" in proc.stdout
    remote = json.loads((tmp_path / "remote" / "report.json").read_text())
    assert remote["model"] == spec
    for metric in GENERATIVE:
        assert remote["metrics"][metric] == pytest.approx(local["metrics"][metric], abs=1e-12), metric
    predictions = [json.loads(line)["prediction"] for line in (tmp_path / "remote" / "predictions.jsonl").open()]
    expected = [json.loads(line)["prediction"] for line in (tmp_path / "local" / "predictions.jsonl").open()]
    assert predictions == expected
    assert remote["robustness"]["perturbations"]["casing"] == local["robustness"]["perturbations"]["casing"]


def test_classifier_endpoint_through_classify_gives_the_local_figures(tiny_classifier_run, tmp_path):
    rows = [{"text": f"the {w} item {i}", "label": label} for i, (w, label) in
            enumerate([("great", "positive"), ("awful", "negative"), ("okay", "neutral")] * 8)]
    data = write_jsonl(tmp_path / "test.jsonl", rows)
    with live_server(serve_config(tiny_classifier_run, tmp_path, model_name="clf", guard=NO_GUARD)) as live:
        spec = f"endpoint:{live.base_url}/v1#clf"
        report = evaluate(tiny_classifier_run, data, tmp_path / "eval", baselines=[spec])
        remote = evaluate(spec, data, tmp_path / "remote")
    endpoint = report["baselines"][spec]
    for metric in CLASSIFICATION:
        assert endpoint[metric] == pytest.approx(report["metrics"][metric], abs=1e-9), metric
        assert remote["metrics"][metric] == pytest.approx(report["metrics"][metric], abs=1e-9), metric
    assert endpoint["confusion_matrix"] == report["metrics"]["confusion_matrix"]
    assert "unparsable" not in endpoint  # /v1/classify answered: labels and probabilities, nothing to parse


def test_chat_classification_maps_generated_labels(tiny_llama_run, chat_server, tmp_path):
    """A generative endpoint asked to classify: its answers (a random tiny model's) name no label,
    so every one counts as wrong and is counted as unparsable, instead of failing the run."""
    data = write_jsonl(tmp_path / "test.jsonl", [{"text": f"text {i}", "label": ["negative", "positive"][i % 2]}
                                                       for i in range(6)])
    spec = f"endpoint:{chat_server.base_url}/v1#tiny"
    report = evaluate(spec, data, tmp_path / "eval", endpoint={"classify": "auto"}, explain={"examples": 0})
    assert report["metrics"]["unparsable"] == 6 and report["metrics"]["accuracy"] == 0
    assert report["labels"] == ["negative", "positive"]


def test_unreachable_endpoint_and_bad_spec_are_one_sentence(chat_data, tmp_path, free_port_url):
    with pytest.raises(TunelabError, match="could not be reached"):
        evaluate(f"endpoint:{free_port_url}/v1#m", chat_data, tmp_path / "a", endpoint={"retries": 0})
    with pytest.raises(TunelabError, match="endpoint:URL#MODEL"):
        evaluate("endpoint:localhost-no-scheme", chat_data, tmp_path / "b")


@pytest.fixture
def free_port_url():
    return f"http://127.0.0.1:{free_port()}"
