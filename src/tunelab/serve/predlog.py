"""Prediction log: every served request as one row of a SQLite table, for `tunelab monitor`
(tunelab.serve.recording decides what a row holds and its outcome).

Request handlers only put a record on an in-memory queue; one background writer thread takes
whatever has accumulated and inserts it with a single executemany in one transaction, so a
burst of requests costs one commit rather than one fsync each, and no handler waits on disk.
The database is in WAL mode so the monitor can read it while the server writes.
"""
from __future__ import annotations

import json
import queue
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError

COLUMNS = {  # name -> SQL type; the order is the table's
    "ts": "REAL NOT NULL", "request_id": "TEXT", "endpoint": "TEXT", "model_version": "TEXT",
    "adapter": "TEXT", "input": "TEXT", "output": "TEXT", "label": "TEXT", "confidence": "REAL",
    "probabilities": "TEXT", "latency_ms": "REAL", "status": "INTEGER", "prompt_tokens": "INTEGER",
    "completion_tokens": "INTEGER", "blocked_reason": "TEXT", "cached": "INTEGER NOT NULL DEFAULT 0",
    "outcome": "TEXT", "task": "TEXT", "role": "TEXT",
}
# role: live (NULL in logs written before roles), canary (a canary version answered the client) or
# shadow (a shadow version's answer to a copy of the request; the client never saw it)
ADDED_LATER = ("outcome", "task", "role")  # columns a log written by an earlier version lacks: added on open
SCHEMA = [
    "CREATE TABLE IF NOT EXISTS predictions (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    + ", ".join(f"{name} {kind}" for name, kind in COLUMNS.items()) + ")",
    "CREATE INDEX IF NOT EXISTS predictions_ts ON predictions (ts)",
    "CREATE INDEX IF NOT EXISTS predictions_version_ts ON predictions (model_version, ts)",
]
INSERT = (f"INSERT INTO predictions ({', '.join(COLUMNS)}) "
          f"VALUES ({', '.join(':' + name for name in COLUMNS)})")

# Feedback on served answers (POST /v1/feedback, `label feedback`, the monitor's live quality):
# its own table in the same database, joined to predictions by request_id (the `id` a response
# carried). Written through the same background writer as predictions, in the same transactions.
# The shape is documented in docs/loop.md; feedback_row() is its one validator.
FEEDBACK_COLUMNS = {
    "ts": "REAL NOT NULL", "request_id": "TEXT NOT NULL", "label": "TEXT", "corrected": "TEXT",
    "rating": "REAL", "rating_scale": "TEXT", "preferred": "TEXT", "comment": "TEXT", "annotator": "TEXT",
}
FEEDBACK_FIELDS = ("label", "corrected", "rating", "preferred", "comment")  # at least one of these
RATING_SCALES = {"thumbs": (-1, 1), "stars": (1, 5)}  # thumbs: +1 up / -1 down; stars: 1 to 5
SCHEMA += [
    "CREATE TABLE IF NOT EXISTS feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    + ", ".join(f"{name} {kind}" for name, kind in FEEDBACK_COLUMNS.items()) + ")",
    "CREATE INDEX IF NOT EXISTS feedback_request ON feedback (request_id)",
    "CREATE INDEX IF NOT EXISTS predictions_request ON predictions (request_id)",
]
FEEDBACK_INSERT = (f"INSERT INTO feedback ({', '.join(FEEDBACK_COLUMNS)}) "
                   f"VALUES ({', '.join(':' + name for name in FEEDBACK_COLUMNS)})")


class FeedbackRow(dict):
    """A validated feedback record on the writer's queue (a dict, so the writer batches it with
    predictions; its type tells _insert which table it goes to)."""


