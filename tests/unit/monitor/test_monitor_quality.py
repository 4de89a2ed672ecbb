"""Live quality from feedback: judgements, buckets, and the decay tests, against hand-computed
values and scipy."""
import pytest
from scipy import stats

from tunelab.monitor import drift, quality


def fb(request_id, ts, served, label=None, rating=None, scale=None):
    return {"request_id": request_id, "label": label, "rating": rating, "rating_scale": scale,
            "prediction": {"ts": ts, "label": served, "request_id": request_id}}


def test_judged_counts_each_request_once_and_reads_ratings_as_a_share_of_their_scale():
    items = quality.judged([fb("a", 10, "pos", label="neg"), fb("a", 10, "pos", label="pos"),
                            fb("b", 5, "neg", rating=5, scale="stars"), fb("c", 7, None, rating=-1, scale="thumbs"),
                            {"request_id": "x", "label": "pos", "prediction": None}])
    assert [i["request_id"] for i in items] == ["b", "c", "a"]
    assert items[2]["correct"] is True  # the latest labelled feedback of a request counts
    assert items[0]["rating"] == 1.0 and items[1]["rating"] == 0.0 and items[1]["correct"] is None
    assert quality.rating_share({"rating": 3, "rating_scale": "stars"}) == 0.5


def test_summary_and_buckets():
    items = quality.judged([fb("a", 0, "pos", label="pos"), fb("b", 10, "neg", label="pos"),
                            fb("c", 3600, "pos", label="pos", rating=1, scale="thumbs")])
    buckets = quality.over_time(items, 3600)
    assert [b["start_ts"] for b in buckets] == [0, 3600]
    assert buckets[0]["accuracy"] == 0.5 and buckets[0]["labelled"] == 2 and buckets[0]["rated"] == 0
    # macro-F1 over labels seen: pos (P 1, R .5, F1 2/3), neg (P 0, R 0): mean 1/3
    assert buckets[0]["macro_f1"] == pytest.approx(1 / 3)
    assert buckets[1]["mean_rating"] == 1.0


def test_rate_below_is_an_exact_one_sided_binomial_test():
    found = drift.rate_below("feedback_accuracy", 12, 30, reference_rate=0.8, min_drop=0.05)
    assert found["p_value"] == pytest.approx(stats.binomtest(12, 30, 0.8, alternative="less").pvalue)
    assert found["drifted"] and found["statistic"] == pytest.approx(0.4)
    assert not drift.rate_below("x", 23, 30, reference_rate=0.8, min_drop=0.05)["drifted"]
    assert "not tested" in drift.rate_below("x", 1, 3, reference_rate=0.8, min_drop=0.05)["reason"]


def test_proportion_drop_is_fishers_exact_test():
    found = drift.proportion_drop("feedback_accuracy", (45, 50), (25, 50), min_drop=0.05)
    assert found["p_value"] == pytest.approx(stats.fisher_exact([[25, 25], [45, 5]], alternative="less").pvalue)
    assert found["drifted"] and found["reference_rate"] == 0.9 and found["current_rate"] == 0.5
    # a small fall that is significant still needs min_drop to alert
    assert not drift.proportion_drop("x", (900, 1000), (870, 1000), min_drop=0.05)["drifted"]


def test_decay_features_use_the_eval_figure_when_there_is_one():
    current = [{"correct": i < 10, "rating": None} for i in range(25)]
    earlier = [{"correct": True, "rating": 1.0} for _ in range(25)]
    with_eval = quality.decay_features(current, earlier, (0.9, "eval/report.json (accuracy)"), min_drop=0.05,
                                       p_value=0.01, min_samples=20)
    assert [f["feature"] for f in with_eval] == ["feedback_accuracy", "feedback_rating"]
    assert with_eval[0]["test"] == "binomial" and with_eval[0]["drifted"]
    assert "not tested" in with_eval[1]["reason"]  # no ratings in the current window
    without = quality.decay_features(current, earlier, None, min_drop=0.05, p_value=0.01, min_samples=20)
    assert without[0]["test"] == "Fisher exact" and without[0]["reference_source"] == "feedback on earlier traffic"
