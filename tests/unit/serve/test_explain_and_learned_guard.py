"""The server's two learned additions: `/v1/classify` with `"explain": true` answers with the
attributions tunelab.evaluate.explain computes for the served label, and a learned guard
classifier (serve.guard.classifier) refuses what its threshold says, beside the rules."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serve_helpers import ASSETS, serve_config, wait_ready
from tunelab.errors import TunelabError
from tunelab.serve.app import create_app

TEXT = "what a lovely day, the staff were kind"


def client_for(cfg) -> TestClient:
    return TestClient(create_app(cfg))


def test_classify_with_explain_returns_the_attributions_of_the_served_label(tiny_classifier_run, tmp_path):
    from tunelab.evaluate.explain import explain
    from tunelab.serve.service import load_backend
    with client_for(serve_config(tiny_classifier_run, tmp_path)) as http:
        wait_ready(http)
        plain = http.post("/v1/classify", json={"text": TEXT}).json()
        explained = http.post("/v1/classify", json={"text": TEXT, "explain": True}).json()
    assert plain["explanation"] is None
    assert explained["label"] == plain["label"] and explained["probabilities"] == plain["probabilities"]
    spans = explained["explanation"]
    assert [s["token"] for s in spans] == [TEXT[s["start"]:s["end"]] for s in spans]
    assert [s["token"] for s in spans][:3] == ["what", "a", "lovely"]
    # the same attributions evaluation computes, for the label the server answered, with the run's prefix
    from tunelab.train.run_dir import RunDir
    backend = load_backend(str(tiny_classifier_run))
    expected = explain(backend.model, backend.tokenizer, TEXT, target=plain["label"],
                       prefix=RunDir(tiny_classifier_run).prefix(), max_length=backend.max_length)
    assert [s["score"] for s in spans] == pytest.approx([s["score"] for s in expected], abs=1e-6)


@pytest.fixture(scope="module")
def guard_run(tmp_path_factory) -> Path:
    """A (random) two-label attack/benign classifier run: enough for the threshold to decide."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
    tokenizer = AutoTokenizer.from_pretrained(ASSETS / "tiny-chat-tokenizer")
    run = tmp_path_factory.mktemp("guard-run")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, max_position_embeddings=64, num_labels=2,
                        id2label={0: "attack", 1: "benign"}, label2id={"attack": 0, "benign": 1})
    BertForSequenceClassification(config).save_pretrained(run)
    tokenizer.save_pretrained(run)
    (run / "manifest.json").write_text(json.dumps({"stage": "train", "task": "classification",
                                                   "labels": ["attack", "benign"]}))
    return run


def test_the_learned_guard_refuses_at_its_threshold_and_lets_through_below_it(tiny_classifier_run, guard_run,
                                                                              tmp_path):
    from tunelab.serve.guard_classifier import GuardClassifier
    probability = GuardClassifier.load(guard_run).probability(TEXT)
    assert 0 < probability < 1
    strict = serve_config(tiny_classifier_run, tmp_path / "strict",
                          guard={"classifier": str(guard_run), "classifier_threshold": probability * 0.99})
    lenient = serve_config(tiny_classifier_run, tmp_path / "lenient",
                           guard={"classifier": str(guard_run), "classifier_threshold": min(0.999, probability * 1.01)})
    with client_for(strict) as http:
        wait_ready(http)
        refused = http.post("/v1/classify", json={"text": TEXT})
        metrics = http.get("/metrics").text
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "content_blocked"
    assert "prompt-injection classifier rates this prompt as an attack" in refused.json()["error"]["message"]
    assert 'tunelab_guard_blocks_total{reason="classifier"} 1.0' in metrics
    with client_for(lenient) as http:
        wait_ready(http)
        assert http.post("/v1/classify", json={"text": TEXT}).status_code == 200


def test_a_guard_classifier_that_is_not_one_is_refused_at_start_up(tiny_classifier_run, tmp_path):
    cfg = serve_config(tiny_classifier_run, tmp_path, guard={"classifier": str(tmp_path / "nowhere")})
    with pytest.raises(TunelabError, match="guard classifier run directory not found"):
        create_app(cfg)
