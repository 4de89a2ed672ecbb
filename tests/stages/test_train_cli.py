"""`tunelab train` and `tunelab export` end to end, run as a user runs them: the console command
in a subprocess, on a tiny Llama built here. Checks the run directory a LoRA and a full run
leave (loadable by transformers and PEFT alone), Ctrl-C to a checkpoint and --resume, and
merging an adapter run."""
from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cli_helpers import ENV, TUNELAB, tunelab, write_jsonl

TOKENIZER = Path(__file__).resolve().parents[1] / "assets" / "tiny-chat-tokenizer"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle")
TINY = ["train.batch_size=4", "train.logging_steps=1", "train.max_length=64", "train.tracking.backend=none",
        "train.lora.r=4"]


def chat(user: str, assistant: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def rows_of(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line still being written
            pass
    return rows


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A tiny Llama (2 blocks, hidden 32) with the tests' chat tokenizer, and prepared chat data."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    root = tmp_path_factory.mktemp("train-cli")
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    write_jsonl(root / "data" / "train.jsonl", [chat(f"what is {i} plus one", f"it is {i + 1}") for i in range(16)])
    write_jsonl(root / "data" / "val.jsonl", [chat(f"what is {i} plus one", f"it is {i + 1}") for i in (40, 41)])
    return root


def train(workspace: Path, name: str, method: str) -> Path:
    tunelab("train", "--model", workspace / "base", "--data", workspace / "data", "--method", method,
            "--output", workspace / name, "train.max_steps=6", "train.eval_steps=3", *TINY, cwd=workspace)
    return workspace / name


@pytest.fixture(scope="module")
def lora_run(workspace) -> Path:
    return train(workspace, "lora-run", "lora")


@pytest.fixture(scope="module")
def full_run(workspace) -> Path:
    return train(workspace, "full-run", "full")


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_run_directory_holds_what_the_design_promises(kind, request, workspace):
    from tunelab.config import load_config

    run_dir = request.getfixturevalue(f"{kind}_run")
    files = {p.name for p in run_dir.iterdir() if p.is_file()}

    weights = "adapter_model.safetensors" if kind == "lora" else "model.safetensors"
    other = "model.safetensors" if kind == "lora" else "adapter_model.safetensors"
    assert weights in files and other not in files
    assert not [f for f in files if f.endswith(PICKLE_SUFFIXES)], files  # safetensors only, no pickles
    assert {"tokenizer.json", "tokenizer_config.json", "config.yaml", "metrics.jsonl", "manifest.json",
            "README.md"} <= files
    assert (run_dir / "chat_template.jinja").read_text() == (TOKENIZER / "chat_template.jinja").read_text()

    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    reloaded = load_config(run_dir / "config.yaml")  # the resolved config runs again as it is
    assert reloaded.model_dump(mode="json") == saved
    assert reloaded.train.method == kind and reloaded.train.max_steps == 6
    assert reloaded.train.model == str(workspace / "base") and reloaded.train.data == str(workspace / "data")

    rows = rows_of(run_dir / "metrics.jsonl")
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    assert all({"learning_rate", "grad_norm", "epoch", "time"} <= r.keys() for r in steps)
    assert [r["step"] for r in rows if "eval_loss" in r][:2] == [3, 6]
    assert any(r.get("tokens_per_second", 0) > 0 for r in steps)
    assert any("train_runtime" in r for r in rows)

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stage"] == "train" and manifest["task"] == "sft" and manifest["method"] == kind
    assert manifest["base_model"]["id"] == str(workspace / "base")
    assert len(manifest["base_model"]["sha256"]) == 64
    data_hashes = {Path(f).name: h for f, h in manifest["datasets"].items()}
    for split in ("train.jsonl", "val.jsonl"):
        assert data_hashes[split] == hashlib.sha256((workspace / "data" / split).read_bytes()).hexdigest()
    assert {"torch", "transformers", "peft", "trl", "tunelab"} <= manifest["versions"].keys()
    assert "git_commit" in manifest and manifest["seed"] == 42 and manifest["wall_time_s"] > 0
    assert manifest["peak_memory"]["host_rss_mb"] > 0
    assert manifest["interrupted"] is False and manifest["outputs"][weights]["sha256"]

    card = (run_dir / "README.md").read_text()
    assert f"base_model: {workspace / 'base'}" in card and ("peft" if kind == "lora" else "transformers") in card


def test_transformers_and_peft_load_the_runs_without_tunelab(lora_run, full_run, workspace):
    script = f"""
import sys, torch
from peft import AutoPeftModelForCausalLM
from transformers import AutoModelForCausalLM, AutoTokenizer
for load, path in ((AutoPeftModelForCausalLM.from_pretrained, {str(lora_run)!r}),
                   (AutoModelForCausalLM.from_pretrained, {str(full_run)!r})):
    tokenizer = AutoTokenizer.from_pretrained(path)
    text = tokenizer.apply_chat_template([{{"role": "user", "content": "what is 2 plus one"}}], tokenize=False,
                                         add_generation_prompt=True)
    with torch.inference_mode():
        logits = load(path)(**tokenizer(text, return_tensors="pt")).logits
    assert torch.isfinite(logits).all()
assert not [m for m in sys.modules if m.startswith("tunelab")]
print("loaded")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=workspace,
                          env=ENV)
    assert proc.returncode == 0 and "loaded" in proc.stdout, proc.stderr


def test_export_merges_an_adapter_run_and_refuses_a_full_one(lora_run, full_run, workspace):
    merged = tunelab("export", lora_run, "--merge", cwd=workspace)
    assert "merged adapter" in merged.stdout and "validation prompts" in merged.stdout
    assert (lora_run / "merged" / "model.safetensors").is_file()
    assert json.loads((lora_run / "merged" / "manifest.json").read_text())["merge_check"]["max_abs_logit_diff"] <= 1e-4

    refused = tunelab("export", full_run, "--merge", cwd=workspace, check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().startswith("error:") and "needs an adapter run" in refused.stderr
    assert not (full_run / "merged").exists()

    nothing = tunelab("export", full_run, cwd=workspace)
    assert "nothing to export" in nothing.stdout


def test_ctrl_c_saves_a_complete_checkpoint_exits_130_and_resume_finishes(workspace):
    # The signal goes in once step 2 is logged; with this many steps left there is no race
    # with the end of training, however slow or fast the machine.
    STEPS = 200
    run_dir = workspace / "interrupted"
    args = [TUNELAB, "train", "--model", str(workspace / "base"), "--data", str(workspace / "data"),
            "--output", str(run_dir), f"train.max_steps={STEPS}", "train.eval_steps=1000", *TINY]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=workspace, env=ENV)
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if any(r.get("step", 0) >= 2 for r in rows_of(run_dir / "metrics.jsonl")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=240)

    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert "interrupted: checkpoint saved" in stdout and "--resume" in stdout
    checkpoints = [p for p in (run_dir / "checkpoints").glob("checkpoint-*")]
    assert len(checkpoints) == 1
    stopped = int(checkpoints[0].name.split("-")[1])
    assert 2 <= stopped < STEPS and (checkpoints[0] / "tunelab-complete.json").is_file()
    assert json.loads((run_dir / "manifest.json").read_text())["interrupted"] is True

    resumed = tunelab(*args[1:], "--resume", cwd=workspace)

    assert "trained (sft)" in resumed.stdout
    steps = [r["step"] for r in rows_of(run_dir / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, STEPS + 1))  # picked up after the checkpoint, no step trained twice
    assert json.loads((run_dir / "manifest.json").read_text())["interrupted"] is False


def test_a_chat_template_without_generation_markers_trains_on_rendered_assistant_spans(workspace):
    """A user's own template without {% generation %} markers (and unknown to TRL) trains with
    assistant-only loss; one that renders no consistent spans is refused in one sentence."""
    import shutil

    from chat_templates import DROPS_EARLIER_REASONING, UNMARKED
    models = {}
    for name, template in (("unmarked", UNMARKED), ("inconsistent", DROPS_EARLIER_REASONING)):
        models[name] = workspace / f"base-{name}"
        shutil.copytree(workspace / "base", models[name])
        (models[name] / "chat_template.jinja").write_text(template)

    run_dir = workspace / "unmarked-run"
    done = tunelab("train", "--model", models["unmarked"], "--data", workspace / "data", "--method", "full",
                   "--output", run_dir, "train.max_steps=2", *TINY, cwd=workspace)
    assert "trained (sft)" in done.stdout
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["loss_mask"] == "rendered_spans" and manifest["config"]["train"]["assistant_only_loss"] is True
    assert [r["step"] for r in rows_of(run_dir / "metrics.jsonl") if "loss" in r] == [1, 2]
    assert (run_dir / "chat_template.jinja").read_text() == UNMARKED  # served as the user gave it

    reasoning = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "<think>add</think>4"},
                 {"role": "user", "content": "and 3+3?"}, {"role": "assistant", "content": "<think>add</think>6"}]
    data = write_jsonl(workspace / "reasoning.jsonl", [{"messages": reasoning}])
    refused = tunelab("train", "--model", models["inconsistent"], "--data", data, "--output",
                      workspace / "refused-run", *TINY, cwd=workspace, check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    said = " ".join(refused.stderr.split())
    assert ("assistant-only loss cannot find the assistant tokens of training record 1: the template renders the "
            "conversation through assistant turn 1 differently once later turns follow") in said
    assert not (workspace / "refused-run").exists()
