"""The per-record work of `data prepare`, one shard at a time: parse, convert to the canonical
shape, clean, validate, count tokens, find PII, and compute what the global pass needs (the
exact-duplicate key, the LSH band hashes, the drawn split). It is a pure function of the shard
and a RecordWork, so it runs the same in this process, in worker processes or in Ray tasks, and
the records come out in the same order with the same bytes wherever it ran.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tunelab.data import dedup, formats
from tunelab.data.clean import make_cleaner
from tunelab.data.pii import PiiDetector
from tunelab.data.readers import parse_jsonl_block
from tunelab.data.records import Problem, RawRecord, RecordProblem, reject_row
from tunelab.data.split import SPLITS, draw_split, hash_unit
from tunelab.data.text import char_length, joined_text, map_text_fields
from tunelab.data.validate import validate_record


@dataclass(frozen=True)
class RecordWork:
    """Everything the per-record work needs, as plain values (sent to each worker once)."""
    kind: str
    formats: tuple[str, ...]  # the format of each source, by source index
    roles: tuple[str, ...]  # "input", or "val"/"test" for a supplied evaluation file
    encodings: tuple[str, ...]
    auto_format: bool
    text_column: str
    label_column: str
    group_column: str | None
    nfc: bool
    whitespace: bool
    strip_html: bool
    labels: tuple[str, ...] | None
    max_chars: int
    max_tokens: int | None
    tokenizer: str | None
    pii_types: tuple[str, ...]
    pii_mode: str
    phone_region: str
    num_perm: int
    bands: int
    rows: int
    shingle_words: int
    val: float  # shares actually drawn (0 for a split supplied from a file)
    test: float
    seed: int


@dataclass
class Shard:
    """A piece of one source: a block of whole JSON lines (parsed by the worker), or records
    already read (the formats read record by record), all with one source name."""
    source: int
    first_line: int = 1
    block: bytes | None = None
    records: list[RawRecord] | None = None
    name: str = ""


@dataclass
class ShardResult:
    source: int
    name: str = ""
    unit: str = "line"
    records: int = 0  # records read, usable or not
    rejects: list[bytes] = field(default_factory=list)  # rejects.jsonl lines, in input order
    reasons: list[str] = field(default_factory=list)
    spool: list[bytes] = field(default_factory=list)  # one line per candidate (see _spool_line)
    lines: list[int] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)
    units: list[float] = field(default_factory=list)
    splits: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)
    bands: np.ndarray | None = None
    changed: int = 0
    pii: Counter = field(default_factory=Counter)
    records_with_pii: int = 0


_TOOLS: dict[int, Any] = {}  # per process: the cleaner, PII detector and token counter of a RecordWork


def _tools(work: RecordWork):
    key = hash(work)
    if key not in _TOOLS:
        count_tokens = None
        if work.tokenizer:
            from tunelab.data.template_audit import make_token_counter
            from tunelab.models.load import load_tokenizer
            count_tokens = make_token_counter(load_tokenizer(work.tokenizer), work.kind)
        _TOOLS.clear()
        _TOOLS[key] = (make_cleaner(work.nfc, work.whitespace, work.strip_html),
                       PiiDetector(work.pii_types, work.phone_region), count_tokens,
                       set(work.labels) if work.labels is not None else None)
    return _TOOLS[key]


def process_shard(shard: Shard, work: RecordWork) -> ShardResult:
    clean, detector, count_tokens, labels = _tools(work)
    if shard.block is not None:
        raws = parse_jsonl_block(shard.block, shard.first_line, shard.name, work.encodings[shard.source])
    else:
        raws = shard.records or []
    out = ShardResult(shard.source, shard.name)
    sets = []
    for raw in raws:
        out.records += 1
        out.unit = raw.unit
        record, problem, length = _usable_record(raw, work, clean, count_tokens, labels, out)
        if problem is None:
            problem = _handle_pii(record, work, detector, out)
        if problem:
            out.rejects.append(_encode(reject_row(raw, problem, record)))
            out.reasons.append(problem.reason)
            continue
        out.lengths.append(length)
        sets.append(_add_candidate(raw, record, work, out))
    out.bands = dedup.band_hashes(sets, work.num_perm, work.bands, work.rows)
    return out


def _usable_record(raw: RawRecord, work: RecordWork, clean, count_tokens, labels, out: ShardResult):
    """(canonical cleaned record, problem, length): the record is None when it could not be
    converted; the length is in tokens with a tokenizer, else in characters."""
    if raw.problem:
        return None, raw.problem, 0
    try:
        record = formats.to_canonical(raw.value, _record_format(raw.value, work.formats[out.source], work),
                                      work.text_column, work.label_column, work.group_column)
    except RecordProblem as exc:
        return None, exc.problem, 0
    changed = False

    def counting_clean(text: str) -> str:
        nonlocal changed
        cleaned = clean(text)
        changed = changed or cleaned != text
        return cleaned

    try:
        map_text_fields(record, counting_clean)
    except (AttributeError, TypeError):
        pass  # a malformed structure is reported by validation below
    out.changed += changed
    problem = validate_record(record, work.kind, labels=labels, max_chars=work.max_chars)
    length = 0
    if problem is None:
        length = count_tokens(record) if count_tokens else char_length(record)
        if count_tokens and work.max_tokens and length > work.max_tokens:
            problem = Problem("too_long", f"{length:,} tokens, over the limit of {work.max_tokens:,} (data.max_tokens)")
    return record, problem, length


def _record_format(value: Any, file_format: str, work: RecordWork) -> str:
    """With format auto, a record in another format of the same kind (alpaca lines in a chat
    file, say) is read in its own format; anything else must fit the file's format."""
    if not work.auto_format:
        return file_format
    own = formats.format_of(value, work.text_column, work.label_column)
    same_kind = own and formats.KIND_OF_FORMAT[own] == formats.KIND_OF_FORMAT[file_format]
    return own if same_kind else file_format


