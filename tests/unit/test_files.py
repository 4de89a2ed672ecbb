"""A directory built in a hidden sibling appears whole, its manifest last; a failed build leaves
what was there before and nothing half-written beside it."""
import pytest

from tunelab.files import staged_directory


def test_files_move_in_with_the_manifest_last(tmp_path, monkeypatch):
    import os
    out = tmp_path / "prepared"
    moved = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (moved.append(os.path.basename(b)), real_replace(a, b))[1])
    with staged_directory(out) as stage:
        assert stage.parent == tmp_path and stage.name.startswith(".prepared.partial-") and not out.exists()
        for name in ("manifest.json", "train.jsonl", "z.jsonl"):
            (stage / name).write_text(name)
    assert moved[-1] == "manifest.json" and sorted(moved) == ["manifest.json", "train.jsonl", "z.jsonl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]
    assert (out / "train.jsonl").read_text() == "train.jsonl"


def test_a_failed_build_leaves_the_previous_directory_and_no_stage(tmp_path):
    out = tmp_path / "prepared"
    with staged_directory(out) as stage:
        (stage / "manifest.json").write_text("old")
        (stage / "train.jsonl").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_directory(out) as stage:
            (stage / "train.jsonl").write_text("new, half written")
            raise RuntimeError("a worker died")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]
    assert (out / "train.jsonl").read_text() == "old" and (out / "manifest.json").read_text() == "old"


def test_a_rerun_removes_the_old_manifest_before_the_new_files_arrive(tmp_path):
    out = tmp_path / "prepared"
    out.mkdir()
    (out / "manifest.json").write_text("old")
    (out / "notes.txt").write_text("the user's own file stays")
    with staged_directory(out) as stage:
        (stage / "train.jsonl").write_text("new")  # a build that writes no manifest
    assert not (out / "manifest.json").exists() and (out / "notes.txt").exists()
