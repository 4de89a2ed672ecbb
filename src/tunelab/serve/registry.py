"""Model registry: which trained runs may be served (v1, v2, ...) and which one is live.

One JSON file, rewritten atomically (tunelab.files) while an exclusive fcntl lock on a
sibling `.lock` file is held, so two `tunelab models` calls, a server and a monitor rolling
back cannot interleave their read-modify-write cycles and lose an update. Readers need no
lock: the file is only ever replaced whole.

  {"versions": [{"version": "v1", "path": "/abs/run", "task": ..., "base_model": ...,
                 "manifest_sha256": ..., "registered_at": iso}],
   "live": "v2", "history": ["v1", "v2"],           # the live versions in order; last = live
   "events": [{"action": "promote"|"rollback", "version": ..., "from": ..., "at": iso}]}

`rollback` pops the live version off `history` and makes the one before it live again;
`events` keeps the full audit trail of every promote and rollback.
"""
from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError
from tunelab.files import write_json


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def empty_registry() -> dict[str, Any]:
    return {"versions": [], "live": None, "history": [], "events": []}


def run_metadata(run_dir: Path) -> dict[str, Any]:
    """Task, base model and manifest hash of a run directory (read through RunDir)."""
    from tunelab.train.run_dir import RunDir
    run = RunDir(run_dir)
    return {"task": run.manifest.get("task"), "base_model": run.base_model_id, "manifest_sha256": run.manifest_sha256}


class Registry:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    # reading

    def load(self) -> dict[str, Any]:
        """The registry's contents; an empty registry when the file does not exist yet."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return empty_registry()
        except (OSError, UnicodeDecodeError) as exc:
            raise TunelabError(f"cannot read the model registry ({exc})", where=str(self.path),
                               fix="check the path and its permissions") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TunelabError(f"the model registry is not valid JSON ({exc.msg} at line {exc.lineno})",
                               where=str(self.path),
                               fix="restore it from a backup or delete it and register the runs again") from exc
        if not (isinstance(data, dict) and isinstance(data.get("versions"), list)):
            raise TunelabError("the model registry has no `versions` list", where=str(self.path),
                               fix="pass a registry file written by tunelab, or delete it and register the runs again")
        return {**empty_registry(), **data}

    def versions(self) -> list[dict[str, Any]]:
        return self.load()["versions"]

    def live(self) -> dict[str, Any] | None:
        data = self.load()
        return _find(data, data["live"]) if data["live"] else None

    def get(self, version: str) -> dict[str, Any]:
        data = self.load()
        return _require(data, version, self.path)

    def mtime(self) -> float:
        """Modification time of the registry file (0.0 while it does not exist), for a cheap poll;
        it increases with every change, even two within the same filesystem clock tick."""
        return _mtime_ns(self.path) / 1e9

    # changing (each under the lock)

    def register(self, run_dir: str | Path) -> dict[str, Any]:
        """Add a run directory as the next version, or return its entry if it is already registered.
        The first version registered into an empty registry becomes live."""
        resolved = Path(run_dir).expanduser().resolve()
        if not resolved.is_dir():
            raise TunelabError("run directory not found", where=str(run_dir),
                               fix="pass the output directory of `tunelab train`")
        with self._locked() as data:
            for entry in data["versions"]:
                if entry["path"] == str(resolved):
                    return entry
            entry = {"version": f"v{_next_number(data)}", "path": str(resolved), **run_metadata(resolved),
                     "registered_at": now_iso()}
            data["versions"].append(entry)
            if data["live"] is None:
                _make_live(data, entry["version"], action="promote")
            return entry

    def promote(self, version: str) -> dict[str, Any]:
        """Make `version` live (a no-op if it already is); returns its entry."""
        with self._locked() as data:
            entry = _require(data, version, self.path)
            if data["live"] != version:
                _make_live(data, version, action="promote")
            return entry

    def rollback(self) -> dict[str, Any]:
        """Make the previously live version live again; returns its entry."""
        with self._locked() as data:
            if len(data["history"]) < 2:
                live = data["live"] or "no version"
                raise TunelabError(f"there is no earlier live version to roll back to ({live} is the first)",
                                   where=str(self.path),
                                   fix="promote a specific version with `tunelab models promote VERSION`")
            current = data["history"].pop()
            previous = data["history"][-1]
            data["live"] = previous
            data["events"].append({"action": "rollback", "version": previous, "from": current, "at": now_iso()})
            return _find(data, previous)

    @contextmanager
    def _locked(self):
        """The registry's contents, written back atomically if the block completes."""
        try:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
            lock = open(self.lock_path, "a+")
        except OSError as exc:
            raise TunelabError(f"cannot create the registry lock file ({exc})", where=str(self.lock_path),
                               fix="make the registry's directory writable") from exc
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                before = _mtime_ns(self.path)
                data = self.load()
                yield data
                write_json(self.path, data)
                after = _mtime_ns(self.path)
                if after <= before:  # two changes within one filesystem clock tick: make the second one visible
                    os.utime(self.path, ns=(before + 1_000_000, before + 1_000_000))
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _mtime_ns(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return 0


def _next_number(data: dict[str, Any]) -> int:
    numbers = [int(e["version"][1:]) for e in data["versions"] if str(e.get("version", ""))[1:].isdigit()]
    return max(numbers, default=0) + 1


def _find(data: dict[str, Any], version: str) -> dict[str, Any] | None:
    return next((e for e in data["versions"] if e.get("version") == version), None)


def _require(data: dict[str, Any], version: str, path: Path) -> dict[str, Any]:
    entry = _find(data, version)
    if entry is None:
        known = ", ".join(e["version"] for e in data["versions"]) or "none yet"
        raise TunelabError(f"unknown model version {version!r} (registered: {known})", where=str(path),
                           fix="pick one from `tunelab models list`")
    return entry


def _make_live(data: dict[str, Any], version: str, *, action: str) -> None:
    data["events"].append({"action": action, "version": version, "from": data["live"], "at": now_iso()})
    data["live"] = version
    data["history"].append(version)
