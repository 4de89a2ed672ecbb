"""Batched predictions of a classification model or run directory."""
from __future__ import annotations

import numpy as np
import torch


def load_classifier(path: str):
    """(model, tokenizer) of a classifier: a run directory (full model, or an adapter merged onto
    its base with a head of the run's labels) or any Hugging Face classifier directory, through
    the one model loader every stage uses."""
    from tunelab.models.load import load_model, load_tokenizer
    model = load_model(path, "classification")
    tokenizer = load_tokenizer(path)
    if model.config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id  # as in training: decoders find the last token by it
    return model.eval(), tokenizer


@torch.inference_mode()
def classify(model, tokenizer, texts: list[str], *, batch_size: int = 64, max_length: int = 512,
             prefix: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(predicted indices, softmax probabilities) for texts, in order."""
    probabilities = []
    for start in range(0, len(texts), batch_size):
        batch = [prefix + t for t in texts[start:start + batch_size]]
        encoded = tokenizer(batch, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        probabilities.append(torch.softmax(model(**encoded).logits.double(), dim=-1).numpy())  # float64: sums to 1 for sklearn
    stacked = np.concatenate(probabilities) if probabilities else np.zeros((0, model.config.num_labels))
    return stacked.argmax(axis=1), stacked
