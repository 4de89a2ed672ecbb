"""Forgetting: how much of the base model's general ability the tuned model kept, scored on
general held-out data the tuning never saw (plain text by perplexity, or chat records by the
perplexity of their reference replies)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tunelab.errors import TunelabError
from tunelab.files import read_jsonl

LOWER_IS_BETTER = frozenset({"perplexity", "loss"})
DATA_FIX = ('give a JSONL file of {"text": ...} lines or of chat records {"messages": [...]} ending with an '
            'assistant reply')


@dataclass
class GeneralData:
    kind: Literal["text", "chat"]
    items: list[Any]  # texts for "text", {"messages": [...]} records for "chat"
    path: str


def load_general_data(path: str, max_examples: int) -> GeneralData:
    """The first `max_examples` records of a general held-out JSONL file: all {"text"} lines or
    all canonical chat records."""
    file = Path(path)
    if not file.is_file():
        raise TunelabError("general data for the forgetting check not found", where=path, fix=DATA_FIX)
    try:
        records = read_jsonl(file)[:max_examples]
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TunelabError(f"general data is not JSON Lines ({getattr(exc, 'msg', exc)})", where=path,
                           fix=DATA_FIX) from None
    if not records:
        raise TunelabError("general data has no records", where=path, fix=DATA_FIX)
    kind = "text" if _is_text(records[0]) else "chat"
    check = _is_text if kind == "text" else _is_chat
    for number, record in enumerate(records, start=1):
        if not check(record):
            shape = 'a {"text": ...} line like the first' if kind == "text" else "a chat record like the first"
            if not (_is_text(record) or _is_chat(record)):
                shape = 'a {"text": ...} line or a chat record ending with an assistant reply'
            raise TunelabError(f"record {number} of the general data is not {shape}", where=path, fix=DATA_FIX)
    return GeneralData(kind, [r["text"] for r in records] if kind == "text" else records, path)


def _is_text(record: Any) -> bool:
    return isinstance(record, dict) and isinstance(record.get("text"), str) and bool(record["text"].strip())


def _is_chat(record: Any) -> bool:
    messages = record.get("messages") if isinstance(record, dict) else None
    return (isinstance(messages, list) and bool(messages)
            and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages)
            and messages[-1].get("role") == "assistant")


def general_perplexity(model, tokenizer, data: GeneralData, *, batch_size: int = 16,
                       max_length: int = 512) -> float:
    """Perplexity of `model` on the general data: of the texts, or of the chat records' replies."""
    from tunelab.evaluate.generate import corpus_perplexity, reference_log_likelihood, text_log_likelihood
    if data.kind == "text":
        means, counts = text_log_likelihood(model, tokenizer, data.items, batch_size=batch_size, max_length=max_length)
    else:
        means, counts = reference_log_likelihood(model, tokenizer, data.items, batch_size=batch_size)
    return corpus_perplexity(means, counts)


def retention(tuned: float, base: float, *, higher_is_better: bool) -> float | None:
    """Share of the base model's score the tuned model kept (1.0: all of it; above 1: it improved):
    tuned / base for a score, base / tuned for perplexity or loss. None when the base has no score
    to keep (a zero)."""
    numerator, denominator = (tuned, base) if higher_is_better else (base, tuned)
    return numerator / denominator if denominator else None


def forgetting_report(measure: str, tuned: float, base: float, min_retention: float, data: str) -> dict[str, Any]:
    """The report's forgetting section: flagged when retention falls below `min_retention`."""
    kept = retention(tuned, base, higher_is_better=measure not in LOWER_IS_BETTER)
    return {"measure": measure, "tuned": tuned, "base": base, "retention": kept, "min_retention": min_retention,
            "flagged": kept is not None and kept < min_retention, "data": data}


def forgetting_flag(report: dict[str, Any]) -> str | None:
    """One sentence for the report's flags when the forgetting section is flagged, else None."""
    if not report["flagged"]:
        return None
    return (f"The tuned model kept {report['retention']:.0%} of the base model's general ability "
            f"({report['measure']} {report['tuned']:.4g} against {report['base']:.4g} on {report['data']}), "
            f"below the {report['min_retention']:.0%} minimum.")
