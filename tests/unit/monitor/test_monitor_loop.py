"""The monitor's newer checks: KL divergence as the rule for the model's outputs (golden values,
scipy as the reference implementation), windows by time, content drift from a domain classifier
on sentence embeddings, and alerts to a webhook (retried, recorded)."""
from __future__ import annotations

import http.server
import json
import math
import random
import threading
import time

import numpy as np
import pytest
from scipy import stats

from monitor_logs import classification_rows, reference_records, run_monitor, write_jsonl, write_log
from tunelab.errors import TunelabError
from tunelab.monitor import drift
from tunelab.monitor.alerts import send_webhook
from tunelab.monitor.content import content_drift, domain_auc
from tunelab.monitor.window import span_seconds, split_window
from tunelab.serve.predlog import PredictionLog


# KL divergence

def test_kl_matches_a_hand_computed_case():
    # categories a/b: reference 50/50, current 80/20
    expected = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)
    kl = drift.categorical_kl({"a": 50, "b": 50}, {"a": 80, "b": 20})
    assert kl == pytest.approx(expected, rel=1e-12) and kl == pytest.approx(0.1927448, abs=1e-7)


def test_kl_agrees_with_scipy_entropy():
    rng = np.random.default_rng(0)
    reference, current = rng.normal(0, 1, 2000), rng.normal(0.4, 1.2, 1500)
    edges = drift.quantile_edges(reference, 10)
    ref_shares, cur_shares = drift.binned_shares(reference, edges), drift.binned_shares(current, edges)
    assert drift.kl_divergence(reference, current, bins=10) == pytest.approx(stats.entropy(cur_shares, ref_shares),
                                                                             rel=1e-9)


def test_kl_smooths_an_empty_category_like_psi():
    eps = drift.EMPTY_BIN_SHARE
    ref, cur = np.array([0.5, 0.5]), np.array([1.0, eps])
    cur = cur / cur.sum()
    expected = float(np.sum(cur * np.log(cur / ref)))
    assert drift.categorical_kl({"a": 10, "b": 10}, {"a": 20}) == pytest.approx(expected, rel=1e-12)


def test_the_predicted_label_is_judged_by_kl_at_0_08(tmp_path):
    reference = write_jsonl(tmp_path / "val.jsonl", reference_records(600, seed=0, pos_share=0.5))
    # a shift to 65% positive: KL ~0.05 (below 0.08) though p < 0.01, and to 75%: KL ~0.13
    small = write_log(tmp_path / "a.db", classification_rows(600, seed=1, pos_share=0.65))
    large = write_log(tmp_path / "b.db", classification_rows(600, seed=2, pos_share=0.75))
    settings = dict(window=600, psi_threshold=0.2, p_value=0.01, rollback=False, registry=None)
    label = lambda result: next(f for f in result.report["features"] if f["feature"] == "predicted_label")  # noqa: E731
    below = label(run_monitor(small, reference, out_dir=tmp_path / "o1", **settings))
    above = label(run_monitor(large, reference, out_dir=tmp_path / "o2", **settings))
    assert below["measure"] == above["measure"] == "kl"
    assert below["kl"] < 0.08 < above["kl"], (below["kl"], above["kl"])
    assert below["drifted"] is False and above["drifted"] is True
    assert "KL" in above["reason"] and above["psi"] is not None  # PSI still reported beside it


# windows

def rows_at(times: list[float]) -> list[dict]:
    return [{"ts": t, "input": "x"} for t in times]


def test_a_time_window_takes_the_last_span_and_earlier_traffic_from_the_start():
    now = 1_000_000.0
    rows = rows_at([now - 100 * 3600 + i for i in range(50)] + [now - 3600 * 47 + i for i in range(30)])
    current, earlier = split_window(rows, "48h", now=now)
    assert len(current) == 30 and all(r["ts"] >= now - 48 * 3600 for r in current)
    assert earlier == rows[:30]  # the oldest traffic, as much as the window holds
    assert span_seconds("30m") == 1800 and span_seconds("7d") == 7 * 86_400 and span_seconds("1.5h") == 5400


def test_an_empty_time_window_is_one_sentence():
    with pytest.raises(TunelabError, match="no predictions in the last 2h"):
        split_window(rows_at([0.0, 1.0]), "2h", now=100_000.0, where="predictions.db")


def test_a_count_window_is_unchanged():
    rows = rows_at(list(range(100)))
    current, earlier = split_window(rows, 30)
    assert current == rows[-30:] and earlier == rows[:30]


