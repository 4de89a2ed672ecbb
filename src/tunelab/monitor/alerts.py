"""Alerts to a webhook: one JSON POST per monitor check that found drift (or decay), retried on
connection errors and 5xx answers with a doubling back-off; every attempt is recorded in the
report, so an alert that never arrived is visible where the drift is."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any


def alert_payload(report: dict[str, Any], report_path: str) -> dict[str, Any]:
    """What the webhook receives: the verdict, the alerts as sentences and where the report is."""
    return {"source": "tunelab monitor", "created": report["created"], "drifted": report["drifted"],
            "alerts": report["alerts"], "drifted_features": [f["feature"] for f in report["features"] if f["drifted"]],
            "window": report["window"], "log": report["log"], "report": report_path}


def send_webhook(url: str, payload: dict[str, Any], *, retries: int, timeout_s: float, backoff_s: float,
                 sleep=time.sleep) -> dict[str, Any]:
    """POST `payload` as JSON; returns the record of the attempts ({url, delivered, status,
    attempts, error}). A 4xx is the receiver refusing the alert: not retried."""
    body = json.dumps(payload).encode("utf-8")
    record: dict[str, Any] = {"url": url, "delivered": False, "status": None, "attempts": 0, "error": None}
    for attempt in range(retries + 1):
        if attempt:
            sleep(backoff_s * 2 ** (attempt - 1))
        record["attempts"] = attempt + 1
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json",
                                                  "User-Agent": "tunelab-monitor"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                record.update(status=response.status, delivered=True, error=None)
                return record
        except urllib.error.HTTPError as exc:
            record.update(status=exc.code, error=f"HTTP {exc.code} {exc.reason}")
            if exc.code < 500:
                return record
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            record.update(status=None, error=str(reason) or type(exc).__name__)
    return record
