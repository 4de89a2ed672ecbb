"""Prediction log: concurrent logging loses nothing, flush means on disk, retention prunes, reads filter."""
import json
import sqlite3
import threading
import time

import pytest

from tunelab.errors import TunelabError
from tunelab.serve.predlog import COLUMNS, PredictionLog, read_predictions


def record(**overrides) -> dict:
    row = {"endpoint": "/v1/classify", "model_version": "v1", "input": "great film", "output": "positive",
           "label": "positive", "confidence": 0.9, "probabilities": {"positive": 0.9, "negative": 0.1},
           "latency_ms": 12.5, "status": 200}
    row.update(overrides)
    return row


def rows_on_disk(path) -> list[tuple]:
    """What another process would see: a fresh connection, not the writer's."""
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT id, request_id FROM predictions").fetchall()


def test_concurrent_logging_from_32_threads_keeps_every_record(tmp_path):
    path = tmp_path / "predictions.db"
    start = threading.Barrier(32)

    def worker(log: PredictionLog, thread: int) -> None:
        start.wait()
        for i in range(50):
            log.log(record(request_id=f"t{thread}-{i}"))

    with PredictionLog(path) as log:
        threads = [threading.Thread(target=worker, args=(log, t)) for t in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        log.flush()
        assert log.count() == 1600
    rows = rows_on_disk(path)
    assert len(rows) == 1600
    assert len({row_id for row_id, _ in rows}) == 1600
    assert {request_id for _, request_id in rows} == {f"t{t}-{i}" for t in range(32) for i in range(50)}


def test_flush_returns_only_once_the_records_are_committed(tmp_path):
    path = tmp_path / "predictions.db"
    log = PredictionLog(path)
    for i in range(200):
        log.log(record(request_id=str(i)))
    log.flush()
    assert len(rows_on_disk(path)) == 200  # visible to a separate reader, i.e. committed
    log.log(record(request_id="late"))
    log.close()  # close flushes what is still queued
    assert len(rows_on_disk(path)) == 201
    with pytest.raises(TunelabError, match="closed"):
        log.log(record())


def test_log_returns_without_waiting_for_the_disk(tmp_path, monkeypatch):
    """The writer is held inside a transaction; log() still returns, flush() waits for it."""
    path = tmp_path / "predictions.db"
    log = PredictionLog(path)
    release = threading.Event()
    real_insert = log._insert

    def slow_insert(batch):
        release.wait(timeout=10)
        real_insert(batch)

    monkeypatch.setattr(log, "_insert", slow_insert)
    log.log(record(request_id="first"))  # the writer picks this up and blocks
    for i in range(100):
        log.log(record(request_id=str(i)))  # returns although nothing can be written yet
    flushed = threading.Event()
    threading.Thread(target=lambda: (log.flush(), flushed.set()), daemon=True).start()
    assert not flushed.wait(timeout=0.2)
    release.set()
    assert flushed.wait(timeout=10)
    assert log.count() == 101
    log.close()


def test_batches_are_written_in_one_transaction_each(tmp_path, monkeypatch):
    path = tmp_path / "predictions.db"
    log = PredictionLog(path)
    batches = []
    real_insert = log._insert
    gate = threading.Event()

    def counting_insert(batch):
        gate.wait(timeout=10)
        batches.append(len(batch))
        real_insert(batch)

    monkeypatch.setattr(log, "_insert", counting_insert)
    log.log(record())  # taken alone while the gate is shut
    for _ in range(300):
        log.log(record())
    gate.set()
    log.flush()
    assert sum(batches) == 301
    assert len(batches) <= 3  # the 300 queued meanwhile go in together, not one commit each
    log.close()


def test_retention_prunes_old_records_on_open_and_on_demand(tmp_path):
    path = tmp_path / "predictions.db"
    now = time.time()
    with PredictionLog(path, retention_days=None) as log:
        log.log(record(ts=now - 10 * 86400, request_id="old"))
        log.log(record(ts=now - 3 * 86400, request_id="recent"))
        log.log(record(ts=now, request_id="now"))
    with PredictionLog(path, retention_days=5) as log:  # pruned on open
        assert log.count() == 2
        log.log(record(ts=now - 6 * 86400, request_id="late-arriving old"))
        log.flush()
        assert log.prune() == 1
        assert log.count() == 2
    assert [r["request_id"] for r in read_predictions(path)] == ["recent", "now"]


def test_writer_prunes_periodically(tmp_path):
    path = tmp_path / "predictions.db"
    with PredictionLog(path, retention_days=1, prune_interval_s=0.05) as log:
        log.log(record(ts=time.time() - 2 * 86400))
        log.flush()
        deadline = time.monotonic() + 5
        while log.count() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert log.count() == 0


def test_read_predictions_filters_and_orders(tmp_path):
    path = tmp_path / "predictions.db"
    with PredictionLog(path) as log:
        for i in range(10):
            log.log(record(ts=1_000_000_000 + i, request_id=str(i), model_version="v1" if i < 6 else "v2"))
    # read while no writer is open, then while one is (WAL: readers and a writer together)
    assert [r["request_id"] for r in read_predictions(path)] == [str(i) for i in range(10)]
    with PredictionLog(path, retention_days=None) as log:
        log.log(record(ts=1_000_000_100, request_id="10", model_version="v2"))
        log.flush()
        assert [r["request_id"] for r in read_predictions(path, since_ts=1_000_000_007)] == ["7", "8", "9", "10"]
        assert [r["request_id"] for r in read_predictions(path, model_version="v1")] == [str(i) for i in range(6)]
        # limit keeps the most recent records, still oldest first
        assert [r["request_id"] for r in read_predictions(path, limit=3)] == ["8", "9", "10"]
        assert [r["request_id"] for r in read_predictions(path, model_version="v1", limit=2)] == ["4", "5"]
        assert read_predictions(path, since_ts=1_000_000_003, model_version="v2", limit=0) == []


def test_records_keep_the_documented_columns_and_values(tmp_path):
    path = tmp_path / "predictions.db"
    messages = [{"role": "user", "content": "hi <EMAIL>"}]
    with PredictionLog(path) as log:
        log.log(record(input=messages, cached=True, prompt_tokens=3, completion_tokens=None, adapter="support"))
        log.log({"endpoint": "/v1/chat/completions", "status": 400, "blocked_reason": "injection"})
    first, second = read_predictions(path)
    assert set(first) == {"id", *COLUMNS}
    assert json.loads(first["input"]) == messages
    assert json.loads(first["probabilities"]) == {"positive": 0.9, "negative": 0.1}
    assert (first["cached"], first["prompt_tokens"], first["completion_tokens"]) == (1, 3, None)
    assert second["cached"] == 0 and second["blocked_reason"] == "injection"
    assert second["ts"] > 0 and len(second["request_id"]) == 32  # filled in when not given
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(predictions)")}
    assert "predictions_ts" in indexes


@pytest.mark.parametrize("bad, message", [
    ({"endpont": "/predict"}, "unknown field"),
    ({"latency_ms": object()}, "latency_ms"),
])
def test_bad_records_are_refused_at_log_time(tmp_path, bad, message):
    with PredictionLog(tmp_path / "p.db") as log:
        with pytest.raises(TunelabError, match=message):
            log.log(bad)
        log.log(record())  # the writer is unaffected
        log.flush()
        assert log.count() == 1


def test_unusable_paths_are_user_errors(tmp_path):
    with pytest.raises(TunelabError, match="not found"):
        read_predictions(tmp_path / "missing.db")
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("this is not a database\n" * 100)
    with pytest.raises(TunelabError, match="prediction log"):
        PredictionLog(not_sqlite)
    with pytest.raises(TunelabError, match="prediction log"):
        read_predictions(not_sqlite)
    with pytest.raises(TunelabError, match="retention_days"):
        PredictionLog(tmp_path / "p.db", retention_days=0)


class FailingWrites:
    """Stands in for the writer's connection: inserts fail as on a full disk, the rest works."""

    def __init__(self, conn):
        self.conn = conn

    def executemany(self, *args):
        raise sqlite3.OperationalError("database or disk is full")

    def __getattr__(self, name):
        return getattr(self.conn, name)


def test_a_failed_write_is_reported_by_flush_and_the_writer_keeps_going(tmp_path):
    with PredictionLog(tmp_path / "p.db") as log:
        real = log._conn
        log._conn = FailingWrites(real)
        log.log(record(request_id="lost"))
        with pytest.raises(TunelabError, match="could not write predictions.*disk is full"):
            log.flush()
        log._conn = real
        log.log(record(request_id="kept"))
        log.flush()  # the error was reported once; later writes succeed
    assert [r["request_id"] for r in read_predictions(tmp_path / "p.db")] == ["kept"]


def test_a_reader_holding_a_snapshot_does_not_block_the_writer(tmp_path):
    """WAL: the monitor may sit in a read transaction while the server keeps logging."""
    path = tmp_path / "p.db"
    with PredictionLog(path) as log:
        log.log(record(request_id="before"))
        log.flush()
        reader = sqlite3.connect(path, isolation_level=None)
        reader.execute("BEGIN")
        assert reader.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 1
        for i in range(20):
            log.log(record(request_id=str(i)))
        log.flush()  # commits although the reader's snapshot is open
        assert reader.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 1  # its snapshot
        reader.execute("COMMIT")
        assert reader.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 21
        reader.close()
