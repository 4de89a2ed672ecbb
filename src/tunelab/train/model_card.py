"""The run directory's model card (README.md): what was trained on what, its validation metrics,
and the lines that load it with transformers or PEFT alone."""
from __future__ import annotations


def model_card(base_model, task, method, data_sources, metrics, trainable, labels, prefixes, run_dir) -> str:
    adapter = (run_dir / "adapter_config.json").is_file()
    auto = "AutoModelForSequenceClassification" if task == "classification" else "AutoModelForCausalLM"
    if adapter:
        # an adapter directory has no config.json (one there makes transformers look for full weights),
        # so the head's size and label names are passed to the base model here
        head = ""
        if task == "classification" and labels:
            ids = dict(enumerate(labels))
            head = f", num_labels={len(ids)}, id2label={ids!r}, label2id={ {v: k for k, v in ids.items()}!r}"
        load = (f"from peft import AutoPeftModel{'ForSequenceClassification' if task == 'classification' else 'ForCausalLM'}"
                f"\nmodel = AutoPeftModel{'ForSequenceClassification' if task == 'classification' else 'ForCausalLM'}"
                f".from_pretrained(\"{run_dir}\"{head})")
    else:
        load = f"from transformers import {auto}\nmodel = {auto}.from_pretrained(\"{run_dir}\")"
    metric_lines = "\n".join(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
                             for k, v in metrics.items()) or "| (no validation data) | |"
    data_lines = "\n".join(f"- `{path}` (sha256 `{digest[:16]}…`)" for path, digest in data_sources.items())
    label_line = f"\nLabels: {', '.join(labels)}\n" if labels else ""
    prefix_line = ("\nTask prefixes (applied to inputs at serving time): "
                   + ", ".join(f"{k}: `{v}`" for k, v in prefixes.items()) + "\n") if prefixes else ""
    return f"""---
base_model: {base_model}
library_name: {'peft' if adapter else 'transformers'}
tags: [tunelab, {task}, {method}]
---
# Fine-tuned with tunelab

- base model: `{base_model}`
- task: {task}; method: {method}; trainable parameters: {trainable[0]:,} of {trainable[1]:,}
{label_line}{prefix_line}
## Data
{data_lines}

## Validation metrics (best checkpoint)
| metric | value |
|---|---|
{metric_lines}

## Use
```python
{load}
```
The full resolved configuration is in `config.yaml`; hashes, versions and timings in `manifest.json`;
every logged step in `metrics.jsonl`.
"""


def remote_model_card(name: str, base_model: str, task: str, method: str, remote: dict) -> str:
    """The model card of a run trained by a fine-tuning API: the job, and how to call its model."""
    model = remote.get("fine_tuned_model")
    card = (f"# {name}\n\n{task} fine-tune of `{base_model}` by the fine-tuning API at {remote['base_url']} "
            f"(job `{remote['job_id']}`, {method}): status {remote['status']}")
    if not model:
        return card + ".\n"
    return (f"{card}; model `{model}`.\n\n```python\nfrom openai import OpenAI\n"
            f"client = OpenAI(base_url=\"{remote['base_url']}\")\n"
            f"client.chat.completions.create(model=\"{model}\", messages=[{{\"role\": \"user\", \"content\": \"...\"}}])\n```\n")
