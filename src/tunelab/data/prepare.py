"""`tunelab data prepare`: raw files in; train/val/test, rejects, duplicates, report and manifest
out. Every input record ends in exactly one of those, so input = kept + rejected + duplicates.

The data streams: shards of each file go through the per-record work (work.py) on every core or
on a Ray cluster, and come back in input order; rejects are written as they arrive and the rest
wait on disk (store.py) with compact keys for the global pass, which decides duplicates, splits
and leakage in input order, then writes the split files. Memory holds shards and keys, never the
corpus; the outputs are the same whatever the engine and the number of workers.
"""
from __future__ import annotations

import json
import shutil
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.config import DataConfig
from tunelab.data import dedup, readers, report as reporting
from tunelab.data.engines import map_shards
from tunelab.data.sources import Source, open_sources, shards
from tunelab.data.split import SPLITS, drawn_shares, lend_to_empty_splits, needed_splits, summarise_labels
from tunelab.data.stats import SplitStats
from tunelab.data.store import RecordStore
from tunelab.data.template_audit import audit_chat_template
from tunelab.data.work import RecordWork, ShardResult
from tunelab.errors import TunelabError
from tunelab.files import manifest, staged_directory, write_json
from tunelab.progress import progress_bars

LEAKAGE_EXAMPLES = 10
WRITE_CHUNK = 65_536


@dataclass
class PrepareResult:
    out_dir: Path
    report: dict[str, Any]


@dataclass
class Tally:
    """What the per-record work counted, summed over shards as they arrive."""
    records: list[int]
    reasons: Counter = field(default_factory=Counter)
    pii: Counter = field(default_factory=Counter)
    records_with_pii: int = 0
    changed: int = 0

    def add(self, result: ShardResult) -> None:
        self.records[result.source] += result.records
        self.reasons.update(result.reasons)
        self.pii.update(result.pii)
        self.records_with_pii += result.records_with_pii
        self.changed += result.changed


def run(cfg: DataConfig, *, show_progress: bool = True) -> PrepareResult:
    inputs = cfg.inputs
    if not inputs:
        raise TunelabError("no input files given", fix="name one or more files after `tunelab data prepare`")
    if not cfg.out_dir:
        raise TunelabError("no output directory given", fix="pass --out DIR (or set data.out_dir)")
    out_dir = Path(cfg.out_dir)
    # Supplied evaluation files come first so that a training record duplicating one of them is
    # the copy that is dropped: the evaluation sets stay as the user gave them.
    supplied = [(f, role) for f, role in ((cfg.split.val_file, "val"), (cfg.split.test_file, "test")) if f]
    sources = open_sources(supplied + [(spec, "input") for spec in inputs], cfg)
    kind = sources[0].kind
    tokenizer = _load_tokenizer(cfg.tokenizer)
    work = record_work(cfg, sources, supplied_roles={role for _, role in supplied})
    with staged_directory(out_dir) as stage, progress_bars(show_progress) as bars:
        store = RecordStore(stage / ".records", work.bands, work.shingle_words, work.roles)
        tally = read_and_check(sources, work, cfg, store, stage / "rejects.jsonl", bars)
        found = find_duplicates(store, cfg, bars)
        splits = assign_splits(store, found, work, kind)
        leakage = check_leakage(store, splits, cfg, bars)
        audited = tokenizer is not None and kind == "generative"
        written = write_records(stage, store, found, splits, kind, bars,
                                audit_sample=cfg.audit_sample if audited else 0)
        audit = _audit(tokenizer, store, written["audit_positions"], cfg) if audited else None
        store.release()
        shutil.rmtree(store.directory)
        report = build_report(kind, sources, tally, found, splits, written, leakage, audit, cfg,
                              length_unit="tokens" if tokenizer else "characters")
        write_manifest(stage, report, cfg, [s.spec for s in sources])
    if report["counts"]["kept"] == 0:
        raise TunelabError(f"no usable records: all {report['counts']['input']} were rejected or duplicates",
                           where=", ".join(inputs), fix=f"see {out_dir / 'rejects.jsonl'} for the reason of each")
    return PrepareResult(out_dir, report)


