"""What every `tunelab export --format ...` shares: where the output goes (built in a hidden
sibling, moved into place only after its checks passed), and the prompts and greedy answers an
export is compared with the run on."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError
from tunelab.train.run_dir import RunDir

FIXED_CONVERSATIONS = [
    [{"role": "user", "content": "Summarise the main idea of this sentence in five words."}],
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "What should I check before signing a contract?"}],
    [{"role": "user", "content": "Translate 'good morning' into French."}],
    [{"role": "user", "content": "List three prime numbers."}],
]


def check_destination(out_dir: Path, export_format: str | None = None) -> None:
    """An output directory is replaced only when it is empty or an earlier export (of
    `export_format`, when given): never a directory of something else."""
    if out_dir.is_file() or (out_dir.is_dir() and any(out_dir.iterdir()) and not _earlier_export(out_dir, export_format)):
        what = f"an earlier {export_format.upper()} export" if export_format else "an earlier export"
        raise TunelabError(f"the output directory already exists and is not {what}", where=str(out_dir),
                           fix="remove it or choose another --out")


def _earlier_export(out_dir: Path, export_format: str | None) -> bool:
    found = RunDir(out_dir)
    return found.manifest.get("stage") == "export" and export_format in (None, found.export_format)


@contextmanager
def staged_output(out_dir: Path):
    """A hidden directory beside `out_dir` to build the export in; when the block succeeds it
    replaces `out_dir` whole (an earlier export there is removed), when it fails it is deleted,
    so a failed check never leaves a file under the final name."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    os.chmod(stage, 0o777 & ~_umask())  # mkdtemp makes 0700; an export is an ordinary directory
    try:
        yield stage
        if out_dir.exists():
            shutil.rmtree(out_dir)
        stage.replace(out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def generation_prompts(run: RunDir, tokenizer, limit: int) -> tuple[list[list[dict]], str]:
    """Up to `limit` conversations to generate answers for, each ending before the reply the
    model is to give: the run's held-out test split when `data prepare` wrote one, else its
    validation records, else a few fixed conversations. Returns (conversations, source)."""
    from tunelab.train.data import load_files
    from tunelab.files import read_jsonl

    for source in run.test_sources():
        rows = read_jsonl(Path(source["path"]) / "test.jsonl")
        prompts = _prompts(rows, limit)
        if prompts:
            return prompts, "test"
    sources = run.training_sources()
    if sources:
        try:
            prompts = _prompts(load_files(sources[0]["data"], sources[0]["eval_data"])[1], limit)
        except (TunelabError, OSError, ValueError):
            prompts = []  # the data has moved since training: the fixed prompts still check the export
        if prompts:
            return prompts, "validation"
    return [list(m) for m in FIXED_CONVERSATIONS[:limit]], "fixed"


def _prompts(records: list[dict[str, Any]], limit: int) -> list[list[dict]]:
    prompts = []
    for record in records:
        messages = record.get("messages") or []
        if messages and messages[-1].get("role") == "assistant":
            messages = messages[:-1]  # the reply is what the model is asked for
        if messages and messages[-1].get("role") == "user":
            prompts.append(messages)
        if len(prompts) == limit:
            break
    return prompts


def greedy_answers(model, token_ids: list[list[int]], *, eos_token_ids: list[int], max_new_tokens: int
                   ) -> list[list[int]]:
    """The greedy continuation (token ids, up to and including an end token) of each prompt,
    generated one prompt at a time so that no padding enters the comparison."""
    import torch
    from transformers import GenerationConfig

    # one explicit config for both sides: a run's generation_config.json may carry sampling or
    # repetition settings that the export's reader would not know about
    config = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=eos_token_ids,
                              pad_token_id=eos_token_ids[0])
    answers = []
    with torch.inference_mode():
        for ids in token_ids:
            inputs = torch.tensor([ids])
            out = model.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs), generation_config=config)
            answers.append(out[0, len(ids):].tolist())
    return answers
