"""Every training example in examples/ trains, as a user runs it: `tunelab train EXAMPLE.yaml`
(the console command, in a subprocess) with the example's own settings, overridden only where a
test must be small and offline: a tiny local model for the hub id, tiny JSONL for the prepared
data, two optimizer steps, short sequences, no tracker, a temporary run directory. Examples that
name their data inside list items (train.stages, train.mix) are copied with those paths rewritten,
since a key=value override replaces a whole list.

chat_lora trains a LoRA adapter on a tiny Llama; dpo_after_sft starts from that run, as its header
says; progressive runs three stages; multitask mixes three chat tasks with their prefixes;
sentiment fine-tunes a tiny BERT classifier; rft runs its SFT stage, then its RFT stage with the
example's own grader (groups of two answers, to fit the two-example batches)."""
from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from cli_helpers import tunelab, write_jsonl

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOKENIZER = Path(__file__).resolve().parents[1] / "assets" / "tiny-chat-tokenizer"
SMALL = ["train.max_steps=2", "train.batch_size=2", "train.eval_batch_size=2", "train.grad_accum=1",
         "train.max_length=64", "train.tracking.backend=none", "train.logging_steps=1"]
RUN_FILES = {"manifest.json", "config.yaml", "metrics.jsonl", "README.md", "tokenizer.json"}
TASK_RECORDS = {  # what each of multitask.yaml's tasks is trained on: a chat turn in, a reply out
    "summarize": lambda i: ("the customer paid twice for order %d and wants one payment back" % i, "double charge"),
    "reply": lambda i: ("where is my parcel number %d" % i, "it left the depot today"),
    "intent": lambda i: ("please cancel subscription %d" % i, "cancel"),
}