def _load_tokenizer(name: str | None):
    if not name:
        return None
    from tunelab.models.load import load_tokenizer
    return load_tokenizer(name)


def record_work(cfg: DataConfig, sources: list[Source], supplied_roles: set[str]) -> RecordWork:
    bands, rows = dedup.lsh_bands(cfg.dedup.threshold, cfg.dedup.num_perm)
    val, test = drawn_shares(cfg.split.val, cfg.split.test, tuple(s for s in SPLITS if s not in supplied_roles))
    return RecordWork(
        kind=sources[0].kind, formats=tuple(s.format for s in sources), roles=tuple(s.role for s in sources),
        encodings=tuple(s.encoding for s in sources), auto_format=cfg.format == "auto", text_column=cfg.text_column,
        label_column=cfg.label_column, group_column=cfg.group_column, nfc=cfg.clean.nfc,
        whitespace=cfg.clean.whitespace, strip_html=cfg.clean.strip_html,
        labels=tuple(cfg.labels) if cfg.labels else None, max_chars=cfg.max_chars, max_tokens=cfg.max_tokens,
        tokenizer=cfg.tokenizer, pii_types=tuple(cfg.pii.types), pii_mode=cfg.pii.mode,
        phone_region=cfg.pii.phone_region, num_perm=cfg.dedup.num_perm, bands=bands, rows=rows,
        shingle_words=cfg.dedup.shingle_words, val=val, test=test, seed=cfg.split.seed)


def read_and_check(sources: list[Source], work: RecordWork, cfg: DataConfig, store: RecordStore,
                   rejects_path: Path, bars) -> Tally:
    """Phase one, streaming: every record read, converted, cleaned, validated and scanned for PII;
    rejects written as they come, the rest stored for the global pass."""
    expected = [s.expected for s in sources]
    task = bars.add_task("reading, checking", total=None if None in expected else sum(expected))
    tally = Tally([0] * len(sources))
    results = map_shards(shards(sources), work, engine=cfg.engine, num_proc=cfg.num_proc, ray_address=cfg.ray_address)
    with rejects_path.open("wb") as rejects, closing(results):  # closing: workers stop on any error here
        for result in results:
            rejects.write(b"".join(result.rejects))
            store.add(result)
            tally.add(result)
            bars.advance(task, result.records)
    bars.update(task, total=sum(tally.records), completed=sum(tally.records))
    store.close()
    return tally


def find_duplicates(store: RecordStore, cfg: DataConfig, bars) -> dedup.Found:
    task = bars.add_task("deduplicating", total=store.count)
    found = dedup.deduplicate(store.count, keys=store.keys if cfg.dedup.exact else None,
                              band_columns=store.band_columns if cfg.dedup.near else None,
                              shingles_of=store.shingles, threshold=cfg.dedup.threshold,
                              progress=lambda n: bars.advance(task, n))
    bars.update(task, completed=store.count)  # exact duplicates need no near-duplicate search
    return found


def assign_splits(store: RecordStore, found: dedup.Found, work: RecordWork, kind: str) -> np.ndarray:
    """The split code (an index of SPLITS) of each kept record; -1 for a duplicate. Drawn splits
    come from the workers; for classification, labels missing from a split borrow a record."""
    splits = np.array(store.column("split"))
    splits[found.of >= 0] = -1
    if kind == "classification":
        roles = np.array([role == "input" for _, _, role in store.sources])
        drawn = np.flatnonzero((splits >= 0) & roles[store.column("source")])
        summaries = summarise_labels(np.asarray(store.column("label"))[drawn], splits[drawn],
                                     np.asarray(store.column("unit"))[drawn], drawn)
        wanted = tuple(s for s in SPLITS if s not in set(work.roles) - {"input"})
        for position, split in lend_to_empty_splits(summaries, needed_splits(work.val, work.test, wanted)).items():
            splits[position] = SPLITS.index(split)
    return splits


