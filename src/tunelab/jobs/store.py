"""The jobs server's memory: one SQLite database (WAL) of uploaded files, jobs, their events and
checkpoints, and the files themselves on disk beside it. Everything the server knows about a job
is here, so a restarted server picks every job up where it was.

Rows come back as plain dicts (JSON columns decoded); the API objects are built from them by
tunelab.jobs.objects. Safe to use from any thread (one connection behind a lock)."""
from __future__ import annotations

import json
import secrets
import sqlite3
import string
import threading
import time
from pathlib import Path
from typing import Any

import shutil
from typing import BinaryIO

from tunelab.files import atomic_open

ALPHABET = string.ascii_letters + string.digits
JSON_COLUMNS = {"metadata", "method", "hyperparameters", "error", "result_files", "data", "metrics"}
TERMINAL = ("succeeded", "failed", "cancelled")

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL, filename TEXT NOT NULL, purpose TEXT NOT NULL, status TEXT NOT NULL,
    status_details TEXT, deleted INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, created_at INTEGER NOT NULL,
    model TEXT NOT NULL, base TEXT NOT NULL, base_name TEXT NOT NULL, training_file TEXT NOT NULL,
    validation_file TEXT, suffix TEXT, seed INTEGER NOT NULL, metadata TEXT, method TEXT NOT NULL,
    hyperparameters TEXT NOT NULL, status TEXT NOT NULL, error TEXT, fine_tuned_model TEXT,
    finished_at INTEGER, trained_tokens INTEGER, result_files TEXT NOT NULL DEFAULT '[]',
    estimated_finish INTEGER, phase TEXT, pid INTEGER, requested TEXT, resume INTEGER NOT NULL DEFAULT 0,
    metrics_offset INTEGER NOT NULL DEFAULT 0, examples INTEGER);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, job_id TEXT NOT NULL,
    created_at INTEGER NOT NULL, level TEXT NOT NULL, message TEXT NOT NULL, type TEXT NOT NULL, data TEXT);
CREATE INDEX IF NOT EXISTS events_of_job ON events (job_id, seq);
CREATE TABLE IF NOT EXISTS checkpoints (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, job_id TEXT NOT NULL,
    created_at INTEGER NOT NULL, step INTEGER NOT NULL, path TEXT NOT NULL, metrics TEXT NOT NULL,
    UNIQUE (job_id, step));
