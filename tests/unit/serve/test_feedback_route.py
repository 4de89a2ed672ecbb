"""POST /v1/feedback on a live server: 1,000 feedback posts concurrent with 1,000 classification
requests, none lost and each joined to its request; the refusals (unknown id, malformed bodies,
no key) in the OpenAI error shape; the feedback counted in /metrics."""
from __future__ import annotations

import asyncio

import httpx2

from serve_helpers import live_server, serve_config
from tunelab.serve.predlog import read_feedback

KEY = "feedback-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


async def classify_then_rate(base: str, count: int, concurrency: int) -> dict[str, dict]:
    """`count` classify requests, each followed at once by feedback on its answer, `concurrency`
    at a time: feedback posts run while other classify requests are in flight."""
    sent: dict[str, dict] = {}
    queue: asyncio.Queue = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    async with httpx2.AsyncClient(base_url=base, headers=AUTH, timeout=120) as client:
        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                text = f"item {i} arrived {'broken' if i % 3 else 'fine'} number {i * 7}"
                answer = await client.post("/v1/classify", json={"text": text})
                assert answer.status_code == 200, answer.text
                response_id = answer.json()["id"]
                feedback = {"id": response_id, "label": ["negative", "neutral", "positive"][i % 3],
                            "rating": -1 if i % 2 else 1, "annotator": f"a{i % 5}"}
                stored = await client.post("/v1/feedback", json=feedback)
                assert stored.status_code == 200, stored.text
                assert stored.json() == {"id": response_id, "object": "feedback", "stored": True}
                sent[response_id] = {**feedback, "text": text, "served": answer.json()["label"]}

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sent


def test_1000_feedback_posts_concurrent_with_1000_requests_are_all_stored_and_joined(tiny_classifier_run, tmp_path):
    cfg = serve_config(tiny_classifier_run, tmp_path, api_keys=[KEY], cache_size=0)
    with live_server(cfg) as server:
        sent = asyncio.run(classify_then_rate(server.base_url, 1000, concurrency=32))
        server.flush_log()
        metrics = httpx2.get(f"{server.base_url}/metrics").text
    stored = read_feedback(tmp_path / "predictions.db")
    assert len(sent) == 1000 and len(stored) == 1000
    assert {row["request_id"] for row in stored} == set(sent)  # none lost, none twice
    for row in stored:
        given = sent[row["request_id"]]
        prediction = row["prediction"]
        assert prediction is not None and prediction["endpoint"] == "/v1/classify"
        assert prediction["input"] == given["text"] and prediction["label"] == given["served"]
        assert (row["label"], row["rating"], row["annotator"]) == (given["label"], given["rating"], given["annotator"])
        assert row["rating_scale"] == "thumbs"
    assert 'tunelab_feedback_total{field="label"} 1000.0' in metrics
    assert 'tunelab_feedback_total{field="rating"} 1000.0' in metrics
    assert 'tunelab_requests_total{endpoint="/v1/feedback",status="200"} 1000.0' in metrics


def error_of(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code:
        assert error["code"] == code
    return error


def test_feedback_refusals_in_the_openai_error_shape(tiny_llama_run, tmp_path):
    cfg = serve_config(tiny_llama_run, tmp_path, api_keys=[KEY], model_name="served")
    with live_server(cfg) as server, httpx2.Client(base_url=server.base_url, headers=AUTH, timeout=60) as client:
        chat = client.post("/v1/chat/completions", json={"model": "served", "max_tokens": 4,
                                                         "messages": [{"role": "user", "content": "hi"}]})
        response_id = chat.json()["id"]
        unknown = error_of(client.post("/v1/feedback", json={"id": "chatcmpl-nope", "label": "x"}), 404,
                           "response_not_found")
        assert unknown["message"].startswith("no response with id 'chatcmpl-nope'") and unknown["param"] == "id"
        error_of(client.post("/v1/feedback", json={"id": response_id}), 400, "invalid_feedback")  # carries nothing
        error_of(client.post("/v1/feedback", json={"id": response_id, "rating": 7}), 400)
        error_of(client.post("/v1/feedback", json={"id": response_id, "rating": 3, "rating_scale": "thumbs"}), 400,
                 "invalid_feedback")
        error_of(client.post("/v1/feedback", json={"id": response_id, "rating": True}), 400)
        error_of(client.post("/v1/feedback", json={"id": response_id, "label": "x", "mood": "sad"}), 400)
        error_of(client.post("/v1/feedback", json={"label": "x"}), 400)
        error_of(httpx2.post(f"{server.base_url}/v1/feedback", json={"id": response_id, "label": "x"}), 401)
        ok = client.post("/v1/feedback", json={"id": response_id, "corrected": "hello there", "rating": 4,
                                               "preferred": "hello!", "comment": "too short"})
        assert ok.status_code == 200, ok.text
        server.flush_log()
    (row,) = read_feedback(tmp_path / "predictions.db")
    assert (row["corrected"], row["rating"], row["rating_scale"], row["preferred"], row["comment"]) == \
        ("hello there", 4.0, "stars", "hello!", "too short")
    assert row["prediction"]["request_id"] == response_id and row["prediction"]["endpoint"] == "/v1/chat/completions"