def check_leakage(store: RecordStore, splits: np.ndarray, cfg: DataConfig, bars) -> dict[str, Any]:
    """Is any val/test record a near duplicate of a train record? Independent of deduplication,
    which may be off."""
    train, held_out = np.flatnonzero(splits == 0), np.flatnonzero(splits > 0)
    task = bars.add_task("checking leakage", total=len(held_out))
    pairs = []
    if len(train) and len(held_out):
        pairs = dedup.cross_matches(store.band_columns(), held_out, train, store.shingles, cfg.dedup.threshold)
    bars.update(task, completed=len(held_out))
    by_split = Counter(SPLITS[splits[q]] for q, _, _ in pairs)
    return {
        "threshold": cfg.dedup.threshold,
        "val_vs_train": by_split.get("val", 0),
        "test_vs_train": by_split.get("test", 0),
        "examples": [{"split": SPLITS[splits[q]], "record": _where(store, q), "train_record": _where(store, c),
                      "similarity": s} for q, c, s in pairs[:LEAKAGE_EXAMPLES]],
    }


def build_report(kind: str, sources: list[Source], tally: Tally, found: dedup.Found, splits: np.ndarray,
                 written: dict[str, Any], leakage: dict[str, Any], audit: dict[str, Any] | None, cfg: DataConfig,
                 *, length_unit: str) -> dict[str, Any]:
    counts = {"input": sum(tally.records), "kept": int((splits >= 0).sum()), "rejected": sum(tally.reasons.values()),
              "duplicates": int((found.of >= 0).sum()),
              "pii_redacted": tally.records_with_pii if cfg.pii.mode == "redact" else 0}
    if counts["input"] != counts["kept"] + counts["rejected"] + counts["duplicates"]:
        raise AssertionError(f"tunelab lost records, please report this bug: {counts}")
    return reporting.build_report(
        kind=kind, counts=counts, split_stats=written["stats"],
        inputs=[{"path": s.spec, "role": s.role, "format": s.format, "records": n} for s, n in zip(sources, tally.records)],
        rejects_by_reason=dict(tally.reasons.most_common()), duplicates_by_kind=written["duplicates_by_kind"],
        label_conflicts=written["label_conflicts"],
        cleaning={"records_changed": tally.changed, "nfc": cfg.clean.nfc, "whitespace": cfg.clean.whitespace,
                  "strip_html": cfg.clean.strip_html},
        pii={"mode": cfg.pii.mode, "types": list(cfg.pii.types), "records_with_pii": tally.records_with_pii,
             "records_redacted": counts["pii_redacted"], "by_type": dict(sorted(tally.pii.items()))},
        leakage=leakage, audit=audit, cfg=cfg, length_unit=length_unit)


def _where(store: RecordStore, position: int) -> str:
    name, unit, _ = store.sources[store.column("source")[position]]
    return f"{name} {unit} {store.column('line')[position]}"


def write_records(stage: Path, store: RecordStore, found: dedup.Found, splits: np.ndarray, kind: str, bars,
                  *, audit_sample: int) -> dict[str, Any]:
    """Stream the stored records into train/val/test.jsonl and duplicates.jsonl, in input order,
    gathering each split's statistics and the audit sample (the kept records with the lowest keys)."""
    stats = {s: SplitStats() for s in SPLITS}
    kinds: Counter = Counter()
    conflicts = 0
    columns = {name: store.column(name) for name in ("length", "label", "fields", "source", "line")}
    sample = np.zeros(0, np.int64)
    task = bars.add_task("writing", total=store.count)
    outputs = {s: (stage / f"{s}.jsonl").open("wb") for s in SPLITS}
    with (stage / "duplicates.jsonl").open("wb") as duplicates:
        lines = store.lines()
        for start in range(0, store.count, WRITE_CHUNK):
            end = min(start + WRITE_CHUNK, store.count)
            chunk = {name: np.asarray(column[start:end]) for name, column in columns.items()}
            codes = splits[start:end]
            for code, split in enumerate(SPLITS):
                mine = codes == code
                stats[split].lengths.add(chunk["length"][mine])
                labels, counts = np.unique(chunk["label"][mine & (chunk["label"] >= 0)], return_counts=True)
                stats[split].labels.update(dict(zip((store.labels[i] for i in labels.tolist()), counts.tolist())))
                stats[split].fields.update(f for i in np.unique(chunk["fields"][mine]).tolist()
                                           for f in store.field_sets[i].split("\x1f") if f)
            if audit_sample:
                sample = _lowest_keys(store, np.concatenate([sample, start + np.flatnonzero(codes >= 0)]), audit_sample)
            for offset, code in enumerate(codes.tolist()):
                body, duplicate_tail, output_tail = next(lines)[:-1].split(b"\t")
                if code >= 0:
                    outputs[SPLITS[code]].write(body + output_tail + b"\n")
                    continue
                row, found_as, conflict = _duplicate_row(store, found, start + offset, body + duplicate_tail, kind)
                duplicates.write(row)
                kinds[found_as] += 1
                conflicts += conflict
            bars.advance(task, end - start)
    for f in outputs.values():
        f.close()
    return {"stats": stats, "duplicates_by_kind": dict(kinds.most_common()), "label_conflicts": conflicts,
            "audit_positions": sample.tolist()}


