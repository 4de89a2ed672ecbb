"""`tunelab data prepare`: raw files in; train/val/test, rejects, duplicates, report and manifest
out. Every input record ends in exactly one of those, so input = kept + rejected + duplicates.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config import DataConfig
from tunelab.data import dedup, formats, readers, report as reporting
from tunelab.data.clean import make_cleaner
from tunelab.data.pii import PiiDetector
from tunelab.data.records import Item, Problem, RawRecord, RecordProblem, reject_row
from tunelab.data.split import SPLITS, split_by_hash
from tunelab.data.template_audit import audit_chat_template, make_token_counter
from tunelab.data.text import char_length, joined_text, map_text_fields
from tunelab.data.validate import validate_record
from tunelab.errors import TunelabError
from tunelab.files import manifest, write_json, write_jsonl
from tunelab.progress import progress_bars

LEAKAGE_EXAMPLES = 10


@dataclass
class PrepareResult:
    out_dir: Path
    report: dict[str, Any]


def run(cfg: DataConfig, inputs: list[str], out_dir: str | Path, *, show_progress: bool = True) -> PrepareResult:
    out_dir = Path(out_dir)
    if not inputs:
        raise TunelabError("no input files given", fix="name one or more files after `tunelab data prepare`")
    sources = [(spec, "input") for spec in inputs]
    # Supplied evaluation files come first so that a training record duplicating one of them is
    # the copy that is dropped: the evaluation sets stay as the user gave them.
    supplied = [(f, role) for f, role in ((cfg.split.val_file, "val"), (cfg.split.test_file, "test")) if f]
    tokenizer = _load_tokenizer(cfg.tokenizer)
    with progress_bars(show_progress) as bars:
        items, rejects, input_stats, kind = read_and_convert(supplied + sources, cfg, bars)
        kept, cleaning = clean_and_validate(items, cfg, kind, tokenizer, rejects, bars)
        kept, pii_stats = handle_pii(kept, cfg, rejects, bars)
        kept, duplicates, index = deduplicate(kept, cfg, bars, kind)
        assign_splits(kept, cfg, kind, supplied_roles={role for _, role in supplied})
        leakage = check_leakage(kept, index, cfg)
    audit = _audit(tokenizer, kept, kind, cfg)
    counts = {"input": sum(s["records"] for s in input_stats), "kept": len(kept), "rejected": len(rejects),
              "duplicates": len(duplicates), "pii_redacted": pii_stats["records_redacted"]}
    if counts["input"] != counts["kept"] + counts["rejected"] + counts["duplicates"]:
        raise AssertionError(f"tunelab lost records, please report this bug: {counts}")
    report = reporting.build_report(kind=kind, counts=counts, kept=kept, rejects=rejects,
                                    duplicates=duplicates, inputs=input_stats, cleaning=cleaning,
                                    pii=pii_stats, leakage=leakage, audit=audit, cfg=cfg,
                                    length_unit="tokens" if tokenizer else "characters")
    write_outputs(out_dir, kept, rejects, duplicates, report, cfg, [s for s, _ in supplied + sources])
    if counts["kept"] == 0:
        raise TunelabError(f"no usable records: all {counts['input']} were rejected or duplicates",
                           where=", ".join(inputs),
                           fix=f"see {out_dir / 'rejects.jsonl'} for the reason of each")
    return PrepareResult(out_dir, report)


def _load_tokenizer(name: str | None):
    if not name:
        return None
    from tunelab.models.load import load_tokenizer
    return load_tokenizer(name)


def read_and_convert(sources: list[tuple[str, str]], cfg: DataConfig, bars):
    """Read every source, detect its format, convert to canonical records; unusable ones to rejects."""
    items: list[Item] = []
    rejects: list[dict[str, Any]] = []
    stats: list[dict[str, Any]] = []
    kinds: dict[str, str] = {}
    task = bars.add_task("reading", total=len(sources))
    for spec, role in sources:
        raws = list(readers.read_input(spec, cfg.encoding))
        fmt = _format_for(spec, raws, cfg)
        kinds[spec] = formats.KIND_OF_FORMAT[fmt]
        stats.append({"path": spec, "role": role, "format": fmt, "records": len(raws)})
        for raw in raws:
            if raw.problem:
                rejects.append(reject_row(raw, raw.problem))
                continue
            try:
                record = formats.to_canonical(raw.value, _record_format(raw.value, fmt, cfg), cfg.text_column,
                                              cfg.label_column, cfg.group_column)
            except RecordProblem as exc:
                rejects.append(reject_row(raw, exc.problem))
                continue
            items.append(Item(raw=raw, record=record, role=role))
        bars.advance(task)
    if len(set(kinds.values())) > 1:
        listing = "; ".join(f"{spec} is {kind}" for spec, kind in kinds.items())
        raise TunelabError(f"inputs mix kinds of data ({listing})", fix="prepare each kind into its own directory")
    return items, rejects, stats, next(iter(kinds.values()))


def _record_format(value: Any, file_format: str, cfg: DataConfig) -> str:
    """With format auto, a record in another format of the same kind (alpaca lines in a chat
    file, say) is read in its own format; anything else must fit the file's format."""
    if cfg.format != "auto":
        return file_format
    own = formats.format_of(value, cfg.text_column, cfg.label_column)
    same_kind = own and formats.KIND_OF_FORMAT[own] == formats.KIND_OF_FORMAT[file_format]
    return own if same_kind else file_format


