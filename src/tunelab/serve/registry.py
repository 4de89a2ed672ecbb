"""Model registry: which trained runs may be served (v1, v2, ...) and which one is live.

One JSON file, rewritten atomically (tunelab.files) while an exclusive fcntl lock on a
sibling `.lock` file is held, so two `tunelab models` calls, servers and a monitor rolling
back cannot interleave their read-modify-write cycles and lose an update. Readers need no
lock: the file is only ever replaced whole.

  {"versions": [{"version": "v1", "path": "/abs/run", "task": ..., "kind": "generative",
                 "base_model": ..., "manifest_sha256": ..., "registered_at": iso}],
   "live": "v2", "history": ["v1", "v2"],           # the live versions in order; last = live
   "events": [{"action": "promote"|"rollback", "version": ..., "from": ..., "at": iso}],
   "served": {"model_name": "support", "kind": "generative"},   # whom the registry belongs to
   "servers": [{"id": ..., "pid": ..., "host": ..., "started_at": iso}],   # servers using it now
   "models": [{"id": "legal", "path": "/abs/run", "registered_at": iso}],  # served beside the live version
   "shadow": {"version": "v3", "since": iso} | null,                 # gets a copy of each request
   "canary": {"version": "v3", "share": 0.1, "since": iso} | null}   # answers a share of the traffic

`models` are runs every server of the registry answers under their own id beside the live
version (`tunelab models register RUN --id ID`, or a server's admin route): LoRA adapters of the
served base, or whole runs (tunelab.serve.pool). They are not versions: promote and rollback
never touch them.

A registry belongs to one served model: the first server records its model name and kind
(generative or classification). A server of another kind, or with another configured
serve.model_name, is refused at start-up (give it its own file); one without a configured
name takes the recorded one. Every version made live is of that kind, so no promote or
rollback can swap a generative server into a classifier. A server started with a run does not
take the live pointer from another live server of the registry unless asked (serve.promote).

`shadow` and `canary` name a candidate version beside the live one (tunelab.serve.rollout runs
them): a shadow gets a copy of each request after the live answer is sent and never answers a
client; a canary answers `share` of the traffic, split by a stable hash of a client key. A
version made live stops being the shadow or canary; both follow the served kind.

`rollback` pops the live version off `history` and makes the one before it live again;
`events` keeps the full audit trail of every promote and rollback.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError
from tunelab.files import write_json


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def empty_registry() -> dict[str, Any]:
    return {"versions": [], "live": None, "history": [], "events": [], "served": None, "servers": [], "models": [],
            "shadow": None, "canary": None}


def run_kind(run_dir: str | Path) -> str:
    """What a run serves as: classification or generative (read through RunDir)."""
    from tunelab.train.run_dir import RunDir
    return "classification" if RunDir(run_dir).is_classifier else "generative"


def run_metadata(run_dir: Path) -> dict[str, Any]:
    """Task, kind, base model and manifest hash of a run directory (read through RunDir)."""
    from tunelab.train.run_dir import RunDir
    run = RunDir(run_dir)
    return {"task": run.manifest.get("task"), "kind": run_kind(run_dir), "base_model": run.base_model_id,
            "manifest_sha256": run.manifest_sha256}


def entry_kind(entry: dict[str, Any]) -> str:
    """A version's kind (entries registered before kinds were recorded: read from the run)."""
    return entry.get("kind") or run_kind(entry["path"])


@dataclass
class Claim:
    """A server asking to serve from the registry: its id, the model name clients call (None:
    not configured), its kind, the run it was started with (None: the live version) and whether
    it may take the live pointer from other live servers."""
    server_id: str
    model_name: str | None
    kind: str | None  # None: whatever the registry serves (a server started without a run)
    run_dir: str | None = None
    promote: bool = False


