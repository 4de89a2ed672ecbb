"""`tunelab export RUN --format gguf` as a user runs it: a Llama model directory becomes a GGUF
file, a Modelfile and a manifest; bad input (a BERT classifier, an unknown or unavailable quant
type, a directory missing its files) is one sentence, exit 2, and nothing written."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cli_helpers import tunelab, tunelab_in_process

ASSETS = Path(__file__).resolve().parents[1] / "assets"


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    from transformers import AutoTokenizer

    from tiny_models import build_tiny_llama
    tokenizer = AutoTokenizer.from_pretrained(ASSETS / "tiny-chat-tokenizer")
    return build_tiny_llama(tmp_path_factory.mktemp("cli-llama") / "model", tokenizer, hidden=32, intermediate=64,
                            layers=2, heads=4, max_positions=256)


@pytest.fixture(scope="module")
def bert_classifier_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
    tokenizer = AutoTokenizer.from_pretrained(ASSETS / "tiny-chat-tokenizer")
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=2, num_labels=2)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("cli-bert") / "model"
    BertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def one_sentence_exit_2(result) -> str:
    code, out, err = result
    assert code == 2, out + err
    message = (out + err).strip()
    assert "Traceback" not in message and message.count(". ") == 0 and message.endswith(".")
    return message


def test_export_gguf_writes_the_file_the_modelfile_and_a_manifest(llama_dir, tmp_path):
    out = tmp_path / "gguf"
    proc = tunelab("export", llama_dir, "--format", "gguf", "--out", out)

    assert "model-f16.gguf" in proc.stdout and "ollama create NAME -f" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "manifest.json", "model-f16.gguf"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["checks_passed"] is True and manifest["checks"]["greedy"]["agreement"] == 1.0
    assert manifest["checks"]["greedy"]["prompt_source"] == "fixed"  # a plain model directory has no test split
    assert (out / "Modelfile").read_text().startswith("FROM ./model-f16.gguf\n")


def test_a_bert_classifier_is_refused(bert_classifier_dir, monkeypatch, capsys):
    before = sorted(p.name for p in bert_classifier_dir.iterdir())
    message = one_sentence_exit_2(tunelab_in_process(monkeypatch, capsys, "export", bert_classifier_dir,
                                                     "--format", "gguf"))
    assert "GGUF export is for Llama-family causal LMs, and this run is a classifier of type 'bert'" in message
    assert sorted(p.name for p in bert_classifier_dir.iterdir()) == before


@pytest.mark.parametrize("quant, says", [("q5_k", "unknown GGUF quant type 'q5_k'"),
                                         ("q4_k_m", "q4_k_m is not available")])
def test_unknown_and_unavailable_quant_types_are_refused(llama_dir, tmp_path, monkeypatch, capsys, quant, says):
    message = one_sentence_exit_2(tunelab_in_process(monkeypatch, capsys, "export", llama_dir, "--format", "gguf",
                                                     "--quant", quant, "--out", tmp_path / "out"))
    assert says in message
    assert list(tmp_path.iterdir()) == []


def test_a_directory_missing_its_weights_is_refused(llama_dir, tmp_path, monkeypatch, capsys):
    broken = tmp_path / "model"
    shutil.copytree(llama_dir, broken)
    (broken / "model.safetensors").unlink()
    message = one_sentence_exit_2(tunelab_in_process(monkeypatch, capsys, "export", broken, "--format", "gguf"))
    assert "has no weights" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"] and not (broken / "gguf").exists()
