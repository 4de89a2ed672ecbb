"""`tunelab data augment`: a prepared directory in, a new prepared directory out whose training
split holds the originals plus synthetic examples, and whose val/test splits are the originals'
byte for byte (synthetic examples never reach evaluation).

Synthetic examples come from rule-based edits (augment_rules), instruction templates (chat) and,
with data.augment.endpoint.url, paraphrases and few-shot synthetic examples from an
OpenAI-compatible endpoint (augment_endpoint). Each carries meta.synthetic with its origin
(method, edits, source record id). Candidates that the data stage's deduplication would drop
against any original (train, val or test) or an earlier candidate are set aside in dropped.jsonl
with their reason, as are unusable endpoint answers: candidates = kept + dropped always holds.
Everything is computed before anything is written, so a failure leaves no half-written output.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config import DataConfig
from tunelab.data import augment_endpoint as endpoint_io, augment_rules as rules, dedup
from tunelab.data.text import joined_text
from tunelab.data.validate import validate_record
from tunelab.errors import TunelabError
from tunelab.files import atomic_open, manifest, read_jsonl, sha256_of, write_json, write_jsonl
from tunelab.progress import progress_bars

CONTENT_EDITS = ("synonym", "word_order", "entity_swap")  # edits that survive case/punctuation folding


@dataclass
class AugmentResult:
    out_dir: Path
    report: dict[str, Any]


def run(cfg: DataConfig, source: str | Path, out_dir: str | Path, *, show_progress: bool = True) -> AugmentResult:
    source, out_dir = Path(source), Path(out_dir)
    aug = cfg.augment
    splits = read_prepared(source, out_dir)
    originals = [r for r in splits["train"] if "synthetic" not in r.get("meta", {})]
    kind = record_kind(originals, source)
    with progress_bars(show_progress) as bars:
        candidates = [c for i, record in enumerate(bars.track(originals, description="rule-based edits"))
                      for c in rule_variants(record, i, kind, aug)]
        dropped: list[dict[str, Any]] = []
        if aug.endpoint.url:
            from_endpoint, unusable = endpoint_examples(originals, kind, cfg, bars)
            candidates += from_endpoint
            dropped += unusable
        kept, duplicates = deduplicate(candidates, [r for rows in splits.values() for r in rows], cfg)
    dropped += duplicates
    report = augment_report(kind, originals, candidates, kept, dropped, splits)
    write_outputs(out_dir, source, splits, kept, dropped, report, cfg)
    return AugmentResult(out_dir, report)


def read_prepared(source: Path, out_dir: Path) -> dict[str, list[dict[str, Any]]]:
    if not (source / "train.jsonl").is_file():
        raise TunelabError("not a prepared directory (no train.jsonl)", where=str(source),
                           fix="run `tunelab data prepare ... --out DIR` and augment DIR")
    if out_dir.resolve() == source.resolve():
        raise TunelabError("the output directory is the prepared directory itself", where=str(out_dir),
                           fix="write the augmented data to a new directory with --out")
    splits = {}
    for split in ("train", "val", "test"):
        file = source / f"{split}.jsonl"
        try:
            splits[split] = read_jsonl(file) if file.is_file() else []
        except ValueError as exc:
            raise TunelabError(f"{split}.jsonl is not JSON Lines ({exc})", where=str(file),
                               fix="prepare the data again with `tunelab data prepare`") from None
    return splits


def record_kind(records: list[dict[str, Any]], where: Path) -> str:
    from tunelab.train.data import kind_of  # the one check that records are of one usable kind
    if not records:
        raise TunelabError("the training split has no original records to augment", where=str(where))
    kind = kind_of(records, str(where / "train.jsonl"))
    if kind == "preference":
        raise TunelabError("data augment makes classification and chat records, and these are preference records",
                           where=str(where), fix="augment the chat data the preference pairs were written for")
    return kind


def record_id(record: dict[str, Any]) -> str:
    return record.get("meta", {}).get("id") or dedup.exact_key(joined_text(record))[:16]


def synthetic_record(body: dict[str, Any], origin: dict[str, Any], like: dict[str, Any] | None) -> dict[str, Any]:
    """`body` with meta: the original's meta (group, task...) less its file position, a new id,
    source "augment", and meta.synthetic = origin."""
    meta = {k: v for k, v in (like or {}).get("meta", {}).items() if k not in ("id", "line", "source")}
    meta.update(id=dedup.exact_key(joined_text(body))[:16], source="augment", synthetic=origin)
    return {**body, "meta": meta}


def rule_variants(record: dict[str, Any], index: int, kind: str, aug) -> list[dict[str, Any]]:
    """`aug.variants` variants of one record, each from a seeded random combination of edits."""
    variants = []
    for number in range(aug.variants):
        rng = random.Random(f"{aug.seed}:{record_id(record)}:{index}:{number}")
        edits = [e for e in aug.edits if rng.random() < 0.5] or ([rng.choice(aug.edits)] if aug.edits else [])
        content = [e for e in aug.edits if e in CONTENT_EDITS]
        if content and not set(edits) & set(CONTENT_EDITS):
            edits.append(rng.choice(content))
        edits = [e for e in aug.edits if e in edits]  # a fixed order: entity swaps, then wording
        body, applied = edited(record, kind, edits, rng, aug, template=kind == "generative" and aug.templates)
        if applied:
            variants.append(synthetic_record(body, {"method": "rules", "edits": applied,
                                                    "source_id": record_id(record)}, record))
    return variants


def edited(record: dict[str, Any], kind: str, edits: list[str], rng: random.Random, aug,
           template: bool) -> tuple[dict[str, Any], list[str]]:
    """The record with `edits` applied (text for classification; user turns for chat, entity
    swaps across the conversation), and the edits that changed something."""
    texts = [record["text"]] if kind == "classification" else [m["content"] for m in record["messages"]]
    swaps = rules.entity_swaps(texts, rng, numbers=kind == "classification") if "entity_swap" in edits else {}
    applied = ["entity_swap"] if swaps else []

    def wording(text: str, first_user: bool) -> str:
        if first_user and template:
            text = rules.rephrase_instruction(text, rng)
        for edit in edits:
            before = text
            text = {"synonym": lambda t: rules.synonym(t, rng, aug.synonym_rate),
                    "word_order": lambda t: rules.word_order(t, rng),
                    "punctuation": lambda t: rules.punctuation(t, rng),
                    "casing": lambda t: rules.casing(t, rng), "entity_swap": lambda t: t}[edit](text)
            if text != before and edit not in applied:
                applied.append(edit)
        return text

    if kind == "classification":
        return {"text": wording(rules.apply_swaps(record["text"], swaps), False), "label": record["label"]}, applied
    messages, seen_user = [], False
    for message in record["messages"]:
        content = rules.apply_swaps(message["content"], swaps)
        if message["role"] == "user":
            content = wording(content, first_user=not seen_user)
            seen_user = True
        messages.append({**message, "content": content})
    if template and any(m["role"] == "user" for m in record["messages"]):
        applied.insert(0, "template")
    return {"messages": messages}, applied


def endpoint_examples(originals: list[dict[str, Any]], kind: str, cfg: DataConfig, bars):
    """(candidates, unusable answers) from paraphrase and few-shot prompts to the endpoint."""
    settings, seed = cfg.augment.endpoint, cfg.augment.seed
    client = endpoint_io.ChatEndpoint(settings)
    jobs: list[tuple[list[dict[str, str]], dict[str, Any], dict[str, Any] | None]] = []
    for record in originals:
        text, label = input_text(record, kind), record.get("label")
        for number in range(settings.paraphrases):
            jobs.append((endpoint_io.paraphrase_messages(text, label),
                         {"method": "paraphrase", "source_id": record_id(record), "model": settings.model}, record))
    rng = random.Random(f"{seed}:synthetic")
    groups = ({label: [r for r in originals if r["label"] == label] for label in sorted({r["label"] for r in originals})}
              if kind == "classification" else {None: originals})
    for label, members in groups.items():
        for _ in range(settings.synthetic):
            shown = rng.sample(members, min(settings.shots, len(members)))
            examples = [r["text"] if kind == "classification" else
                        json.dumps({"user": input_text(r, kind), "assistant": r["messages"][-1]["content"]})
                        for r in shown]
            jobs.append((endpoint_io.synthetic_messages(examples, label),
                         {"method": "synthetic", "shown_ids": [record_id(r) for r in shown], "model": settings.model},
                         {"label": label} if label is not None else None))
    task = bars.add_task("asking the endpoint", total=len(jobs))
    answers = endpoint_io.ask_all(client, [j[0] for j in jobs], settings.concurrency,
                                  progress=lambda n: bars.advance(task, n))
    candidates, unusable = [], []
    for (_, origin, like), answer in zip(jobs, answers):
        body = endpoint_record(answer, origin, like, kind, cfg.max_chars)
        if isinstance(body, endpoint_io.Answer):
            unusable.append({"reason": body.reason, "answer": answer[:500], "origin": origin})
            continue
        problem = validate_record(body, kind, max_chars=cfg.max_chars)
        if problem:
            unusable.append({"reason": problem.detail, "answer": answer[:500], "origin": origin})
            continue
        candidates.append(synthetic_record(body, origin, like if origin["method"] == "paraphrase" else None))
    endpoint_io.usable_share_check(unusable, len(jobs), settings.max_unusable, client.url)
    return candidates, unusable


def input_text(record: dict[str, Any], kind: str) -> str:
    if kind == "classification":
        return record["text"]
    return next((m["content"] for m in record["messages"] if m["role"] == "user"), record["messages"][0]["content"])


def endpoint_record(answer: str, origin: dict[str, Any], like: dict[str, Any] | None, kind: str, max_chars: int):
    if origin["method"] == "synthetic" and kind == "generative":
        pair = endpoint_io.parse_conversation(answer)
        if isinstance(pair, endpoint_io.Answer):
            return pair
        return {"messages": [{"role": "user", "content": pair["user"]},
                             {"role": "assistant", "content": pair["assistant"]}]}
    original = input_text(like, kind) if origin["method"] == "paraphrase" else None
    cleaned = endpoint_io.clean_text(answer, original, max_chars)
    if cleaned.text is None:
        return cleaned
    if kind == "classification":
        return {"text": cleaned.text, "label": like["label"]}
    first_user = next(i for i, m in enumerate(like["messages"]) if m["role"] == "user")
    return {"messages": [{**m, "content": cleaned.text} if i == first_user else dict(m)
                         for i, m in enumerate(like["messages"])]}


def deduplicate(candidates: list[dict[str, Any]], originals: list[dict[str, Any]], cfg: DataConfig):
    """Candidates the data stage's deduplication keeps when every original (of any split) comes
    first: (kept, dropped rows with the duplicated record's id)."""
    texts = [joined_text(r) for r in originals + candidates]
    found = dedup.find_duplicates(texts, exact=cfg.dedup.exact, near=cfg.dedup.near, threshold=cfg.dedup.threshold,
                                  num_perm=cfg.dedup.num_perm, shingle_words=cfg.dedup.shingle_words)
    everything = originals + candidates
    kept, dropped = [], []
    for candidate, duplicate in zip(candidates, found[len(originals):]):
        if duplicate is None:
            kept.append(candidate)
            continue
        of = everything[duplicate.of]
        whose = "an original" if duplicate.of < len(originals) else "another synthetic record"
        dropped.append({"reason": f"{duplicate.kind} duplicate of {whose}", "similarity": duplicate.similarity,
                        "duplicate_of": record_id(of), "record": candidate})
    return kept, dropped


def augment_report(kind: str, originals, candidates, kept, dropped, splits) -> dict[str, Any]:
    def method(row: dict[str, Any]) -> str:
        origin = row.get("origin") or row["record"]["meta"]["synthetic"]
        return origin["method"]

    made = Counter(c["meta"]["synthetic"]["method"] for c in candidates) + Counter(
        method(d) for d in dropped if "origin" in d)
    by_method = {name: {"generated": made[name],
                        "kept": sum(c["meta"]["synthetic"]["method"] == name for c in kept),
                        "duplicates": sum(method(d) == name for d in dropped if "record" in d),
                        "unusable": sum(method(d) == name for d in dropped if "origin" in d)}
                 for name in sorted(made)}
    edits = Counter(e for c in kept for e in c["meta"]["synthetic"].get("edits", []))
    return {"kind": kind, "originals": len(originals), "synthetic": len(kept), "dropped": len(dropped),
            "splits": {"train": len(splits["train"]) + len(kept), "val": len(splits["val"]),
                       "test": len(splits["test"])},
            "by_method": by_method, "kept_edits": dict(sorted(edits.items()))}


def write_outputs(out_dir: Path, source: Path, splits, kept, dropped, report, cfg: DataConfig) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)  # written last: its presence marks a complete run
    outputs = {"train": out_dir / "train.jsonl"}
    write_jsonl(outputs["train"], splits["train"] + kept)
    for split in ("val", "test"):
        if (source / f"{split}.jsonl").is_file():  # the originals', untouched
            outputs[split] = out_dir / f"{split}.jsonl"
            with atomic_open(outputs[split], "wb") as f:
                f.write((source / f"{split}.jsonl").read_bytes())
    outputs["dropped"] = out_dir / "dropped.jsonl"
    write_jsonl(outputs["dropped"], dropped)
    outputs["report"] = out_dir / "augment_report.json"
    write_json(outputs["report"], report)
    inputs = {f"{name}": source / f"{name}.jsonl" for name in ("train", "val", "test")
              if (source / f"{name}.jsonl").is_file()}
    if (source / "manifest.json").is_file():
        inputs["prepare_manifest"] = source / "manifest.json"
    write_json(out_dir / "manifest.json", manifest(
        stage="data augment", inputs=inputs, outputs=outputs,
        config={"augment": cfg.augment.model_dump(mode="json"), "dedup": cfg.dedup.model_dump(mode="json"),
                "max_chars": cfg.max_chars},
        extra={"counts": {k: report[k] for k in ("originals", "synthetic", "dropped")},
               "val_test_unchanged": all(sha256_of(source / f"{s}.jsonl") == sha256_of(p)
                                         for s, p in outputs.items() if s in ("val", "test"))}))