def feedback_row(record: dict[str, Any]) -> FeedbackRow:
    """A feedback record checked and made ready to insert: request_id, and at least one of label,
    corrected, rating (with rating_scale thumbs or stars), preferred, comment; annotator and ts
    optional. Raises TunelabError naming the first problem (the route answers it with a 400)."""
    where = "feedback"
    unknown = set(record) - set(FEEDBACK_COLUMNS)
    if unknown:
        raise TunelabError(f"feedback has unknown field(s) {', '.join(sorted(unknown))}", where=where,
                           fix=f"use only {', '.join(FEEDBACK_COLUMNS)}")
    row = FeedbackRow(dict.fromkeys(FEEDBACK_COLUMNS))
    row.update(record)
    if not isinstance(row["request_id"], str) or not row["request_id"].strip():
        raise TunelabError("feedback names no request_id", where=where,
                           fix="pass the `id` of the response the feedback is about")
    for name in ("label", "corrected", "preferred", "comment", "annotator", "rating_scale"):
        if row[name] is not None and not isinstance(row[name], str):
            raise TunelabError(f"feedback field {name!r} is a {type(row[name]).__name__}, not text", where=where,
                               fix=f"send {name} as a string")
        if isinstance(row[name], str) and not row[name].strip():
            row[name] = None  # an empty string says nothing
    if all(row[name] is None for name in FEEDBACK_FIELDS):
        raise TunelabError("feedback carries nothing", where=where,
                           fix=f"send at least one of {', '.join(FEEDBACK_FIELDS)}")
    rating = row["rating"]
    if rating is not None:
        if isinstance(rating, bool) or not isinstance(rating, (int, float)):
            raise TunelabError(f"rating {rating!r} is not a number", where=where,
                               fix="send +1/-1 (rating_scale thumbs) or 1-5 (rating_scale stars)")
        scale = row["rating_scale"] or ("thumbs" if rating in (-1, 1) else "stars")
        if scale not in RATING_SCALES:
            raise TunelabError(f"unknown rating_scale {scale!r}", where=where, fix="use thumbs or stars")
        low, high = RATING_SCALES[scale]
        if not (low <= rating <= high) or (scale == "thumbs" and rating not in (-1, 1)):
            raise TunelabError(f"rating {rating!r} is outside the {scale} scale", where=where,
                               fix="send +1 or -1 for thumbs, 1 to 5 for stars")
        row["rating"], row["rating_scale"] = float(rating), scale
    elif row["rating_scale"] is not None:
        raise TunelabError("rating_scale is given without a rating", where=where, fix="send the rating too")
    row["ts"] = time.time() if row["ts"] is None else float(row["ts"])
    row["request_id"] = row["request_id"].strip()
    return row
BUSY_TIMEOUT_S = 30.0  # a reader's checkpoint or another process's write can hold the lock briefly
MAX_BATCH = 2048       # rows per transaction; bounds how long one commit holds the write lock
DAY_S = 86_400.0
_PRUNE_TICK = object()  # what the writer wakes up with when the prune interval passes with nothing logged


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # in WAL mode a commit survives a process crash
    return conn


def to_row(record: dict[str, Any]) -> dict[str, Any]:
    """A record as the insert's parameters: JSON for structured fields, 0/1 for `cached`."""
    unknown = set(record) - set(COLUMNS)
    if unknown:
        raise TunelabError(f"prediction record has unknown field(s) {', '.join(sorted(unknown))}",
                           where="prediction log", fix=f"use only {', '.join(COLUMNS)}")
    row = dict.fromkeys(COLUMNS)
    row.update(record)
    row["ts"] = time.time() if row["ts"] is None else float(row["ts"])
    row["request_id"] = row["request_id"] or uuid.uuid4().hex
    for name in ("input", "output", "probabilities"):
        if row[name] is not None and not isinstance(row[name], str):
            row[name] = json.dumps(row[name], ensure_ascii=False)
    row["cached"] = int(bool(row["cached"]))
    for name, value in row.items():  # checked here, so one bad record cannot fail a whole batch later
        if value is not None and not isinstance(value, (str, int, float)):
            raise TunelabError(f"prediction field {name!r} is a {type(value).__name__}", where="prediction log",
                               fix="pass text, numbers or None (structured input/output/probabilities become JSON)")
    return row


