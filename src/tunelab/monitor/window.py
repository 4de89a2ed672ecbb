"""Which predictions the monitor looks at: the current window (the most recent N predictions,
or those of the last time span) and the earlier traffic it may compare them with."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from tunelab.config import WINDOW
from tunelab.errors import TunelabError

SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def span_seconds(span: str) -> float:
    """Seconds in a span such as 30s, 5m, 48h or 7d (config.WINDOW checked the form)."""
    number, unit = WINDOW.match(span).groups()
    return float(number) * SECONDS[unit]


def split_window(rows: list[dict[str, Any]], window: int | str, *, now: float | None = None,
                 where: str = "") -> tuple[list[dict], list[dict]]:
    """(current window, earlier traffic). A count takes the most recent `window` rows; a span the
    rows of its last stretch of time (up to `now`). Earlier traffic is the oldest rows of the log
    before the current window, as many as the window holds: the traffic the model first met."""
    if isinstance(window, int):
        current = rows[-window:]
        return current, rows[:max(0, min(window, len(rows) - window))]
    cutoff = (time.time() if now is None else now) - span_seconds(window)
    current = [r for r in rows if r["ts"] >= cutoff]
    if not current:
        latest = datetime.fromtimestamp(rows[-1]["ts"], timezone.utc).isoformat(timespec="seconds")
        raise TunelabError(f"the prediction log holds no predictions in the last {window} (the latest is from "
                           f"{latest})", where=where or None, fix="widen --window, or send traffic first")
    before = [r for r in rows if r["ts"] < cutoff]
    return current, before[:len(current)]
