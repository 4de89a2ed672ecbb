"""Batched predictions of a classification model or run directory."""
from __future__ import annotations

import numpy as np
import torch


def load_classifier(path: str):
    """A classifier from a run directory (full model or PEFT adapter) or any HF directory."""
    from pathlib import Path

    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    if (Path(path) / "adapter_config.json").is_file():
        from peft import AutoPeftModelForSequenceClassification
        model = AutoPeftModelForSequenceClassification.from_pretrained(path)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(path)
    return model.eval(), AutoTokenizer.from_pretrained(path)


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
