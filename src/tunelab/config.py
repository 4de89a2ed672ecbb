"""Configuration: pydantic models composed into RunConfig, loaded from YAML with key=value
overrides. Unknown keys are errors that name the key and the closest valid one.

Every field carries a one-line description: the configuration reference is generated from them.
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tunelab.errors import TunelabError

DataFormat = Literal[
    "auto", "chat", "sharegpt", "alpaca", "prompt_completion", "preference", "openai_preference", "classification",
    "prompts"
]
PiiType = Literal["email", "phone", "credit_card", "iban", "us_ssn", "ip_address"]
ALL_PII_TYPES: list[str] = ["email", "phone", "credit_card", "iban", "us_ssn", "ip_address"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CleanConfig(Section):
    nfc: bool = Field(True, description="Normalise text to Unicode NFC.")
    whitespace: bool = Field(
        True,
        description="Normalise whitespace: CRLF to LF, odd spaces to plain ones, zero-width "
        "characters removed, trailing spaces and runs of blank lines trimmed (indentation kept).",
    )
    strip_html: bool = Field(False, description="Strip HTML tags and unescape entities.")


class PiiConfig(Section):
    mode: Literal["redact", "drop", "keep"] = Field(
        "redact",
        description="redact: replace with typed placeholders like <EMAIL>; drop: reject the "
        "record; keep: leave it, but still count it in the report.",
    )
    types: list[PiiType] = Field(
        default_factory=lambda: list(ALL_PII_TYPES), description="Kinds of PII to look for."
    )
    phone_region: str = Field(
        "US", description="Region assumed for phone numbers written without a +country code."
    )


class DedupConfig(Section):
    exact: bool = Field(True, description="Drop exact duplicates (after case and space folding).")
    near: bool = Field(True, description="Drop near duplicates found with MinHash LSH.")
    threshold: float = Field(
        0.8, gt=0, le=1, description="Word-shingle Jaccard similarity at which two records are near duplicates."
    )
    num_perm: int = Field(128, ge=16, description="MinHash permutations (more: slower, more exact).")
    shingle_words: int = Field(3, ge=1, description="Words per shingle for near-duplicate search.")


class SplitConfig(Section):
    val: float = Field(0.1, ge=0, lt=1, description="Share of records for the validation split.")
    test: float = Field(0.1, ge=0, lt=1, description="Share of records for the test split.")
    seed: int = Field(0, description="Seed of the content hash that assigns splits.")
    val_file: str | None = Field(None, description="Use this file as the validation split instead of splitting.")
    test_file: str | None = Field(None, description="Use this file as the test split instead of splitting.")

    @model_validator(mode="after")
    def _ratios_leave_training_data(self) -> "SplitConfig":
        if self.val + self.test >= 1:
            raise ValueError("split.val + split.test must be below 1 to leave training data")
        return self


AugmentEdit = Literal["synonym", "word_order", "punctuation", "casing", "entity_swap"]


class AugmentEndpointSettings(Section):
    url: str | None = Field(None, description="Base URL of an OpenAI-compatible API (e.g. http://127.0.0.1:8000/v1, a `tunelab serve`); None: no paraphrases or synthetic examples.")
    model: str = Field("default", description="Model name sent in each chat-completions request.")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="Environment variable holding the bearer token (unset or empty: none sent).")
    paraphrases: int = Field(1, ge=0, description="Paraphrases asked for per training record.")
    synthetic: int = Field(0, ge=0, description="New examples written from few-shot prompts (per label for classification, in all for chat).")
    shots: int = Field(5, ge=1, description="Training examples shown in each synthetic-example prompt.")
    temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature of the endpoint.")
    max_tokens: int = Field(256, ge=1, description="Longest answer, in tokens.")
    concurrency: int = Field(4, ge=1, description="Requests in flight at once.")
    timeout_s: float = Field(60, gt=0, description="Seconds to wait for one answer.")
    retries: int = Field(2, ge=0, description="Retries of a request that failed to connect, timed out or got 408/429/5xx.")
    max_unusable: float = Field(0.2, ge=0, le=1, description="Stop, writing nothing, when more than this share of answers is unusable (empty, the input repeated, unparsable).")


class AugmentConfig(Section):
    edits: list[AugmentEdit] = Field(
        default_factory=lambda: ["synonym", "word_order", "punctuation", "casing", "entity_swap"],
        description="Rule-based edits combined in each variant (user turns only for chat; entity swaps apply to the whole conversation, numbers only in classification texts).")
    variants: int = Field(2, ge=0, description="Rule-based variants per training record (each a different random combination of edits).")
    templates: bool = Field(True, description="Chat records: re-phrase the first user message with an instruction template in each variant.")
    synonym_rate: float = Field(0.15, gt=0, le=1, description="Share of a text's words the synonym edit replaces (at least one).")
    seed: int = Field(0, description="Seed of the edits and of the examples shown in synthetic-example prompts.")
    endpoint: AugmentEndpointSettings = Field(default_factory=AugmentEndpointSettings, description="Paraphrases and synthetic examples from an OpenAI-compatible endpoint.")


class DataConfig(Section):
    inputs: list[str] = Field(default_factory=list, description="Input files (.jsonl .json .csv .tsv .parquet), saved datasets directories, or example:sentiment; the command line's inputs replace these.")
    out_dir: str | None = Field(None, description="Output directory of `tunelab data prepare` (--out sets it).")
    format: DataFormat = Field("auto", description="Input format: auto (detected per file from the keys), chat, sharegpt, alpaca, prompt_completion, preference, openai_preference (OpenAI's DPO file: input, preferred_output, non_preferred_output), classification or prompts (chat records ending with the user's turn, for rft).")
    text_column: str = Field("text", description="Column with the text, for classification data.")
    label_column: str = Field("label", description="Column with the label, for classification data.")
    group_column: str | None = Field(
        None, description="Column copied to meta.group (fairness slices), for classification data."
    )
    labels: list[str] | None = Field(
        None, description="Declared label set; records with other labels are rejected. None: labels as found."
    )
    encoding: str = Field("utf-8", description="Text encoding of the input files.")
    max_chars: int = Field(100_000, gt=0, description="Reject records longer than this many characters.")
    max_tokens: int | None = Field(
        None, gt=0, description="Reject records longer than this many tokens of data.tokenizer."
    )
    tokenizer: str | None = Field(
        None, description="Tokenizer (hub id or local path) for token counts and the chat-template audit."
    )
    end_token: str | None = Field(
        None, description="End-of-turn token the template audit expects after each assistant turn (default: the EOS token)."
    )
    audit_sample: int = Field(500, gt=0, description="Conversations checked in depth by the chat-template audit.")
    min_class_examples: int = Field(10, ge=1, description="Warn when a label has fewer training examples than this.")
    clean: CleanConfig = Field(default_factory=CleanConfig, description="Text cleaning.")
    pii: PiiConfig = Field(default_factory=PiiConfig, description="PII detection and handling.")
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="Duplicate removal.")
    split: SplitConfig = Field(default_factory=SplitConfig, description="Train/val/test split.")
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description="Synthetic training examples (`tunelab data augment`).")
    num_proc: int | None = Field(
        None, ge=1, description="Worker processes for the per-record work (default: all cores); the output does not depend on it."
    )
    engine: Literal["local", "ray"] = Field(
        "local", description="Where the per-record work runs: local (this machine's cores) or ray (a Ray cluster); same output."
    )
    ray_address: str | None = Field(
        None, description="With engine ray: the cluster (auto, HOST:PORT or ray://HOST:10001); unset starts a local head on 127.0.0.1."
    )


# the training tasks and methods, declared once: the config types, the CLI's help and the
# memory estimator all read these
TASKS = ("sft", "classification", "dpo", "rft")
METHODS = ("full", "lora", "dora", "qlora", "freeze")
ADAPTER_METHODS = ("lora", "dora", "qlora")
TrainTask = Literal[("auto", *TASKS)]
TrainMethod = Literal[METHODS]


class LoraSettings(Section):
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA branch.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or all-linear (every linear layer but the output head).")


# the loss types TRL 1.16's DPOTrainer accepts (it checks only when computing the first loss);
# exo_pair is left out: it also needs label smoothing, which tunelab does not expose
DpoLoss = Literal["sigmoid", "hinge", "ipo", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm"]


class DpoSettings(Section):
    beta: float = Field(0.1, gt=0, description="DPO temperature: how far the policy may move from the reference.")
    loss_type: DpoLoss = Field("sigmoid", description="TRL DPO loss: sigmoid (DPO), ipo, hinge, robust, sppo_hard, apo_zero, ...")


class RftSettings(Section):
    num_generations: int = Field(8, ge=2, description="Answers sampled per prompt (GRPO's group size); batch_size x grad_accum must be a multiple of it.")
    beta: float = Field(0.04, ge=0, description="KL penalty to the model the stage starts from (0: no reference model, less memory, no KL metric).")
    epsilon: float = Field(0.2, gt=0, lt=1, description="Clipping of the policy ratio to 1 +/- epsilon (PPO-style).")
    max_completion_length: int = Field(256, ge=1, description="Longest sampled answer, in tokens.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the answers being graded.")
    loss_type: Literal["dapo", "grpo", "dr_grpo", "bnpo"] = Field("dapo", description="TRL GRPO loss normalisation: dapo (per token of the batch), grpo (per answer), dr_grpo, bnpo.")
    scale_rewards: Literal["group", "batch", "none"] = Field("group", description="Divide advantages by the reward spread of each prompt's group, of the batch, or not at all.")
    num_iterations: int = Field(1, ge=1, description="Optimisation passes over each batch of sampled answers.")
    allow_python_graders: bool = Field(False, description="Run python graders (the grader JSON's own code, in a subprocess without network); off: refused before training.")
    python_grader_timeout_s: float = Field(10.0, gt=0, description="A python grader that takes longer on one answer is stopped.")
    on_grader_error: Literal["zero", "fail"] = Field("zero", description="When the grader fails on an answer: zero (reward 0, reason in grader_errors.jsonl) or fail (stop the run).")
    score_model_base_url: str | None = Field(None, description="OpenAI-compatible endpoint of score_model graders (default: OPENAI_BASE_URL, else OpenAI).")


class TrackingSettings(Section):
    backend: Literal["mlflow", "tensorboard", "none"] = Field(
        "mlflow", description="Experiment tracker; mlflow uses an embedded SQLite store unless uri is set.")
    uri: str | None = Field(None, description="Tracking URI (default: sqlite:///mlruns.db in the working directory).")
    experiment: str = Field("tunelab", description="Experiment name runs are grouped under.")


class DistributedSettings(Section):
    strategy: Literal["auto", "ddp", "deepspeed", "fsdp"] = Field(
        "auto", description="auto: plain DDP when launched with several processes (accelerate launch / torchrun).")
    zero_stage: Literal[1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage, with strategy deepspeed.")
    offload: bool = Field(False, description="Offload optimizer state (and parameters at ZeRO-3) to CPU.")
    fsdp: str = Field("full_shard auto_wrap", description="FSDP options, with strategy fsdp.")


class StageSettings(Section):
    data: str = Field(..., description="Prepared directory or JSONL for this stage.")
    epochs: float | None = Field(None, gt=0, description="Epochs for this stage (default: train.epochs).")
    lr: float | None = Field(None, gt=0, description="Learning rate for this stage (default: train.lr).")
    name: str | None = Field(None, description="Stage name in logs and the run directory.")
    task: TrainTask | None = Field(None, description="Task of this stage (default: train.task; auto follows the stage's data, so sft then rft stages need none).")


class MixSettings(Section):
    data: str = Field(..., description="Prepared directory or JSONL of one task.")
    weight: float = Field(1.0, gt=0, description="Sampling weight of this task in the mixture.")
    task: str | None = Field(None, description="Task name recorded in meta.task (default: the directory name).")
    prefix: str | None = Field(None, description="Text put before each input; saved with the run so serving applies it.")


class ReplaySettings(Section):
    data: str = Field(..., description="General or earlier-task data mixed into training: a prepared directory (its train.jsonl) or a JSONL of the task's record kind.")
    share: float = Field(0.2, gt=0, lt=1, description="Share of the training set made of replayed records (a seeded sample, cycled when the data is smaller).")


class EwcSettings(Section):
    data: str | None = Field(None, description="General (or earlier-task) JSONL the Fisher information is estimated on: {\"text\"} lines or chat records for SFT, classification records for a classifier.")
    strength: float = Field(100.0, gt=0, description="EWC penalty strength: (strength / 2) * sum of Fisher * (weight - starting weight)^2, the Fisher normalised to mean 1 over the trainable weights.")
    fisher_examples: int = Field(200, ge=1, description="General examples the diagonal empirical Fisher is averaged over (one backward pass each).")


class RemoteSettings(Section):
    base_url: str | None = Field(None, description="Base URL of the OpenAI-compatible fine-tuning API (e.g. http://127.0.0.1:8100/v1, a `tunelab jobs serve`; default: OPENAI_BASE_URL, else OpenAI's).")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key (kept out of config files, which the run directory copies).")
    suffix: str | None = Field(None, description="Suffix of the fine-tuned model's name, ft:BASE:SUFFIX:ID (default: the run directory's name).")
    poll_s: float = Field(2.0, gt=0, description="Seconds between checks of the job's status and new events.")
    timeout_s: float = Field(120, gt=0, description="Seconds to wait for one API request.")


class TrainConfig(Section):
    provider: Literal["local", "openai"] = Field("local", description="local: train here; openai: upload the data to an OpenAI-compatible fine-tuning API (OpenAI, a `tunelab jobs serve`) and follow the job there (docs/jobs.md).")
    remote: RemoteSettings = Field(default_factory=RemoteSettings, description="The fine-tuning API, with provider openai.")
    model: str = Field("default", description="Base model: hub id, local directory, a previous run directory, or default (the embedded MiniLM).")
    data: str | None = Field(None, description="Prepared directory (train/val.jsonl) or a canonical JSONL file.")
    eval_data: str | None = Field(None, description="Validation JSONL when data is a single file.")
    max_train_examples: int | None = Field(
        None, ge=1, description="Train on at most this many examples (a seeded sample), for a quick first run.")
    task: TrainTask = Field("auto", description=f"{', '.join(TASKS)}; auto follows the data's kind.")
    method: TrainMethod = Field("lora", description="full, lora, dora, qlora (4-bit, GPU only) or freeze (train the last freeze_last_n blocks).")
    output_dir: str = Field("runs/latest", description="Run directory written by training.")
    epochs: float = Field(3, gt=0, description="Training epochs.")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps (-1: use epochs).")
    lr: float | None = Field(None, gt=0, description="Peak learning rate (default: 2e-4 for adapters, 5e-5 for full classification, 2e-5 for full SFT).")
    batch_size: int = Field(8, ge=1, description="Per-device batch size.")
    eval_batch_size: int | None = Field(None, ge=1, description="Per-device evaluation batch size (default: batch_size).")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    max_length: int = Field(512, ge=8, description="Longest sequence in tokens; longer ones are truncated.")
    warmup: float = Field(0.05, ge=0, lt=1, description="Share of steps spent warming the learning rate up.")
    scheduler: str = Field("cosine", description="Learning-rate schedule (transformers lr_scheduler_type).")
    optimizer: str = Field("adamw_torch", description="Optimizer (transformers optim name).")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    seed: int = Field(42, description="Seed for initialisation, shuffling and dropout.")
    eval_steps: int | None = Field(None, ge=1, description="Evaluate every N steps (default: every epoch).")
    save_steps: int | None = Field(None, ge=1, description="Checkpoint every N steps (default: every epoch, or eval_steps).")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept besides the best one.")
    logging_steps: int = Field(10, ge=1, description="Log metrics every N steps.")
    early_stopping_patience: int | None = Field(3, ge=1, description="Stop after N evaluations without improvement (None: never).")
    metric: str | None = Field(None, description="Validation metric that picks the best checkpoint (default: eval_loss; macro_f1 for classification).")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA/DoRA/QLoRA settings.")
    freeze_last_n: int = Field(4, ge=1, description="With method freeze: how many final transformer blocks train.")
    assistant_only_loss: bool = Field(True, description="SFT loss on assistant tokens only (end-of-turn token included).")
    packing: bool = Field(False, description="Pack several short examples into each sequence (SFT).")
    class_weights: Literal["none", "balanced"] | list[float] = Field(
        "none", description="Classification loss weights: none, balanced (inverse frequency) or one weight per label.")
    labels: list[str] | None = Field(None, description="Label order for classification (default: sorted labels of the data).")
    dpo: DpoSettings = Field(default_factory=DpoSettings, description="DPO settings.")
    grader: str | None = Field(None, description="Grader JSON file (OpenAI's grader format) whose score is the reward of rft training; see docs/rft.md.")
    rft: RftSettings = Field(default_factory=RftSettings, description="Reinforcement fine-tuning (TRL GRPO) settings.")
    stages: list[StageSettings] = Field(default_factory=list, description="Progressive training: each stage starts from the previous one's weights.")
    mix: list[MixSettings] = Field(default_factory=list, description="Multi-task training: datasets mixed by weight.")
    tracking: TrackingSettings = Field(default_factory=TrackingSettings, description="Experiment tracking.")
    distributed: DistributedSettings = Field(default_factory=DistributedSettings, description="Multi-GPU / multi-node strategy.")
    bf16: bool | Literal["auto"] = Field("auto", description="bf16 mixed precision (auto: on where the GPU supports it).")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    liger: bool = Field(False, description="Use Liger kernels (GPU, needs liger-kernel).")
    resume: bool = Field(False, description="Continue from the last complete checkpoint in output_dir.")
    memory_limit_gb: float | None = Field(None, gt=0, description="Memory the pre-flight check may plan for (default: what the device has free).")
    replay: ReplaySettings | None = Field(None, description="Replay against forgetting: general or earlier-task records mixed into training.")
    regularization: Literal["none", "ewc"] = Field("none", description="ewc: elastic weight consolidation, a Fisher-weighted penalty towards the starting weights (needs train.ewc.data).")
    ewc: EwcSettings = Field(default_factory=EwcSettings, description="Elastic weight consolidation settings, with regularization ewc.")


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


class GuardSettings(Section):
    max_request_bytes: int = Field(65_536, ge=256, description="Largest request body accepted.")
    max_tokens: int = Field(512, ge=1, description="Largest max_tokens a request may ask for.")
    redact_pii: bool = Field(True, description="Redact PII in prompts (the data stage's detector) before the model and the log see them.")
    block_injection: bool = Field(True, description="Refuse prompts the prompt-injection/jailbreak screen flags.")
    classifier: str | None = Field(None, description="Run directory of a prompt-injection classifier (labels attack/benign, e.g. trained with examples/guard.yaml) screening beside the rules (None: rules only).")
    classifier_threshold: float = Field(0.5, gt=0, lt=1, description="Block when the classifier's attack probability is at least this, or the rules fire (docs/guard.md; examples/guard.yaml records the value chosen on the dev split).")


class ServeConfig(Section):
    model: str | None = Field(None, description="Run directory to serve (the CLI argument overrides it).")
    model_name: str | None = Field(None, description="Model id clients pass in `model` (default: the run directory's name).")
    adapters: dict[str, str] = Field(default_factory=dict, description="LoRA adapters of the served model's base registered at start-up, by the model name clients pass (NAME=ADAPTER_DIR on the command line, repeatable); more can be registered while it serves.")
    engine: Literal["transformers", "vllm", "onnx"] = Field("transformers", description="Inference engine: transformers; vllm (a GPU and the vllm package); onnx (ONNX Runtime on CPU, for an ONNX classifier export). `serve.backend` is its older name.")
    max_adapters: int = Field(8, ge=0, description="LoRA adapters of the served base kept loaded at once; the least recently used is unloaded to load another (0: none, and an adapter run is served merged).")
    max_models: int = Field(2, ge=0, description="Registered runs that are not adapters of the served base (full fine-tunes, other bases) kept loaded at once, each its own model; the least recently used is dropped first (0: none).")
    mix_adapters: bool = Field(True, description="Batch greedy requests for different adapters together (PEFT mixed-adapter batches, vLLM per-request LoRA); false: each adapter batches alone.")
    host: str | None = Field(None, description="Address to bind (default: 127.0.0.1; 0.0.0.0 only with API keys).")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on.")
    api_keys: list[str] = Field(default_factory=list, description="Accepted bearer tokens (TUNELAB_API_KEYS, comma-separated, adds to these).")
    max_batch_size: int = Field(8, ge=1, description="Requests grouped into one model call at most.")
    max_wait_ms: float = Field(10.0, ge=0, description="Longest a request waits for others to join its batch.")
    max_queue: int = Field(256, ge=1, description="Requests waiting at most; beyond it, 429 with Retry-After.")
    cache_size: int = Field(1024, ge=0, description="Responses kept for identical deterministic requests (0: no cache).")
    default_max_tokens: int = Field(128, ge=1, description="max_tokens when a request gives none.")
    guard: GuardSettings = Field(default_factory=GuardSettings, description="Input guard in front of the model.")
    prediction_log: str | None = Field("predictions.db", description="SQLite prediction log (WAL) the monitor reads (None: no log).")
    retention_days: float | None = Field(30, gt=0, description="Prediction log records older than this are deleted (None: keep all).")
    registry: str | None = Field("registry.json", description="Model registry file: served versions and which is live; it belongs to one served model (None: no registry, no hot swap).")
    registry_poll_s: float = Field(1.0, gt=0, description="Seconds between checks of the registry for a new live version.")
    shadow_max_queue: int = Field(64, ge=1, description="Copies waiting for the shadow version at most (its own queue and model thread, so live answers never wait on it); beyond it a copy is dropped and counted.")
    promote: bool = Field(False, description="Make the run given to `tunelab serve` live even while another server serves the registry's live version (that server then swaps to it too).")

    @model_validator(mode="before")
    @classmethod
    def _backend_is_engine(cls, data: Any) -> Any:
        """`serve.backend` (the older name) sets serve.engine."""
        if isinstance(data, dict) and "backend" in data:
            data = dict(data)
            backend = data.pop("backend")
            if data.get("engine", backend) != backend:
                raise ValueError(f"serve.backend ({backend}) and serve.engine ({data['engine']}) disagree: set only "
                                 "serve.engine")
            data["engine"] = backend
        return data


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
class JobsConfig(Section):
    jobs_dir: str = Field("jobs", description="Directory of the jobs server: its SQLite store (jobs.db), uploaded files and one directory per job (prepared data, run directory, logs).")
    host: str | None = Field(None, description="Address `tunelab jobs serve` binds (default: 127.0.0.1; any other only with API keys).")
    port: int = Field(8000, ge=0, le=65535, description="Port `tunelab jobs serve` listens on.")
    api_keys: list[str] = Field(default_factory=list, description="Accepted bearer tokens (TUNELAB_API_KEYS, comma-separated, adds to these); none: loopback only.")
    models: dict[str, str] = Field(default_factory=dict, description="Base models jobs may fine-tune, by the name clients pass as `model`: a hub id or a local model directory (a succeeded job's ft: model may be fine-tuned further too).")
    max_concurrent: int = Field(1, ge=1, description="Jobs running at once; the others wait in the queue.")
    executor: Literal["local", "ray"] = Field("local", description="Where a job's processes run: local (a process of this machine) or ray (a task on a Ray cluster, with the job's resources).")
    ray_address: str | None = Field(None, description="With executor ray: the cluster (auto, HOST:PORT or ray://HOST:10001); unset starts a local head on 127.0.0.1.")
    gpus_per_job: float = Field(0, ge=0, description="GPUs each job asks its executor for (Ray schedules by it).")
    method: TrainMethod = Field("lora", description="How jobs train their base (train.method): lora, full, dora, qlora or freeze.")
    min_examples: int = Field(10, ge=1, description="Fewest usable training examples a job accepts (OpenAI's minimum is 10).")
    max_file_bytes: int = Field(512 * 1024 * 1024, ge=1024, description="Largest file `POST /v1/files` accepts.")
    checkpoints_per_epoch: int = Field(1, ge=1, description="Checkpoints saved per epoch (a restarted or resumed job continues from the last one).")
    keep_checkpoints: int = Field(3, ge=1, description="Checkpoints kept per job (the newest ones; listed by GET .../checkpoints).")
    evaluate: bool = Field(True, description="After training, run `tunelab eval` of the job's run against its base on the held-out split.")
    overrides: list[str] = Field(default_factory=list, description="KEY=VALUE settings applied to every job's generated config, e.g. train.max_length=256 or eval.resamples=200.")
    max_models: int = Field(2, ge=1, description="Fine-tuned models kept loaded at once by the server's /v1/chat/completions (least recently used dropped first).")
    poll_s: float = Field(0.5, gt=0, description="Seconds between the worker's looks at running jobs (status, metrics, checkpoints).")
    cancel_grace_s: float = Field(10.0, gt=0, description="Seconds a cancelled or paused job's process has to stop after SIGTERM before it is killed.")


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


class RunConfig(Section):
    data: DataConfig = Field(default_factory=DataConfig, description="Data preparation (`tunelab data prepare`).")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Fine-tuning (`tunelab train`).")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation (`tunelab eval`).")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="Serving (`tunelab serve`).")
    monitor: MonitorConfig = Field(default_factory=MonitorConfig, description="Monitoring (`tunelab monitor`).")
    label: LabelConfig = Field(default_factory=LabelConfig, description="Labelling (`tunelab label`).")
    retrain: RetrainConfig = Field(default_factory=RetrainConfig, description="The next round (`tunelab retrain`).")
    tune: TuneConfig = Field(default_factory=TuneConfig, description="Hyperparameter search (`tunelab tune`).")
    jobs: JobsConfig = Field(default_factory=JobsConfig, description="The fine-tuning jobs server (`tunelab jobs serve`).")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read YAML (if given), apply `key.sub=value` overrides, and validate as a whole."""
    where = str(path) if path else "command line"
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(Path(path))
    for item in overrides or []:
        apply_override(raw, item)
    return validate_config(raw, where)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TunelabError("config file not found", where=str(path), fix="check the path")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{path}:{mark.line + 1}" if mark else str(path)
        raise TunelabError(f"the YAML does not parse ({getattr(exc, 'problem', exc)})", where=at,
                           fix="fix the syntax at that line") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise TunelabError("the config must be a mapping of sections", where=str(path),
                           fix="start it with a key such as `data:`")
    return loaded


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in a nested dict; the value is parsed as YAML (numbers, lists, booleans)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise TunelabError(f"override {item!r} is not of the form key.sub=value",
                           fix="write it like data.split.seed=3")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise TunelabError(f"override {item!r} sets a key below {part!r}, which is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(value) if value != "" else None
    except yaml.YAMLError:
        node[parts[-1]] = value


def validate_config(raw: dict[str, Any], where: str) -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise _one_sentence(exc, where) from None


def _one_sentence(exc: ValidationError, where: str) -> TunelabError:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    dotted = ".".join(loc)
    if err["type"] == "extra_forbidden":
        valid = _field_names_at(loc[:-1])
        close = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.5)
        prefix = ".".join(loc[:-1] + [""])
        hint = f"did you mean '{prefix}{close[0]}'" if close else (  # no '?': str() ends the sentence
            f"valid keys here are: {', '.join(valid)}")
        return TunelabError(f"unknown key '{dotted}'", where=where, fix=hint)
    got = err.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return TunelabError(f"'{dotted}' is invalid: {err['msg']}{shown}".replace("Value error, ", ""),
                        where=where, fix="correct it in the config or the override")


def _field_names_at(loc: list[str]) -> list[str]:
    model: type[BaseModel] = RunConfig
    for part in loc:
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def field_description(dotted: str) -> str:
    """The description of a config field such as `train.lr`: the one text a CLI option's help
    and the configuration reference both show."""
    model: type[BaseModel] = RunConfig
    *sections, name = dotted.split(".")
    for part in sections:
        model = model.model_fields[part].annotation
    return model.model_fields[name].description


def config_to_dict(cfg: BaseModel) -> dict[str, Any]:
    return cfg.model_dump(mode="json")