def _duplicate_row(store: RecordStore, found: dedup.Found, position: int, record_json: bytes,
                   data_kind: str) -> tuple[bytes, str, bool]:
    """duplicates.jsonl's row, composed around the stored record JSON (not parsed again)."""
    original = int(found.of[position])
    kind = "near" if position in found.near else "exact"
    name, unit, _ = store.sources[store.column("source")[position]]
    original_name = store.sources[store.column("source")[original]][0]
    line = int(store.column("line")[position])
    head = {"source": name, "line": line, "location": f"{unit} {line}", "kind": kind,
            "similarity": found.near.get(position, 1.0),
            "duplicate_of": {"source": original_name, "line": int(store.column("line")[original])}}
    row = json.dumps(head, ensure_ascii=False)[:-1].encode() + b', "record": ' + record_json
    label, original_label = store.column("label")[position], store.column("label")[original]
    conflict = bool(label >= 0 and label != original_label)
    if conflict:
        pair = [store.labels[original_label], store.labels[label]]
        row += b', "label_conflict": ' + json.dumps(pair, ensure_ascii=False).encode()
    if data_kind == "prompt":
        # the same prompt with another reference: the kept one decides what the grader rewards
        references = [_grader_fields(store.record(original)), _grader_fields(json.loads(record_json))]
        if references[0] != references[1]:
            row += b', "reference_conflict": ' + json.dumps(references, ensure_ascii=False).encode()
    return row + b"}\n", kind, conflict


def _grader_fields(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("messages", "meta")}


def _lowest_keys(store: RecordStore, positions: np.ndarray, limit: int) -> np.ndarray:
    """The `limit` positions with the lowest exact keys (ties: the earlier position)."""
    words = np.asarray(store.column("key"))[positions].view(">u8")  # 4 big-endian words order like the bytes
    order = np.lexsort((positions, words[:, 3], words[:, 2], words[:, 1], words[:, 0]))
    return positions[order[:limit]]


def _audit(tokenizer, store: RecordStore, positions: list[int], cfg: DataConfig) -> dict[str, Any]:
    conversations = [store.record(p)["messages"] for p in positions]
    return audit_chat_template(tokenizer, conversations, end_token=cfg.end_token, name=cfg.tokenizer or "")


def write_manifest(stage: Path, report: dict[str, Any], cfg: DataConfig, inputs: list[str]) -> None:
    outputs = {s: stage / f"{s}.jsonl" for s in SPLITS}
    outputs.update(rejects=stage / "rejects.jsonl", duplicates=stage / "duplicates.jsonl")
    outputs.update(reporting.write_report(stage, report))
    input_paths = {spec: Path(readers.resolve_spec(spec)) for spec in inputs}
    write_json(stage / "manifest.json", manifest(stage="data prepare", inputs=input_paths, outputs=outputs,
                                                 config={"data": cfg.model_dump(mode="json")},
                                                 extra={"counts": report["counts"]}))
