"""Replay against forgetting: records of general or earlier-task data mixed into the training set
so that they make up `share` of it (Rolnick et al., 2019, "Experience replay for continual
learning"; the usual remedy in continual fine-tuning). A seeded sample, drawn without
replacement while the replay data lasts, then cycled; tagged meta.replay so they stay visible.
The validation split is left alone: it measures the new task.
"""
from __future__ import annotations

import random

from tunelab.errors import TunelabError
from tunelab.train.data import TrainingData, load_files, kind_of


def replay_count(task_examples: int, share: float) -> int:
    """How many replayed records make `share` of the mixture with `task_examples` task records."""
    return round(task_examples * share / (1 - share))


def mix_in(data: TrainingData, settings, seed: int) -> TrainingData:
    """`data` with replayed records appended (the trainer shuffles), or `data` when replay is off."""
    if settings is None:
        return data
    records, _, sources = load_files(settings.data)
    if not records:
        raise TunelabError("the replay data has no records", where=settings.data,
                           fix="give train.replay.data a prepared directory or JSONL with records")
    kind = kind_of(records, settings.data)
    if kind != data.kind:
        raise TunelabError(f"the replay data is {kind} records but the training data is {data.kind} records",
                           where="train.replay.data", fix="replay data of the same kind as the task")
    wanted = replay_count(len(data.train), settings.share)
    rng = random.Random(seed)
    drawn: list[dict] = []
    while len(drawn) < wanted:
        drawn += rng.sample(records, min(len(records), wanted - len(drawn)))
    tagged = [{**r, "meta": {**r.get("meta", {}), "replay": True}} for r in drawn]
    return TrainingData(data.kind, data.train + tagged, data.eval, {**data.sources, **sources}, data.prefixes)