def _format_for(spec: str, raws: list[RawRecord], cfg: DataConfig) -> str:
    if not raws:
        raise TunelabError("input has no records", where=spec, fix="pass a file with at least one record")
    if cfg.format != "auto":
        return cfg.format
    values = [r.value for r in raws if r.problem is None]
    if not values:
        raise TunelabError(f"none of its {len(raws)} records can be read ({raws[0].problem.detail} at "
                           f"{raws[0].unit} {raws[0].line})", where=spec, fix="check the file format and data.encoding")
    fmt = formats.detect_format(values, cfg.text_column, cfg.label_column)
    if fmt is None:
        first = values[0]
        seen = f"keys {sorted(first)[:8]}" if isinstance(first, dict) else f"a {type(first).__name__}"
        raise TunelabError(f"unknown format: records have {seen}", where=spec,
                           fix="use messages, conversations, instruction/output, prompt/completion, "
                               "prompt/chosen/rejected or text/label (set data.text_column and "
                               "data.label_column), or name it with --format")
    return fmt


def clean_and_validate(items: list[Item], cfg: DataConfig, kind: str, tokenizer, rejects, bars):
    clean = make_cleaner(cfg.clean.nfc, cfg.clean.whitespace, cfg.clean.strip_html)
    changed = 0
    changed_here = False

    def counting_clean(text: str) -> str:
        nonlocal changed_here
        cleaned = clean(text)
        changed_here = changed_here or cleaned != text
        return cleaned

    labels = set(cfg.labels) if cfg.labels else None
    count_tokens = make_token_counter(tokenizer, kind) if tokenizer else None
    kept: list[Item] = []
    for item in bars.track(items, description="cleaning, validating"):
        changed_here = False
        try:
            map_text_fields(item.record, counting_clean)
        except (AttributeError, TypeError):
            pass  # a malformed structure is reported by validation below
        changed += changed_here
        problem = validate_record(item.record, kind, labels=labels, max_chars=cfg.max_chars)
        if problem is None:
            item.length = count_tokens(item.record) if count_tokens else char_length(item.record)
            if count_tokens and cfg.max_tokens and item.length > cfg.max_tokens:
                problem = Problem("too_long", f"{item.length:,} tokens, over the limit of "
                                  f"{cfg.max_tokens:,} (data.max_tokens)")
        if problem:
            rejects.append(reject_row(item.raw, problem, item.record))
        else:
            kept.append(item)
    return kept, {"records_changed": changed, "nfc": cfg.clean.nfc, "whitespace": cfg.clean.whitespace,
                  "strip_html": cfg.clean.strip_html}


def handle_pii(items: list[Item], cfg: DataConfig, rejects, bars):
    detector = PiiDetector(cfg.pii.types, cfg.pii.phone_region)
    mode = cfg.pii.mode
    by_type: Counter = Counter()
    records_with_pii = 0
    kept: list[Item] = []
    for item in bars.track(items, description="scanning for PII"):
        found: Counter = Counter()

        def redact(text: str) -> str:
            redacted, counts = detector.redact(text)
            found.update(counts)
            return redacted if mode == "redact" else text

        map_text_fields(item.record, redact)
        by_type.update(found)
        records_with_pii += bool(found)
        if found and mode == "drop":
            kinds = ", ".join(f"{n} {k}" for k, n in sorted(found.items()))
            rejects.append(reject_row(item.raw, Problem("pii", f"contains PII ({kinds}) and data.pii.mode is drop"),
                                      item.record))
        else:
            kept.append(item)
    return kept, {"mode": mode, "types": list(cfg.pii.types), "records_with_pii": records_with_pii,
                  "records_redacted": records_with_pii if mode == "redact" else 0,
                  "by_type": dict(sorted(by_type.items()))}


def _grader_fields(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("messages", "meta")}


