"""An ONNX export of a classifier, run with ONNX Runtime: what `serve.engine: onnx` serves,
what `tunelab eval EXPORT_DIR` scores, and what `tunelab export --format onnx` checks against
the PyTorch model before keeping the file, so all three see the same answers.

The export directory (written by `tunelab.export.onnx`) holds the graph, the tokenizer, and a
manifest with the labels in head order, the task prefixes and the truncation length of training.
Texts given to `predict` are tokenised as they are: the caller puts the task prefix in (the
server's handlers and the evaluation do, as for the PyTorch model).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tunelab.errors import TunelabError
from tunelab.train.run_dir import RunDir

BATCH_SIZE = 64  # the PyTorch classifier's evaluation batch (tunelab.evaluate.predict.classify)


def require(*modules: str) -> None:
    """ONNX support is an extra (`tunelab[onnx]`): name it when a module of it is missing."""
    import importlib.util
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise TunelabError(f"ONNX export and serving need {', '.join(missing)}, which is not installed",
                           fix="pip install 'tunelab[onnx]'")


def inference_session(model_file: str | Path, *, threads: int | None = None):
    """An ONNX Runtime CPU session on `model_file`; threads: intra-op threads (None: ONNX
    Runtime's default, one per physical core)."""
    require("onnxruntime")
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own (pybind) exception types, not exported
        why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise TunelabError(f"ONNX Runtime cannot load the model ({why})", where=str(model_file),
                           fix="export the run again with `tunelab export RUN --format onnx`") from None


class OnnxClassifier:
    """A classifier graph with its tokenizer, labels (head order) and truncation length."""

    def __init__(self, session, tokenizer, labels: list[str], max_length: int):
        self.session = session
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.max_length = int(max_length)
        self.input_names = [i.name for i in session.get_inputs()]

    @classmethod
    def load(cls, export_dir: str | Path, *, threads: int | None = None) -> "OnnxClassifier":
        """The classifier `tunelab export RUN --format onnx` wrote to `export_dir`."""
        from tunelab.models.load import load_tokenizer
        export = RunDir.open(export_dir)
        if export.export_format != "onnx":
            raise TunelabError("this directory is not an ONNX export (its manifest.json does not say "
                               "stage: export, format: onnx)", where=str(export_dir),
                               fix="export the run with `tunelab export RUN --format onnx` and use that directory")
        if not export.is_classifier or not export.labels:
            raise TunelabError(f"this ONNX export is a {export.task} model, not a classifier with labels",
                               where=str(export_dir), fix="use a classification run's ONNX export")
        model_file = export.path / export.manifest.get("model_file", "model.onnx")
        if not model_file.is_file():
            raise TunelabError(f"the export's model file {model_file.name} is missing", where=str(export_dir),
                               fix="export the run again with `tunelab export RUN --format onnx`")
        return cls(inference_session(model_file, threads=threads), load_tokenizer(str(export.path)),
                   export.labels, export.max_length)

    def logits(self, texts: list[str], *, batch_size: int = BATCH_SIZE) -> np.ndarray:
        """Float32 logits, one row per text, in order; texts longer than max_length are truncated."""
        rows = []
        for start in range(0, len(texts), batch_size):
            encoded = self.tokenizer(list(texts[start:start + batch_size]), truncation=True,
                                     max_length=self.max_length, padding=True, return_tensors="np")
            feed = {name: encoded[name].astype(np.int64) for name in self.input_names}
            rows.append(self.session.run(None, feed)[0])
        return np.concatenate(rows) if rows else np.zeros((0, len(self.labels)), dtype=np.float32)

    def predict(self, texts: list[str], *, batch_size: int = BATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
        """(predicted label indices, softmax probabilities in float64, rows summing to 1)."""
        return softmax_predictions(self.logits(texts, batch_size=batch_size))


def softmax_predictions(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scaled = logits.astype(np.float64)
    scaled = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    probabilities = scaled / scaled.sum(axis=-1, keepdims=True)
    return probabilities.argmax(axis=1), probabilities
