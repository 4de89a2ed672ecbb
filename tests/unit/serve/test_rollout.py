"""Shadow and canary on a live server, switched through the registry while it serves: the shadow
answers a copy of each request after the live answer (logged as shadow with its version, never
sent to a client); the canary answers a sticky share of the traffic split by the client's key;
promoting the candidate ends its shadow or canary. And the compare of the two from the log."""
from __future__ import annotations

import httpx2
import pytest

from serve_helpers import PREFIX, live_server, serve_config, wait_until
from tunelab.errors import TunelabError
from tunelab.monitor.compare import compare
from tunelab.serve.predlog import read_feedback, read_predictions
from tunelab.serve.registry import Registry
from tunelab.serve.rollout import canary_point

TEXTS = [f"the parcel {word} number {i}" for i, word in enumerate(["arrived", "broke", "was fine", "vanished"] * 10)]


def answers_alone(run, texts: list[str]) -> list[str]:
    from tunelab.serve.service import load_backend
    return [label for label, _ in load_backend(run).classify([PREFIX + t for t in texts])]  # as served


@pytest.fixture()
def registry(tiny_classifier_run, other_classifier_run, tmp_path) -> Registry:
    registry = Registry(tmp_path / "registry.json")
    registry.register(tiny_classifier_run)   # v1, live
    registry.register(other_classifier_run)  # v2, the candidate
    return registry


def test_registry_candidates_are_checked_and_end_when_made_live(registry):
    with pytest.raises(TunelabError, match="v1 is the live version"):
        registry.set_shadow("v1")
    with pytest.raises(TunelabError, match="unknown model version 'v9'"):
        registry.set_canary("v9", 0.2)
    with pytest.raises(TunelabError, match="share must be above 0"):
        registry.set_canary("v2", 1.5)
    registry.set_shadow("v2")
    registry.set_canary("v2", 0.25)
    data = registry.load()
    assert data["shadow"]["version"] == "v2" and data["canary"]["share"] == 0.25
    registry.promote("v2")
    data = registry.load()
    assert data["live"] == "v2" and data["shadow"] is None and data["canary"] is None
    assert [e["action"] for e in data["events"]][-3:] == ["shadow", "canary", "promote"]


@pytest.mark.slow  # trains, interrupts and resumes, or starts processes (seconds)
def test_shadow_answers_copies_after_the_live_answer_and_is_logged_as_shadow(
        registry, tiny_classifier_run, other_classifier_run, tmp_path):
    cfg = serve_config(registry.get("v1")["path"], tmp_path, registry=str(registry.path), registry_poll_s=0.05, cache_size=0)
    with live_server(cfg) as server:
        service = server.app.state.service
        registry.set_shadow("v2")
        wait_until(lambda: service.rollout.shadow is not None, "the server took up the shadow")
        answers = [httpx2.post(f"{server.base_url}/v1/classify", json={"text": t}, timeout=60).json() for t in TEXTS]
        ids = [a["id"] for a in answers]
        for request_id in ids:
            httpx2.post(f"{server.base_url}/v1/feedback", json={"id": request_id, "label": "positive"}, timeout=60)
        wait_until(lambda: service.metrics.shadow_requests.labels("answered")._value.get() == len(TEXTS),
                   "the shadow answered every copy")
        server.flush_log()
        registry.set_shadow(None)
        wait_until(lambda: service.rollout.shadow is None, "the server stopped the shadow")
    assert {a["model_version"] for a in answers} == {"v1"}  # clients only ever get the live answer
    assert [a["label"] for a in answers] == answers_alone(tiny_classifier_run, TEXTS)
    log = tmp_path / "predictions.db"
    shadow = [r for r in read_predictions(log, include_shadow=True) if r["role"] == "shadow"]
    assert [r["request_id"] for r in shadow] and {r["request_id"] for r in shadow} == set(ids)
    assert {r["model_version"] for r in shadow} == {"v2"}
    by_id = {r["request_id"]: r["label"] for r in shadow}
    assert [by_id[i] for i in ids] == answers_alone(other_classifier_run, TEXTS)
    assert not [r for r in read_predictions(log) if r["role"] == "shadow"]  # the monitor never sees them
    assert all(f["prediction"]["role"] == "live" for f in read_feedback(log))  # feedback joins the live answer

    result = compare(log, "v1", "v2", resamples=200, min_labelled=10)
    live_labels, shadow_labels = answers_alone(tiny_classifier_run, TEXTS), answers_alone(other_classifier_run, TEXTS)
    assert result["role"] == "shadow" and result["agreement"]["pairs"] == len(TEXTS)
    assert result["agreement"]["rate"] == pytest.approx(
        sum(a == b for a, b in zip(live_labels, shadow_labels)) / len(TEXTS))
    quality = result["quality"]
    assert quality["labelled"] == len(TEXTS) and quality["metric"] == "macro_f1" and quality["paired"]
    from tunelab.evaluate.metrics import macro_f1
    truth = ["positive"] * len(TEXTS)
    assert quality["live"] == pytest.approx(macro_f1(truth, live_labels))
    assert quality["candidate"] == pytest.approx(macro_f1(truth, shadow_labels))
    assert result["live"]["latency_ms"]["p50"] > 0 and result["candidate"]["requests"] == len(TEXTS)
    expected = {"better": "promote", "worse": "stop", "no significant difference": "keep"}
    assert result["recommendation"]["action"] == expected[quality["comparison"]["verdict"]]