def test_the_monitor_runs_on_a_time_window(tmp_path):
    reference = write_jsonl(tmp_path / "val.jsonl", reference_records(200))
    now = time.time()
    with PredictionLog(tmp_path / "p.db", retention_days=None) as log:
        for i, row in enumerate(classification_rows(120, seed=3)):
            log.log({**row, "ts": now - 5 * 86_400 + i if i < 60 else now - 600 + i})
    result = run_monitor(tmp_path / "p.db", reference, out_dir=tmp_path / "out", window="1h", rollback=False,
                         registry=None)
    assert result.report["window"]["predictions"] == 60 and result.report["window"]["size"] == "1h"


# content drift

BILLING = ["my invoice shows a charge i do not recognise", "the bill for march was charged twice",
           "please explain the extra fee on my statement", "why was my card charged again this month",
           "i need a copy of last year's invoices", "the subscription price went up without notice"]
OUTAGE = ["the app crashes when i open the camera", "the website shows an error after login",
          "video playback freezes on my phone", "the router keeps dropping the wifi signal",
          "notifications stopped working after the update", "the screen goes black when i start the game"]


def variants(sentences: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    fillers = ["please", "today", "again", "urgently", "thanks", "hello", "still", "now"]
    return [f"{rng.choice(fillers)} {rng.choice(sentences)} {rng.choice(fillers)}" for _ in range(n)]


def test_a_new_topic_of_the_same_length_is_content_drift():
    reference, shifted = variants(BILLING, 80, 0), variants(OUTAGE, 80, 1)
    assert abs(np.mean([len(t) for t in reference]) - np.mean([len(t) for t in shifted])) < 12  # lengths alike
    found = content_drift(reference, shifted, encoder="default", auc_threshold=0.7)
    assert found["drifted"] is True and found["auc"] > 0.95, found["auc"]
    assert len(found["farthest"]) == 10
    assert all(any(s in item["text"] for s in OUTAGE) for item in found["farthest"])


def test_the_same_topic_is_not_content_drift():
    found = content_drift(variants(BILLING, 80, 2), variants(BILLING, 80, 3), encoder="default", auc_threshold=0.7)
    assert found["drifted"] is False and found["auc"] < 0.7, found["auc"]


def test_domain_auc_is_half_for_indistinguishable_samples_and_one_for_separable_ones():
    rng = np.random.default_rng(0)
    same = domain_auc(rng.normal(size=(200, 8)), rng.normal(size=(200, 8)))
    apart = domain_auc(rng.normal(size=(200, 8)), rng.normal(3, 1, size=(200, 8)))
    assert abs(same - 0.5) < 0.1 and apart > 0.99


def test_too_few_inputs_are_not_tested():
    found = content_drift(BILLING, OUTAGE, encoder="default", auc_threshold=0.7, min_samples=30)
    assert found["drifted"] is False and found["statistic"] is None and "not tested" in found["reason"]


# webhook

class Receiver(http.server.BaseHTTPRequestHandler):
    answers: list[int] = []
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append(body)
        status = type(self).answers.pop(0) if type(self).answers else 200
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    Receiver.answers, Receiver.received = [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


def test_a_webhook_that_fails_first_is_retried_and_recorded(receiver):
    Receiver.answers = [503, 502]
    waits = []
    record = send_webhook(receiver, {"alerts": ["x"]}, retries=3, timeout_s=5, backoff_s=0.5, sleep=waits.append)
    assert record == {"url": receiver, "delivered": True, "status": 200, "attempts": 3, "error": None}
    assert waits == [0.5, 1.0] and len(Receiver.received) == 3


def test_a_refusing_webhook_is_not_retried(receiver):
    Receiver.answers = [400]
    record = send_webhook(receiver, {}, retries=3, timeout_s=5, backoff_s=0, sleep=lambda s: None)
    assert record["delivered"] is False and record["attempts"] == 1 and record["status"] == 400


def test_a_webhook_that_is_down_is_recorded_after_every_retry():
    record = send_webhook("http://127.0.0.1:9/hook", {}, retries=2, timeout_s=2, backoff_s=0, sleep=lambda s: None)
    assert record["delivered"] is False and record["attempts"] == 3 and record["error"]


def test_drift_posts_the_alerts_and_the_report_records_it(tmp_path, receiver):
    reference = write_jsonl(tmp_path / "val.jsonl", reference_records(300))
    log = write_log(tmp_path / "p.db", classification_rows(200, seed=4, words=(30, 60)))
    result = run_monitor(log, reference, out_dir=tmp_path / "out", window=200, rollback=False, registry=None,
                         webhook={"url": receiver, "backoff_s": 0})
    assert result.drifted and result.report["webhook"]["delivered"] is True
    (posted,) = Receiver.received
    assert posted["drifted"] is True and posted["alerts"] == result.report["alerts"]
    assert "input_chars" in posted["drifted_features"]
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["webhook"]["status"] == 200
