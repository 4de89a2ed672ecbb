"""`tunelab export RUN --merge`: the adapter is folded into its base only when the merged model
computes the same logits, and what is saved is a plain transformers directory (safetensors,
tokenizer with its chat template, a manifest stating the check) that loads without PEFT."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from run_helpers import chat, train_config, write_prepared
from tunelab import export
import tunelab.export.merge  # noqa: F401 (export.merge below)
from tunelab.errors import TunelabError
from tunelab.train.run import run as train

LABELS = ["negative", "neutral", "positive"]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle")
TOKENIZER = Path(__file__).resolve().parents[2] / "assets" / "tiny-chat-tokenizer"


@pytest.fixture(scope="module", autouse=True)
def no_memory_preflight():
    """The pre-flight memory estimate has its own tests; these models are a few kB."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("tunelab.train.run.preflight_memory", lambda *args, **kwargs: None)
        yield


def strengthen_adapter(run_dir: Path, seed: int = 0) -> None:
    """Give every LoRA B matrix sizeable random values: two training steps leave them near zero,
    and an adapter that barely changes the logits would make any merge look right."""
    path = run_dir / "adapter_model.safetensors"
    generator = torch.Generator().manual_seed(seed)
    state = load_file(str(path))
    for name, value in state.items():
        if "lora_B" in name:
            state[name] = torch.randn(value.shape, generator=generator, dtype=value.dtype) * 0.5
    save_file(state, str(path), metadata={"format": "pt"})


@pytest.fixture(scope="module")
def sft_run(tiny_llama, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export-sft")
    data = write_prepared(root / "data", [chat(f"what is {i} plus one", f"it is {i + 1}") for i in range(8)],
                          [chat("what is 40 plus one", "it is 41"), chat("what is 7 plus one", "it is 8")])
    train(train_config(tiny_llama, root / "run", data=str(data), method="lora", max_steps=2))
    strengthen_adapter(root / "run")
    return root / "run"


def logits(model, tokenizer, text: str) -> torch.Tensor:
    with torch.inference_mode():
        return model(**tokenizer(text, return_tensors="pt")).logits


def test_merge_saves_a_plain_model_that_computes_what_the_adapter_computed(sft_run, tiny_llama):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = export.run(sft_run, merge=True)

    out = sft_run / "merged"
    assert result.out_dir == out
    files = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "manifest.json", "README.md"} <= files
    assert "adapter_config.json" not in files and not [f for f in files if f.endswith(PICKLE_SUFFIXES)]
    assert not [p for p in sft_run.parent.iterdir() if p.name.startswith(".")]  # no temporary directory left
    check = json.loads((out / "manifest.json").read_text())["merge_check"]
    assert check["prompt_source"] == "validation" and check["prompts"] == 2
    assert check["dtype"] == "float32" and check["tolerance"] == 1e-4
    assert 0 <= check["max_abs_logit_diff"] == result.max_abs_diff <= 1e-4

    # checked independently: plain transformers on the merged directory against PEFT on the run
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template
    text = tokenizer.apply_chat_template(chat("what is 3 plus one", "it is 4")["messages"], tokenize=False)
    merged = logits(AutoModelForCausalLM.from_pretrained(out).eval(), tokenizer, text)
    adapted = logits(AutoPeftModelForCausalLM.from_pretrained(str(sft_run)).eval(), tokenizer, text)
    base = logits(AutoModelForCausalLM.from_pretrained(tiny_llama).eval(), tokenizer, text)
    assert torch.allclose(merged, adapted, atol=1e-4)
    assert (merged - base).abs().max() > 0.1  # the adapter is in the merged weights

    again = export.run(sft_run, merge=True)  # an earlier export is replaced
    assert again.max_abs_diff == result.max_abs_diff
    assert torch.equal(load_file(str(out / "model.safetensors"))["model.norm.weight"],
                       AutoModelForCausalLM.from_pretrained(out).model.norm.weight.detach())


def test_a_merge_that_changes_the_logits_is_refused_and_nothing_is_written(sft_run, tmp_path, monkeypatch):
    from peft.tuners.tuners_utils import BaseTuner
    # a broken merge: drops the adapter instead of folding it in
    monkeypatch.setattr(BaseTuner, "merge_and_unload", lambda self, *args, **kwargs: self.unload())

    with pytest.raises(TunelabError, match=r"logits differ from the adapter's by up to .*nothing was written"):
        export.run(sft_run, merge=True, out_dir=tmp_path / "merged")
    assert list(tmp_path.iterdir()) == []


