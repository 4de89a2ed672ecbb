"""Step 5 of `make demo`: where the reports are, and the one-line verdict (tuned vs probe vs base).

Usage: python examples/demo_summary.py DEMO_DIR
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main(demo: str) -> None:
    root = Path(demo)
    evaluation = json.loads((root / "eval" / "report.json").read_text())
    monitor = json.loads((root / "monitor" / "report.json").read_text())
    print("\nReports (open the .html files in a browser):")
    for step, path in [("data", root / "prepared" / "report.html"), ("model card", root / "run" / "README.md"),
                       ("evaluation", root / "eval" / "report.html"), ("monitoring", root / "monitor" / "report.html"),
                       ("prediction log", root / "serve" / "predictions.db")]:
        print(f"  {step:<15} {path}")
    drifted = [f["feature"] for f in monitor["features"] if f.get("drifted")]
    tested = sum(1 for f in monitor["features"] if f.get("p_value") is not None)
    print(f"\nmonitor: {'drift in ' + ', '.join(drifted) if drifted else 'no drift'} "
          f"({tested} features tested on the last {monitor['window']['predictions']} predictions)")
    for flag in evaluation["flags"]:
        print(f"flag: {flag}")
    print(f"\nverdict: {evaluation['verdict']}")


if __name__ == "__main__":
    main(sys.argv[1])
