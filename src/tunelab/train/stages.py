"""Progressive training: the planned stages, their snapshots (run_dir/stages/N-name) and what
`--resume` needs to skip the stages that finished and continue the one that did not.

A stage's snapshot is complete once its record (tunelab-stage.json: the stage's outcome and
evaluation) is written, after the weights: a snapshot cut off mid-write is never trusted.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tunelab.config import StageSettings
from tunelab.errors import TunelabError
from tunelab.files import write_json

STAGE_RECORD = "tunelab-stage.json"
STAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def planned_stages(tc) -> list[StageSettings]:
    """train.stages with names filled in (stage1, stage2, ...), or the one stage of train.data /
    train.mix. Settings that would silently override each other are refused."""
    if tc.stages and tc.mix:
        raise TunelabError("train.stages and train.mix are both set, and a run follows only one of them",
                           fix="mix within a stage by preparing the mixed data first, or remove one of them")
    if tc.stages and tc.data:
        raise TunelabError(f"train.data ({tc.data}) is set beside train.stages, which name their own data",
                           fix="remove train.data (or --data), or put it in a stage")
    if tc.mix and tc.data:
        raise TunelabError(f"train.data ({tc.data}) is set beside train.mix, which names its own data",
                           fix="remove train.data (or --data), or add it to train.mix")
    if not tc.stages:
        if not (tc.data or tc.mix):
            raise TunelabError("no training data given", fix="set train.data, train.stages or train.mix, or pass --data")
        return [StageSettings(data=tc.data or "", name="train")]
    stages = [s if s.name else s.model_copy(update={"name": f"stage{i + 1}"}) for i, s in enumerate(tc.stages)]
    names = [s.name for s in stages]
    for name in names:
        if not STAGE_NAME.match(name):
            raise TunelabError(f"stage name {name!r} cannot name a directory",
                               fix="use letters, digits, '.', '_' and '-' only (train.stages[].name)")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise TunelabError(f"stage names repeat ({', '.join(repeated)}): each stage needs its own checkpoints",
                           fix="give every stage a distinct name (train.stages[].name)")
    return stages


# Kinds of stage data that may follow one another in one run: the same kind, or supervised chat
# (sft) then prompts for reinforcement fine-tuning (rft), which samples from the same causal LM
# and needs a model that already answers in the right form. The reverse (sft after rft) would
# overwrite what the grader taught by copying examples again; classification and preference
# data train another head or need their own run's reference model.
STAGE_SEQUENCES = {("generative", "prompt")}


def check_stage_kinds(kinds: list[str], names: list[str]) -> None:
    """Every stage trains the same model head on the same kind of records, except that chat (sft)
    stages may be followed by prompt (rft) stages."""
    for (before, after), (name_before, name_after) in zip(zip(kinds, kinds[1:]), zip(names, names[1:])):
        if before != after and (before, after) not in STAGE_SEQUENCES:
            found = ", ".join(f"{n}: {k}" for n, k in zip(names, kinds))
            raise TunelabError(f"stage {name_after} trains on {after} records after stage {name_before}'s {before} "
                               f"records, which one run cannot do ({found})",
                               fix="give every stage records of one kind, or sft (chat) stages followed by rft "
                                   "(prompt) stages; train another kind in its own run from this run's directory")


def snapshot_dir(run_dir: Path, index: int, stage: StageSettings) -> Path:
    return Path(run_dir) / "stages" / f"{index + 1}-{stage.name}"


def save_snapshot(trainer, directory: Path, record: dict[str, Any]) -> None:
    """The stage's weights (model or adapter) and tokenizer, then its record marking it complete.
    save_model runs on every process (DeepSpeed ZeRO-3 gathers the weights collectively)."""
    trainer.save_model(str(directory))
    if trainer.is_world_process_zero():
        (directory / "training_args.bin").unlink(missing_ok=True)  # a pickle; config.yaml records the same
        write_json(directory / STAGE_RECORD, record)


def completed_stages(run_dir: Path, stages: list[StageSettings]) -> list[dict[str, Any]]:
    """The records of the leading stages whose snapshots are complete, in order."""
    records = []
    for index, stage in enumerate(stages):
        marker = snapshot_dir(run_dir, index, stage) / STAGE_RECORD
        if not marker.is_file():
            break
        records.append(json.loads(marker.read_text(encoding="utf-8")))
    return records


def load_weights(model, directory: Path) -> None:
    """Put a snapshot's weights into `model` in place: adapter weights into a PEFT model, full
    weights otherwise. Weights tied to loaded ones (an LM head tied to the embeddings) may be
    absent from the files; anything else missing or unexpected means another model."""
    directory = Path(directory)
    if (directory / "adapter_config.json").is_file():
        from peft import PeftModel, set_peft_model_state_dict
        from peft.utils import load_peft_weights
        if not isinstance(model, PeftModel):
            raise _mismatch(directory, "it holds an adapter but this run trains full weights")
        result = set_peft_model_state_dict(model, load_peft_weights(str(directory)))
        if result.unexpected_keys:
            raise _mismatch(directory, f"unexpected weights {result.unexpected_keys[:3]}")
        return
    from safetensors.torch import load_file
    state: dict[str, Any] = {}
    for file in sorted(directory.glob("*.safetensors")):
        state.update(load_file(str(file)))
    if not state:
        raise _mismatch(directory, "it holds no safetensors weights")
    missing, unexpected = model.load_state_dict(state, strict=False)
    current = model.state_dict()
    loaded = {current[k].data_ptr() for k in state if k in current}
    untied = [k for k in missing if current[k].data_ptr() not in loaded]
    if unexpected or untied:
        raise _mismatch(directory, f"weights {(unexpected or untied)[:3]} do not match the model")


def _mismatch(directory: Path, why: str) -> TunelabError:
    return TunelabError(f"the stage snapshot does not fit this run's model ({why})", where=str(directory),
                        fix="resume with the configuration the run started with, or run without --resume")
