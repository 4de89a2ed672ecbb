"""The inputs of `data prepare`: each file's format, detected from its first records before any
work starts, and the file cut into shards that stream through the per-record work. JSON-lines
files go in blocks of whole lines that the workers parse; the other formats are read record by
record here and handed out in batches (a .json array is parsed whole: use JSON lines for files
larger than memory)."""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tunelab.data import formats, readers
from tunelab.data.work import Shard
from tunelab.errors import TunelabError

RECORD_BATCH = 2000
_NOTHING = object()


@dataclass(frozen=True)
class Source:
    spec: str
    role: str  # "input", or "val"/"test" for a supplied evaluation file
    format: str
    encoding: str
    lines_path: Path | None  # set for a JSON-lines file, which streams in blocks
    expected: int | None  # about how many records it holds, for the progress bar

    @property
    def kind(self) -> str:
        return formats.KIND_OF_FORMAT[self.format]


def open_sources(specs: list[tuple[str, str]], cfg) -> list[Source]:
    """Each (spec, role) with its format; raises for an unusable input or a mix of kinds."""
    sources = []
    for spec, role in specs:
        fmt = _format_for(spec, cfg)
        lines = readers.json_lines_file(spec, cfg.encoding)
        encoding = lines[1] if lines else cfg.encoding
        sources.append(Source(spec, role, fmt, encoding, lines[0] if lines else None, _expected(spec, lines)))
    kinds = {s.spec: s.kind for s in sources}
    if len(set(kinds.values())) > 1:
        listing = "; ".join(f"{spec} is {kind}" for spec, kind in kinds.items())
        raise TunelabError(f"inputs mix kinds of data ({listing})", fix="prepare each kind into its own directory")
    return sources


def _format_for(spec: str, cfg) -> str:
    """The configured format, or the one most of the first records look like."""
    seen, first_bad = 0, None

    def values():
        nonlocal seen, first_bad
        for raw in readers.read_input(spec, cfg.encoding):
            seen += 1
            if raw.problem is None:
                yield raw.value
            elif first_bad is None:
                first_bad = raw

    stream = values()
    first = next(stream, _NOTHING)
    if first is _NOTHING and seen == 0:
        raise TunelabError("input has no records", where=spec, fix="pass a file with at least one record")
    if cfg.format != "auto":
        return cfg.format
    if first is _NOTHING:
        raise TunelabError(f"none of its {seen} records can be read ({first_bad.problem.detail} at "
                           f"{first_bad.unit} {first_bad.line})", where=spec, fix="check the file format and data.encoding")
    fmt = formats.detect_format(itertools.chain([first], stream), cfg.text_column, cfg.label_column)
    if fmt is None:
        seen_as = f"keys {sorted(first)[:8]}" if isinstance(first, dict) else f"a {type(first).__name__}"
        raise TunelabError(f"unknown format: records have {seen_as}", where=spec,
                           fix="use messages, conversations, instruction/output, prompt/completion, "
                               "prompt/chosen/rejected or text/label (set data.text_column and "
                               "data.label_column), or name it with --format")
    return fmt


def _expected(spec: str, lines: tuple[Path, str] | None) -> int | None:
    path = lines[0] if lines else readers.resolve_spec(spec)
    suffix = path.suffix.lower()
    if lines or suffix in (".csv", ".tsv"):
        newlines, last = 0, b""
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                newlines, last = newlines + block.count(b"\n"), block[-1:]
        rows = newlines + (last not in (b"\n", b""))
        return rows if lines else max(rows - 1, 0)  # a CSV's first line is its header
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq
        return pq.ParquetFile(path).metadata.num_rows
    if path.is_dir():
        import datasets
        loaded = datasets.load_from_disk(str(path))
        parts = loaded.values() if isinstance(loaded, datasets.DatasetDict) else [loaded]
        return sum(part.num_rows for part in parts)
    return None  # a .json array: known only once parsed


def shards(sources: list[Source]) -> Iterator[Shard]:
    for index, source in enumerate(sources):
        if source.lines_path is not None:
            for first_line, block in readers.jsonl_blocks(source.lines_path):
                yield Shard(index, first_line, block=block, name=str(source.lines_path))
            continue
        batch: list = []
        for raw in readers.read_input(source.spec, source.encoding):
            if batch and (len(batch) >= RECORD_BATCH or raw.source != batch[0].source):
                yield Shard(index, records=batch, name=batch[0].source)
                batch = []
            batch.append(raw)
        if batch:
            yield Shard(index, records=batch, name=batch[0].source)
