"""The ONNX Runtime classifier (a ClassifierBackend): `serve.engine: onnx` answers /v1/classify
(and chat or text completions, with the label) from a classification run exported with
`tunelab export RUN --format onnx [--int8]`, on CPU.

The export is opened by the export package's own loader (`tunelab.export.onnx_runtime.
OnnxClassifier`: the session, tokenizer, labels and truncation `tunelab eval` scored the export
with), so a served answer is the answer the export's evaluation counted. Task prefixes are the
handlers' concern, as for every backend: texts arrive here prefixed, and the loader's `predict`
adds none.

Generative ONNX exports are not served, nor explanations (`explain: true` needs the PyTorch
model's gradients): a sentence says so and names the way that works.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError
from tunelab.serve.backend import CLASSIFICATION, ClassifierText, vocab_size
from tunelab.train.run_dir import RunDir


def onnx_export_task(export_dir: str | Path) -> str | None:
    """The task of an ONNX export directory, or None when it is not one."""
    run = RunDir.open(export_dir)
    if run.export_format != "onnx":
        return None
    return CLASSIFICATION if run.is_classifier else run.task


class OnnxClassifierBackend(ClassifierText):
    task = CLASSIFICATION
    streams = False
    default_temperature = 0.0
    context_length = None  # longer inputs are truncated, never refused

    def __init__(self, classifier: Any):
        """`classifier`: an export loaded by `OnnxClassifier.load` (its `tokenizer`, `labels`,
        `max_length` and `predict(texts) -> (indices, probabilities)`)."""
        self.classifier = classifier
        self.tokenizer = classifier.tokenizer
        self.text_tokenizer = copy.deepcopy(classifier.tokenizer)  # see ClassifierText
        self.labels = list(classifier.labels)
        self.max_length = classifier.max_length
        self.vocab_size = vocab_size(self.tokenizer)

    @classmethod
    def load(cls, export_dir: str | Path) -> "OnnxClassifierBackend":
        task = onnx_export_task(export_dir)
        if task is None:
            raise TunelabError("serve.engine onnx serves an ONNX export, and this directory is not one",
                               where=str(export_dir), fix="export the run with `tunelab export RUN --format onnx` "
                                                          "and serve that directory, or use serve.engine=transformers")
        if task != CLASSIFICATION:
            raise TunelabError("serve.engine onnx serves classifier exports; generative ONNX exports are not served",
                               where=str(export_dir),
                               fix="serve the run it was exported from with serve.engine=transformers")
        from tunelab.export.onnx_runtime import OnnxClassifier  # says so when onnxruntime is not installed
        return cls(OnnxClassifier.load(export_dir))

    def classify(self, texts: list[str]) -> list[tuple[str, dict[str, float]]]:
        predicted, probabilities = self.classifier.predict(texts, batch_size=len(texts) or 1)
        return [(self.labels[int(i)], {label: float(p) for label, p in zip(self.labels, row)})
                for i, row in zip(predicted, probabilities)]

    def explain(self, text: str, label: str, prefix: str) -> list[dict[str, Any]]:
        """Integrated Gradients needs gradients, which an ONNX Runtime session has not: a request
        asking for them gets one sentence (a 400)."""
        raise TunelabError("explanations are computed with the PyTorch model, and this server serves its ONNX "
                           "export", fix="ask a server of the run the export was made from "
                                         "(serve.engine=transformers) for explain: true")

    def warmup(self) -> None:
        self.classify(["warm up"])
