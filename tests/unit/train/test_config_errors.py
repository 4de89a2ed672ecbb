"""What can be wrong with a training configuration is found before any weights load, and told in
one sentence (TunelabError: what, where, how to fix); through the CLI: exit code 2, no traceback.

In-process, loading weights raises, so a check that only runs after loading fails the test. The
CLI runs use a copy of the model without its weights file for the same proof: a check made too
late would report "cannot load model" instead of the expected sentence.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_helpers import tunelab, tunelab_in_process
from train_helpers import chat_records, classification_records, copy_model, train_config, write_records

from tunelab.config import load_config
from tunelab.errors import TunelabError
from tunelab.train import run as train_run

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="qlora is refused on machines without CUDA")

# id: (model, data, settings, fragments the one-sentence error must contain)
CASES = {
    "unknown key": ("llama", "chat", {"epoch": 1}, ["unknown key 'train.epoch'", "did you mean 'train.epochs'"]),
    "lora target not in model": (
        "llama", "chat", {"lora.target_modules": "[q_proj,qkv_proj]"},
        ["LoRA target module qkv_proj not in LlamaForCausalLM",
         "choose from down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj"]),
    "data label missing from train.labels": (
        "bert", "cls", {"labels": "[negative,neutral]"},
        ["the data has labels ['positive'] that train.labels (['negative', 'neutral']) lacks"]),
    "class_weights length": (
        "bert", "cls", {"class_weights": "[1.0,2.0]"},
        ["train.class_weights has 2 weights for 3 labels (negative, neutral, positive)", "one weight per label"]),
    "empty train.jsonl": ("llama", "empty", {}, ["the training split has no records"]),
    "no usable record": (
        "llama", "half-answered", {},
        ["record 2 cannot be trained on (the conversation ends with 'user', not 'assistant')"]),
    "prompts without a grader": (
        "llama", "no-assistant", {},
        ["the training records end with the user's turn", "train.grader is not set",
         "for sft, end each conversation with the assistant's reply"]),
    "sft task on prompts": (
        "llama", "no-assistant", {"task": "sft"},
        ["train.task is sft but the data is prompt records", "set train.task=rft"]),
    "python grader not enabled": (
        "llama", "no-assistant", {"grader": "PYTHON_GRADER"},
        ["grader 'code' runs python code (code), and python graders are off",
         "train.rft.allow_python_graders=true"]),
    "invalid grader": (
        "llama", "no-assistant", {"grader": "BAD_GRADER"},
        ["grader 'exact' field 'operation' must be one of eq, ne, like, ilike (got 'equal')"]),
    "group size": (
        "llama", "no-assistant", {"grader": "GRADER", "batch_size": 6, "rft.num_generations": 4},
        ["train.batch_size x train.grad_accum x processes (6 x 1 x 1) is not a multiple of "
         "train.rft.num_generations (4)"]),
    "no chat template": ("llama-no-template", "chat", {}, ["the tokenizer has no chat template"]),
    "classification task on chat data": (
        "llama", "chat", {"task": "classification"},
        ["train.task is classification but the data is generative records", "set train.task=sft"]),
    "qlora on cpu": ("llama", "chat", {"method": "qlora"}, ["method qlora needs a CUDA GPU", "use method lora"]),
    "freeze more blocks than the model has": (
        "llama", "chat", {"method": "freeze", "freeze_last_n": 3},
        ["train.freeze_last_n is 3 but the model has 2 blocks", "set it to at most 2"]),
    "missing data path": ("llama", "missing", {}, ["training data not found", "give a prepared directory"]),
}
PARAMS = [pytest.param(*case, id=name, marks=[NO_CUDA] if "qlora" in name else [])
          for name, case in CASES.items()]


@pytest.fixture
def make(tiny_llama_dir, tiny_bert_dir, tmp_path):
    """(model directory without weights, data path) for a case."""
    def build(model: str, data: str) -> tuple[Path, Path]:
        source = tiny_bert_dir if model == "bert" else tiny_llama_dir
        model_dir = copy_model(source, tmp_path / "model", weights=False,
                               chat_template="" if model == "llama-no-template" else None)
        prepared = tmp_path / "prepared"
        prepared.mkdir()
        records = {"chat": chat_records(), "cls": classification_records(), "empty": [],
                   "no-assistant": [{"messages": r["messages"][:1]} for r in chat_records()],
                   "half-answered": [chat_records()[0], {"messages": chat_records()[1]["messages"][:1]}]}
        if data == "missing":
            return model_dir, tmp_path / "no-such-dir"
        write_records(prepared / "train.jsonl", records[data])
        return model_dir, prepared
    return build


GRADERS = {  # grader files the rft cases name, written into the test's directory
    "GRADER": {"type": "string_check", "name": "exact", "input": "{{ sample.output_text }}",
               "reference": "{{ item.answer }}", "operation": "eq"},
    "BAD_GRADER": {"type": "string_check", "name": "exact", "input": "{{ sample.output_text }}",
                   "reference": "{{ item.answer }}", "operation": "equal"},
    "PYTHON_GRADER": {"type": "python", "name": "code", "source": "def grade(sample, item):\n    return 1.0\n"},
}


def with_graders(settings: dict, directory: Path) -> dict:
    """The case's settings with grader placeholders replaced by grader files."""
    if settings.get("grader") not in GRADERS:
        return settings
    path = directory / f"{settings['grader'].lower()}.json"
    path.write_text(json.dumps(GRADERS[settings["grader"]]))
    return {**settings, "grader": str(path)}


