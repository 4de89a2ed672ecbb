"""`monitor:`, `label:` and `retrain:`: from served traffic to the next model."""
from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from tunelab.config.base import Section


WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")


def count_or_span(value: int | str, *, minimum: int) -> int | str:
    """A window of predictions: a count (at least `minimum`) or a time span such as 48h."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int):
        if value < minimum:
            raise ValueError(f"a window of predictions must hold at least {minimum}")
        return value
    if not WINDOW.match(value):
        raise ValueError("give a number of predictions (500) or a time span (30m, 48h, 7d)")
    return value.strip()


class ContentDriftSettings(Section):
    enabled: bool = Field(True, description="Test whether the inputs' content moved (a new topic of the same length): a classifier on sentence embeddings tries to tell current inputs from reference ones.")
    encoder: str = Field("default", description="Sentence encoder for the embeddings (default: the embedded MiniLM).")
    auc_threshold: float = Field(0.7, gt=0.5, le=1, description="Cross-validated ROC AUC above which the content has drifted (0.5: the classifier cannot tell the two apart).")
    folds: int = Field(5, ge=2, description="Cross-validation folds of the domain classifier.")
    max_reference: int = Field(2000, ge=10, description="Reference inputs embedded at most (a seeded sample).")
    farthest: int = Field(10, ge=0, description="Current inputs farthest from the reference listed in the report.")


class WebhookSettings(Section):
    url: str | None = Field(None, description="URL that gets a JSON POST of the alerts when drift is found (None: no webhook).")
    retries: int = Field(3, ge=0, description="Further attempts after a failed POST (connection error or 5xx).")
    timeout_s: float = Field(10.0, gt=0, description="Seconds to wait for each attempt.")
    backoff_s: float = Field(1.0, ge=0, description="Seconds before the first retry; doubled for each further one.")


class QualitySettings(Section):
    enabled: bool = Field(True, description="Measure live quality from feedback that carries a label or a rating (accuracy, macro-F1, mean rating over time) and alert on silent decay.")
    bucket: str = Field("1d", description="Time span of each row of the quality-over-time table (30m, 1h, 1d).")
    min_drop: float = Field(0.05, gt=0, le=1, description="Alert when feedback accuracy (or the mean rating, as a share of its scale) falls at least this far below the reference.")
    min_feedback: int = Field(20, ge=5, description="Fewest feedback records in the window for a decay test; fewer are reported as not tested.")

    @field_validator("bucket")
    @classmethod
    def _span(cls, value):
        if not WINDOW.match(value):
            raise ValueError("give a time span such as 30m, 1h or 1d")
        return value.strip()


class MonitorConfig(Section):
    prediction_log: str = Field("predictions.db", description="Prediction log written by `tunelab serve`.")
    reference: str | None = Field(None, description="Reference data: a prepared directory (its val.jsonl and test.jsonl) or a canonical JSONL (default: the served run's data, from its config.yaml).")
    window: int | str = Field(500, description="Predictions compared with the reference: the most recent N (500), or those of the last time span (30m, 48h, 7d).")
    psi_threshold: float = Field(0.2, gt=0, description="Population stability index above which an input feature has drifted (with a significant test).")
    kl_threshold: float = Field(0.08, gt=0, description="KL divergence (current against reference) above which the predicted-label or output-length distribution has drifted (with a significant test).")
    p_value: float = Field(0.01, gt=0, lt=1, description="Significance of the KS / chi-square / t / binomial drift tests.")
    min_confidence_drop: float = Field(0.1, gt=0, le=1, description="Alert when mean confidence falls this much below the reference.")
    min_samples: int = Field(30, ge=5, description="Fewest values on each side for a drift test; smaller windows are reported as not tested.")
    max_error_rate: float = Field(0.05, ge=0, lt=1, description="Alert when the share of 5xx responses in the window is significantly above this.")
    bins: int = Field(10, ge=2, description="Quantile bins of the reference for the PSI of numeric features.")
    eval_report: str | None = Field(None, description="Evaluation report.json whose mean confidence is the reference (default: RUN/eval/report.json of the served run).")
    rollback: bool = Field(False, description="Roll the served version back to the previous one when drift is found.")
    registry: str | None = Field("registry.json", description="Model registry the rollback acts on and the served runs are found in (None: none).")
    out_dir: str = Field("monitor", description="Directory the drift report is written to.")
    content: ContentDriftSettings = Field(default_factory=ContentDriftSettings, description="Content drift of the inputs.")
    webhook: WebhookSettings = Field(default_factory=WebhookSettings, description="Alerts sent to a webhook.")
    quality: QualitySettings = Field(default_factory=QualitySettings, description="Live quality from feedback (silent decay).")
    watch: str | None = Field(None, description="Check again every interval (30s, 5m, 1h) until stopped, instead of once.")
    watch_count: int | None = Field(None, ge=1, description="With watch: stop after this many checks (None: until Ctrl-C).")

    @field_validator("window")
    @classmethod
    def _count_or_span(cls, value):
        return count_or_span(value, minimum=10)

    @field_validator("watch")
    @classmethod
    def _interval(cls, value):
        if value is not None and not WINDOW.match(value):
            raise ValueError("give an interval such as 30s, 5m or 1h")
        return value


class SelectSettings(Section):
    strategy: Literal["entropy", "margin", "least_confidence"] = Field("entropy", description="Uncertainty of a classifier's prediction: entropy of the probabilities, margin between the top two, or 1 - the top probability (generative runs: the answer's mean token log-probability).")
    diversity: Literal["kcenter", "none"] = Field("kcenter", description="kcenter: pick the batch spread over the sentence-embedding space (k-center greedy) from the most uncertain candidates; none: the most uncertain alone.")
    candidates: float = Field(5.0, ge=1, description="The diversity step picks from the candidates x k most uncertain records.")
    encoder: str = Field("default", description="Sentence encoder of the diversity step (default: the embedded MiniLM).")
    negative_feedback_weight: float = Field(1.0, ge=0, description="Generative runs: added to the uncertainty of an answer that got negative feedback (thumbs down, 1-2 stars, a correction).")
    max_new_tokens: int = Field(128, ge=1, description="Generative runs, --pool: longest answer generated for each prompt.")
    window: int | str | None = Field(None, description="With --log: the most recent N predictions, or those of the last time span (48h); None: the whole log.")
    seed: int = Field(0, description="Seed of the k-center start and of ties.")

    @field_validator("window")
    @classmethod
    def _count_or_span(cls, value):
        return None if value is None else count_or_span(value, minimum=1)


class IssuesSettings(Section):
    folds: int = Field(5, ge=2, description="Cross-validation folds of the out-of-fold probabilities (--probe).")
    filter_by: Literal["prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given"] = Field("prune_by_noise_rate", description="cleanlab's rule for which records are label issues (cleanlab.filter.find_label_issues filter_by).")
    rank_by: Literal["self_confidence", "normalized_margin", "confidence_weighted_entropy"] = Field("self_confidence", description="How issues are ordered, most likely first (cleanlab's return_indices_ranked_by).")
    encoder: str = Field("default", description="Sentence encoder of the probe (default: the embedded MiniLM).")
    seed: int = Field(0, description="Seed of the folds and the probe.")


class ReviewSettings(Section):
    sample: int = Field(100, ge=1, description="Generative answers in a review sample (stratified by model version and answer length).")
    seed: int = Field(0, description="Seed of the review sample.")


class LabelConfig(Section):
    text_column: str = Field("text", description="Field of pool records holding the text (classification) when they are not chat records.")
    select: SelectSettings = Field(default_factory=SelectSettings, description="`label select`: which records are worth labelling.")
    issues: IssuesSettings = Field(default_factory=IssuesSettings, description="`label issues`: likely label errors (cleanlab).")
    review: ReviewSettings = Field(default_factory=ReviewSettings, description="`label export --review`: samples of answers for human review.")


class RetrainGateSettings(Section):
    max_old_drop: float = Field(0.01, ge=0, le=1, description="The candidate's headline metric (macro-F1, exact match) on the old test split may fall at most this far below the live model's.")
    new_data: Literal["better", "higher"] = Field("higher", description="On the new data's test split the candidate must be better than the live model: better (the paired-bootstrap interval excludes zero) or higher (a higher figure).")


class RetrainConfig(Section):
    live: str | None = Field(None, description="Run directory of the live model (default: the registry's live version).")
    registry: str = Field("registry.json", description="Model registry the candidate is registered in (and promoted in, with deploy promote).")
    new_data: list[str] = Field(default_factory=list, description="Newly labelled canonical JSONL files (from `label import` or `label feedback`); the command's arguments add to these.")
    start_from: Literal["live", "base"] = Field("live", description="Train the candidate from the live run's weights, or from its base model.")
    replay: float = Field(0.5, ge=0, le=1, description="Share of the live run's training records replayed beside the new ones (a seeded sample), against forgetting.")
    train: dict[str, Any] = Field(default_factory=dict, description="Overrides of the live run's train settings for the candidate, e.g. {epochs: 1, lr: 2e-5}.")
    gate: RetrainGateSettings = Field(default_factory=RetrainGateSettings, description="What the candidate must show against the live model.")
    deploy: Literal["none", "shadow", "canary", "promote"] = Field("none", description="What happens when the gate passes: none (registered only), shadow (gets a copy of each request), canary (answers canary_share of the traffic) or promote (made live).")
    canary_share: float = Field(0.1, gt=0, le=1, description="Share of the traffic the candidate answers with deploy canary.")
    out_dir: str = Field("retrain", description="Directory every artefact is written to (prepared data, candidate run, eval reports, summary).")
    seed: int = Field(0, description="Seed of the replay sample.")
