"""Training data: the output of `tunelab data prepare` (or any canonical JSONL) as `datasets`,
with multi-task mixing and task prefixes."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError
from tunelab.files import read_jsonl, sha256_of

KIND_TO_TASK = {"generative": "sft", "classification": "classification", "preference": "dpo"}


@dataclass
class TrainingData:
    kind: str
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    sources: dict[str, str] = field(default_factory=dict)  # file -> sha256
    prefixes: dict[str, str] = field(default_factory=dict)  # task -> prefix applied

    def sample(self, limit: int | None, seed: int) -> "TrainingData":
        """At most `limit` training records, a seeded sample in their original order."""
        if limit is None or len(self.train) <= limit:
            return self
        keep = sorted(random.Random(seed).sample(range(len(self.train)), limit))
        return TrainingData(self.kind, [self.train[i] for i in keep], self.eval, self.sources, self.prefixes)


def record_kind(record: dict[str, Any]) -> str | None:
    if "messages" in record:
        return "generative"
    if {"prompt", "chosen", "rejected"} <= record.keys():
        return "preference"
    if {"text", "label"} <= record.keys():
        return "classification"
    return None


def _read(path: Path, what: str) -> list[dict[str, Any]]:
    try:
        return read_jsonl(path)
    except ValueError as exc:
        raise TunelabError(f"{what} is not canonical JSONL ({exc})", where=str(path),
                           fix="prepare it with `tunelab data prepare` first") from None


def load_files(data: str, eval_data: str | None = None) -> tuple[list, list, dict[str, str]]:
    """(train records, eval records, {file: sha256}) from a prepared directory or a JSONL file."""
    path = Path(data)
    if not path.exists():
        raise TunelabError("training data not found", where=data, fix="give a prepared directory or a JSONL file")
    if path.is_dir():
        train_file, eval_file = path / "train.jsonl", path / "val.jsonl"
        if not train_file.is_file():
            raise TunelabError("directory has no train.jsonl", where=data,
                               fix="run `tunelab data prepare ... --out DIR` and pass DIR")
    else:
        train_file, eval_file = path, Path(eval_data) if eval_data else None
    if eval_data and path.is_dir():
        eval_file = Path(eval_data)
    files = [f for f in (train_file, eval_file) if f is not None and f.is_file()]
    train = _read(train_file, "training data")
    evaluation = _read(eval_file, "validation data") if eval_file is not None and eval_file.is_file() else []
    return train, evaluation, {str(f): sha256_of(f) for f in files}


def kind_of(records: list[dict[str, Any]], where: str) -> str:
    kinds = {record_kind(r) for r in records}
    if None in kinds or len(kinds) != 1:
        found = ", ".join(sorted(str(k) for k in kinds))
        raise TunelabError(f"records are not all of one canonical kind (found {found})", where=where,
                           fix="prepare the data with `tunelab data prepare` first")
    return kinds.pop()


def with_prefix(record: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The record with `prefix` before its input: the text, or the first user message."""
    record = dict(record)
    if "text" in record:
        record["text"] = f"{prefix}{record['text']}"
    elif "messages" in record:
        messages = [dict(m) for m in record["messages"]]
        first_user = next(i for i, m in enumerate(messages) if m["role"] == "user")
        messages[first_user]["content"] = f"{prefix}{messages[first_user]['content']}"
        record["messages"] = messages
    elif isinstance(record.get("prompt"), str):
        record["prompt"] = f"{prefix}{record['prompt']}"
    return record


def load_training_data(data: str | None, eval_data: str | None = None, mix: list | None = None,
                       seed: int = 0) -> TrainingData:
    if mix:
        return _load_mixture(mix, seed)
    if not data:
        raise TunelabError("no training data given", fix="set train.data or pass --data DIR_OR_JSONL")
    train, evaluation, sources = load_files(data, eval_data)
    if not train:
        raise TunelabError("the training split has no records", where=data,
                           fix="check the data prepare report for why records were rejected")
    kind = kind_of(train, data)
    if evaluation and kind_of(evaluation, eval_data or data) != kind:
        raise TunelabError("validation records are of another kind than the training records", where=data)
    return TrainingData(kind, train, evaluation, sources)


def _load_mixture(mix: list, seed: int) -> TrainingData:
    """Sample each task in proportion to its weight (datasets.interleave_datasets), keeping each
    task's name in meta.task and its prefix in the records and the run."""
    import datasets
    parts, evals, sources, prefixes, kinds = [], [], {}, {}, set()
    for entry in mix:
        train, evaluation, files = load_files(entry.data)
        task = entry.task or Path(entry.data).stem
        kinds.add(kind_of(train, entry.data))
        prefix = entry.prefix or ""
        if prefix:
            prefixes[task] = prefix
        tag = lambda r, task=task: {**with_prefix(r, prefix), "meta": {**r.get("meta", {}), "task": task}}  # noqa: E731
        parts.append(datasets.Dataset.from_list([tag(r) for r in train]))
        evals += [tag(r) for r in evaluation]
        sources.update(files)
    if len(kinds) != 1:
        raise TunelabError(f"train.mix combines kinds of data ({', '.join(sorted(kinds))})",
                           fix="mix datasets of one kind (all chat, or all classification)")
    total = sum(e.weight for e in mix)
    mixed = datasets.interleave_datasets(parts, probabilities=[e.weight / total for e in mix], seed=seed,
                                         stopping_strategy="all_exhausted")
    return TrainingData(kinds.pop(), mixed.to_list(), evals, sources, prefixes)


def to_dataset(records: list[dict[str, Any]], kind: str, labels: list[str] | None = None):
    """A `datasets.Dataset` holding only what the trainer reads (meta dropped)."""
    import datasets
    if kind == "classification":
        index = {label: i for i, label in enumerate(labels)}
        return datasets.Dataset.from_dict({"text": [r["text"] for r in records],
                                           "label": [index[r["label"]] for r in records]})
    if kind == "preference":
        rows = []
        for r in records:
            if isinstance(r["prompt"], list):  # conversational: TRL wants chosen/rejected as messages too
                rows.append({"prompt": r["prompt"], "chosen": [{"role": "assistant", "content": r["chosen"]}],
                             "rejected": [{"role": "assistant", "content": r["rejected"]}]})
            else:
                rows.append({"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]})
        return datasets.Dataset.from_list(rows)
    return datasets.Dataset.from_list([{"messages": r["messages"]} for r in records])
