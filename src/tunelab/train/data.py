"""Training data: the output of `tunelab data prepare` (or any canonical JSONL) as `datasets`,
with multi-task mixing and task prefixes."""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError
from tunelab.files import read_jsonl, sha256_of

KIND_TO_TASK = {"generative": "sft", "classification": "classification", "preference": "dpo", "prompt": "rft"}


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
    if not isinstance(record, dict):
        return None
    if "messages" in record:
        messages = record["messages"]
        ends_with_user = isinstance(messages, list) and messages and isinstance(messages[-1], dict) \
            and messages[-1].get("role") == "user"
        return "prompt" if ends_with_user else "generative"
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
    """The records' one canonical kind, once each record is known to be usable for training."""
    found = [record_kind(r) for r in records]
    kinds = set(found)
    if kinds == {"generative", "prompt"}:
        # chat records, some without their final reply (or prompts, some with one): the majority
        # says which were meant, and check_usable names the first record that is not
        kinds = {max(("generative", "prompt"), key=found.count)}
    if None in kinds or len(kinds) != 1:
        found = ", ".join(sorted(str(k) for k in kinds))
        raise TunelabError(f"records are not all of one canonical kind (found {found})", where=where,
                           fix="prepare the data with `tunelab data prepare` first")
    kind = kinds.pop()
    check_usable(records, kind, where)
    return kind


# what `tunelab data prepare` rejects by its own policy (length, control characters) still trains
PREPARE_POLICY_ONLY = ("too_long", "control_characters")


def check_usable(records: list[dict[str, Any]], kind: str, where: str) -> None:
    """Refuse, before any weights load, a record the trainer cannot use (a conversation with no
    final assistant reply, an empty text or label, ...): it would fail or train on nothing mid-run."""
    from tunelab.data.validate import validate_record
    for number, record in enumerate(records, start=1):
        problem = validate_record(record, kind, max_chars=2**62)
        if problem is not None and problem.reason not in PREPARE_POLICY_ONLY:
            raise TunelabError(f"record {number} cannot be trained on ({problem.detail})", where=where,
                               fix="fix or remove it, or run `tunelab data prepare`, which sets such records "
                                   "aside in rejects.jsonl")


def with_prefix(record: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The record with `prefix` before its input: the text, the string prompt, or the first user
    message of a conversation (chat records and conversational preference prompts alike)."""
    record = dict(record)
    if "text" in record:
        record["text"] = f"{prefix}{record['text']}"
    elif "messages" in record:
        record["messages"] = _prefix_first_user(record["messages"], prefix)
    elif isinstance(record.get("prompt"), str):
        record["prompt"] = f"{prefix}{record['prompt']}"
    elif isinstance(record.get("prompt"), list):
        record["prompt"] = _prefix_first_user(record["prompt"], prefix)
    return record


def _prefix_first_user(messages: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    messages = [dict(m) for m in messages]
    first_user = next((i for i, m in enumerate(messages) if m.get("role") == "user"), None)
    if first_user is None:
        raise TunelabError("a conversation has no user message to put the task prefix before",
                           fix="give every conversation a user turn, or remove the prefix from train.mix")
    messages[first_user]["content"] = f"{prefix}{messages[first_user]['content']}"
    return messages


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
    if kind == "preference":
        check_prompt_forms(train + evaluation, data)
    return TrainingData(kind, train, evaluation, sources)


def check_prompt_forms(records: list[dict[str, Any]], where: str) -> None:
    """TRL renders one dataset either as text or through the chat template, not both."""
    if len({isinstance(r["prompt"], list) for r in records}) > 1:
        raise TunelabError("preference records mix string prompts and conversational (message list) prompts",
                           where=where, fix="prepare them in one form: all strings, or all lists of messages")


def mix_task_names(mix: list) -> list[str]:
    """Each entry's task name (default: its directory or file name), which must be distinct: the
    name keys the task's prefix in the run and its records' meta.task."""
    names = [entry.task or Path(entry.data).stem for entry in mix]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise TunelabError(f"train.mix names the task {', '.join(repeated)} more than once",
                           fix="give each entry a distinct train.mix[].task")
    return names


def _load_mixture(mix: list, seed: int) -> TrainingData:
    """Sample each task in proportion to its weight (datasets.interleave_datasets), keeping each
    task's name in meta.task and its prefix in the records and the run.

    Training examples are drawn task by task with probability weight / sum(weights) until every
    task's records have all been drawn at least once (stopping_strategy all_exhausted): the weights
    set the mixture's proportions, so a small task with a large weight is repeated, and a large
    task with a small weight makes the epoch long. Every task's validation records are kept whole
    (tagged with meta.task and prefixed), whatever its weight."""
    import datasets
    tasks, evals, sources, prefixes, kinds = [], [], {}, {}, set()
    for entry, task in zip(mix, mix_task_names(mix)):
        train, evaluation, files = load_files(entry.data)
        if not train:
            raise TunelabError("the training split of a train.mix entry has no records", where=entry.data,
                               fix="check the data prepare report, or remove the entry")
        kinds.add(kind_of(train, entry.data))
        if entry.prefix:
            prefixes[task] = entry.prefix
        tasks.append([_tagged(r, task, entry.prefix or "") for r in train])
        evals += [_tagged(r, task, entry.prefix or "") for r in evaluation]
        sources.update(files)
    if len(kinds) != 1:
        raise TunelabError(f"train.mix combines kinds of data ({', '.join(sorted(kinds))})",
                           fix="mix datasets of one kind (all chat, all classification, all preference or all "
                               "prompts)")
    if kinds == {"preference"}:
        check_prompt_forms([r for rows in tasks for r in rows] + evals, "train.mix")
    # interleave (task, row) indices rather than the records: tasks whose records carry different
    # optional fields (meta keys, message keys) mix without arrow schema conflicts or added nulls
    parts = [datasets.Dataset.from_dict({"task": [t] * len(rows), "row": list(range(len(rows)))})
             for t, rows in enumerate(tasks)]
    total = sum(e.weight for e in mix)
    mixed = datasets.interleave_datasets(parts, probabilities=[e.weight / total for e in mix], seed=seed,
                                         stopping_strategy="all_exhausted")
    train = [tasks[t][r] for t, r in zip(mixed["task"], mixed["row"])]
    return TrainingData(kinds.pop(), train, evals, sources, prefixes)


def _tagged(record: dict[str, Any], task: str, prefix: str) -> dict[str, Any]:
    return {**with_prefix(record, prefix), "meta": {**record.get("meta", {}), "task": task}}


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
    if kind == "prompt":
        # TRL's GRPO samples answers to "prompt" and passes every other column to the reward
        # function; the whole record travels as JSON text so records with different fields mix
        return datasets.Dataset.from_dict({"prompt": [r["messages"] for r in records],
                                           "item": [json.dumps(r, ensure_ascii=False) for r in records]})
    return datasets.Dataset.from_list([{"messages": r["messages"]} for r in records])
