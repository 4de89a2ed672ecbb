"""`tunelab export RUN --merge`: fold a run's LoRA/DoRA adapter into its base model and save a
plain transformers directory (safetensors + tokenizer) that needs neither PEFT nor tunelab.

The merged weights are written only after they are shown to compute what the adapter computed:
logits on a few prompts (the run's own validation data when it recorded some) before and after
`merge_and_unload` must agree within a tolerance that depends on the weights' dtype.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError
from tunelab.export.checks import FIXED_CONVERSATIONS, check_destination, staged_output
from tunelab.files import manifest, write_json, write_text
from tunelab.train.run_dir import RunDir

CHECK_PROMPTS = 4
CHECK_MAX_TOKENS = 128
# Merging reorders floating-point sums (W x + B A x  vs  (W + B A) x): fp32 agrees to ~1e-6,
# half precision only to its ~3 significant digits.
TOLERANCE = {"float32": 1e-4, "float64": 1e-8, "bfloat16": 1e-2, "float16": 1e-2}
FIXED_TEXTS = ["The delivery arrived two days late and the box was damaged.",
               "Thank you, the support team solved my problem quickly.",
               "I would like to change the billing address on my account.",
               "The product works as described."]


@dataclass
class ExportResult:
    run_dir: Path
    out_dir: Path | None
    message: str
    max_abs_diff: float | None = None
    tolerance: float | None = None


def run(run_dir: str | Path, *, merge: bool, out_dir: str | Path | None = None,
        tolerance: float | None = None) -> ExportResult:
    run = RunDir.open(run_dir)
    run_dir = run.path
    is_adapter = run.is_adapter
    if not merge:
        what = ("the adapter loads with PEFT as it is; pass --merge to fold it into its base model"
                if is_adapter else "the run holds a full model that transformers loads as it is")
        return ExportResult(run_dir, None, f"nothing to export: {what} ({run_dir})")
    if not is_adapter:
        raise TunelabError("--merge needs an adapter run (LoRA/DoRA), and this run has no adapter_config.json "
                           "(it is a full model)", where=str(run_dir),
                           fix="use the run directory as it is: transformers loads it without merging")
    out_dir = Path(out_dir) if out_dir else run_dir / "merged"
    check_destination(out_dir)
    task, labels = run.task, run.labels

    from tunelab.models.load import load_tokenizer
    tokenizer = load_tokenizer(str(run_dir))
    model = load_adapter_model(run_dir, task, labels)
    if task == "classification" and model.config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id  # as in training: decoders find the last token by it
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    limit = tolerance if tolerance is not None else TOLERANCE.get(dtype, 1e-2)

    prompts, source = check_prompts(run, task, tokenizer)
    encoded = [tokenizer(p, return_tensors="pt", truncation=True, max_length=CHECK_MAX_TOKENS,
                         add_special_tokens=task == "classification") for p in prompts]
    before = logits_of(model, encoded)
    merged = model.merge_and_unload()
    after = logits_of(merged, encoded)
    diff = max(float((a - b).abs().max()) for a, b in zip(before, after))
    if not diff <= limit:  # also catches NaN
        raise TunelabError(f"the merged model's logits differ from the adapter's by up to {diff:.3g} on "
                           f"{len(prompts)} {source} prompts (tolerance {limit:g}), so nothing was written",
                           where=str(run_dir), fix="use the adapter with PEFT as it is, or report this as a bug")

    check = {"prompts": len(prompts), "prompt_source": source, "max_abs_logit_diff": diff, "tolerance": limit,
             "dtype": dtype}
    base = {"id": run.base_model_id, "path": run.base_model}
    _save(merged, tokenizer, out_dir, run, base, task, check)
    return ExportResult(run_dir, out_dir, f"merged adapter into {base['id']}; "
                        f"logits agree within {diff:.2g} (tolerance {limit:g}) on {len(prompts)} {source} prompts; "
                        f"saved to {out_dir}", diff, limit)


def load_adapter_model(run_dir: Path, task: str, labels: list[str] | None):
    """The adapter on its base, unmerged (the merge is what gets checked)."""
    from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification

    from tunelab.models.load import check_adapter_base
    base = RunDir(run_dir).adapter_base
    check_adapter_base(run_dir, base)
    kwargs: dict[str, Any] = {}
    if task == "classification":
        auto = AutoPeftModelForSequenceClassification
        if labels:  # the base has no head for them: it is built to this shape, then the adapter's copy is loaded
            kwargs = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                      "label2id": {label: i for i, label in enumerate(labels)}}
    else:
        auto = AutoPeftModelForCausalLM
    try:
        model = auto.from_pretrained(str(run_dir), **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise TunelabError(f"cannot load the adapter onto its base model '{base}' ({why})", where=str(run_dir),
                           fix="make the base model available at that path (adapter_config.json "
                               "base_model_name_or_path)") from None
    return model.eval()


def check_prompts(run: RunDir, task: str, tokenizer) -> tuple[list[str], str]:
    """Up to CHECK_PROMPTS texts to compare logits on: the run's validation records when the
    config still points at them, else fixed prompts (chat-rendered for generative tasks)."""
    records = _validation_records(run)
    texts = [t for t in (_render(r, task, tokenizer) for r in records[:CHECK_PROMPTS]) if t]
    if texts:
        return texts, "validation"
    if task == "classification":
        return list(FIXED_TEXTS), "fixed"
    if getattr(tokenizer, "chat_template", None):
        return [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
                for m in FIXED_CONVERSATIONS], "fixed"
    return [m[-1]["content"] for m in FIXED_CONVERSATIONS], "fixed"


def _validation_records(run: RunDir) -> list[dict[str, Any]]:
    from tunelab.train.data import load_files
    sources = run.training_sources()
    if not sources:
        return []
    try:
        return load_files(sources[0]["data"], sources[0]["eval_data"])[1]
    except (TunelabError, OSError, ValueError):
        return []  # the data has moved since training: fixed prompts still check the merge


def _render(record: dict[str, Any], task: str, tokenizer) -> str | None:
    if task == "classification":
        return record.get("text")
    if task == "dpo":
        prompt = record.get("prompt")
        if isinstance(prompt, list):
            messages = prompt + [{"role": "assistant", "content": record.get("chosen", "")}]
            return tokenizer.apply_chat_template(messages, tokenize=False)
        return f"{prompt}{record.get('chosen', '')}" if prompt else None
    messages = record.get("messages")
    return tokenizer.apply_chat_template(messages, tokenize=False) if messages else None


def logits_of(model, encoded: list[dict]) -> list:
    import torch
    with torch.inference_mode():
        return [model(**batch).logits.float() for batch in encoded]


def _save(merged, tokenizer, out_dir: Path, run: RunDir, base: dict[str, Any], task: str,
          check: dict[str, Any]) -> None:
    """Built in a hidden directory beside out_dir and moved into place whole, so a failed save
    never leaves a half-written model under the final name."""
    with staged_output(out_dir) as tmp:
        merged.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        outputs = {p.name: p for p in tmp.iterdir() if p.is_file()}
        extra = {"source_run": str(run.path.resolve()), "base_model": base, "task": task, "labels": run.labels,
                 "merge_check": check}
        write_text(tmp / "README.md", _card(base["id"], run.path, out_dir, task, check))
        inputs = {n: run.path / n for n in ("adapter_config.json", "adapter_model.safetensors")
                  if (run.path / n).is_file()}
        config = {"merge": True, "tolerance": check["tolerance"]}
        write_json(tmp / "manifest.json", manifest(stage="export", inputs=inputs, outputs=outputs, config=config,
                                                   extra=extra))


def _card(base_model: str, run_dir: Path, out_dir: Path, task: str, check: dict[str, Any]) -> str:
    auto = "AutoModelForSequenceClassification" if task == "classification" else "AutoModelForCausalLM"
    return f"""---
base_model: {base_model}
library_name: transformers
tags: [tunelab, {task}, merged]
---
# Merged with tunelab

The adapter of `{run_dir}` folded into `{base_model}`. Before saving, logits on {check['prompts']}
{check['prompt_source']} prompts matched the adapter's within {check['max_abs_logit_diff']:.2g}
(tolerance {check['tolerance']:g}, {check['dtype']}).

```python
from transformers import {auto}
model = {auto}.from_pretrained("{out_dir}")
```
"""
