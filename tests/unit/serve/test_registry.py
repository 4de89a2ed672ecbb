"""Model registry: versions, live pointer, promote/rollback history, locking, CLI."""
import json
import multiprocessing
import os

import pytest
from cli_helpers import tunelab_in_process

from tunelab.errors import TunelabError
from tunelab.files import sha256_of
from tunelab.serve.registry import Claim, Registry


def make_run(root, name: str, manifest: dict | None = None):
    run = root / name
    run.mkdir(parents=True)
    if manifest is not None:
        (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def test_register_reads_the_manifest_and_numbers_versions(tmp_path):
    manifest = {"stage": "train", "task": "classification", "base_model": {"id": "bert-tiny", "path": "/m"}}
    first = make_run(tmp_path, "run-a", manifest)
    second = make_run(tmp_path, "run-b")
    registry = Registry(tmp_path / "registry.json")
    assert registry.versions() == [] and registry.live() is None and registry.mtime() == 0.0

    a = registry.register(first)
    b = registry.register(second)
    assert (a["version"], a["task"], a["base_model"]) == ("v1", "classification", "bert-tiny")
    assert a["manifest_sha256"] == sha256_of(first / "manifest.json")
    assert a["path"] == str(first.resolve()) and a["registered_at"].endswith("+00:00")
    assert (b["version"], b["task"], b["base_model"], b["manifest_sha256"]) == ("v2", None, None, None)
    assert registry.live()["version"] == "v1"  # the first registered into an empty registry
    on_disk = json.loads((tmp_path / "registry.json").read_text())
    assert on_disk["live"] == "v1" and on_disk["history"] == ["v1"]
    assert [v["version"] for v in on_disk["versions"]] == ["v1", "v2"]


def test_register_is_idempotent_per_resolved_path(tmp_path, monkeypatch):
    run = make_run(tmp_path, "runs/sentiment")
    (tmp_path / "alias").symlink_to(tmp_path / "runs")
    registry = Registry(tmp_path / "registry.json")
    first = registry.register(run)
    monkeypatch.chdir(tmp_path)
    assert registry.register("runs/sentiment/") == first
    assert registry.register(tmp_path / "alias" / "sentiment") == first
    assert registry.register(tmp_path / "runs" / ".." / "runs" / "sentiment") == first
    assert len(registry.versions()) == 1


def test_promote_and_rollback_keep_history(tmp_path):
    registry = Registry(tmp_path / "registry.json")
    for name in ("a", "b", "c"):
        registry.register(make_run(tmp_path, name))
    assert registry.promote("v2")["version"] == "v2"
    assert registry.promote("v3")["version"] == "v3"
    assert registry.promote("v3")["version"] == "v3"  # already live: no new history entry
    assert registry.load()["history"] == ["v1", "v2", "v3"]

    assert registry.rollback()["version"] == "v2"
    assert registry.live()["version"] == "v2"
    assert registry.rollback()["version"] == "v1"
    with pytest.raises(TunelabError) as caught:
        registry.rollback()
    message = str(caught.value)
    assert "no earlier live version" in message and "tunelab models promote" in message
    assert message.endswith(".") and ". " not in message and "\n" not in message  # one sentence

    data = registry.load()
    assert data["live"] == "v1" and data["history"] == ["v1"]
    assert [(e["action"], e["from"], e["version"]) for e in data["events"]] == [
        ("promote", None, "v1"), ("promote", "v1", "v2"), ("promote", "v2", "v3"),
        ("rollback", "v3", "v2"), ("rollback", "v2", "v1")]


def test_rollback_on_an_empty_registry_is_a_user_error(tmp_path):
    with pytest.raises(TunelabError, match="no earlier live version"):
        Registry(tmp_path / "registry.json").rollback()


def test_promote_unknown_version_names_the_known_ones(tmp_path):
    registry = Registry(tmp_path / "registry.json")
    registry.register(make_run(tmp_path, "a"))
    with pytest.raises(TunelabError, match=r"unknown model version 'v7' \(registered: v1\)"):
        registry.promote("v7")
    assert registry.live()["version"] == "v1"


def test_mtime_increases_with_every_change(tmp_path):
    registry = Registry(tmp_path / "registry.json")
    registry.register(make_run(tmp_path, "a"))
    registry.register(make_run(tmp_path, "b"))
    seen = [registry.mtime()]
    for change in (lambda: registry.promote("v2"), registry.rollback, lambda: registry.promote("v2")):
        change()  # back to back, often within one filesystem clock tick
        seen.append(registry.mtime())
    assert all(later > earlier for earlier, later in zip(seen, seen[1:])), seen


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"live": "v1"}', "no `versions` list"),
    ("[]", "no `versions` list"),
])
def test_damaged_registry_files_are_user_errors(tmp_path, content, message):
    path = tmp_path / "registry.json"
    path.write_text(content)
    registry = Registry(path)
    with pytest.raises(TunelabError, match=message):
        registry.versions()
    with pytest.raises(TunelabError, match=message):
        registry.register(make_run(tmp_path, "a"))
    assert path.read_text() == content  # left as it was


