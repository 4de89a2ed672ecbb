"""Readers: one per file format, each yielding RawRecord with its source and line.

A record that cannot be parsed is still yielded (with its problem and raw text) so that the
pipeline can put it in rejects.jsonl; only a wholly unusable input raises TunelabError.
"""
from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from tunelab.data.records import Problem, RawRecord
from tunelab.errors import TunelabError

SAVED_DATASET_MARKERS = ("dataset_info.json", "dataset_dict.json", "state.json")
EXAMPLE_PREFIX = "example:"

# Records can legitimately be long (a 5 MB line is rejected as too long, not as a broken CSV).
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def resolve_spec(spec: str) -> Path:
    """The path behind an input spec (an `example:NAME` resolves to the installed package's file)."""
    if spec.startswith(EXAMPLE_PREFIX):
        from tunelab.examples import example_data_path
        return example_data_path(spec[len(EXAMPLE_PREFIX):])[0]
    return Path(spec)


def read_input(spec: str, encoding: str = "utf-8") -> Iterator[RawRecord]:
    """Dispatch on what `spec` is: an example name, a saved datasets directory, or a file."""
    if spec.startswith(EXAMPLE_PREFIX):
        from tunelab.examples import example_data_path
        path, encoding = example_data_path(spec[len(EXAMPLE_PREFIX):])
        yield from read_input(str(path), encoding)
        return
    path = Path(spec)
    if not path.exists():
        raise TunelabError("input not found", where=spec, fix="check the path")
    if path.is_dir():
        if not any((path / m).exists() for m in SAVED_DATASET_MARKERS):
            raise TunelabError("directory is not a saved `datasets` dataset (no dataset_info.json)",
                               where=spec, fix="pass the files inside it, or a save_to_disk() directory")
        yield from read_saved_dataset(path)
        return
    if path.stat().st_size == 0:
        raise TunelabError("input file is empty", where=spec, fix="pass a file with records")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        yield from read_jsonl(path, encoding)
    elif suffix == ".json":
        yield from (read_json_array(path, encoding) if _starts_with(path, b"[") else read_jsonl(path, encoding))
    elif suffix in (".csv", ".tsv"):
        yield from read_delimited(path, encoding, "\t" if suffix == ".tsv" else ",")
    elif suffix in (".parquet", ".pq"):
        yield from read_parquet(path)
    else:
        raise TunelabError(f"unknown file format '{suffix or 'no extension'}'", where=spec,
                           fix="use .jsonl, .json, .csv, .tsv, .parquet or a saved datasets directory")


def json_lines_file(spec: str, encoding: str = "utf-8") -> tuple[Path, str] | None:
    """(path, encoding) when `spec` is a JSON-lines file, which streams in blocks parsed
    anywhere (jsonl_blocks, parse_jsonl_block); None for the formats read record by record.
    Call it on a spec read_input has accepted."""
    if spec.startswith(EXAMPLE_PREFIX):
        from tunelab.examples import example_data_path
        path, encoding = example_data_path(spec[len(EXAMPLE_PREFIX):])
        return json_lines_file(str(path), encoding)
    path = Path(spec)
    suffix = path.suffix.lower()
    if path.is_file() and (suffix in (".jsonl", ".ndjson") or (suffix == ".json" and not _starts_with(path, b"["))):
        return path, encoding
    return None


