"""`train:`: how `tunelab train` fine-tunes; the tasks and methods, declared once."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from tunelab.config.base import Section


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


