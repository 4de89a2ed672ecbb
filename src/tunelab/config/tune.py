"""`tune:`: `tunelab tune`, the hyperparameter search."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tunelab.config.base import Section

# name in tune.space -> (dotted train key, integer-valued)
TUNABLE: dict[str, tuple[str, bool]] = {
    "lr": ("train.lr", False), "epochs": ("train.epochs", True), "batch_size": ("train.batch_size", True),
    "warmup": ("train.warmup", False), "weight_decay": ("train.weight_decay", False),
    "grad_accum": ("train.grad_accum", True), "lora_r": ("train.lora.r", True),
    "lora_alpha": ("train.lora.alpha", True), "lora_dropout": ("train.lora.dropout", False),
}


class SearchRange(Section):
    low: float | None = Field(None, description="Lowest value tried (with high).")
    high: float | None = Field(None, description="Highest value tried (with low).")
    log: bool = Field(False, description="Sample on a log scale (low must be above 0).")
    step: float | None = Field(None, gt=0, description="Spacing of the values tried between low and high (not with log).")
    choices: list[float | int | str] | None = Field(None, description="The values to choose from, instead of low/high.")

    @model_validator(mode="after")
    def _a_possible_range(self) -> "SearchRange":
        ranged = self.low is not None or self.high is not None
        if self.choices is not None:
            if ranged or not self.choices:
                raise ValueError("give either a non-empty choices list or low and high, not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (or choices)")
        if self.low > self.high:
            raise ValueError(f"low {self.low:g} is above high {self.high:g}")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low above 0 (got low {self.low:g})")
        if self.log and self.step is not None:
            raise ValueError("step and log cannot be combined")
        return self


class TuneConfig(Section):
    space: dict[str, SearchRange] = Field(default_factory=dict, description=f"Search space: {', '.join(TUNABLE)}, each {{low, high, log, step}} or {{choices}}.")
    trials: int = Field(20, ge=1, description="Finished (complete or pruned) trials the study runs to, counted over every machine sharing it.")
    metric: str | None = Field(None, description="Objective: a metric of the eval report on the validation split (default: macro_f1 for classification, exact_match for chat).")
    direction: Literal["maximize", "minimize"] | None = Field(None, description="Optimisation direction (default: minimize for loss, perplexity, ece; maximize otherwise).")
    data: str | None = Field(None, description="Validation JSONL or prepared directory the objective is scored on (default: val.jsonl of train.data; never the test split).")
    output_dir: str = Field("tune", description="Directory of the trial run directories (trial-0000, ...), results.json and results.csv.")
    storage: str | None = Field(None, description="Optuna RDB storage URL shared by every machine of the study (default: sqlite:///OUTPUT_DIR/study.db).")
    study: str | None = Field(None, description="Study name in the storage (default: the output directory's name).")
    pruner: Literal["hyperband", "successive_halving", "median", "none"] = Field("hyperband", description="Stops unpromising trials early on the validation metric each evaluation reports.")
    seed: int = Field(0, description="Seed of the TPE sampler.")
    heartbeat_s: int = Field(60, ge=1, description="Heartbeat of running trials; one silent for twice this is failed and retried once.")

    @model_validator(mode="after")
    def _known_parameters(self) -> "TuneConfig":
        unknown = sorted(set(self.space) - set(TUNABLE))
        if unknown:
            raise ValueError(f"tune.space names unknown parameter(s) {', '.join(unknown)}; "
                             f"tunable: {', '.join(TUNABLE)}")
        return self