def assert_one_sentence(message: str, fragments: list[str]) -> None:
    for fragment in fragments:
        assert fragment in message
    assert "\n" not in message.strip() and message.strip().endswith(".")


@pytest.mark.parametrize("model, data, settings, fragments", PARAMS)
def test_config_error_found_before_loading_weights(model, data, settings, fragments, make, tmp_path, monkeypatch):
    model_dir, data_path = make(model, data)

    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded before the configuration was checked")

    monkeypatch.setattr(train_run, "load_model", no_weights)
    settings = with_graders(settings, tmp_path)
    with pytest.raises(TunelabError) as caught:
        train_run.run(train_config(model=model_dir, data=data_path, output_dir=tmp_path / "run", **settings))
    assert_one_sentence(str(caught.value), fragments)
    assert not (tmp_path / "run").exists()


def cli_args(model_dir: Path, data_path: Path, out: Path, settings: dict) -> list[str]:
    overrides = [f"train.{key}={value}" for key, value in {"tracking.backend": "none", **settings}.items()]
    return ["train", "--model", str(model_dir), "--data", str(data_path), "--output", str(out), *overrides]


@pytest.mark.parametrize("model, data, settings, fragments", PARAMS)
def test_config_error_through_the_cli(model, data, settings, fragments, make, tmp_path, monkeypatch, capsys):
    """`tunelab.cli.main`, the console script's entry point, in this process (every case)."""
    model_dir, data_path = make(model, data)
    monkeypatch.chdir(tmp_path)
    settings = with_graders(settings, tmp_path)
    code, _, stderr = tunelab_in_process(monkeypatch, capsys,
                                         *cli_args(model_dir, data_path, tmp_path / "run", settings))
    assert code == 2
    assert "Traceback" not in stderr and stderr.startswith("error: ")
    assert_one_sentence(stderr.removeprefix("error: "), fragments)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # starts a process of its own (seconds)
@pytest.mark.parametrize("model, data, settings, fragments",
                         [p for p in PARAMS if p.id in ("unknown key", "lora target not in model",
                                                        "empty train.jsonl")])
def test_config_error_through_the_console_script(model, data, settings, fragments, make, tmp_path):
    """The installed `tunelab` command, as a user runs it (a few cases: each starts Python anew)."""
    model_dir, data_path = make(model, data)
    done = tunelab(*cli_args(model_dir, data_path, tmp_path / "run", settings), cwd=tmp_path, check=False,
                   timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.startswith("error: ")
    assert_one_sentence(done.stderr.removeprefix("error: "), fragments)
    assert not (tmp_path / "run").exists()


def test_unknown_nested_key_names_the_valid_ones():
    with pytest.raises(TunelabError) as caught:
        load_config(None, ["train.lora.rank=8"])
    assert "unknown key 'train.lora.rank'" in str(caught.value)
    assert "did you mean 'train.lora.r'" in str(caught.value) or "valid keys here are: r, alpha" in str(caught.value)


def test_checks_pass_for_a_valid_configuration(tiny_llama_dir, tmp_path, monkeypatch):
    """The same checks let a correct configuration through to loading the weights."""
    data = write_records(tmp_path / "chat.jsonl", chat_records())
    loaded = []

    def stop_at_weights(*args, **kwargs):
        loaded.append(args)
        raise KeyboardInterrupt  # reached the weights: every check passed

    monkeypatch.setattr(train_run, "load_model", stop_at_weights)
    cfg = train_config(model=tiny_llama_dir, data=data, output_dir=tmp_path / "run", method="freeze",
                       freeze_last_n=2, **{"lora.target_modules": "[q_proj,v_proj]"})
    with pytest.raises(KeyboardInterrupt):
        train_run.run(cfg)
    assert loaded
