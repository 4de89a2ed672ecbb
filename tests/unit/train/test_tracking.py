"""Experiment tracking as `train.tracking` says: MLflow in an embedded SQLite store
(./mlruns.db unless train.tracking.uri) holding the run's parameters and metrics in one MLflow
run, TensorBoard event files under the run directory, or nothing at all; and a second run in the
same process never writes where the first one did."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from run_helpers import chat, train_config, write_prepared
from tunelab.train.run import run as train

TRACKING_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "TENSORBOARD_LOGGING_DIR")


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """Each test in its own working directory (where ./mlruns.db lands), with the tracker
    variables restored afterwards; no memory pre-flight (its own tests cover it)."""
    monkeypatch.chdir(tmp_path)
    for name in TRACKING_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("tunelab.train.run.preflight_memory", lambda *args, **kwargs: None)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tracking-data")
    return write_prepared(root, [chat(f"what is {i} plus one", f"it is {i + 1}") for i in range(8)],
                          [chat("what is 40 plus one", "it is 41")])


def tiny_run(model, output: Path, data: Path, **tracking):
    return train(train_config(model, output, data=str(data), method="lora", max_steps=3, eval_steps=3,
                              tracking={"backend": "mlflow", **tracking}))


def runs_in(store: Path) -> list:
    import mlflow
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}")
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


@pytest.mark.slow  # starts a process of its own (seconds)
def test_mlflow_default_store_is_sqlite_in_the_working_directory_and_a_second_run_keeps_to_its_own(
        tiny_llama, data, tmp_path):
    import mlflow
    # what an earlier run, or the user's own code, may have left set process-wide
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'stale.db'}")

    tiny_run(tiny_llama, tmp_path / "first", data)

    store = tmp_path / "mlruns.db"
    assert store.is_file() and not (tmp_path / "stale.db").exists()
    (first,) = runs_in(store)  # one run: the evaluation after training is logged into it, not a new one
    assert first.info.run_name == "first" and first.info.status == "FINISHED"
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}")
    assert client.get_experiment(first.info.experiment_id).name == "tunelab"
    assert float(first.data.params["learning_rate"]) == 2e-4 and first.data.params["max_steps"] == "3"
    assert {"loss", "learning_rate", "grad_norm", "eval_loss", "train_loss"} <= first.data.metrics.keys()
    assert [m.step for m in client.get_metric_history(first.info.run_id, "loss")] == [1, 2, 3]

    other = tmp_path / "elsewhere" / "other.db"
    other.parent.mkdir()
    tiny_run(tiny_llama, tmp_path / "second", data, uri=f"sqlite:///{other}", experiment="second-exp")

    assert [r.info.run_name for r in runs_in(store)] == ["first"]
    (second,) = runs_in(other)
    assert second.info.run_name == "second"
    assert mlflow.MlflowClient(tracking_uri=f"sqlite:///{other}").get_experiment(
        second.info.experiment_id).name == "second-exp"
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{other}"  # set for this run, not left from the first
    assert not (tmp_path / "first" / "tensorboard").exists()


def test_tensorboard_writes_event_files_under_the_run_directory_and_no_mlflow_store(tiny_llama, data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tiny_run(tiny_llama, tmp_path / "run", data, backend="tensorboard")

    events = list((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))
    assert events
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    assert [e.step for e in accumulator.Scalars("train/loss")] == [1, 2, 3]
    assert "eval/loss" in accumulator.Tags()["scalars"]
    assert not (tmp_path / "mlruns.db").exists() and not (tmp_path / "mlruns").exists()


def test_tracking_none_writes_neither(tiny_llama, data, tmp_path):
    tiny_run(tiny_llama, tmp_path / "run", data, backend="none")

    assert not (tmp_path / "run" / "tensorboard").exists()
    assert not (tmp_path / "mlruns.db").exists() and not (tmp_path / "mlruns").exists()
    assert not [p for p in (tmp_path / "run").rglob("events.out.tfevents.*")]


def test_an_unusable_tracking_uri_is_refused_before_training(tmp_path):
    import mlflow

    from tunelab.config import TrackingSettings
    from tunelab.errors import TunelabError
    from tunelab.train.tracking import configure_tracking

    previous = mlflow.get_tracking_uri()
    try:
        with pytest.raises(TunelabError, match=r"cannot open the MLflow tracking store bogus://nowhere.*"
                                               r"train.tracking.backend=none"):
            configure_tracking(TrackingSettings(uri="bogus://nowhere"), tmp_path / "run")
    finally:
        mlflow.set_tracking_uri(previous)