def _starts_with(path: Path, prefix: bytes) -> bool:
    with path.open("rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(prefix)


BLOCK_BYTES = 1 << 20  # JSON-lines files are handed out in blocks of whole lines of about this size


def read_jsonl(path: Path, encoding: str = "utf-8") -> Iterator[RawRecord]:
    for first_line, block in jsonl_blocks(path):
        yield from parse_jsonl_block(block, first_line, str(path), encoding)


def jsonl_blocks(path: Path, block_bytes: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(number of its first line, bytes) for consecutive blocks of whole lines: a file streams
    through in pieces that can be parsed anywhere, each knowing its line numbers."""
    block_bytes = block_bytes or BLOCK_BYTES
    first_line = 1
    with Path(path).open("rb") as f:
        carry = b""
        while True:
            chunk = f.read(block_bytes)
            if not chunk:
                if carry:
                    yield first_line, carry
                return
            data = carry + chunk
            end = data.rfind(b"\n") + 1
            if end == 0:  # one line longer than a block: keep reading until it ends
                carry = data
                continue
            block, carry = data[:end], data[end:]
            yield first_line, block
            first_line += block.count(b"\n")


def parse_jsonl_block(block: bytes, first_line: int, source: str, encoding: str = "utf-8") -> Iterator[RawRecord]:
    """The records of a block of JSON lines, numbered from `first_line`."""
    for number, data in enumerate(io.BytesIO(block), start=first_line):
        if not data.strip():
            continue  # a blank line is layout, not a record
        rec = RawRecord(source, number, "line")
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as exc:
            rec.raw = data.decode(encoding, errors="backslashreplace").rstrip("\r\n")
            rec.problem = Problem("non_utf8", f"undecodable byte 0x{data[exc.start]:02x} at column "
                                  f"{exc.start + 1} (not {encoding}; set data.encoding)")
            yield rec
            continue
        if number == 1:
            text = text.removeprefix("\ufeff")  # a byte-order mark, as Windows editors write
        try:
            rec.value = json.loads(text)
        except json.JSONDecodeError as exc:
            rec.raw = text.rstrip("\r\n")
            rec.problem = Problem("unparsable", f"not valid JSON: {exc.msg} at column {exc.colno}")
        yield rec


def read_json_array(path: Path, encoding: str = "utf-8") -> Iterator[RawRecord]:
    try:
        items = json.loads(path.read_bytes().decode(encoding).removeprefix("\ufeff"))
    except UnicodeDecodeError as exc:
        raise TunelabError(f"the file is not {encoding} (byte offset {exc.start})", where=str(path),
                           fix="set data.encoding or re-encode the file") from None
    except json.JSONDecodeError as exc:
        raise TunelabError(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
                           where=str(path), fix="fix the file, or use JSONL so one bad record cannot spoil the rest") from None
    if not isinstance(items, list):
        raise TunelabError("a .json input must be an array of records", where=str(path), fix="wrap the records in [ ]")
    for number, value in enumerate(items, start=1):
        yield RawRecord(str(path), number, "item", value=value)


def read_delimited(path: Path, encoding: str, delimiter: str) -> Iterator[RawRecord]:
    # surrogateescape keeps undecodable bytes visible so that only their rows are rejected
    with path.open("r", encoding=encoding, errors="surrogateescape", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader, None)
        if not header:
            return
        header = [h.lstrip("\ufeff").strip() for h in header]
        start = reader.line_num
        for row in reader:
            number, start = start + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            rec = RawRecord(str(path), number, "line")
            joined = delimiter.join(row)
            if any("\udc80" <= ch <= "\udcff" for ch in joined):
                rec.raw = joined.encode(encoding, "surrogateescape").decode(encoding, "backslashreplace")
                rec.problem = Problem("non_utf8", f"undecodable bytes (not {encoding}; set data.encoding)")
            elif len(row) != len(header):
                rec.raw = joined
                rec.problem = Problem("malformed_row", f"{len(row)} fields where the header has {len(header)}")
            else:
                rec.value = dict(zip(header, row))
            yield rec


def read_parquet(path: Path) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq
    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise TunelabError(f"not a readable Parquet file ({exc})", where=str(path)) from None
    number = 0
    for batch in table.iter_batches(batch_size=8192):
        for value in batch.to_pylist():
            number += 1
            yield RawRecord(str(path), number, "row", value=value)


def read_saved_dataset(path: Path) -> Iterator[RawRecord]:
    import datasets
    loaded = datasets.load_from_disk(str(path))
    parts = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(None, loaded)]
    for split, dataset in parts:
        source = f"{path}[{split}]" if split else str(path)
        for number, value in enumerate(dataset, start=1):
            yield RawRecord(source, number, "row", value=value)
