"""File output: atomic writes (temp file + rename), JSONL, hashing, manifests."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)
KEY_PACKAGES = ("tunelab", "torch", "transformers", "tokenizers", "datasets", "peft", "trl", "accelerate",
                "datasketch", "rensa", "phonenumbers", "python-stdnum", "pydantic")


@contextmanager
def atomic_open(path: Path, mode: str = "w"):
    """Write to a temp file beside `path` and rename it into place only when writing succeeded,
    so an interrupted run never leaves a half-written file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are ordinary files
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def staged_directory(out_dir: Path, last: str = "manifest.json"):
    """Build a directory's files in a hidden sibling, then move them in with `last` (the file
    that marks the directory complete) moved at the very end. A run that fails or is killed
    leaves the directory as it was, and never a half-written one that looks complete."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    out_dir.mkdir(exist_ok=True)
    (out_dir / last).unlink(missing_ok=True)  # from an earlier run: the new files are not it
    for path in sorted(stage.iterdir(), key=lambda p: p.name == last):
        target = out_dir / path.name
        if path.is_dir() and target.is_dir():
            shutil.rmtree(target)
        os.replace(path, target)
    stage.rmdir()


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    count = 0
    with atomic_open(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def write_json(path: Path, data: Any) -> None:
    with atomic_open(path) as f:
        json.dump(data, f, indent=2, ensure_ascii=False, sort_keys=False)
        f.write("\n")


def write_text(path: Path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in KEY_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def manifest(*, stage: str, inputs: dict[str, Path], outputs: dict[str, Path], config: dict[str, Any],
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "stage": stage,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "inputs": {name: {"path": str(p), "sha256": sha256_of(p)} for name, p in inputs.items()},
        "outputs": {name: {"path": Path(p).name, "sha256": sha256_of(p)} for name, p in outputs.items()},
        "config": config,
        "versions": package_versions(),
        **(extra or {}),
    }
