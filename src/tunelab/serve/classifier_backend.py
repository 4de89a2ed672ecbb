"""The transformers classifier (a ClassifierBackend): the run's sequence classifier through
tunelab.evaluate.predict, the code evaluation measured it with, so a served answer is the
answer the evaluation report counted. Task prefixes are the handlers' concern (a request may
name its task): the texts arrive here prefixed.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from tunelab.serve.backend import CLASSIFICATION, ClassifierText, vocab_size


class TransformersClassifier(ClassifierText):
    task = CLASSIFICATION
    streams = False
    default_temperature = 0.0

    def __init__(self, model, tokenizer, *, max_length: int = 512):
        self.model = model
        self.tokenizer = tokenizer  # the model thread's (classify pads and truncates with it)
        # the event loop's own copy for encode/decode: a fast tokenizer's padding and truncation
        # settings are state that a call made from another thread at the same moment would change
        # under it ("expected sequence of length 33 ... (got 31)")
        self.text_tokenizer = copy.deepcopy(tokenizer)
        self.max_length = max_length
        self.context_length = None  # longer inputs are truncated, never refused
        self.vocab_size = vocab_size(tokenizer, model.config)
        self.labels = [model.config.id2label[i] for i in range(model.config.num_labels)]

    @classmethod
    def load(cls, run_dir: str | Path) -> "TransformersClassifier":
        from tunelab.evaluate.predict import load_classifier
        model, tokenizer = load_classifier(str(run_dir))
        # longer inputs are truncated to what both the tokenizer and the position embeddings allow
        limits = [getattr(tokenizer, "model_max_length", None), getattr(model.config, "max_position_embeddings", None)]
        return cls(model, tokenizer, max_length=min([512] + [int(limit) for limit in limits if limit]))

    def classify(self, texts: list[str]) -> list[tuple[str, dict[str, float]]]:
        from tunelab.evaluate.predict import classify
        predicted, probabilities = classify(self.model, self.tokenizer, texts, batch_size=len(texts) or 1,
                                            max_length=self.max_length)
        return [(self.labels[int(i)], {label: float(p) for label, p in zip(self.labels, row)})
                for i, row in zip(predicted, probabilities)]

    def explain(self, text: str, label: str, prefix: str) -> list[dict[str, Any]]:
        from tunelab.evaluate.explain import explain
        return explain(self.model, self.tokenizer, text, target=label, prefix=prefix, max_length=self.max_length)

    def warmup(self) -> None:
        self.classify(["warm up"])