def deduplicate(items: list[Item], cfg: DataConfig, bars, kind: str = ""):
    texts = [joined_text(item.record) for item in items]
    for position, (item, text) in enumerate(zip(items, texts)):
        item.text, item.key, item.position = text, dedup.exact_key(text), position
    task = bars.add_task("deduplicating", total=len(items))
    index = dedup.NearDuplicateIndex(cfg.dedup.threshold, cfg.dedup.num_perm, cfg.dedup.shingle_words)
    found = dedup.find_duplicates(texts, keys=[i.key for i in items], exact=cfg.dedup.exact, near=cfg.dedup.near,
                                  threshold=cfg.dedup.threshold, num_perm=cfg.dedup.num_perm,
                                  shingle_words=cfg.dedup.shingle_words, index=index,
                                  progress=lambda n: bars.advance(task, n))
    bars.update(task, completed=len(items))
    kept, duplicates = [], []
    for item, dup in zip(items, found):
        if dup is None:
            kept.append(item)
            continue
        original = items[dup.of]
        row = {"source": item.raw.source, "line": item.raw.line, "location": f"{item.raw.unit} {item.raw.line}",
               "kind": dup.kind, "similarity": dup.similarity,
               "duplicate_of": {"source": original.raw.source, "line": original.raw.line}, "record": item.record}
        if "label" in item.record and item.record["label"] != original.record["label"]:
            row["label_conflict"] = [original.record["label"], item.record["label"]]
        if kind == "prompt" and _grader_fields(item.record) != _grader_fields(original.record):
            # the same prompt with another reference: the kept one decides what the grader rewards
            row["reference_conflict"] = [_grader_fields(original.record), _grader_fields(item.record)]
        duplicates.append(row)
    return kept, duplicates, index


def assign_splits(items: list[Item], cfg: DataConfig, kind: str, supplied_roles: set[str]) -> None:
    drawn = [item for item in items if item.role == "input"]
    for item in items:
        if item.role != "input":
            item.split = item.role
    wanted = tuple(s for s in SPLITS if s not in supplied_roles)
    labels = [item.record["label"] for item in drawn] if kind == "classification" else None
    splits = split_by_hash([item.key for item in drawn], val=cfg.split.val, test=cfg.split.test,
                           seed=cfg.split.seed, labels=labels, wanted=wanted)
    for item, split in zip(drawn, splits):
        item.split = split


def check_leakage(items: list[Item], index: dedup.NearDuplicateIndex, cfg: DataConfig) -> dict[str, Any]:
    """Is any val/test record a near duplicate of a train record? Independent of deduplication,
    which may be off; when it ran, its index already holds every kept record's signature."""
    by_position = {item.position: item for item in items}
    index.add_texts({item.position: item.text for item in items})
    train = {item.position for item in items if item.split == "train"}
    held_out = [item.position for item in items if item.split in ("val", "test")]
    pairs = index.leaks(held_out, train)
    by_split = Counter(by_position[q].split for q, _, _ in pairs)
    return {
        "threshold": cfg.dedup.threshold,
        "val_vs_train": by_split.get("val", 0),
        "test_vs_train": by_split.get("test", 0),
        "examples": [{"split": by_position[q].split, "record": _where(by_position[q]),
                      "train_record": _where(by_position[c]), "similarity": s} for q, c, s in pairs[:LEAKAGE_EXAMPLES]],
    }


def _where(item: Item) -> str:
    return f"{item.raw.source} {item.raw.unit} {item.raw.line}"


def _audit(tokenizer, items: list[Item], kind: str, cfg: DataConfig) -> dict[str, Any] | None:
    if tokenizer is None or kind != "generative":
        return None
    sample = sorted(items, key=lambda i: i.key)[: cfg.audit_sample]
    return audit_chat_template(tokenizer, [i.record["messages"] for i in sample], end_token=cfg.end_token,
                               name=cfg.tokenizer or "")


def write_outputs(out_dir: Path, kept: list[Item], rejects, duplicates, report, cfg: DataConfig, inputs) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    # The manifest is written last and marks a complete run: remove a previous one first, so an
    # interrupted re-run cannot pass for complete.
    (out_dir / "manifest.json").unlink(missing_ok=True)
    outputs = {}
    for split in SPLITS:
        outputs[split] = out_dir / f"{split}.jsonl"
        write_jsonl(outputs[split], (_output_record(i) for i in kept if i.split == split))
    outputs["rejects"] = out_dir / "rejects.jsonl"
    write_jsonl(outputs["rejects"], rejects)
    outputs["duplicates"] = out_dir / "duplicates.jsonl"
    write_jsonl(outputs["duplicates"], duplicates)
    for name, path in reporting.write_report(out_dir, report).items():
        outputs[name] = path
    input_paths = {spec: Path(readers.resolve_spec(spec)) for spec in inputs}
    write_json(out_dir / "manifest.json", manifest(stage="data prepare", inputs=input_paths, outputs=outputs,
                                                   config={"data": cfg.model_dump(mode="json")},
                                                   extra={"counts": report["counts"]}))


def _output_record(item: Item) -> dict[str, Any]:
    meta = {**item.record.get("meta", {}), "id": item.key[:16], "source": item.raw.source, "line": item.raw.line}
    return {**{k: v for k, v in item.record.items() if k != "meta"}, "meta": meta}