def chat(user: str, assistant: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def write_prepared(directory: Path, train: list[dict], val: list[dict]) -> Path:
    """A directory shaped like `tunelab data prepare` output: train.jsonl and val.jsonl."""
    for split, rows in (("train", train), ("val", val)):
        write_jsonl(directory / f"{split}.jsonl", rows)
    return directory


def sums(n: int, start: int = 0) -> list[dict]:
    return [chat(f"what is {i} plus one", f"it is {i + 1}") for i in range(start, start + n)]


def copy_example(name: str, root: Path, rewrite) -> Path:
    """examples/NAME copied into root with `rewrite(raw_train_section)` applied."""
    raw = yaml.safe_load((EXAMPLES / name).read_text(encoding="utf-8"))
    rewrite(raw["train"])
    path = root / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def train(config: Path, *overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    """`tunelab train CONFIG` made small; a failed run raises with its output."""
    return tunelab("train", config, *SMALL, *overrides, cwd=cwd)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A tiny Llama (hidden 64, 2 blocks) and a tiny BERT encoder with the tests' chat tokenizer,
    and the data each example expects, in the shapes its header describes."""
    import torch
    from tiny_models import build_tiny_llama
    from transformers import AutoTokenizer, BertConfig, BertModel

    root = tmp_path_factory.mktemp("examples-run")
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    build_tiny_llama(root / "tiny-llama", tokenizer)
    bert = BertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    BertModel(bert).save_pretrained(root / "tiny-bert")  # no head, like the embedded MiniLM
    tokenizer.save_pretrained(root / "tiny-bert")

    write_prepared(root / "chat", sums(8), sums(2, start=40))
    preference = [{"prompt": [{"role": "user", "content": f"what is {i} plus one"}],
                   "chosen": f"it is {i + 1}", "rejected": f"it is {i + 7}"} for i in range(10)]
    write_prepared(root / "preferences", preference[:8], preference[8:])
    for stage in ("general", "domain", "style"):
        write_prepared(root / stage, sums(6), sums(2, start=40))
    for task, example in TASK_RECORDS.items():
        write_prepared(root / task, [chat(*example(i)) for i in range(6)], [chat(*example(i)) for i in (40, 41)])
    labels = ["negative", "neutral", "positive"]
    words = {"negative": "awful slow refund", "neutral": "the parcel arrived", "positive": "great quick help"}
    sentiment = [{"text": f"{words[labels[i % 3]]} {i}", "label": labels[i % 3]} for i in range(15)]
    write_prepared(root / "sentiment", sentiment[:12], sentiment[12:])
    invoices = [{"messages": [{"role": "user", "content": f"which invoice is overdue, {i} or {i + 1}"}],
                 "answer": f"INV-{i}"} for i in range(10)]
    write_prepared(root / "prompts", invoices[:8], invoices[8:])
    return root


@pytest.fixture(scope="module")
def runs(workspace) -> dict[str, Path]:
    """Every example trained once. The independent runs go two at a time (each subprocess has one
    thread); dpo_after_sft waits for chat_lora, whose run directory is its model."""
    w = workspace
    tiny = f"train.model={w / 'tiny-llama'}"

    def stages(train_section):
        for stage in train_section["stages"]:
            stage["data"] = str(w / stage["name"])

    def mix(train_section):
        for item in train_section["mix"]:
            item["data"] = str(w / item["task"])

    def sft_then_rft(train_section):
        for stage, folder in zip(train_section["stages"], ("chat", "prompts")):
            stage["data"] = str(w / folder)

    jobs = {
        "chat_lora": lambda: train(EXAMPLES / "chat_lora.yaml", tiny, f"train.data={w / 'chat'}",
                                   f"train.output_dir={w / 'runs/chat-lora'}", cwd=w),
        "progressive": lambda: train(copy_example("progressive.yaml", w, stages), tiny,
                                     f"train.output_dir={w / 'runs/progressive'}", cwd=w),
        "multitask": lambda: train(copy_example("multitask.yaml", w, mix), tiny,
                                   f"train.output_dir={w / 'runs/multitask'}", cwd=w),
        "sentiment": lambda: train(EXAMPLES / "sentiment.yaml", f"train.model={w / 'tiny-bert'}",
                                   f"train.data={w / 'sentiment'}", f"train.output_dir={w / 'runs/sentiment'}",
                                   cwd=w),
        "rft": lambda: train(copy_example("rft.yaml", w, sft_then_rft), tiny, f"train.output_dir={w / 'runs/rft'}",
                             f"train.grader={EXAMPLES / 'graders' / 'invoice_id.json'}", "train.rft.num_generations=2",
                             "train.rft.max_completion_length=8", cwd=w),
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        futures["chat_lora"].result()
        dpo = pool.submit(train, EXAMPLES / "dpo_after_sft.yaml", f"train.model={w / 'runs/chat-lora'}",
                          f"train.data={w / 'preferences'}", f"train.output_dir={w / 'runs/dpo'}", cwd=w)
        for future in [*futures.values(), dpo]:
            future.result()  # raises the run's failure with its output
    return {name: w / "runs" / folder for name, folder in (
        ("chat_lora", "chat-lora"), ("progressive", "progressive"), ("multitask", "multitask"),
        ("sentiment", "sentiment"), ("dpo_after_sft", "dpo"), ("rft", "rft"))}


def run_directory(run_dir: Path, weights: str) -> tuple[dict, dict]:
    """(manifest, resolved config) of a complete run directory holding `weights`."""
    files = {p.name for p in run_dir.iterdir() if p.is_file()}
    assert RUN_FILES | {weights} <= files, f"{run_dir.name} lacks {sorted(RUN_FILES | {weights} - files)}"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["interrupted"] is False and manifest["outputs"][weights]["sha256"]
    steps = [r["step"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert steps == [1, 2] * len(manifest["stages"])  # max_steps=2, counted afresh in each stage
    return manifest, yaml.safe_load((run_dir / "config.yaml").read_text())


def test_chat_lora_trains_an_adapter_with_the_examples_settings(runs, workspace):
    manifest, config = run_directory(runs["chat_lora"], "adapter_model.safetensors")
    assert (manifest["task"], manifest["method"]) == ("sft", "lora")
    assert not (runs["chat_lora"] / "model.safetensors").exists()  # the adapter only, not the base
    adapter = json.loads((runs["chat_lora"] / "adapter_config.json").read_text())
    example = yaml.safe_load((EXAMPLES / "chat_lora.yaml").read_text())["train"]
    assert (adapter["r"], adapter["lora_alpha"]) == (example["lora"]["r"], example["lora"]["alpha"])
    # what was not overridden for the test is the example's own
    assert config["train"]["lr"] == example["lr"] and config["train"]["assistant_only_loss"] is True
    assert config["serve"]["model_name"] == "support-assistant"


def test_dpo_after_sft_starts_from_the_sft_run_and_saves_merged_weights(runs, workspace):
    manifest, config = run_directory(runs["dpo_after_sft"], "model.safetensors")
    assert (manifest["task"], manifest["method"]) == ("dpo", "lora")
    assert manifest["base_model"]["id"] == str(workspace / "runs/chat-lora")
    assert config["train"]["dpo"] == {"beta": 0.1, "loss_type": "sigmoid"}
    assert not (runs["dpo_after_sft"] / "adapter_model.safetensors").exists()


def test_progressive_saves_each_of_its_three_stages(runs):
    manifest, _ = run_directory(runs["progressive"], "adapter_model.safetensors")
    assert [s["stage"] for s in manifest["stages"]] == ["general", "domain", "style"]
    for index, name in enumerate(("general", "domain", "style"), start=1):
        snapshot = runs["progressive"] / "stages" / f"{index}-{name}"
        assert (snapshot / "adapter_model.safetensors").is_file() and (snapshot / "tunelab-stage.json").is_file()


def test_multitask_mixes_three_tasks_with_their_prefixes(runs):
    manifest, _ = run_directory(runs["multitask"], "adapter_model.safetensors")
    example = yaml.safe_load((EXAMPLES / "multitask.yaml").read_text())["train"]["mix"]
    assert manifest["task_prefixes"] == {m["task"]: m["prefix"] for m in example}
    assert len(manifest["datasets"]) == 6  # train.jsonl and val.jsonl of each task


def test_sentiment_fine_tunes_a_classifier_over_its_labels(runs):
    manifest, config = run_directory(runs["sentiment"], "model.safetensors")
    assert (manifest["task"], manifest["method"]) == ("classification", "full")
    assert manifest["labels"] == ["negative", "neutral", "positive"]
    assert config["train"]["max_train_examples"] == 6000 and config["eval"]["baselines"] == ["probe", "base"]


def test_rft_runs_its_sft_stage_then_its_rft_stage_with_the_examples_grader(runs):
    manifest, config = run_directory(runs["rft"], "adapter_model.safetensors")
    assert (manifest["task"], manifest["method"]) == ("rft", "lora")
    assert [s["stage"] for s in manifest["stages"]] == ["sft", "rft"]
    example_grader = json.loads((EXAMPLES / "graders" / "invoice_id.json").read_text())
    assert json.loads((runs["rft"] / "grader.json").read_text()) == example_grader
    rewards = [r for r in map(json.loads, (runs["rft"] / "metrics.jsonl").read_text().splitlines())
               if r.get("stage") == "rft" and "reward" in r]
    assert [r["step"] for r in rewards] == [1, 2] and all({"kl", "reward_std"} <= r.keys() for r in rewards)
    assert config["train"]["rft"]["beta"] == 0.04 and config["eval"]["baselines"] == ["base"]
