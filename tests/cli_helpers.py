"""Running the installed `tunelab` console script as a user does, for the end-to-end tests.

Import from any test as ``from cli_helpers import tunelab, write_jsonl`` (tests/conftest.py puts
tests/ on sys.path)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TUNELAB = str(Path(sys.executable).with_name("tunelab"))
# one intra-op thread: on 2 shared cores, threads of tiny matmuls only spin against each other
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def tunelab(*args, cwd=None, check: bool = True, timeout: float = 400) -> subprocess.CompletedProcess:
    """`tunelab ARGS...` in a subprocess; with check, a non-zero exit fails with its output."""
    proc = subprocess.run([TUNELAB, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=ENV)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}")
    return proc


def write_jsonl(path: Path, rows) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
