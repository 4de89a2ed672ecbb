"""The experiment tracker's environment: where transformers' MLflow / TensorBoard callbacks log,
and one MLflow run around a stage's training and its final evaluation."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from tunelab.errors import TunelabError


def configure_tracking(tracking, run_dir: Path) -> str | None:
    """Point transformers' MLflow/TensorBoard callbacks where the config says; returns the URI.

    Set explicitly on every run, never inherited from an earlier run in the same process: the
    callbacks read these variables, and mlflow keeps a process-wide tracking URI and experiment
    that would otherwise send a second run to the first one's store."""
    if tracking.backend == "mlflow":
        import mlflow
        uri = tracking.uri or f"sqlite:///{(Path.cwd() / 'mlruns.db').resolve()}"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        os.environ["MLFLOW_EXPERIMENT_NAME"] = tracking.experiment
        mlflow.set_tracking_uri(uri)
        if int(os.environ.get("RANK", "0")) == 0:  # only the main process logs (and creates the experiment)
            try:
                mlflow.set_experiment(tracking.experiment)
            except Exception as exc:  # noqa: BLE001 (any store error: refuse before training, not after)
                why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                raise TunelabError(f"cannot open the MLflow tracking store {uri} ({why})",
                                   fix="check train.tracking.uri, or set train.tracking.backend=none") from None
        return uri
    if tracking.backend == "tensorboard":
        directory = tracking.uri or str(run_dir / "tensorboard")
        os.environ["TENSORBOARD_LOGGING_DIR"] = directory
        return directory
    return None


@contextmanager
def tracking_run(trainer):
    """One MLflow run open around a stage's training *and* its final evaluation. Left to itself,
    transformers' MLflowCallback ends its run at train end, and the evaluation after it then
    logs into a new, unnamed run; with a run already active the callback logs into that one and
    leaves ending it to us (FINISHED, or FAILED when an exception escapes)."""
    if "mlflow" not in (trainer.args.report_to or []) or not trainer.is_world_process_zero():
        yield
        return
    import mlflow
    with mlflow.start_run(run_name=trainer.args.run_name, nested=mlflow.active_run() is not None):
        yield
