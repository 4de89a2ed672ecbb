"""What a running job shows, read from its run directory: metrics rows, events, checkpoints, CSV."""
import signal

from tunelab.jobs import progress


def test_only_complete_lines_are_read_and_the_offset_moves_past_them(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    rows, offset = progress.new_metric_rows(path, 0)
    assert rows == [{"step": 1, "loss": 2.0}] and offset == len('{"step": 1, "loss": 2.0}\n')
    with path.open("a") as f:
        f.write('ss": 1.5}\n')
    assert progress.new_metric_rows(path, offset)[0] == [{"step": 2, "loss": 1.5}]


def test_metrics_events_use_openais_names():
    message, data = progress.metrics_event({"step": 3, "loss": 1.25, "mean_token_accuracy": 0.5}, 10)
    assert data == {"step": 3, "train_loss": 1.25, "train_mean_token_accuracy": 0.5, "total_steps": 10}
    assert message == "Step 3/10: train loss=1.2500, train mean token accuracy=0.5000"
    assert progress.metrics_event({"step": 3, "eval_loss": 2.0}, None)[1] == {"step": 3, "valid_loss": 2.0}
    assert progress.metrics_event({"step": 9, "train_runtime": 4.0}, 9) is None


def test_checkpoint_metrics_and_the_csv_merge_train_and_valid_figures():
    events = [{"step": 1, "train_loss": 3.0}, {"step": 2, "train_loss": 2.0}, {"step": 2, "valid_loss": 2.5},
              {"step": 3, "train_loss": 1.0}]
    assert progress.checkpoint_metrics(events, 2) == {"step": 2.0, "train_loss": 2.0, "valid_loss": 2.5}
    assert progress.metrics_csv(events).decode().splitlines() == [
        "step,train_loss,train_mean_token_accuracy,valid_loss,valid_mean_token_accuracy",
        "1,3.0,,,", "2,2.0,,2.5,", "3,1.0,,,"]


def test_failure_reasons_name_the_signal_or_tunelabs_sentence(tmp_path):
    assert progress.failure_reason(tmp_path / "none.log", -signal.SIGKILL).startswith(
        "the training process was killed by SIGKILL")
    log = tmp_path / "train.log"
    log.write_text("loading\nerror: train.data: no such file; fix the path.\n")
    assert progress.failure_reason(log, 2) == "train.data: no such file; fix the path."
    log.write_text("Traceback (most recent call last):\n  File \"x.py\", line 1\nRuntimeError: boom\n")
    assert progress.failure_reason(log, 1) == "the process exited with code 1: RuntimeError: boom"


def test_only_checkpoints_marked_complete_count(tmp_path):
    for step, complete in ((2, True), (4, False)):
        path = tmp_path / "checkpoints" / f"checkpoint-{step}"
        path.mkdir(parents=True)
        if complete:
            (path / "tunelab-complete.json").write_text("{}")
    assert list(progress.complete_checkpoints(tmp_path)) == [2]


def test_the_estimated_finish_follows_the_pace_of_this_process():
    rows = [{"step": 5, "time": 100.0}, {"step": 9, "time": 108.0}]
    assert progress.estimated_finish((100.0, 5), rows, 19) == 128  # 2 s a step, 10 steps to go
    assert progress.estimated_finish(None, rows, 19) is None
    assert progress.estimated_finish((100.0, 5), rows[:1], 19) is None
