"""Cheap alternatives a fine-tune must beat to be worth it.

- probe: logistic regression on frozen sentence embeddings of the base encoder (mean-pooled,
  sentence-transformers), fitted on the same training examples the fine-tune saw;
- base: the base model itself with a new, untrained head (what you get without training).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=2)
def sentence_encoder(model_path: str, max_length: int | None = None):
    """A sentence-transformers encoder, loaded once per process (a monitor under --watch and the
    tests embed with the same encoder many times)."""
    from sentence_transformers import SentenceTransformer
    encoder = SentenceTransformer(model_path, device="cpu")
    if max_length:  # the probe reads as much of each text as the fine-tune did
        encoder.max_seq_length = max_length
    return encoder


def embed(model_path: str, texts: list[str], batch_size: int = 64, max_length: int | None = None) -> np.ndarray:
    encoder = sentence_encoder(model_path, max_length)
    return encoder.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                          show_progress_bar=False)


def embedding_probe(model_path: str, train_texts: list[str], train_labels: list[int], test_texts: list[str],
                    *, seed: int = 0, max_length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(predicted label indices, class probabilities) of a logistic-regression probe."""
    from sklearn.linear_model import LogisticRegression
    # float64: on float32 features predict_proba rows miss 1 by more than sklearn's metrics accept
    features = embed(model_path, train_texts + test_texts, max_length=max_length).astype(np.float64)
    train_x, test_x = features[: len(train_texts)], features[len(train_texts):]
    probe = LogisticRegression(max_iter=2000, C=1.0, random_state=seed)
    probe.fit(train_x, train_labels)
    probabilities = np.zeros((len(test_texts), max(train_labels) + 1))
    probabilities[:, probe.classes_] = probe.predict_proba(test_x)
    return probabilities.argmax(axis=1), probabilities