def test_bad_run_directories_are_user_errors(tmp_path):
    registry = Registry(tmp_path / "registry.json")
    with pytest.raises(TunelabError, match="run directory not found"):
        registry.register(tmp_path / "missing")
    broken = make_run(tmp_path, "broken")
    (broken / "manifest.json").write_text("{truncated")
    with pytest.raises(TunelabError, match="manifest.json is not readable JSON"):
        registry.register(broken)
    assert not (tmp_path / "registry.json").exists() or registry.versions() == []


def _register_many(registry_path: str, runs: list[str], start) -> None:
    start.wait()
    registry = Registry(registry_path)
    for run in runs:
        registry.register(run)


def test_concurrent_registration_from_processes_loses_nothing(tmp_path):
    """Eight processes register 40 runs at once (each run by two processes): no update is lost."""
    runs = [str(make_run(tmp_path, f"run{i:02d}")) for i in range(40)]
    shares = [runs[i::8] for i in range(8)]
    shares = [share + shares[(i + 1) % 8] for i, share in enumerate(shares)]  # every run registered twice
    context = multiprocessing.get_context("fork")
    start = context.Barrier(8)
    workers = [context.Process(target=_register_many, args=(str(tmp_path / "registry.json"), share, start))
               for share in shares]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    versions = Registry(tmp_path / "registry.json").versions()
    assert sorted(v["path"] for v in versions) == sorted(runs)
    assert sorted(int(v["version"][1:]) for v in versions) == list(range(1, 41))


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    return tunelab_in_process(monkeypatch, capsys, "models", *args)


def test_models_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    path = str(tmp_path / "reg.json")
    code, out, _ = run_cli(monkeypatch, capsys, "list", "--registry", path)
    assert code == 0 and "no versions registered" in out
    manifest = {"task": "sft", "base_model": {"id": "tiny-llama"}}
    for name in ("a", "b"):
        code, out, _ = run_cli(monkeypatch, capsys, "register", str(make_run(tmp_path, name, manifest)), "-r", path)
        assert code == 0
    code, out, _ = run_cli(monkeypatch, capsys, "promote", "v2", "-r", path)
    assert (code, out.strip()) == (0, f"v2 is live ({tmp_path / 'b'})")
    code, out, _ = run_cli(monkeypatch, capsys, "list", "-r", path)
    rows = [line for line in out.splitlines() if line.startswith("│") and (" v1 " in line or " v2 " in line)]
    assert code == 0 and len(rows) == 2 and "*" in rows[1] and "*" not in rows[0]
    assert "tiny-llama" in rows[0] and "sft" in rows[0]
    assert "live: v2; history: v1 -> v2" in out
    code, out, _ = run_cli(monkeypatch, capsys, "rollback", "-r", path)
    assert (code, out.strip()) == (0, "rolled back: v1 is live (was v2)")
    code, out, err = run_cli(monkeypatch, capsys, "rollback", "-r", path)
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert "no earlier live version" in err
    code, out, err = run_cli(monkeypatch, capsys, "promote", "v9", "-r", path)
    assert code == 2 and "unknown model version 'v9'" in err
    assert os.path.exists(path)


