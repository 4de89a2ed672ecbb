"""`jobs:`: `tunelab jobs serve`, the fine-tuning jobs server."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from tunelab.config.base import Section
from tunelab.config.train import TrainMethod


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
    cancel_grace_s: float = Field(10.0, gt=0, description="Seconds a cancelled job's process has to stop after SIGTERM before it is killed.")
    pause_grace_s: float = Field(120.0, gt=0, description="Seconds a paused job's training has, after the interrupt, to save a checkpoint and exit before it is stopped like a cancelled one.")
