"""Sequence classification with transformers' Trainer: a head on an encoder (the embedded MiniLM
by default), macro-F1 for picking the best checkpoint, optional class weights through the
Trainer's compute_loss_func (no subclass)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

from tunelab.errors import TunelabError


def check_class_weights(setting, labels: list[str]) -> None:
    """A list of weights must give one per label: checked as soon as the labels are known."""
    if isinstance(setting, list) and len(setting) != len(labels):
        raise TunelabError(f"train.class_weights has {len(setting)} weights for {len(labels)} labels "
                           f"({', '.join(labels)})", fix="give one weight per label, in that order")


def class_weight_vector(setting, labels: list[str], train_labels: list[int]) -> torch.Tensor | None:
    if setting == "none":
        return None
    if setting == "balanced":  # inverse frequency, as sklearn's class_weight="balanced"
        counts = Counter(train_labels)
        n = len(train_labels)
        return torch.tensor([n / (len(labels) * max(counts.get(i, 0), 1)) for i in range(len(labels))])
    check_class_weights(setting, labels)
    return torch.tensor(setting, dtype=torch.float)


def weighted_loss(weights: torch.Tensor):
    """Class-weighted cross-entropy summed over the examples and divided by their count
    (num_items_in_batch counts the whole accumulated batch), so gradient accumulation gives the
    loss of one large batch. torch's reduction="mean" divides by the batch's summed weights
    instead, a divisor that moves with each batch's class mix; with balanced weights (mean 1 over
    the training set) this is the unbiased per-batch estimate of that mean over the whole set."""
    def compute_loss(outputs, labels, num_items_in_batch=None):
        logits = outputs.logits
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), labels.view(-1),
                                                 weight=weights.to(logits.device, logits.dtype), reduction="sum")
        denominator = num_items_in_batch if num_items_in_batch is not None else labels.numel()
        return loss / denominator
    return compute_loss


def classification_metrics(prediction) -> dict[str, float]:
    logits, labels = prediction.predictions, prediction.label_ids
    predicted = np.argmax(logits, axis=-1)
    return {"accuracy": float(accuracy_score(labels, predicted)),
            "macro_f1": float(f1_score(labels, predicted, average="macro")),
            "mcc": float(matthews_corrcoef(labels, predicted))}


def tokenize(dataset, tokenizer, max_length: int):
    return dataset.map(lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length),
                       batched=True, remove_columns=["text"])


def build_classification_trainer(model, tokenizer, train_dataset, eval_dataset, *, common: dict, max_length: int,
                                 class_weights: torch.Tensor | None, callbacks: list):
    if model.config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id  # decoder models need it to find the last token
    args = TrainingArguments(**common)
    return Trainer(model=model, args=args, train_dataset=tokenize(train_dataset, tokenizer, max_length),
                   eval_dataset=tokenize(eval_dataset, tokenizer, max_length) if eval_dataset is not None else None,
                   processing_class=tokenizer, data_collator=DataCollatorWithPadding(tokenizer),
                   compute_metrics=classification_metrics,
                   compute_loss_func=weighted_loss(class_weights) if class_weights is not None else None,
                   callbacks=callbacks)