def test_models_beside_the_live_version_are_not_versions(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    path = tmp_path / "reg.json"
    registry = Registry(path)
    live = registry.register(make_run(tmp_path, "chat", GENERATIVE))
    code, out, _ = run_cli(monkeypatch, capsys, "register", str(make_run(tmp_path, "legal", GENERATIVE)), "--id", "legal",
                           "-r", str(path))
    assert (code, out.strip()) == (0, f"legal: {tmp_path / 'legal'}")
    assert [m["id"] for m in registry.models()] == ["legal"] and registry.versions() == [live]
    registry.add_model("legal", make_run(tmp_path, "legal2", GENERATIVE))  # the id moves to the new run
    assert [(m["id"], m["path"]) for m in registry.models()] == [("legal", str(tmp_path / "legal2"))]
    code, out, _ = run_cli(monkeypatch, capsys, "list", "-r", str(path))
    assert code == 0 and "legal" in out and "live: v1" in out
    for bad, message in [("has space", "is not usable"), ("a:b", "is not usable")]:
        code, _, err = run_cli(monkeypatch, capsys, "register", str(tmp_path / "chat"), "--id", bad, "-r", str(path))
        assert code == 2 and message in err and "Traceback" not in err
    code, _, err = run_cli(monkeypatch, capsys, "register", str(tmp_path / "nowhere"), "--id", "x", "-r", str(path))
    assert code == 2 and "run directory not found" in err
    code, out, _ = run_cli(monkeypatch, capsys, "unregister", "legal", "-r", str(path))
    assert (code, out.strip()) == (0, "legal unregistered") and registry.models() == []
    code, _, err = run_cli(monkeypatch, capsys, "unregister", "legal", "-r", str(path))
    assert code == 2 and "no model 'legal' is registered (registered: none)" in err
    registry.attach(Claim("s1", "served", "generative", str(tmp_path / "chat")), loaded=tmp_path / "chat")
    with pytest.raises(TunelabError, match="is the id of the registry's served model"):
        registry.add_model("served", tmp_path / "legal")


# a registry belongs to one served model; servers sharing it do not step on each other

GENERATIVE = {"stage": "train", "task": "sft"}
CLASSIFIER = {"stage": "train", "task": "classification", "labels": ["a", "b"]}


def test_promoting_another_kind_of_model_is_refused_in_one_sentence(tmp_path):
    registry = Registry(tmp_path / "registry.json")
    chat = registry.register(make_run(tmp_path, "chat", GENERATIVE))
    sentiment = registry.register(make_run(tmp_path, "sentiment", CLASSIFIER))
    assert (chat["kind"], sentiment["kind"]) == ("generative", "classification")
    with pytest.raises(TunelabError) as refused:
        registry.promote(sentiment["version"])
    message = str(refused.value)
    assert "v2 is a classification run and this registry serves a generative model" in message
    assert message.count(". ") == 0 and registry.live()["version"] == "v1"


def test_models_promote_of_another_kind_exits_2(tmp_path, monkeypatch, capsys):
    path = str(tmp_path / "reg.json")
    for name, manifest in (("chat", GENERATIVE), ("sentiment", CLASSIFIER)):
        assert run_cli(monkeypatch, capsys, "register", str(make_run(tmp_path, name, manifest)), "-r", path)[0] == 0
    code, _, err = run_cli(monkeypatch, capsys, "promote", "v2", "-r", path)
    assert code == 2 and "Traceback" not in err and "serves a generative model" in err


def test_the_first_server_owns_the_registry_and_another_kind_or_name_is_refused(tmp_path):
    from tunelab.serve.registry import Claim
    registry = Registry(tmp_path / "registry.json")
    chat = make_run(tmp_path, "chat", GENERATIVE)
    entry, name = registry.attach(Claim("server-a", None, "generative", str(chat)))
    assert (entry["version"], name) == ("v1", "chat")
    assert registry.load()["served"] == {"model_name": "chat", "kind": "generative"}
    classifier = make_run(tmp_path, "sentiment", CLASSIFIER)
    with pytest.raises(TunelabError, match="belongs to a generative model .'chat'. and this server serves a "
                                           "classification one"):
        registry.plan(Claim("server-b", None, "classification", str(classifier)))
    with pytest.raises(TunelabError, match="belongs to the served model 'chat', not 'support'"):
        registry.plan(Claim("server-b", "support", "generative", str(chat)))
    # a replica of the same run, without a configured name, serves under the recorded one
    assert registry.attach(Claim("server-b", None, "generative", str(chat))) == (entry, "chat")
    assert [v["path"] for v in registry.versions()] == [str(chat.resolve())]  # the refused run: not registered


def test_a_server_started_with_another_run_does_not_take_the_live_version_from_a_live_server(tmp_path):
    from tunelab.serve.registry import Claim
    registry = Registry(tmp_path / "registry.json")
    first, second = make_run(tmp_path, "first", GENERATIVE), make_run(tmp_path, "second", GENERATIVE)
    registry.attach(Claim("server-a", "chat", "generative", str(first)))
    with pytest.raises(TunelabError) as refused:
        registry.plan(Claim("server-b", "chat", "generative", str(second)))
    assert f"serves the live version v1 from this registry, and starting with {second}" in str(refused.value)
    assert "serve.promote=true" in str(refused.value)
    assert registry.attach(Claim("server-c", "chat", "generative", None))[0]["version"] == "v1"  # serves v1
    entry, _ = registry.attach(Claim("server-b", "chat", "generative", str(second), promote=True))  # asked
    assert entry["version"] == "v2" and registry.live()["version"] == "v2"
    assert [s["id"] for s in registry.load()["servers"]] == ["server-a", "server-c", "server-b"]
    for server in ("server-a", "server-b", "server-c"):
        registry.detach(server)
    assert registry.load()["servers"] == []
    # nobody serves the registry: a new run becomes live, as a single server's restart expects
    third = make_run(tmp_path, "third", GENERATIVE)
    assert registry.attach(Claim("server-d", "chat", "generative", str(third)))[0]["version"] == "v3"


def test_servers_whose_process_is_gone_are_forgotten(tmp_path):
    import socket
    from tunelab.serve.registry import Claim
    registry = Registry(tmp_path / "registry.json")
    first, second = make_run(tmp_path, "first", GENERATIVE), make_run(tmp_path, "second", GENERATIVE)
    registry.attach(Claim("crashed", "chat", "generative", str(first)))
    data = registry.load()
    data["servers"][0]["pid"] = 2**22 + 1  # above the kernel's pid_max: no such process
    assert data["servers"][0]["host"] == socket.gethostname()
    (tmp_path / "registry.json").write_text(json.dumps(data))
    entry, _ = registry.attach(Claim("new", "chat", "generative", str(second)))
    assert entry["version"] == "v2" and [s["id"] for s in registry.load()["servers"]] == ["new"]