class PredictionLog:
    """Append-only log of predictions; `log` is safe to call from any thread."""

    def __init__(self, path: str | Path, retention_days: float | None = 30, *,
                 prune_interval_s: float = 3600.0):
        if retention_days is not None and retention_days <= 0:
            raise TunelabError(f"retention_days must be positive, got {retention_days}",
                               where="prediction log", fix="give a number of days, or None to keep every record")
        self.path = Path(path)
        self.retention_days = retention_days
        self.prune_interval_s = prune_interval_s
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = connect(self.path)
            for statement in SCHEMA:
                self._conn.execute(statement)
            present = {row[1] for row in self._conn.execute("PRAGMA table_info(predictions)")}
            for name in ADDED_LATER:
                if name not in present:
                    self._conn.execute(f"ALTER TABLE predictions ADD COLUMN {name} {COLUMNS[name]}")
        except (OSError, sqlite3.Error) as exc:
            raise TunelabError(f"cannot open the prediction log ({exc})", where=str(self.path),
                               fix="check that the directory is writable and the file is a SQLite database") from exc
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._error: Exception | None = None
        self._lock = threading.Lock()  # serialises the writer's transactions with prune() from other threads
        self.prune()
        self._next_prune = time.monotonic() + prune_interval_s
        self._writer = threading.Thread(target=self._write_loop, name="tunelab-predlog-writer", daemon=True)
        self._writer.start()

    def log(self, record: dict[str, Any]) -> None:
        """Queue one record (see COLUMNS); returns at once, the writer thread stores it."""
        self._require_open()
        self._queue.put(to_row(record))

    def log_feedback(self, record: dict[str, Any]) -> None:
        """Queue one feedback record (see FEEDBACK_COLUMNS and feedback_row); returns at once, the
        writer thread stores it with the predictions."""
        self._require_open()
        self._queue.put(feedback_row(record))

    def request_known(self, request_id: str) -> bool:
        """Whether a prediction with this request_id was logged. A prediction logged a moment ago
        may still be on the writer's queue: on a miss the queue is flushed and the table asked
        again, so feedback sent right after its response is never refused as unknown."""
        self._require_open()
        query = "SELECT 1 FROM predictions WHERE request_id = ? LIMIT 1"
        with self._lock:
            if self._conn.execute(query, (request_id,)).fetchone():
                return True
        self.flush()
        with self._lock:
            return self._conn.execute(query, (request_id,)).fetchone() is not None

    def _require_open(self) -> None:
        if self._closed:
            raise TunelabError("the prediction log is closed", where=str(self.path),
                               fix="use it before calling close(), or open a new PredictionLog")

    def flush(self) -> None:
        """Return once every record logged before this call is committed to the database."""
        if self._closed:
            return
        done = threading.Event()
        self._queue.put(done)
        done.wait()
        self._raise_writer_error()

    def close(self) -> None:
        """Flush, stop the writer thread and close the database."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        self._queue.put(None)
        self._writer.join()
        self._conn.close()

    def prune(self) -> int:
        """Delete records older than the retention period; returns how many were deleted."""
        self._require_open()
        if self.retention_days is None:
            return 0
        cutoff = time.time() - self.retention_days * DAY_S
        with self._lock:
            # feedback goes with its prediction: none is kept about an answer the log no longer holds
            self._conn.execute("DELETE FROM feedback WHERE request_id IN "
                               "(SELECT request_id FROM predictions WHERE ts < ?)", (cutoff,))
            return self._conn.execute("DELETE FROM predictions WHERE ts < ?", (cutoff,)).rowcount

    def count(self) -> int:
        self._require_open()
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _write_loop(self) -> None:
        stop = False
        while not stop:
            try:
                first = self._queue.get(timeout=max(0.0, self._next_prune - time.monotonic()))
            except queue.Empty:
                first = _PRUNE_TICK
            batch, waiters = [], []
            item = first
            while True:  # take what has accumulated, without waiting for more
                if item is None:
                    stop = True
                elif isinstance(item, threading.Event):
                    waiters.append(item)
                elif item is not _PRUNE_TICK:
                    batch.append(item)
                if stop or len(batch) >= MAX_BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            try:
                self._insert(batch)
                if time.monotonic() >= self._next_prune:
                    self._prune_quietly()
            except Exception as exc:  # kept for flush() to report; a flush must never wait on a dead writer
                self._error = exc
            finally:
                for waiter in waiters:
                    waiter.set()

    def _insert(self, batch: list[dict[str, Any]]) -> None:
        if not batch:
            return
        try:
            with self._lock:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    self._conn.executemany(INSERT, [r for r in batch if not isinstance(r, FeedbackRow)])
                    self._conn.executemany(FEEDBACK_INSERT, [r for r in batch if isinstance(r, FeedbackRow)])
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:  # kept for flush() to report; the writer keeps serving
            self._error = exc

    def _prune_quietly(self) -> None:
        self._next_prune = time.monotonic() + self.prune_interval_s
        try:
            self.prune()
        except sqlite3.Error as exc:
            self._error = exc

    def _raise_writer_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise TunelabError(f"could not write predictions ({error})", where=str(self.path),
                               fix="check free disk space and that no other process holds the database locked")


NOT_SHADOW = "(role IS NULL OR role != 'shadow')"


def has_roles(conn: sqlite3.Connection) -> bool:
    return any(row[1] == "role" for row in conn.execute("PRAGMA table_info(predictions)"))


def read_predictions(path: str | Path, *, since_ts: float | None = None, limit: int | None = None,
                     model_version: str | None = None, include_shadow: bool = False) -> list[dict[str, Any]]:
    """Logged predictions as dicts with the table's columns, oldest first: what clients were
    answered (live and canary), and with `include_shadow` the shadow's answers too.

    `limit` keeps the most recent `limit` matching records (the monitor's window), still
    returned oldest first. Values are as stored: `probabilities` and chat `input` are JSON text.
    """
    path = Path(path)
    if not path.is_file():
        raise TunelabError("prediction log not found", where=str(path),
                           fix="start `tunelab serve` (it creates the log) or pass the right path")
    if limit is not None and limit < 0:
        raise TunelabError(f"limit must be zero or more, got {limit}", where="read_predictions",
                           fix="pass a non-negative number of records")
    where, params = [] if include_shadow else [NOT_SHADOW], []
    if since_ts is not None:
        where.append("ts >= ?")
        params.append(since_ts)
    if model_version is not None:
        where.append("model_version = ?")
        params.append(model_version)
    query = "SELECT * FROM predictions" + (f" WHERE {' AND '.join(where)}" if where else "")
    if limit is not None:
        query = f"SELECT * FROM ({query} ORDER BY ts DESC, id DESC LIMIT ?)"
        params.append(limit)
    query += " ORDER BY ts, id"
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
        try:
            conn.row_factory = sqlite3.Row
            if not has_roles(conn):  # a log written before roles: every row is a client's answer
                query = query.replace(NOT_SHADOW, "1")
            return [dict(row) for row in conn.execute(query, params)]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise TunelabError(f"cannot read the prediction log ({exc})", where=str(path),
                           fix="pass the SQLite file `tunelab serve` writes (serve.prediction_log)") from exc


def read_feedback(path: str | Path, *, since_ts: float | None = None, request_ids: list[str] | None = None,
                  model_version: str | None = None) -> list[dict[str, Any]]:
    """Feedback records joined with the prediction each is about, oldest feedback first.

    Each dict holds the feedback columns (id, ts, request_id, label, corrected, rating,
    rating_scale, preferred, comment, annotator) and `prediction`: that request's row as
    read_predictions returns it (the most recent answer a client got, should an id repeat), or None when the log
    holds no prediction with that request_id (pruned, or sent to another log). `since_ts` filters
    on the feedback's own time; `model_version` on the prediction's. A log written before
    feedback existed has no feedback table: that is no feedback, not an error."""
    path = Path(path)
    if not path.is_file():
        raise TunelabError("prediction log not found", where=str(path),
                           fix="start `tunelab serve` (it creates the log) or pass the right path")
    where, params = [], []
    if since_ts is not None:
        where.append("f.ts >= ?")
        params.append(since_ts)
    if request_ids is not None:
        where.append(f"f.request_id IN ({', '.join('?' * len(request_ids))})")
        params += list(request_ids)
    if model_version is not None:
        where.append("p.model_version = ?")
        params.append(model_version)
    latest = f"(SELECT MAX(id) FROM predictions WHERE request_id = f.request_id AND {NOT_SHADOW})"
    query = (f"SELECT f.*, p.id AS p_id FROM feedback f LEFT JOIN predictions p ON p.id = {latest}"
             + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY f.ts, f.id")
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
        try:
            conn.row_factory = sqlite3.Row
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "feedback" not in tables:
                return []
            if not has_roles(conn):
                query = query.replace(NOT_SHADOW, "1")
            rows = [dict(row) for row in conn.execute(query, params)]
            ids = sorted({row["p_id"] for row in rows if row["p_id"] is not None})
            predictions = {}
            for start in range(0, len(ids), 500):  # SQLite caps the parameters of one statement
                chunk = ids[start:start + 500]
                predictions.update({row["id"]: dict(row) for row in conn.execute(
                    f"SELECT * FROM predictions WHERE id IN ({', '.join('?' * len(chunk))})", chunk)})
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise TunelabError(f"cannot read the prediction log ({exc})", where=str(path),
                           fix="pass the SQLite file `tunelab serve` writes (serve.prediction_log)") from exc
    return [{**{k: v for k, v in row.items() if k != "p_id"}, "prediction": predictions.get(row["p_id"])}
            for row in rows]