def test_without_reachable_validation_data_fixed_chat_prompts_check_the_merge(sft_run, tmp_path):
    run_dir = tmp_path / "moved-run"
    shutil.copytree(sft_run, run_dir, ignore=shutil.ignore_patterns("checkpoints", "merged"))
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["train"]["data"] = str(tmp_path / "gone")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))

    result = export.run(run_dir, merge=True, out_dir=tmp_path / "out")

    check = json.loads((tmp_path / "out" / "manifest.json").read_text())["merge_check"]
    assert check["prompt_source"] == "fixed" and check["prompts"] == len(export.merge.FIXED_CONVERSATIONS)
    assert result.max_abs_diff <= 1e-4


def test_a_full_run_has_nothing_to_merge(tiny_llama):
    before = sorted(p.name for p in tiny_llama.iterdir())
    with pytest.raises(TunelabError, match="--merge needs an adapter run.*full model"):
        export.run(tiny_llama, merge=True)
    assert export.run(tiny_llama, merge=False).message.startswith("nothing to export: the run holds a full model")
    assert sorted(p.name for p in tiny_llama.iterdir()) == before


def test_an_adapter_run_without_merge_says_what_to_do(sft_run):
    assert "pass --merge" in export.run(sft_run, merge=False).message


def test_an_output_directory_that_is_not_an_earlier_export_is_left_alone(sft_run, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(TunelabError, match="already exists and is not an earlier export"):
        export.run(sft_run, merge=True, out_dir=taken)
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]


def test_a_base_model_that_has_moved_is_named_in_the_error(sft_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(sft_run, run_dir, ignore=shutil.ignore_patterns("checkpoints", "merged"))
    adapter_config = json.loads((run_dir / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = str(tmp_path / "moved-base")
    (run_dir / "adapter_config.json").write_text(json.dumps(adapter_config))

    with pytest.raises(TunelabError, match="the base model of this adapter is not at .*moved-base"):
        export.run(run_dir, merge=True)
    assert not (run_dir / "merged").exists()


def test_missing_run_directory(tmp_path):
    with pytest.raises(TunelabError, match="run directory not found"):
        export.run(tmp_path / "nope", merge=True)


def test_classification_adapter_merges_with_its_labels(tiny_bert_dir, tmp_path):
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    records = [{"text": f"{['bad awful', 'so so', 'great fine'][i % 3]} {i}", "label": LABELS[i % 3]}
               for i in range(12)]
    data = write_prepared(tmp_path / "data", records, records[:3])
    train(train_config(tiny_bert_dir, tmp_path / "run", data=str(data), method="lora", max_steps=2))
    strengthen_adapter(tmp_path / "run")

    result = export.run(tmp_path / "run", merge=True, out_dir=tmp_path / "merged")

    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    assert merged.config.id2label == dict(enumerate(LABELS))
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "merged")
    adapted = AutoPeftModelForSequenceClassification.from_pretrained(
        str(tmp_path / "run"), num_labels=3, id2label=dict(enumerate(LABELS))).eval()
    text = "great fine 99"
    assert torch.allclose(logits(merged, tokenizer, text), logits(adapted, tokenizer, text), atol=1e-4)
    check = json.loads((tmp_path / "merged" / "manifest.json").read_text())["merge_check"]
    assert check["prompt_source"] == "validation" and check["prompts"] == 3
    assert result.max_abs_diff <= 1e-4


def test_a_bf16_adapter_made_with_plain_peft_is_checked_at_bf16_tolerance(tiny_llama, tmp_path):
    """No tunelab manifest or config: the task comes from adapter_config.json, the prompts are
    the fixed ones, and the tolerance follows the weights' dtype."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir = tmp_path / "base-bf16"
    AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.bfloat16).save_pretrained(base_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    tokenizer.save_pretrained(base_dir)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.bfloat16),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(tmp_path / "adapter")
    tokenizer.save_pretrained(tmp_path / "adapter")
    strengthen_adapter(tmp_path / "adapter")

    result = export.run(tmp_path / "adapter", merge=True, out_dir=tmp_path / "merged")

    check = json.loads((tmp_path / "merged" / "manifest.json").read_text())["merge_check"]
    assert check["dtype"] == "bfloat16" and check["tolerance"] == 1e-2 and check["prompt_source"] == "fixed"
    assert result.max_abs_diff <= 1e-2
    merged = load_file(str(tmp_path / "merged" / "model.safetensors"))
    assert merged["model.layers.0.self_attn.q_proj.weight"].dtype == torch.bfloat16
