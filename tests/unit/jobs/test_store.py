"""The jobs store: ids, order, cursors, the metadata filter and guarded status changes."""
from tunelab.jobs.store import JobStore


def add(store, **fields):
    return store.add_job(model="m", base="/b", base_name="m", training_file="file-1", seed=0,
                         method={"type": "supervised", "supervised": {"hyperparameters": {}}}, hyperparameters={},
                         **fields)


def test_jobs_newest_first_with_cursor_and_metadata_filter(tmp_path):
    store = JobStore(tmp_path)
    a, b, c = add(store, metadata={"team": "x"}), add(store, metadata={"team": "y"}), add(store)
    assert a["id"].startswith("ftjob-") and len(a["id"]) == 30
    assert [j["id"] for j in store.jobs()] == [c["id"], b["id"], a["id"]]
    assert [j["id"] for j in store.jobs(after=b["id"])] == [a["id"]]
    assert [j["id"] for j in store.jobs(metadata={"team": "y"})] == [b["id"]]
    assert store.jobs(metadata={"team": "z"}) == []


def test_a_guarded_update_changes_only_a_job_in_the_given_statuses(tmp_path):
    store = JobStore(tmp_path)
    job = add(store)
    assert store.update_job(job["id"], status="cancelled", only_if_status=("validating_files",))
    assert not store.update_job(job["id"], status="succeeded", only_if_status=("running",))
    assert store.job(job["id"])["status"] == "cancelled"


def test_files_events_and_checkpoints_survive_a_reopen(tmp_path):
    store = JobStore(tmp_path)
    row = store.add_file("train.jsonl", "fine-tune", b'{"a": 1}\n')
    job = add(store)
    store.add_event(job["id"], "hello", data={"step": 1})
    assert store.add_checkpoint(job["id"], 4, "/c", {"step": 4.0})
    assert not store.add_checkpoint(job["id"], 4, "/c", {"step": 4.0})
    store.close()
    again = JobStore(tmp_path)
    assert again.file(row["id"])["bytes"] == 9 and again.file_path(row["id"]).read_bytes() == b'{"a": 1}\n'
    assert [(e["message"], e["data"]) for e in again.events(job["id"])] == [
        ("hello", {"step": 1}), (f"Created fine-tuning job: {job['id']}", None)]  # newest first
    assert [c["step"] for c in again.checkpoints(job["id"])] == [4]
    assert again.delete_file(row["id"]) and again.file(row["id"]) is None
