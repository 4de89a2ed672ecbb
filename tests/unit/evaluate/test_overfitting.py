"""Over-fitting check: golden values on synthetic metrics.jsonl files shaped like MetricsLog's."""
import json

import pytest

from tunelab.evaluate.overfitting import overfitting_report


def train_row(step, loss, **extra):
    return {"step": step, "epoch": step / 100, "time": 1000.0 + step, "loss": loss, "grad_norm": 1.0,
            "learning_rate": 1e-4, **extra}


def eval_row(step, loss, **extra):
    return {"step": step, "epoch": step / 100, "time": 1000.5 + step, "eval_loss": loss, "eval_runtime": 0.1, **extra}


def summary_row(step, **extra):
    return {"step": step, "epoch": step / 100, "time": 2000.0, "train_runtime": 12.5, "train_loss": 0.9, **extra}


@pytest.fixture
def metrics_file(tmp_path):
    def write(rows):
        path = tmp_path / "metrics.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path
    return write


def test_falling_eval_loss_is_not_flagged(metrics_file):
    train = [1.2, 1.0, 0.9, 0.7, 0.6, 0.5, 0.45]
    rows = [train_row(5 * (i + 1), loss) for i, loss in enumerate(train)]
    rows += [eval_row(s, loss) for s, loss in [(10, 1.0), (20, 0.8), (30, 0.6), (35, 0.5)]]
    rows.sort(key=lambda r: r["time"])
    report = overfitting_report(metrics_file(rows))
    assert report["train_loss"] == pytest.approx((0.9 + 0.7 + 0.6 + 0.5 + 0.45) / 5)
    assert report["eval_loss"] == 0.5 and report["best_eval_loss"] == 0.5 and report["best_step"] == 35
    assert report["gap"] == pytest.approx(0.5 - 0.63)
    assert report["trend"] == "falling"
    assert report["turned_at_step"] is None and report["flagged"] is False and report["reason"] is None
    assert report["curves"]["eval"] == [[10, 1.0], [20, 0.8], [30, 0.6], [35, 0.5]]
    assert report["curves"]["train"] == [[5 * (i + 1), loss] for i, loss in enumerate(train)]
    assert report["stage"] is None


def test_eval_loss_turning_up_is_flagged_at_the_first_step_above_the_minimum(metrics_file):
    rows = [train_row(s, 1.0 - s / 100) for s in (10, 20, 30, 40, 50)]
    rows += [eval_row(s, loss) for s, loss in [(10, 1.0), (20, 0.7), (30, 0.75), (40, 0.9), (50, 1.1)]]
    report = overfitting_report(metrics_file(rows))
    assert report["best_step"] == 20 and report["best_eval_loss"] == 0.7
    assert report["turned_at_step"] == 30
    assert report["trend"] == "rising"
    assert report["eval_loss"] == 1.1 and report["gap"] == pytest.approx(1.1 - 0.7)
    assert report["flagged"] is True
    assert "0.7000 at step 20" in report["reason"] and "1.1000 at step 50" in report["reason"]


def test_turn_is_the_first_point_beyond_the_tolerance_not_a_wobble_within_it(metrics_file):
    rows = [eval_row(s, loss) for s, loss in [(1, 1.0), (2, 0.80), (3, 0.805), (4, 0.95), (5, 1.0)]]
    report = overfitting_report(metrics_file(rows))
    assert report["turned_at_step"] == 4  # 0.805 is within 2% of 0.80
    assert overfitting_report(metrics_file(rows), tolerance=0.001)["turned_at_step"] == 3


def test_a_blip_that_comes_back_down_is_not_a_turn(metrics_file):
    rows = [eval_row(s, loss) for s, loss in [(10, 1.0), (20, 0.7), (30, 0.8), (40, 0.705)]]
    report = overfitting_report(metrics_file(rows))
    assert report["turned_at_step"] is None and report["flagged"] is False
    assert report["trend"] == "falling"
    assert report["train_loss"] is None and report["gap"] is None  # no train losses logged