def _handle_pii(record: dict, work: RecordWork, detector: PiiDetector, out: ShardResult) -> Problem | None:
    found: Counter = Counter()

    def redact(text: str) -> str:
        redacted, counts = detector.redact(text)
        found.update(counts)
        return redacted if work.pii_mode == "redact" else text

    map_text_fields(record, redact)
    out.pii.update(found)
    out.records_with_pii += bool(found)
    if found and work.pii_mode == "drop":
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(found.items()))
        return Problem("pii", f"contains PII ({kinds}) and data.pii.mode is drop")
    return None


def _add_candidate(raw: RawRecord, record: dict, work: RecordWork, out: ShardResult) -> set[str]:
    words = dedup.normalised_words(joined_text(record))
    key = dedup.key_of_words(words)
    unit = hash_unit(key.hex(), work.seed)
    role = work.roles[out.source]
    out.spool.append(_spool_line(record, key.hex()[:16], raw))
    out.lines.append(raw.line)
    out.keys.append(key)
    out.units.append(unit)
    out.splits.append(SPLITS.index(draw_split(unit, work.val, work.test) if role == "input" else role))
    if work.kind == "classification":
        out.labels.append(record["label"])
    out.fields.append(field_signature(record))
    return dedup.shingle_strings(words, work.shingle_words)


def field_signature(record: dict) -> str:
    """The fields (with their JSON types, meta keys included) a record carries, as one string."""
    seen = {f"{k}:{type(v).__name__}" for k, v in record.items() if k != "meta"}
    seen.update(f"meta.{k}" for k in record.get("meta", {}))
    return "\x1f".join(sorted(seen))


def _spool_line(record: dict, record_id: str, raw: RawRecord) -> bytes:
    """`body TAB duplicate-tail TAB output-tail`: body + duplicate-tail is the canonical record's
    JSON (as duplicates.jsonl holds it), body + output-tail the JSON a split file holds (with
    meta id, source and line). JSON escapes tabs and newlines, so the separators are safe."""
    meta = record.get("meta")
    output_meta = {**(meta or {}), "id": record_id, "source": raw.source, "line": raw.line}
    for ensure_ascii in (False, True):  # a lone surrogate cannot be UTF-8: escape that record
        body = json.dumps({k: v for k, v in record.items() if k != "meta"}, ensure_ascii=ensure_ascii)[:-1]
        duplicate_tail = (f', "meta": {json.dumps(meta, ensure_ascii=ensure_ascii)}' if meta is not None else "") + "}"
        output_tail = f', "meta": {json.dumps(output_meta, ensure_ascii=ensure_ascii)}}}'
        try:
            return f"{body}\t{duplicate_tail}\t{output_tail}\n".encode()
        except UnicodeEncodeError:
            continue
    raise AssertionError("unreachable: ASCII JSON always encodes")


def _encode(row: dict) -> bytes:
    try:
        return (json.dumps(row, ensure_ascii=False) + "\n").encode()
    except UnicodeEncodeError:
        return (json.dumps(row) + "\n").encode()
