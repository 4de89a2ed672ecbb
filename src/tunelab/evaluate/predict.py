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
def classifier_logits(model, tokenizer, texts: list[str], *, batch_size: int = 64, max_length: int = 512,
                      prefix: str = "") -> np.ndarray:
    """Float32 logits, one row per text, in order (batches padded to their longest text)."""
    rows = []
    for start in range(0, len(texts), batch_size):
        batch = [prefix + t for t in texts[start:start + batch_size]]
        encoded = tokenizer(batch, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        rows.append(model(**encoded).logits.float().numpy())
    return np.concatenate(rows) if rows else np.zeros((0, model.config.num_labels), dtype=np.float32)


def classify(model, tokenizer, texts: list[str], *, batch_size: int = 64, max_length: int = 512,
             prefix: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(predicted indices, softmax probabilities) for texts, in order."""
    logits = torch.from_numpy(classifier_logits(model, tokenizer, texts, batch_size=batch_size,
                                                max_length=max_length, prefix=prefix))
    probabilities = torch.softmax(logits.double(), dim=-1).numpy()  # float64: sums to 1 for sklearn
    return probabilities.argmax(axis=1), probabilities


def load_predictor(path: str, *, max_length: int):
    """(predict, labels, tokenizer, model) of the classifier to evaluate: an ONNX export runs in
    ONNX Runtime (model None: it has no gradients to explain predictions with), anything else is
    loaded as a PyTorch classifier. predict(texts) -> (indices, probabilities)."""
    from tunelab.train.run_dir import RunDir
    if RunDir(path).export_format == "onnx":
        from tunelab.export.onnx_runtime import OnnxClassifier
        exported = OnnxClassifier.load(path)
        return exported.predict, exported.labels, exported.tokenizer, None
    model, tokenizer = load_classifier(path)

    def predict(batch: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return classify(model, tokenizer, batch, max_length=max_length)

    return predict, [model.config.id2label[i] for i in range(model.config.num_labels)], tokenizer, model
