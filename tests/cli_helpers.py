"""The one way tests run `tunelab` and write JSONL.

- `tunelab(...)`: the installed console script in a subprocess, as a user runs it (end-to-end tests).
- `tunelab_in_process(...)`: `tunelab.cli.main` in this process, for the many fast cases of one
  command (argument and config errors), with its exit code and captured output.
- `write_jsonl(path, rows)`: each row as a JSON line; bytes rows verbatim (broken lines).

Import from any test as ``from cli_helpers import tunelab, write_jsonl`` (pytest puts tests/, the
directory of the top-level conftest.py, on sys.path)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TUNELAB = str(Path(sys.executable).with_name("tunelab"))
# one intra-op thread: on 2 shared cores, threads of tiny matmuls only spin against each other
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def tunelab(*args, cwd=None, check: bool = True, timeout: float = 400,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`tunelab ARGS...` in a subprocess; with check, a non-zero exit fails with its output."""
    proc = subprocess.run([TUNELAB, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**ENV, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}")
    return proc


def tunelab_in_process(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """`tunelab ARGS...` through the console script's entry point in this process:
    (exit code, stdout, stderr)."""
    import pytest

    from tunelab import cli

    monkeypatch.setattr(sys, "argv", ["tunelab", *map(str, args)])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


def write_jsonl(path: Path, rows) -> Path:
    """Rows as JSON lines; a bytes row is written verbatim (a broken line on purpose)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        for row in rows:
            f.write((row if isinstance(row, bytes) else json.dumps(row).encode()) + b"\n")
    return path
