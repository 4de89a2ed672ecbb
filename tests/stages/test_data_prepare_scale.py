"""`tunelab data prepare` at scale, run as a user runs it: one worker, two workers and a Ray
cluster write the same files byte for byte; a file larger than the process may hold streams
through under a memory cap; a corrupt line in its middle is one reject with its line number; a
killed worker fails the run with one sentence and leaves no output that looks complete."""
from __future__ import annotations

import json
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from cli_helpers import ENV, TUNELAB, tunelab

OUTPUTS = ("train.jsonl", "val.jsonl", "test.jsonl", "rejects.jsonl", "duplicates.jsonl", "report.json")
WORDS = ("refund order account invoice delivery contract clause payment policy customer notice period "
         "warranty claim service agent ticket billing address shipping return label damaged").split()


def write_planted_chat(path: Path, n: int, seed: int = 0) -> dict[str, int]:
    """n chat lines, streamed to disk: planted exact copies (case and punctuation changed), near
    copies (one answer word changed), PII, and unusable lines. Returns what was planted."""
    rng = random.Random(seed)
    kept: list[tuple[str, str]] = []
    planted = {"exact": 0, "near": 0, "pii": 0, "bad": 0}
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            roll = rng.random()
            if i % 997 == 500:
                f.write('{"messages": [{"role": "user", "content": "cut off\n')
                planted["bad"] += 1
                continue
            if kept and roll < 0.03:
                question, answer = rng.choice(kept)
                question, answer = question.upper() + "!", answer
                planted["exact"] += 1
            elif kept and roll < 0.06:
                question, answer = rng.choice(kept)
                words = answer.split()
                words[rng.randrange(len(words))] = f"changed{i}"
                answer = " ".join(words)
                planted["near"] += 1
            else:
                question = " ".join(rng.choices(WORDS, k=10)) + f" number {i}?"
                answer = " ".join(rng.choices(WORDS, k=30)) + f" case {i}."
                if i % 50 == 0:
                    answer += f" Write to agent{i}@example.com or call +1 415 555 {1000 + i % 9000:04d}."
                    planted["pii"] += 1
                kept.append((question, answer))
            f.write(json.dumps({"messages": [{"role": "user", "content": question},
                                             {"role": "assistant", "content": answer}]}) + "\n")
    return planted


@pytest.fixture(scope="module")
def chat20k(tmp_path_factory):
    directory = tmp_path_factory.mktemp("scale")
    path = directory / "chat.jsonl"
    planted = write_planted_chat(path, 20_000)
    two_workers = directory / "two-workers"
    tunelab("data", "prepare", path, "--out", two_workers, "-q", "--num-proc", "2")
    return path, planted, two_workers


def same_files(a: Path, b: Path) -> list[str]:
    return [name for name in OUTPUTS if (a / name).read_bytes() != (b / name).read_bytes()]


def test_two_workers_find_the_planted_records(chat20k):
    path, planted, out = chat20k
    report = json.loads((out / "report.json").read_text())
    counts = report["counts"]
    assert path.stat().st_size > 3 * 2**20  # several 1 MB blocks: both workers had shards
    assert counts["input"] == 20_000 and counts["input"] == counts["kept"] + counts["rejected"] + counts["duplicates"]
    assert report["rejects_by_reason"] == {"unparsable": planted["bad"]}
    assert report["duplicates_by_kind"]["exact"] == planted["exact"]
    assert planted["near"] * 0.97 <= report["duplicates_by_kind"]["near"] <= planted["near"]
    assert set(report["pii"]["by_type"]) == {"email", "phone"} and report["pii"]["by_type"]["email"] >= planted["pii"]
    assert "@example.com" not in (out / "train.jsonl").read_text()  # redacted, copies included
    assert json.loads((out / "manifest.json").read_text())["counts"] == counts


def test_one_worker_writes_the_same_files_as_two(chat20k, tmp_path):
    path, _, two_workers = chat20k
    tunelab("data", "prepare", path, "--out", tmp_path / "one", "-q", "data.num_proc=1")
    assert same_files(two_workers, tmp_path / "one") == []


