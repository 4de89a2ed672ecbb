"""Feedback in the prediction log: stored through the same writer as predictions (nothing lost
under concurrent load), validated by one function, joined to its request when read."""
import sqlite3
import threading

import pytest

from tunelab.errors import TunelabError
from tunelab.serve.predlog import PredictionLog, feedback_row, read_feedback, read_predictions


def prediction(request_id: str, ts: float = 1_700_000_000.0) -> dict:
    return {"ts": ts, "request_id": request_id, "endpoint": "/v1/classify", "model_version": "v1",
            "input": f"text of {request_id}", "output": "positive", "label": "positive", "confidence": 0.8,
            "status": 200}


def test_1000_feedback_records_concurrent_with_1000_predictions_are_all_stored_and_joined(tmp_path):
    path = tmp_path / "predictions.db"
    threads_n, per_thread = 20, 50
    start = threading.Barrier(2 * threads_n)

    def serve(log: PredictionLog, t: int) -> None:
        start.wait()
        for i in range(per_thread):
            log.log(prediction(f"r{t}-{i}"))

    def give_feedback(log: PredictionLog, t: int) -> None:
        start.wait()
        for i in range(per_thread):
            log.log_feedback({"request_id": f"r{t}-{i}", "label": "negative" if i % 2 else "positive",
                              "rating": -1 if i % 2 else 1, "annotator": f"a{t}"})

    with PredictionLog(path, retention_days=None) as log:
        workers = [threading.Thread(target=serve, args=(log, t)) for t in range(threads_n)]
        workers += [threading.Thread(target=give_feedback, args=(log, t)) for t in range(threads_n)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    feedback = read_feedback(path)
    assert len(feedback) == 1000 and len(read_predictions(path)) == 1000
    assert {f["request_id"] for f in feedback} == {f"r{t}-{i}" for t in range(threads_n) for i in range(per_thread)}
    assert all(f["prediction"] is not None and f["prediction"]["request_id"] == f["request_id"] for f in feedback)
    assert all(f["prediction"]["input"] == f"text of {f['request_id']}" for f in feedback)
    assert {f["rating_scale"] for f in feedback} == {"thumbs"}


def test_request_known_sees_a_prediction_still_on_the_queue(tmp_path):
    with PredictionLog(tmp_path / "p.db") as log:
        log.log(prediction("fresh"))
        assert log.request_known("fresh")
        assert not log.request_known("never-served")


def test_feedback_without_its_prediction_reads_with_prediction_none(tmp_path):
    path = tmp_path / "p.db"
    with PredictionLog(path) as log:
        log.log(prediction("a"))
        log.log_feedback({"request_id": "a", "corrected": "better answer", "annotator": "ann"})
        log.log_feedback({"request_id": "ghost", "comment": "about an answer this log never held"})
    rows = read_feedback(path)
    assert [r["request_id"] for r in rows] == ["a", "ghost"]
    assert rows[0]["prediction"]["output"] == "positive" and rows[1]["prediction"] is None
    assert read_feedback(path, request_ids=["ghost"])[0]["comment"].startswith("about")
    assert [r["request_id"] for r in read_feedback(path, model_version="v1")] == ["a"]


def test_a_log_from_before_feedback_existed_reads_as_no_feedback(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE predictions (id INTEGER PRIMARY KEY, ts REAL, request_id TEXT)")
    assert read_feedback(path) == []


def test_pruning_a_prediction_prunes_its_feedback(tmp_path):
    path = tmp_path / "p.db"
    with PredictionLog(path, retention_days=None) as log:
        log.log(prediction("old", ts=1.0))
        log.log_feedback({"request_id": "old", "label": "negative"})
    with PredictionLog(path, retention_days=1) as log:  # opening prunes
        pass
    assert read_feedback(path) == [] and read_predictions(path) == []


@pytest.mark.parametrize("record,message", [
    ({"label": "x"}, "names no request_id"),
    ({"request_id": "r"}, "carries nothing"),
    ({"request_id": "r", "label": ""}, "carries nothing"),
    ({"request_id": "r", "rating": 7}, "outside the stars scale"),
    ({"request_id": "r", "rating": 0}, "outside the stars scale"),
    ({"request_id": "r", "rating": 3, "rating_scale": "thumbs"}, "outside the thumbs scale"),
    ({"request_id": "r", "rating": "good"}, "is not a number"),
    ({"request_id": "r", "rating": True}, "is not a number"),
    ({"request_id": "r", "rating_scale": "stars", "comment": "c"}, "without a rating"),
    ({"request_id": "r", "label": 3}, "'label' is a int, not text"),
    ({"request_id": "r", "label": "x", "mood": "meh"}, "unknown field"),
])
def test_malformed_feedback_is_refused_with_one_sentence(record, message):
    with pytest.raises(TunelabError, match=message):
        feedback_row(record)


def test_rating_scales_are_stored():
    assert feedback_row({"request_id": "r", "rating": 1})["rating_scale"] == "thumbs"
    assert feedback_row({"request_id": "r", "rating": -1})["rating"] == -1.0
    assert feedback_row({"request_id": "r", "rating": 4})["rating_scale"] == "stars"
    assert feedback_row({"request_id": "r", "rating": 1, "rating_scale": "stars"})["rating_scale"] == "stars"