"""


def new_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(ALPHABET) for _ in range(24))


def _decode(row: sqlite3.Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    out = dict(row)
    for key in JSON_COLUMNS & out.keys():
        if out[key] is not None:
            out[key] = json.loads(out[key])
    return out


def _encode(value: Any, key: str) -> Any:
    return json.dumps(value) if key in JSON_COLUMNS and value is not None else value


class JobStore:
    def __init__(self, jobs_dir: str | Path):
        self.root = Path(jobs_dir)
        self.files_dir = self.root / "files"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()  # re-entrant: add_job writes its event under the same hold
        self._db = sqlite3.connect(self.root / "jobs.db", check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _all(self, sql: str, args=()) -> list[dict[str, Any]]:
        with self._lock:
            return [_decode(r) for r in self._db.execute(sql, args).fetchall()]

    def _one(self, sql: str, args=()) -> dict[str, Any] | None:
        with self._lock:
            return _decode(self._db.execute(sql, args).fetchone())

    def _run(self, sql: str, args=()) -> int:
        with self._lock:
            return self._db.execute(sql, args).rowcount

    # files

    def add_file(self, filename: str, purpose: str, content: BinaryIO | bytes) -> dict[str, Any]:
        file_id = new_id("file-")
        path = self.file_path(file_id)
        with atomic_open(path, "wb") as out:
            if isinstance(content, bytes):
                out.write(content)
            else:
                shutil.copyfileobj(content, out, 1 << 20)
        self._run("INSERT INTO files (id, bytes, created_at, filename, purpose, status) VALUES (?, ?, ?, ?, ?, ?)",
                  (file_id, path.stat().st_size, int(time.time()), filename, purpose, "processed"))
        return self.file(file_id)

    def file_path(self, file_id: str) -> Path:
        return self.files_dir / file_id

    def file(self, file_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM files WHERE id = ? AND deleted = 0", (file_id,))

    def files(self, *, purpose: str | None = None, after: str | None = None, limit: int = 10000,
              order: str = "desc") -> list[dict[str, Any]]:
        where, args = ["deleted = 0"], []
        if purpose:
            where.append("purpose = ?")
            args.append(purpose)
        if after:
            op = "<" if order == "desc" else ">"
            where.append(f"seq {op} COALESCE((SELECT seq FROM files WHERE id = ?), {'-1' if op == '>' else '1e18'})")
            args.append(after)
        return self._all(f"SELECT * FROM files WHERE {' AND '.join(where)} ORDER BY seq "
                         f"{'DESC' if order == 'desc' else 'ASC'} LIMIT ?", (*args, limit))

    def delete_file(self, file_id: str) -> bool:
        deleted = self._run("UPDATE files SET deleted = 1 WHERE id = ? AND deleted = 0", (file_id,)) > 0
        if deleted:
            self.file_path(file_id).unlink(missing_ok=True)
        return deleted

    # jobs

    def add_job(self, **fields: Any) -> dict[str, Any]:
        """A new job with its "Created" event, written under one lock: the worker, which takes
        the job as soon as it can see it, never writes an event before that one."""
        fields = {"id": new_id("ftjob-"), "created_at": int(time.time()), "status": "validating_files", **fields}
        keys = list(fields)
        with self._lock:
            self._db.execute(f"INSERT INTO jobs ({', '.join(keys)}) VALUES ({', '.join('?' for _ in keys)})",
                             tuple(_encode(fields[k], k) for k in keys))
            self.add_event(fields["id"], f"Created fine-tuning job: {fields['id']}")
        return self.job(fields["id"])

    def job(self, job_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))

    def update_job(self, job_id: str, *, only_if_status: tuple[str, ...] | None = None, **fields: Any) -> bool:
        """Set fields; with only_if_status, only while the job is in one of those statuses (so a
        cancel and the worker never overwrite each other's verdict). Whether the row changed."""
        sets = ", ".join(f"{k} = ?" for k in fields)
        sql, args = f"UPDATE jobs SET {sets} WHERE id = ?", [*(_encode(v, k) for k, v in fields.items()), job_id]
        if only_if_status:
            sql += f" AND status IN ({', '.join('?' for _ in only_if_status)})"
            args += list(only_if_status)
        return self._run(sql, tuple(args)) > 0

    def jobs(self, *, after: str | None = None, limit: int = 20, metadata: dict[str, str] | None = None,
             statuses: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """Newest first; `after`: those created before that job; `metadata`: jobs whose metadata
        holds every given key with the given value."""
        where, args = ["1 = 1"], []
        if after:
            where.append("seq < COALESCE((SELECT seq FROM jobs WHERE id = ?), 1e18)")
            args.append(after)
        if statuses:
            where.append(f"status IN ({', '.join('?' for _ in statuses)})")
            args += list(statuses)
        for key, value in (metadata or {}).items():
            where.append("json_extract(metadata, ?) = ?")
            args += [f'$."{key}"', value]
        return self._all(f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?", (*args, limit))

    def job_with_model(self, model: str) -> dict[str, Any] | None:
        """The succeeded job whose fine-tuned model is `model`."""
        return self._one("SELECT * FROM jobs WHERE fine_tuned_model = ? AND status = 'succeeded'", (model,))

    def jobs_in(self, *statuses: str) -> list[dict[str, Any]]:
        """Oldest first: the order the queue runs them in."""
        return self._all(f"SELECT * FROM jobs WHERE status IN ({', '.join('?' for _ in statuses)}) ORDER BY seq",
                         statuses)

    # events

    def add_event(self, job_id: str, message: str, *, level: str = "info", type: str = "message",
                  data: dict[str, Any] | None = None) -> None:
        self._run("INSERT INTO events (id, job_id, created_at, level, message, type, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
                  (new_id("ftevent-"), job_id, int(time.time()), level, message, type, _encode(data, "data")))

    def events(self, job_id: str, *, after: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """Newest first, as OpenAI lists them; `after`: those older than that event."""
        where, args = ["job_id = ?"], [job_id]
        if after:
            where.append("seq < COALESCE((SELECT seq FROM events WHERE id = ?), 1e18)")
            args.append(after)
        return self._all(f"SELECT * FROM events WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?", (*args, limit))

    # checkpoints

    def add_checkpoint(self, job_id: str, step: int, path: str, metrics: dict[str, float]) -> bool:
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO checkpoints (id, job_id, created_at, step, path, metrics) VALUES (?, ?, ?, ?, ?, ?)",
                (new_id("ftckpt-"), job_id, int(time.time()), step, path, json.dumps(metrics)))
            return cursor.rowcount > 0

    def checkpoints(self, job_id: str, *, after: str | None = None, limit: int = 10) -> list[dict[str, Any]]:
        where, args = ["job_id = ?"], [job_id]
        if after:
            where.append("seq < COALESCE((SELECT seq FROM checkpoints WHERE id = ?), 1e18)")
            args.append(after)
        return self._all(f"SELECT * FROM checkpoints WHERE {' AND '.join(where)} ORDER BY step DESC, seq DESC LIMIT ?",
                         (*args, limit))

    def drop_checkpoint(self, job_id: str, step: int) -> None:
        self._run("DELETE FROM checkpoints WHERE job_id = ? AND step = ?", (job_id, step))
