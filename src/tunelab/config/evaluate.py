"""`eval:`: what `tunelab eval` measures and compares."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from tunelab.config.base import Section

NormalizeStep = Literal["lower", "punctuation", "articles", "whitespace"]
Perturbation = Literal["typos", "casing", "whitespace", "punctuation"]


class GenerationSettings(Section):
    max_new_tokens: int = Field(128, ge=1, description="Longest generated answer, in tokens.")
    batch_size: int = Field(32, ge=1, description="Prompts generated together (left-padded, greedy).")


class RobustnessSettings(Section):
    perturbations: list[Perturbation] = Field(
        default_factory=lambda: ["typos", "casing", "whitespace", "punctuation"],
        description="Seeded input perturbations the test set is re-run under (empty: skip robustness).")
    max_examples: int | None = Field(1000, ge=1, description="Test examples re-run per perturbation (None: all).")
    typo_rate: float = Field(0.05, gt=0, le=1, description="Share of letters hit by a keyboard typo.")
    seed: int = Field(0, description="Seed of the perturbations.")


class FairnessSettings(Section):
    max_gap: float = Field(0.03, ge=0, le=1, description="Flag an equal-opportunity difference (TPR gap between groups) above this.")
    min_group_size: int = Field(10, ge=1, description="Groups with fewer test examples are reported but not flagged.")


class ForgettingSettings(Section):
    data: str | None = Field(None, description="General held-out JSONL: {\"text\"} lines (perplexity) or a general task in canonical records.")
    min_retention: float = Field(0.9, gt=0, description="Flag when tuned / base general score falls below this.")
    max_examples: int = Field(500, ge=1, description="General examples scored.")


class LatencySettings(Section):
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 8, 32], description="Batch sizes latency and throughput are measured at.")
    requests: int = Field(64, ge=1, description="Requests timed at each batch size.")


class CostSettings(Section):
    gpu_hour_usd: float | None = Field(None, ge=0, description="Price of one hour of the training/serving machine (USD).")
    training_hours: float | None = Field(None, ge=0, description="Training time billed (default: the run's measured training time).")
    api_usd_per_1k_tokens: float | None = Field(None, ge=0, description="Price per 1,000 tokens of the hosted API the tuned model replaces.")
    tokens_per_request: float | None = Field(None, gt=0, description="Tokens per request at the API (default: measured on the test set).")
    monthly_requests: int | None = Field(None, ge=0, description="Requests per month expected in production.")


class GateSettings(Section):
    min: dict[str, float] = Field(default_factory=dict, description="Metric floors, e.g. {macro_f1: 0.7, retention: 0.9}; `--gate` fails below them.")
    max: dict[str, float] = Field(default_factory=dict, description="Metric ceilings, e.g. {ece: 0.1, p99_latency_ms: 50}; `--gate` fails above them.")
    better_than: list[str] = Field(default_factory=list, description="Baselines the tuned model must beat with a significant difference on the headline metric.")
    enforce: bool = Field(False, description="Exit 1 when a threshold fails (for CI/CD before a deploy); --gate sets it.")


class ExplainSettings(Section):
    examples: int = Field(0, ge=0, description="Test predictions explained with Integrated Gradients for the report's explanation section (classification; 0: no section).")
    steps: int = Field(16, ge=2, le=256, description="Integration steps per explanation (more: closer to exact, slower).")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="Arithmetic of the integration: auto (bf16 where the device computes it natively: a CPU with AVX512-BF16 or AMX, a CUDA GPU with bf16; fp32 elsewhere), fp32, bf16. docs/explanations.md has the measured cost and agreement.")
    top_tokens: int = Field(10, ge=1, description="Most influential words listed per predicted class.")
    errors: int = Field(5, ge=0, description="Misclassified test examples shown with every word's attribution.")
    deletion_tokens: int = Field(3, ge=1, description="Faithfulness check: words deleted from each text, top-attributed against random.")


class EndpointSettings(Section):
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key sent to endpoint:URL#MODEL systems (unset or empty: none).")
    concurrency: int = Field(4, ge=1, description="Requests in flight at once to an endpoint.")
    timeout_s: float = Field(120, gt=0, description="Seconds to wait for one answer.")
    retries: int = Field(2, ge=0, description="Retries of a request that failed to connect, timed out or got 408/409/429/5xx (the openai client's).")
    classify: Literal["auto", "classify", "chat"] = Field("auto", description="How an endpoint classifies: classify (POST /v1/classify, tunelab serve: label and probabilities), chat (the label generated by chat completions, mapped to the labels), auto (classify when the endpoint answers it, else chat).")


class EvalConfig(Section):
    model: str | None = Field(None, description="Run directory from `tunelab train` (or a model directory, or endpoint:URL#MODEL, a model behind an OpenAI-compatible API) to evaluate; the CLI argument sets it.")
    data: str | None = Field(None, description="Test JSONL, or a prepared directory (its test.jsonl); None: the test split beside the data the run trained on.")
    out_dir: str | None = Field(None, description="Report directory (default: RUN/eval).")
    baselines: list[str] = Field(default_factory=list, description="Baselines to compare with: probe (logistic regression on frozen base-model embeddings), base (the base model), model/run directories, or endpoint:URL#MODEL (a model behind an OpenAI-compatible API); --baseline (repeatable) adds to these.")
    resamples: int = Field(1000, ge=100, description="Paired bootstrap resamples behind each interval.")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Confidence level of the intervals.")
    seed: int = Field(0, description="Seed for bootstrap, perturbations and baselines.")
    normalize: list[NormalizeStep] = Field(
        default_factory=lambda: ["lower", "punctuation", "articles", "whitespace"],
        description="Answer normalisation before exact match and token F1 (SQuAD-style by default).")
    calibration_bins: int = Field(15, ge=2, description="Equal-width confidence bins of the expected calibration error.")
    generation: GenerationSettings = Field(default_factory=GenerationSettings, description="Generation for generative tasks.")
    robustness: RobustnessSettings = Field(default_factory=RobustnessSettings, description="Perturbed re-runs of the test set.")
    fairness: FairnessSettings = Field(default_factory=FairnessSettings, description="Per-group checks on records with meta.group.")
    forgetting: ForgettingSettings = Field(default_factory=ForgettingSettings, description="General ability kept after tuning.")
    latency: LatencySettings = Field(default_factory=LatencySettings, description="Latency and throughput measurement.")
    cost: CostSettings = Field(default_factory=CostSettings, description="Prices and volumes for the KPI and cost report.")
    gate: GateSettings = Field(default_factory=GateSettings, description="Thresholds `tunelab eval --gate` enforces.")
    grader: str | None = Field(None, description="Grader JSON whose mean reward tuned and baselines are compared on (default: the run's train.grader).")
    allow_python_graders: bool = Field(False, description="Run python graders of eval.grader (the run's own grader follows its train.rft setting).")
    explain: ExplainSettings = Field(default_factory=ExplainSettings, description="Token attributions of test predictions (classification).")
    endpoint: EndpointSettings = Field(default_factory=EndpointSettings, description="Models behind OpenAI-compatible endpoints (endpoint:URL#MODEL).")


