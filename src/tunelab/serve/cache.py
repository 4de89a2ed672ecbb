"""Response cache for deterministic requests: identical greedy requests to the same model
version get the stored answer without touching the model."""
from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

from cachetools import LRUCache


def request_key(endpoint: str, model_version: str, body: dict[str, Any]) -> str:
    """One key per full request: the endpoint, the version that would answer, and every field
    of the body (canonical JSON, so key order and spacing do not matter)."""
    canonical = json.dumps({"endpoint": endpoint, "version": model_version, "body": body},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache:
    """A size-bounded LRU (cachetools) shared by the request handlers; size 0 disables it."""

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self._entries: LRUCache | None = LRUCache(maxsize=max_entries) if max_entries > 0 else None
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self._entries is not None

    def get(self, key: str) -> Any | None:
        if self._entries is None:
            return None
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
            return value

    def put(self, key: str, value: Any) -> None:
        if self._entries is not None:
            with self._lock:
                self._entries[key] = value

    def __len__(self) -> int:
        return 0 if self._entries is None else len(self._entries)

    def hit_rate(self) -> float:
        looked_up = self.hits + self.misses
        return self.hits / looked_up if looked_up else 0.0
