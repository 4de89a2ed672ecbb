"""`serve.engine: onnx`: a classifier exported to ONNX answers /v1/classify (and chat, with the
label) through ONNX Runtime with the labels and probabilities of the PyTorch classifier it came
from, the task prefix put in once; a generative export and a directory that is no export are
refused in one sentence.

The export directory is written here with torch.onnx and laid out as `tunelab export --format
onnx` lays it out (model.onnx, the tokenizer, manifest.json with stage, format, model_file,
task, labels, task_prefixes, max_length). The backend opens it with the export package's loader
(`tunelab.export.onnx_runtime.OnnxClassifier`)."""
import json
import shutil

import pytest

from serve_helpers import LABELS, PREFIX, serve_config, wait_ready
from tunelab.errors import TunelabError
from tunelab.serve.onnx_backend import OnnxClassifierBackend
from tunelab.serve.service import load_backend

TEXTS = ["great stuff", "awful, just awful", "it is fine I guess", "x"]


def export_dir(run, out, *, task: str):
    """`run` as an ONNX export directory (float32 logits, dynamic batch and sequence axes)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    out.mkdir()
    tokenizer = AutoTokenizer.from_pretrained(run)
    tokenizer.save_pretrained(out)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
    if task == "classification":
        model = AutoModelForSequenceClassification.from_pretrained(run).eval()

        class Logits(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, *inputs):
                return self.model(**dict(zip(names, inputs))).logits

        sample = tokenizer(["a sample to trace", "short"], padding=True, return_tensors="pt")
        batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
        with torch.no_grad():
            torch.onnx.export(Logits(), tuple(sample[n] for n in names), str(out / "model.onnx"), input_names=names,
                              output_names=["logits"], dynamic_shapes=(tuple({0: batch, 1: sequence} for _ in names),),
                              dynamo=True, external_data=False, verbose=False)
    manifest = {"stage": "export", "format": "onnx", "model_file": "model.onnx", "task": task,
                "labels": LABELS if task == "classification" else None, "task_prefixes": {"sentiment": PREFIX},
                "max_length": 128, "source_run": str(run)}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.fixture(scope="module")
def onnx_export(tiny_classifier_run, tmp_path_factory):
    return export_dir(tiny_classifier_run, tmp_path_factory.mktemp("onnx") / "export", task="classification")


def onnx_backend(directory) -> OnnxClassifierBackend:
    return load_backend(directory, engine="onnx")


@pytest.mark.slow  # trains, interrupts and resumes, or starts processes (seconds)
def test_the_onnx_backend_answers_as_the_pytorch_classifier_it_was_exported_from(onnx_export, tiny_classifier_run):
    from tunelab.serve.backend import ClassifierBackend
    backend = onnx_backend(onnx_export)
    assert isinstance(backend, ClassifierBackend) and backend.labels == LABELS
    reference = load_backend(tiny_classifier_run)
    texts = [PREFIX + t for t in TEXTS]  # the server prefixes them, as for every backend
    ours, theirs = backend.classify(texts), reference.classify(texts)
    assert [label for label, _ in ours] == [label for label, _ in theirs]
    for (_, mine), (_, expected) in zip(ours, theirs):
        assert all(abs(mine[k] - expected[k]) < 1e-4 for k in LABELS)
    assert backend.classify(texts[:1]) == ours[:1]  # a batch answers each text as alone


def test_serve_engine_onnx_answers_classify_and_chat_with_the_prefix_put_in_once(onnx_export, tiny_classifier_run,
                                                                                 tmp_path):
    from fastapi.testclient import TestClient
    from tunelab.serve.app import create_app
    from tunelab.serve.service import LiveModel
    backend = onnx_backend(onnx_export)
    settings = serve_config(onnx_export, tmp_path, engine="onnx", model_name="sentiment")
    expected = load_backend(tiny_classifier_run).classify([PREFIX + "great stuff"])[0]
    with TestClient(create_app(settings, live=LiveModel(backend, "onnx-v1", str(onnx_export)))) as http:
        wait_ready(http)
        answer = http.post("/v1/classify", json={"text": "great stuff"}).json()
        assert (answer["label"], answer["model_version"]) == (expected[0], "onnx-v1")
        assert all(abs(answer["probabilities"][k] - expected[1][k]) < 1e-4 for k in LABELS)
        chat = http.post("/v1/chat/completions", json={"model": "sentiment", "messages": [
            {"role": "user", "content": "great stuff"}]}).json()
        assert chat["choices"][0]["message"]["content"] == expected[0]
        assert http.get("/v1/models").json()["data"][0]["tasks"] == ["sentiment"]
        explained = http.post("/v1/classify", json={"text": "great stuff", "explain": True})
        assert explained.status_code == 400 and "ONNX export" in explained.json()["error"]["message"]


def test_generative_exports_and_plain_runs_are_refused_in_one_sentence(tiny_llama_run, tiny_classifier_run,
                                                                       tmp_path):
    generative = export_dir(tiny_llama_run, tmp_path / "generative", task="sft")
    with pytest.raises(TunelabError, match="generative ONNX exports are not served") as refused:
        load_backend(generative, engine="onnx")
    assert "serve.engine=transformers" in str(refused.value)
    plain = tmp_path / "plain"
    shutil.copytree(tiny_classifier_run, plain)
    with pytest.raises(TunelabError, match="serve.engine onnx serves an ONNX export, and this directory is not one"):
        load_backend(plain, engine="onnx")