def pid_alive(pid: int) -> bool:
    if pid <= 0:  # 0 and negatives would address process groups
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


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

    def models(self) -> list[dict[str, Any]]:
        """The runs served under their own ids beside the live version."""
        return self.load()["models"]

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
            entry = _register(data, resolved)
            if data["live"] is None:
                _make_live(data, entry["version"], action="promote")
            return entry

    def promote(self, version: str) -> dict[str, Any]:
        """Make `version` live (a no-op if it already is); returns its entry. A version of another
        kind than the registry serves is refused: every server of the registry would swap to it."""
        with self._locked() as data:
            entry = _require(data, version, self.path)
            _check_kind(data, entry, self.path)
            if data["live"] != version:
                _make_live(data, version, action="promote")
            return entry

    def add_model(self, model_id: str, run_dir: str | Path) -> dict[str, Any]:
        """Serve a run under `model_id` beside the live version, on every server of the registry
        (registering the id again points it at the new run)."""
        from tunelab.serve.pool import check_model_id
        check_model_id(model_id, where=str(self.path))
        resolved = Path(run_dir).expanduser().resolve()
        if not resolved.is_dir():
            raise TunelabError("run directory not found", where=str(run_dir),
                               fix="pass the output directory of `tunelab train`")
        with self._locked() as data:
            served = (data.get("served") or {}).get("model_name")
            if model_id == served:
                raise TunelabError(f"'{model_id}' is the id of the registry's served model", where=str(self.path),
                                   fix="register the run under another id")
            entry = {"id": model_id, "path": str(resolved), "registered_at": now_iso()}
            data["models"] = [m for m in data["models"] if m.get("id") != model_id] + [entry]
            return entry

    def remove_model(self, model_id: str) -> bool:
        """Stop serving `model_id` (False when it was not registered)."""
        if not self.path.exists():
            return False
        with self._locked() as data:
            kept = [m for m in data["models"] if m.get("id") != model_id]
            removed = len(kept) != len(data["models"])
            data["models"] = kept
            return removed

    # candidates beside the live version

    def set_shadow(self, version: str | None) -> dict[str, Any] | None:
        """Give `version` a copy of each request (None: no shadow); returns its entry."""
        return self._set_candidate("shadow", version, {})

    def set_canary(self, version: str | None, share: float = 0.1) -> dict[str, Any] | None:
        """Let `version` answer `share` (0 < share <= 1) of the traffic (None: no canary)."""
        if version is not None and not (0 < share <= 1):
            raise TunelabError(f"the canary share must be above 0 and at most 1, got {share}", where=str(self.path),
                               fix="pass e.g. --share 0.1 for a tenth of the traffic")
        return self._set_candidate("canary", version, {"share": float(share)})

    def _set_candidate(self, role: str, version: str | None, extra: dict[str, Any]) -> dict[str, Any] | None:
        with self._locked() as data:
            if version is None:
                if data[role] is not None:
                    data["events"].append({"action": f"{role}_off", "version": data[role]["version"],
                                           "from": data["live"], "at": now_iso()})
                data[role] = None
                return None
            entry = _require(data, version, self.path)
            _check_kind(data, entry, self.path)
            if version == data["live"]:
                raise TunelabError(f"{version} is the live version; a {role} is a candidate beside it",
                                   where=str(self.path), fix="pick a registered version that is not live")
            data[role] = {"version": version, **extra, "since": now_iso()}
            data["events"].append({"action": role, "version": version, "from": data["live"], **extra,
                                   "at": now_iso()})
            return entry

    # the servers using the registry

    def plan(self, claim: Claim) -> dict[str, Any] | None:
        """What `attach(claim)` would serve (its entry; None: the claim's own run, not yet
        registered), or the TunelabError it would raise; changes nothing. Lets a server refuse
        at start-up before it spends time loading a model."""
        data = self.load()
        return _decide(data, claim, self.path, alive_servers(data))[0]

    def attach(self, claim: Claim, loaded: str | Path | None = None) -> tuple[dict[str, Any], str]:
        """Record a server that has loaded what it serves (`loaded`: that run directory; checked
        against what the registry would have it serve now): registers its run (if it was started
        with one) and makes it live when that steps on no other live server (or the claim says
        promote), records the registry's owner on first use and the server itself. Returns (the
        entry served, the model name to serve it as)."""
        with self._locked() as data:
            data["servers"] = alive_servers(data)
            entry, name = _decide(data, claim, self.path, data["servers"])
            if loaded is not None and entry is not None and Path(entry["path"]) != Path(loaded).resolve():
                raise TunelabError(f"the registry's live version changed to {entry['version']} while {loaded} was "
                                   "loading", where=str(self.path), fix="start the server again")
            if entry is None:
                entry = _register(data, Path(claim.run_dir).expanduser().resolve())
            if data["live"] != entry["version"]:
                _make_live(data, entry["version"], action="promote")
            name = name or Path(entry["path"]).name  # the default id: the served run's directory name
            data["served"] = {"model_name": name, "kind": claim.kind or entry_kind(entry)}
            data["servers"].append({"id": claim.server_id, "pid": os.getpid(), "host": socket.gethostname(),
                                    "started_at": now_iso()})
            return entry, name

    def detach(self, server_id: str) -> None:
        """Forget a server that stops (a crashed one is forgotten once its pid is gone)."""
        if not self.path.exists():
            return
        with self._locked() as data:
            data["servers"] = [s for s in alive_servers(data) if s.get("id") != server_id]

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
            _no_candidate_live(data)
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