def test_ray_engine_writes_the_same_files_as_the_local_engine(chat20k, tmp_path):
    pytest.importorskip("ray")
    path, _, local = chat20k
    proc = tunelab("data", "prepare", path, "--out", tmp_path / "ray", "--engine", "ray", "--num-proc", "2")
    assert same_files(local, tmp_path / "ray") == []
    assert "reading, checking" in proc.stderr and "records/s" in proc.stderr  # the bars show on Ray too
    assert "WARNING" not in proc.stderr  # Ray's start-up chatter stays out of the user's terminal


def data_use() -> int:
    """This process's private writable memory (what RLIMIT_DATA caps), in bytes."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmData:")[1].split()[0]) * 1024


def test_file_larger_than_the_memory_cap_streams_through(tmp_path):
    """Capped with RLIMIT_DATA (heap and anonymous memory): the process cannot even hold the
    file's bytes, yet it prepares the file. (RLIMIT_AS would count address space that is only
    reserved: rensa's allocator reserves 1 GB it never touches.)"""
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc")
    path = tmp_path / "big.jsonl"
    rng = random.Random(0)
    page = "".join(rng.choice("abcdefghij ") for _ in range(2500))  # carried in meta, as user metadata is
    n, corrupt = 60_000, 30_001
    with path.open("w") as f:
        for i in range(1, n + 1):
            if i == corrupt:
                f.write('{"text": "a corrupt line", "label": \n')
                continue
            f.write(json.dumps({"text": f"{' '.join(rng.choices(WORDS, k=12))} {i}", "label": "ab"[i % 2],
                                "meta": {"page": page[i % 100:] + str(i)}}) + "\n")
    size = path.stat().st_size
    imports = "import tunelab.cli, tunelab.data.prepare, datasketch; from pathlib import Path"
    baseline = subprocess.run([sys.executable, "-c", f"{imports}; print(int(Path('/proc/self/status').read_text()"
                               ".split('VmData:')[1].split()[0]) * 1024)"], capture_output=True, text=True, env=ENV,
                              check=True)
    cap = int(baseline.stdout) + 100 * 2**20
    assert size > cap - int(baseline.stdout) + 40 * 2**20  # the file alone is well over what the cap leaves

    def capped():
        resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))

    whole = subprocess.run([sys.executable, "-c", f"{imports}; Path({str(path)!r}).read_bytes()"],
                           preexec_fn=capped, capture_output=True, text=True, env=ENV)
    assert whole.returncode != 0 and "MemoryError" in whole.stderr  # loading it at once fails under the cap

    out = tmp_path / "out"
    proc = subprocess.run([TUNELAB, "data", "prepare", str(path), "--out", str(out), "-q", "--num-proc", "2"],
                          preexec_fn=capped, capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["counts"] == {"input": n, "kept": n - 1, "rejected": 1, "duplicates": 0, "pii_redacted": 0}
    (reject,) = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert (reject["line"], reject["reason"]) == (corrupt, "unparsable")
    assert sum(1 for s in ("train", "val", "test") for _ in (out / f"{s}.jsonl").open()) == n - 1


def test_a_killed_worker_fails_the_run_with_one_sentence_and_no_output(tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("finds the workers by the name they set on Linux")
    path = tmp_path / "chat.jsonl"
    write_planted_chat(path, 40_000, seed=1)  # long enough that workers are still busy when one is killed
    out = tmp_path / "out"
    proc = subprocess.Popen([TUNELAB, "data", "prepare", str(path), "--out", str(out), "-q", "--num-proc", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                if child.name() == "tunelab-worker":
                    child.send_signal(signal.SIGKILL)
                    killed = child.pid
                    break
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.02)
    stdout, stderr = proc.communicate(timeout=120)
    assert killed is not None, "no worker process was seen"
    assert proc.returncode == 2 and "Traceback" not in stderr
    message = " ".join(stderr[stderr.index("error: "):].split())
    assert "worker process died" in message and message.endswith(".") and ". " not in message[:-1]
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["chat.jsonl"]
