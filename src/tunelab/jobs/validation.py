"""A job's `validating_files` step: its training (and validation) file go through tunelab's data
stage (`tunelab data prepare`: readers, format detection, validation, exact duplicates, splits)
into the job's prepared directory, strictly: any line the stage rejects fails the job, naming
the file, the line and the reason, as OpenAI fails a file with a bad line. Then the examples
must be of the kind the method trains on, and enough of them."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from tunelab.config import DataConfig
from tunelab.errors import TunelabError
from tunelab.jobs.spec import METHOD_KIND

KIND_WORDS = {"generative": "chat examples (messages)", "preference":
              "preference examples (input, preferred_output, non_preferred_output)",
              "classification": "classification examples (text, label)", "prompt": "prompts ending with a user turn"}


class JobFailure(Exception):
    """What fails a job: OpenAI's error object {code, message, param}."""

    def __init__(self, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.code, self.message, self.param = code, message, param

    def as_error(self) -> dict:
        return {"code": self.code, "message": self.message, "param": self.param}


@dataclass
class Prepared:
    directory: Path
    examples: int  # training examples kept
    kind: str


def link_input(file_path: Path, target: Path) -> Path:
    """The uploaded file under a .jsonl name (the data stage reads by extension)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    os.symlink(file_path.resolve(), target)
    return target


def prepare_job_data(*, training: Path, validation: Path | None, method_type: str, job_dir: Path,
                     min_examples: int) -> Prepared:
    """Run the data stage on the job's files into JOB_DIR/prepared; JobFailure when they cannot
    train this job."""
    inputs = job_dir / "input"
    train_file = link_input(training, inputs / "training_file.jsonl")
    val_file = link_input(validation, inputs / "validation_file.jsonl") if validation else None
    params = {str(train_file): "training_file", **({str(val_file): "validation_file"} if val_file else {})}
    data = DataConfig(inputs=[str(train_file)], out_dir=str(job_dir / "prepared"), num_proc=1,
                      pii={"mode": "keep"}, dedup={"near": False},
                      split={"val": 0.0 if val_file else 0.1, "test": 0.1, "val_file": str(val_file) if val_file else None})
    from tunelab.data import prepare
    try:
        result = prepare.run(data, show_progress=False)
    except TunelabError as exc:
        where = exc.where or ""
        param = next((p for path, p in params.items() if path in where), "training_file")
        raise JobFailure(f"invalid_{param}", plain(exc, params), param) from None
    rejected = first_reject(result.out_dir)
    if rejected is not None:
        param = params.get(rejected.get("source", ""), "training_file")
        raise JobFailure(f"invalid_{param}", f"{param.replace('_', ' ')} line {rejected['line']}: "
                         f"{rejected['detail']} ({rejected['reason']}); fix or remove that line", param)
    report = result.report
    wanted = METHOD_KIND[method_type]
    if report["kind"] != wanted:
        raise JobFailure("invalid_training_file", f"method {method_type} trains on {KIND_WORDS[wanted]}, but the "
                         f"training file holds {KIND_WORDS.get(report['kind'], report['kind'])}", "training_file")
    # counted over the training file, as OpenAI counts (its held-out share included)
    usable = sum(report["splits"].values()) - (report["splits"].get("val", 0) if val_file else 0)
    if usable < min_examples:
        raise JobFailure("invalid_training_file", f"the training file has {usable} usable example"
                         f"{'s' if usable != 1 else ''}; at least {min_examples} are needed", "training_file")
    return Prepared(result.out_dir, report["splits"].get("train", 0), report["kind"])


def first_reject(prepared: Path) -> dict | None:
    path = Path(prepared) / "rejects.jsonl"
    if not path.is_file():
        return None
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                return json.loads(line)
    return None


def plain(exc: TunelabError, params: dict[str, str]) -> str:
    """The data stage's sentence with the job's own names for its files (not server paths)."""
    text = str(exc)
    for path, param in params.items():
        text = text.replace(path, param.replace("_", " "))
    return text