def _register(data: dict[str, Any], resolved: Path) -> dict[str, Any]:
    for entry in data["versions"]:
        if entry["path"] == str(resolved):
            return entry
    entry = {"version": f"v{_next_number(data)}", "path": str(resolved), **run_metadata(resolved),
             "registered_at": now_iso()}
    data["versions"].append(entry)
    return entry


def alive_servers(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The recorded servers still running (on this machine: their pid lives; others are trusted)."""
    here = socket.gethostname()
    return [s for s in data.get("servers") or [] if s.get("host") != here or pid_alive(int(s.get("pid", 0)))]


def _check_kind(data: dict[str, Any], entry: dict[str, Any], path: Path) -> None:
    live = _find(data, data["live"]) if data["live"] else None
    kind = (data.get("served") or {}).get("kind") or (entry_kind(live) if live else None)
    if kind is not None and entry_kind(entry) != kind:
        raise TunelabError(f"{entry['version']} is a {entry_kind(entry)} run and this registry serves a {kind} "
                           "model, so making it live would swap every server of the registry to another kind of "
                           "model", where=str(path),
                           fix=f"serve it from its own registry (tunelab serve {entry['path']} serve.registry=...)")


def _decide(data: dict[str, Any], claim: Claim, path: Path,
            servers: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, str | None]:
    """(the entry the claim will serve, None for its own run still to register; the model name)."""
    served = data.get("served") or {}
    live = _find(data, data["live"]) if data["live"] else None
    own_file = "give this server its own file with serve.registry=OTHER.json"
    kind = served.get("kind") or (entry_kind(live) if live else None)
    if kind is not None and claim.kind is not None and kind != claim.kind:
        owner = f" ('{served['model_name']}')" if served.get("model_name") else ""
        raise TunelabError(f"this registry belongs to a {kind} model{owner} and this server serves a {claim.kind} one: "
                           "sharing it would swap one into the other", where=str(path), fix=own_file)
    if served.get("model_name") and claim.model_name and claim.model_name != served["model_name"]:
        raise TunelabError(f"this registry belongs to the served model '{served['model_name']}', not "
                           f"'{claim.model_name}': sharing it would swap one into the other", where=str(path),
                           fix=own_file)
    name = claim.model_name or served.get("model_name")
    if claim.run_dir is None:
        if live is None:
            raise TunelabError("no model to serve: the registry has no live version", where=str(path),
                               fix="pass a run directory, or promote a version with `tunelab models promote VERSION`")
        return live, name
    resolved = str(Path(claim.run_dir).expanduser().resolve())
    mine = next((e for e in data["versions"] if e["path"] == resolved), None)
    if live is None or (mine is not None and mine["version"] == live["version"]):
        return mine, name
    others = [s for s in servers if s.get("id") != claim.server_id]
    if others and not claim.promote:
        other = others[0]
        raise TunelabError(f"another server (pid {other.get('pid')} on {other.get('host')}) serves the live version "
                           f"{live['version']} from this registry, and starting with {claim.run_dir} would make it "
                           "live there too", where=str(path),
                           fix=f"pass serve.promote=true to roll it out to every server of the registry, start "
                               f"without a run to serve {live['version']}, or {own_file}")
    return mine, name


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
    _no_candidate_live(data)


def _no_candidate_live(data: dict[str, Any]) -> None:
    """A version made live is no longer the shadow or the canary."""
    for role in ("shadow", "canary"):
        if (data.get(role) or {}).get("version") == data["live"]:
            data[role] = None
