"""Where the records that passed the per-record checks wait for the global pass, on disk: their
JSON in a spool file (one line each, in input order), and per record a few compact values in
column files (exact-duplicate key, LSH band hashes, hash unit, drawn split, length, label,
fields, source and line). The global pass reads a column at a time, and a record's JSON by its
offset, so memory holds neither the corpus nor an index of it.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tunelab.data import dedup
from tunelab.data.text import joined_text
from tunelab.data.work import ShardResult

COLUMNS = {"key": (np.uint8, 32), "unit": (np.float64, 1), "split": (np.int8, 1), "length": (np.int64, 1),
           "label": (np.int32, 1), "fields": (np.int32, 1), "source": (np.int32, 1), "line": (np.int64, 1),
           "offset": (np.int64, 1)}
SHINGLE_CACHE = 4096  # shingle sets kept for repeated comparisons (a few kB each)


class RecordStore:
    def __init__(self, directory: Path, bands: int, shingle_words: int, roles: tuple[str, ...]):
        self.directory = directory
        self.roles = roles
        directory.mkdir(parents=True, exist_ok=True)
        self.bands = bands
        self.shingle_words = shingle_words
        self.count = 0
        self.spool_path = directory / "records.spool"
        self._spool = self.spool_path.open("wb")
        self._offset = 0
        self._files = {name: (directory / f"{name}.bin").open("wb") for name in COLUMNS}
        self._files.update({f"band{j}": (directory / f"band{j}.bin").open("wb") for j in range(bands)})
        self.sources: list[tuple[str, str, str]] = []  # (name, unit, role) of each source id in the columns
        self.labels: list[str] = []
        self.field_sets: list[str] = []
        self._ids: dict[tuple[str, object], int] = {}
        self._reader = None
        self._columns: dict[str, np.ndarray] = {}
        self._shingles: OrderedDict[int, set[str]] = OrderedDict()

    def _id(self, table: list, kind: str, value) -> int:
        key = (kind, value)
        if key not in self._ids:
            self._ids[key] = len(table)
            table.append(value)
        return self._ids[key]

    def add(self, result: ShardResult) -> None:
        n = len(result.spool)
        if not n:
            return
        sizes = np.fromiter(map(len, result.spool), np.int64, n)
        offsets = self._offset + np.concatenate(([0], np.cumsum(sizes)[:-1]))
        self._offset += int(sizes.sum())
        self._spool.write(b"".join(result.spool))
        source = self._id(self.sources, "source", (result.name, result.unit, self.roles[result.source]))
        values = {
            "key": np.frombuffer(b"".join(result.keys), np.uint8),
            "unit": np.asarray(result.units, np.float64),
            "split": np.asarray(result.splits, np.int8),
            "length": np.asarray(result.lengths, np.int64),
            "label": np.array([self._id(self.labels, "label", v) for v in result.labels] or [-1] * n, np.int32),
            "fields": np.array([self._id(self.field_sets, "fields", v) for v in result.fields], np.int32),
            "source": np.full(n, source, np.int32),
            "line": np.asarray(result.lines, np.int64),
            "offset": offsets,
        }
        for name, array in values.items():
            array.tofile(self._files[name])
        for j in range(self.bands):
            np.ascontiguousarray(result.bands[:, j]).tofile(self._files[f"band{j}"])
        self.count += n

    def close(self) -> None:
        """No more records: flush the files so the global pass can read them."""
        self._spool.close()
        for f in self._files.values():
            f.close()

    def column(self, name: str) -> np.ndarray:
        """A column, read-only and backed by its file (the OS pages it in and out)."""
        if name not in self._columns:
            dtype, width = COLUMNS.get(name, (np.uint64, 1))
            if self.count == 0:
                data = np.zeros((0, width) if width > 1 else 0, dtype)
            else:
                data = np.memmap(self.directory / f"{name}.bin", dtype=dtype, mode="r")
                data = data.reshape(self.count, width) if width > 1 else data
            self._columns[name] = data
        return self._columns[name]

    def band_columns(self) -> Iterator[np.ndarray]:
        """Each band's hashes in turn, read into memory (8 bytes a record) and let go after use."""
        for j in range(self.bands):
            yield np.fromfile(self.directory / f"band{j}.bin", dtype=np.uint64, count=self.count)

    def keys(self) -> np.ndarray:
        """The exact-duplicate keys, (records, 32) bytes, read into memory for one sort."""
        return np.fromfile(self.directory / "key.bin", dtype=np.uint8, count=self.count * 32).reshape(self.count, 32)

    def spool_line(self, position: int) -> bytes:
        if self._reader is None:
            self._reader = self.spool_path.open("rb")
        self._reader.seek(int(self.column("offset")[position]))
        return self._reader.readline()

    def record(self, position: int) -> dict:
        """The canonical record at a position (as duplicates.jsonl would hold it)."""
        body, duplicate_tail, _ = self.spool_line(position).rstrip(b"\n").split(b"\t")
        return json.loads(body + duplicate_tail)

    def shingles(self, position: int) -> set[str]:
        """The record's word shingles, for the exact Jaccard check of an LSH candidate."""
        cached = self._shingles.get(position)
        if cached is not None:
            self._shingles.move_to_end(position)
            return cached
        words = dedup.normalised_words(joined_text(self.record(position)))
        result = dedup.shingle_strings(words, self.shingle_words)
        self._shingles[position] = result
        if len(self._shingles) > SHINGLE_CACHE:
            self._shingles.popitem(last=False)
        return result

    def lines(self) -> Iterator[bytes]:
        with self.spool_path.open("rb") as f:
            yield from f

    def release(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._shingles.clear()
        self._columns.clear()
