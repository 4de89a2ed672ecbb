"""The bodies of OpenAI's Files and fine-tuning API, as this server takes and gives them: the
create-job request (validated field by field; an invalid one is a 400 naming the field) and the
objects (file, fine_tuning.job, fine_tuning.job.event, fine_tuning.job.checkpoint, lists), field
for field as the `openai` client's types read them. Rows of the store become objects here."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Auto = Literal["auto"]
# OpenAI's documented ranges
Epochs = Auto | Annotated[int, Field(ge=1, le=50)]
BatchSize = Auto | Annotated[int, Field(ge=1, le=256)]
LrMultiplier = Auto | Annotated[float, Field(gt=0, le=10)]
Beta = Auto | Annotated[float, Field(gt=0, le=2)]
SUFFIX_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
FilePurpose = Literal["fine-tune", "fine-tune-results", "assistants", "batch", "user_data", "vision", "evals"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


RANGES = {"n_epochs": "a whole number from 1 to 50", "batch_size": "a whole number from 1 to 256",
          "learning_rate_multiplier": "a number above 0 and at most 10", "beta": "a number above 0 and at most 2"}


class SupervisedHyperparameters(Strict):
    n_epochs: Epochs = Field("auto", description="Passes over the training file (1-50) or auto.")
    batch_size: BatchSize = Field("auto", description="Examples per optimizer step (1-256) or auto.")
    learning_rate_multiplier: LrMultiplier = Field("auto", description="Factor on tunelab's default learning rate for the method (0-10] or auto (1).")

    @field_validator("*", mode="wrap")
    @classmethod
    def _auto_or_in_range(cls, value, handler, info):
        """One sentence for a value that is neither "auto" nor in range (pydantic would report
        only that it is not "auto", the first member of the union)."""
        try:
            return handler(value)
        except ValidationError:
            raise ValueError(f"must be 'auto' or {RANGES[info.field_name]} (got {repr(value)[:40]})") from None


class DpoHyperparameters(SupervisedHyperparameters):
    beta: Beta = Field("auto", description="DPO temperature (0-2] or auto (0.1).")


class SupervisedMethod(Strict):
    hyperparameters: SupervisedHyperparameters | None = None


class DpoMethod(Strict):
    hyperparameters: DpoHyperparameters | None = None


class Method(Strict):
    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedMethod | None = None
    dpo: DpoMethod | None = None
    reinforcement: dict[str, Any] | None = None


class JobCreateRequest(Strict):
    model: str = Field(min_length=1, max_length=256, description="A base model this server offers (jobs.models) or a succeeded job's ft: model.")
    training_file: str = Field(min_length=1, max_length=64, description="Id of an uploaded file with purpose fine-tune.")
    validation_file: str | None = Field(None, max_length=64, description="Id of an uploaded file the validation loss is measured on.")
    suffix: str | None = Field(None, pattern=SUFFIX_PATTERN, description="Up to 64 letters, digits, '.', '_' or '-' in the fine-tuned model's name.")
    seed: int | None = Field(None, ge=0, le=2_147_483_647, description="Seed of the job (default: a random one, reported in the job).")
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]] | None = Field(
        None, max_length=16, description="Up to 16 string pairs, filterable in GET /v1/fine_tuning/jobs.")
    method: Method | None = Field(None, description="supervised (default) or dpo, with hyperparameters.")
    hyperparameters: SupervisedHyperparameters | None = Field(None, description="Deprecated by OpenAI: the supervised method's hyperparameters.")
    integrations: list[dict[str, Any]] | None = Field(None, max_length=0, description="Not supported here (must be empty).")


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"]
    status_details: str | None = None
    expires_at: int | None = None


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class FineTuningJob(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: dict[str, Any]
    model: str
    organization_id: str
    result_files: list[str]
    seed: int
    status: Literal["validating_files", "queued", "running", "pausing", "paused", "succeeded", "failed", "cancelled"]
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None
    method: dict[str, Any] | None = None


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJob]
    has_more: bool


class JobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"] = "message"
    data: dict[str, Any] | None = None


class EventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobEvent]
    has_more: bool


class CheckpointMetrics(BaseModel):
    step: float | None = None
    train_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None


class Checkpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int


class CheckpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Checkpoint]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool


ORGANIZATION = "org-tunelab"  # one organisation per server: the field is required by the client's type


def file_object(row: dict[str, Any]) -> FileObject:
    return FileObject(id=row["id"], bytes=row["bytes"], created_at=row["created_at"], filename=row["filename"],
                      purpose=row["purpose"], status=row["status"], status_details=row["status_details"])


def job_object(row: dict[str, Any]) -> FineTuningJob:
    method = row["method"]
    hyper = (method.get(method["type"]) or {}).get("hyperparameters") or {}
    return FineTuningJob(
        id=row["id"], created_at=row["created_at"], error=JobError(**row["error"]) if row["error"] else None,
        fine_tuned_model=row["fine_tuned_model"], finished_at=row["finished_at"],
        hyperparameters={k: v for k, v in hyper.items() if k != "beta"} if method["type"] == "supervised" else hyper,
        model=row["model"], organization_id=ORGANIZATION, result_files=row["result_files"] or [], seed=row["seed"],
        status=row["status"], trained_tokens=row["trained_tokens"], training_file=row["training_file"],
        validation_file=row["validation_file"], estimated_finish=row["estimated_finish"], integrations=[],
        metadata=row["metadata"], method=method)


def event_object(row: dict[str, Any]) -> JobEvent:
    return JobEvent(id=row["id"], created_at=row["created_at"], level=row["level"], message=row["message"],
                    type=row["type"], data=row["data"])


def checkpoint_object(row: dict[str, Any], fine_tuned_model: str) -> Checkpoint:
    return Checkpoint(id=row["id"], created_at=row["created_at"], fine_tuning_job_id=row["job_id"],
                      fine_tuned_model_checkpoint=f"{fine_tuned_model}:ckpt-step-{row['step']}",
                      metrics=CheckpointMetrics(**row["metrics"]), step_number=row["step"])
