"""Rich progress bars for the steps that take more than a second."""
from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text

console = Console(stderr=True)


class RateColumn(ProgressColumn):
    """Items per second over the last seconds (the average once a phase is finished)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None and task.finished and task.elapsed:
            speed = task.completed / task.elapsed
        shown = f"{speed:,.0f}" if speed is not None else "?"
        return Text(f"{shown:>7} {self.unit}/s", style="progress.data.speed")


class EtaColumn(TimeRemainingColumn):
    def render(self, task) -> Text:
        return Text(f"eta {super().render(task).plain}", style="progress.remaining")


@contextmanager
def progress_bars(enabled: bool = True, unit: str = "records"):
    """One line per phase, within 80 columns: what, a bar, done/total, the rate in `unit`/s,
    the time left and the time spent."""
    columns = (TextColumn("{task.description:<17}"), BarColumn(bar_width=8), MofNCompleteColumn(),
               RateColumn(unit), EtaColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not enabled) as progress:
        yield progress


def quiet_library_output() -> None:
    """tunelab reports its own progress; transformers' bar on every model load and save ("Loading
    weights", "Writing model shards") and MLflow's INFO lines only bury it. Download bars from
    the Hugging Face Hub stay: a multi-GB download deserves one."""
    import logging
    import os

    from huggingface_hub.utils import enable_progress_bars
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()  # also turns the hub's bars off...
    enable_progress_bars()  # ...so turn those back on
    # MLflow sets its loggers' level from this variable when it is imported (INFO by default)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # in case it was imported already