def test_flat_within_tolerance(metrics_file):
    rows = [eval_row(s, loss) for s, loss in [(10, 0.9), (20, 0.5), (30, 0.501), (40, 0.499), (50, 0.5)]]
    report = overfitting_report(metrics_file(rows))
    assert report["trend"] == "flat"  # the fit covers the last 4 evaluations only
    assert report["best_step"] == 40 and report["turned_at_step"] is None and not report["flagged"]


def test_too_few_points_for_a_trend_but_a_clear_rise_is_still_flagged(metrics_file):
    report = overfitting_report(metrics_file([eval_row(100, 0.5), eval_row(200, 0.9)]))
    assert report["trend"] == "too few points"
    assert report["turned_at_step"] == 200 and report["flagged"] is True
    single = overfitting_report(metrics_file([train_row(10, 1.0), eval_row(100, 0.5)]))
    assert single["trend"] == "too few points" and single["turned_at_step"] is None and not single["flagged"]


def test_repeated_steps_after_a_resume_keep_the_last_entry(metrics_file):
    rows = [train_row(10, 2.0), eval_row(10, 1.0), train_row(20, 1.8), eval_row(20, 0.95), train_row(30, 1.7),
            eval_row(30, 1.4),  # crashed after this; resumed from the step-20 checkpoint
            train_row(30, 1.5), eval_row(30, 0.9), train_row(40, 1.4), eval_row(40, 0.85)]
    report = overfitting_report(metrics_file(rows))
    assert report["curves"]["eval"] == [[10, 1.0], [20, 0.95], [30, 0.9], [40, 0.85]]
    assert report["curves"]["train"] == [[10, 2.0], [20, 1.8], [30, 1.5], [40, 1.4]]
    assert report["flagged"] is False and report["trend"] == "falling"


def test_the_evaluation_of_the_kept_checkpoint_after_training_is_not_a_curve_point(metrics_file):
    # load_best_model_at_end: the final evaluation re-scores the best checkpoint at the last step
    rows = [eval_row(10, 0.5), eval_row(20, 0.4), eval_row(30, 0.6), summary_row(30), eval_row(30, 0.4)]
    report = overfitting_report(metrics_file(rows))
    assert report["curves"]["eval"] == [[10, 0.5], [20, 0.4], [30, 0.6]]
    assert report["eval_loss"] == 0.6 and report["turned_at_step"] == 30 and report["flagged"] is True


def test_only_the_last_stage_is_read(metrics_file):
    rows = [train_row(1, 6.0, stage="general"), eval_row(2, 5.0, stage="general"), eval_row(4, 9.0, stage="general"),
            summary_row(4, stage="general"), eval_row(4, 5.0, stage="general"),
            train_row(1, 5.5, stage="domain"), eval_row(2, 5.8, stage="domain"), eval_row(4, 5.7, stage="domain"),
            summary_row(4, stage="domain"), eval_row(4, 5.7, stage="domain")]
    report = overfitting_report(metrics_file(rows))
    assert report["stage"] == "domain"
    assert report["curves"] == {"train": [[1, 5.5]], "eval": [[2, 5.8], [4, 5.7]]}
    assert report["flagged"] is False


def test_missing_file_or_no_evaluation_gives_none(metrics_file, tmp_path):
    assert overfitting_report(tmp_path / "absent.jsonl") is None
    assert overfitting_report(metrics_file([train_row(10, 1.0), summary_row(10)])) is None
    assert overfitting_report(metrics_file([])) is None


def test_evaluations_after_transformers_5_loss_rows_count(metrics_file):
    # transformers 5 puts train_runtime on every step's loss row; only the summary row (train_loss)
    # precedes the final best-checkpoint evaluation
    rows = []
    for step, (train, evaluation) in zip((10, 20, 30), [(1.0, 0.9), (0.8, 0.7), (0.6, 0.65)]):
        rows += [train_row(step, train, train_runtime=0.5), eval_row(step, evaluation)]
    report = overfitting_report(metrics_file(rows))
    assert report["curves"]["eval"] == [[10, 0.9], [20, 0.7], [30, 0.65]]
