"""Elastic weight consolidation (Kirkpatrick et al., 2017) against forgetting: a quadratic
penalty (strength / 2) * sum_i F_i * (theta_i - theta*_i)^2 that holds each trainable weight near
its starting value theta* in proportion to F_i, the diagonal empirical Fisher information of the
starting weights on general (or earlier-task) data: the mean squared gradient of each example's
loss, normalised to mean 1 over the trainable weights (so one strength carries across models).

The penalty enters through the Trainer's loss hook, `compute_loss_func` (transformers Trainer and
TRL's SFTTrainer both call it with the model outputs and labels): a TrainerCallback cannot change
the loss, and adding the penalty's gradient in a callback would come after gradient clipping.
The task's own loss inside the hook is the one the trainer would compute (class-weighted or plain
cross-entropy; the causal-LM loss over the labels TRL masks), so only the penalty is added.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunelab.errors import TunelabError
from tunelab.files import read_jsonl

FIX = "set train.ewc.data to general (or earlier-task) data the Fisher information is estimated on"


def check(tc, task: str, labels: list[str] | None) -> None:
    """Refuse, before any weights load, an EWC setting that cannot run: no general data, a task
    or a sharded strategy it does not support, or general data it cannot read."""
    if tc.regularization != "ewc":
        return
    if not tc.ewc.data:
        raise TunelabError("train.regularization is ewc but no general data is given for its Fisher information",
                           where="train.ewc.data", fix=FIX + ' (a JSONL of {"text"} lines or chat records for SFT, '
                                                          "of classification records for a classifier)")
    if task not in ("sft", "classification"):
        raise TunelabError(f"train.regularization ewc supports sft and classification, not {task}",
                           fix="set train.regularization=none (replay with train.replay works for every task)")
    if tc.distributed.strategy in ("deepspeed", "fsdp"):
        raise TunelabError("train.regularization ewc needs whole (unsharded) weights on each process",
                           fix="use train.distributed.strategy=auto (DDP) or train.replay instead")
    load_general(tc.ewc.data, task, labels, tc.ewc.fisher_examples)


def load_general(path: str, task: str, labels: list[str] | None, max_examples: int):
    """SFT: the eval stage's general-data shapes ({"text"} lines or chat records); classification:
    {"text", "label"} records whose labels the model has."""
    if task == "sft":
        from tunelab.evaluate.forgetting import load_general_data
        return load_general_data(path, max_examples)
    if not Path(path).is_file():
        raise TunelabError("general data for EWC not found", where=path, fix=FIX)
    try:
        records = read_jsonl(Path(path))[:max_examples]
    except ValueError as exc:
        raise TunelabError(f"general data for EWC is not JSON Lines ({exc})", where=path, fix=FIX) from None
    for number, record in enumerate(records, start=1):
        if not (isinstance(record, dict) and isinstance(record.get("text"), str) and record.get("label") in labels):
            raise TunelabError(f"record {number} of the EWC data is not a classification record with one of the "
                               f"labels {labels}", where=path, fix=FIX)
    if not records:
        raise TunelabError("general data for EWC has no records", where=path, fix=FIX)
    return records


def example_batches(general, task: str, tokenizer, labels: list[str] | None, max_length: int):
    """One (input_ids, labels) pair per general example, with the loss the task trains on."""
    if task == "classification":
        for record in general:
            ids = tokenizer(record["text"], truncation=True, max_length=max_length)["input_ids"]
            yield {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels.index(record["label"])])}
        return
    if general.kind == "text":
        for text in general.items:
            ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
            if len(ids) > 1:
                yield {"input_ids": torch.tensor([ids]), "labels": torch.tensor([ids])}
        return
    # the reply tokens exactly as the eval stage's forgetting check scores them
    from tunelab.evaluate.generate import _reply_tokens
    stops = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    for index, record in enumerate(general.items):
        ids, start = _reply_tokens(tokenizer, record, index, stops)
        ids = ids[:max_length]
        if start < len(ids):
            yield {"input_ids": torch.tensor([ids]), "labels": torch.tensor([[-100] * start + ids[start:]])}


@dataclass
class Anchor:
    """The starting weights and their Fisher information, for each trainable parameter."""
    params: list[torch.nn.Parameter]
    start: list[torch.Tensor]
    fisher: list[torch.Tensor]
    strength: float
    examples: int
    raw_mean: float  # mean of the Fisher before normalisation (textbook lambda = strength / raw_mean)
    last_penalty: float = 0.0  # the penalty at the latest training step

    def penalty(self) -> torch.Tensor:
        total = None
        for param, start, fisher in zip(self.params, self.start, self.fisher):
            if start.device != param.device:  # the trainer moved the model after the Fisher was estimated
                start, fisher = start.to(param.device), fisher.to(param.device)
            term = (fisher * (param - start) ** 2).sum()
            total = term if total is None else total + term
        return 0.5 * self.strength * total

    def fisher_summary(self) -> dict[str, Any]:
        values = torch.cat([f.flatten() for f in self.fisher])
        return {"examples": self.examples, "parameters": int(values.numel()), "raw_mean": self.raw_mean,
                "normalised_max": float(values.max()), "strength": self.strength}


def estimate(model, general, task: str, tokenizer, labels, *, strength: float, max_length: int) -> Anchor:
    """The diagonal empirical Fisher of the model's trainable weights, one backward pass per
    general example (dropout off), and a copy of those weights."""
    params = [p for p in model.parameters() if p.requires_grad]
    fisher = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    was_training, count = model.training, 0
    model.eval()
    device = next(model.parameters()).device
    for batch in example_batches(general, task, tokenizer, labels, max_length):
        model.zero_grad(set_to_none=True)
        loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        loss.backward()
        for param, total in zip(params, fisher):
            if param.grad is not None:
                total += param.grad.detach().float() ** 2
        count += 1
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    if count == 0:
        raise TunelabError("no example of the EWC data has tokens to score", where="train.ewc.data", fix=FIX)
    fisher = [f / count for f in fisher]
    # normalised to mean 1 over the trainable weights: the raw Fisher of a model that already fits
    # the general data is tiny (its gradients are near zero) and its scale differs from model to
    # model, so a raw strength would need retuning for each; strength / mean is the textbook lambda
    mean = float(sum(f.sum() for f in fisher) / sum(f.numel() for f in fisher))
    if mean <= 0:
        raise TunelabError("the Fisher information on the EWC data is zero (no gradient reached the trainable "
                           "weights)", where="train.ewc.data", fix=FIX)
    return Anchor(params, [p.detach().clone() for p in params], [f / mean for f in fisher], strength, count, mean)


def task_loss(task: str):
    """The loss the trainer computes when no hook is set: cross-entropy for a classifier, the
    shifted causal-LM loss over the (TRL-masked) labels for SFT; both summed and divided by the
    accumulated batch's item count, as the Trainer does for a loss hook."""
    from transformers.loss.loss_utils import ForCausalLMLoss

    def classification(outputs, labels, num_items_in_batch=None):
        logits = outputs.logits
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), labels.view(-1), reduction="sum")
        return loss / (num_items_in_batch if num_items_in_batch is not None else labels.numel())

    def causal_lm(outputs, labels, num_items_in_batch=None):
        return ForCausalLMLoss(outputs.logits, labels, outputs.logits.size(-1), num_items_in_batch=num_items_in_batch)

    return classification if task == "classification" else causal_lm


def attach(trainer, anchor: Anchor, task: str) -> None:
    """Add the EWC penalty to the trainer's loss hook (its own hook, such as class weights, kept)."""
    base = trainer.compute_loss_func or task_loss(task)

    def loss_with_penalty(outputs, labels, num_items_in_batch=None):
        # The Trainer treats a hook's loss as normalised over the whole accumulated batch (and, with
        # average_tokens_across_devices, multiplies it by the process count before DDP averages the
        # gradients): the penalty, once per optimizer step, is divided to match.
        share = trainer.current_gradient_accumulation_steps
        if trainer.args.average_tokens_across_devices and num_items_in_batch is not None:
            share *= trainer.accelerator.num_processes
        penalty = anchor.penalty()
        anchor.last_penalty = float(penalty.detach())
        return base(outputs, labels, num_items_in_batch=num_items_in_batch) + penalty / share

    trainer.compute_loss_func = loss_with_penalty