@pytest.mark.slow  # trains, interrupts and resumes, or starts processes (seconds)
def test_canary_answers_a_sticky_share_split_by_the_clients_key(registry, tmp_path):
    cfg = serve_config(registry.get("v1")["path"], tmp_path, registry=str(registry.path), registry_poll_s=0.05, cache_size=0)
    keys = [f"customer-{i}" for i in range(40)]
    with live_server(cfg) as server:
        service = server.app.state.service
        registry.set_canary("v2", 0.3)
        wait_until(lambda: service.rollout.canary is not None, "the server took up the canary")

        def versions(headers_of) -> list[str]:
            return [httpx2.post(f"{server.base_url}/v1/classify", json={"text": "fine", **body}, headers=headers,
                                timeout=60).json()["model_version"] for headers, body in map(headers_of, keys)]

        by_header = versions(lambda k: ({"X-Tunelab-Route-Key": k}, {}))
        by_user = versions(lambda k: ({}, {"user": k}))
        registry.promote("v2")
        wait_until(lambda: service.live.version == "v2" and service.rollout.canary is None, "promoted")
    expected = ["v2" if canary_point(k) < 0.3 else "v1" for k in keys]
    assert by_header == expected == by_user and 0 < expected.count("v2") < len(keys)
    rows = [r for r in read_predictions(tmp_path / "predictions.db") if r["endpoint"] == "/v1/classify"]
    assert {(r["model_version"], r["role"]) for r in rows} == {("v1", "live"), ("v2", "canary")}


def test_a_shadow_generation_under_way_stops_when_live_work_arrives(tiny_llama_run, other_llama_run, tmp_path):
    registry = Registry(tmp_path / "registry.json")
    registry.register(tiny_llama_run)
    registry.register(other_llama_run)
    cfg = serve_config(tiny_llama_run, tmp_path, registry=str(registry.path), registry_poll_s=0.05, cache_size=0,
                       model_name="served")

    def chat(content: str, max_tokens: int) -> dict:
        return httpx2.post(f"{server.base_url}/v1/chat/completions", timeout=60, json={
            "model": "served", "max_tokens": max_tokens, "temperature": 0,
            "messages": [{"role": "user", "content": content}]}).json()

    with live_server(cfg) as server:
        rollout = server.app.state.service.rollout
        registry.set_shadow("v2")
        wait_until(lambda: rollout.shadow is not None, "the server took up the shadow")
        first = chat("a long one", 200)  # its copy generates up to 200 tokens on the shadow's thread
        wait_until(lambda: bool(rollout._generating), "the shadow's copy is generating")
        second = chat("hi", 2)  # live work arrives: the copy stops at its next token
        metrics = server.app.state.metrics.shadow_requests
        wait_until(lambda: metrics.labels("preempted")._value.get() == 1, "the copy was preempted")
        wait_until(lambda: metrics.labels("answered")._value.get() == 1, "the second request's copy answered")
        server.flush_log()
    shadow = [r for r in read_predictions(tmp_path / "predictions.db", include_shadow=True) if r["role"] == "shadow"]
    assert [r["request_id"] for r in shadow] == [second["id"]]  # the cut-short answer is not logged
    assert first["choices"][0]["message"]["content"] and first["system_fingerprint"] == "v1"
