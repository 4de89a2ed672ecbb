"""Measure a trained guard classifier the way docs/guard.md reports it: choose the threshold on the
validation split (dev round 3) only, then score the rules, the classifier and both combined on
the held-out split (round 4), which nothing was trained or tuned on.

The threshold is the lowest one at which rules OR classifier refuse at most --max-fpr of the
validation split's benign prompts (tunelab.serve.guard_classifier.choose_threshold). Writes every prompt's attack probability to
--scores (data/guard/scores.json by default), which is what lets a test recompute the documented
figures without the model; prints the figures as Markdown table rows.
Run: python examples/guard_measure.py guard/run [--data data/guard] [--max-fpr 0.05]
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the guard's run directory (guard/run after `make guard`)")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "guard")
    parser.add_argument("--max-fpr", type=float, default=0.05, help="false-positive budget on the validation split")
    parser.add_argument("--scores", type=Path, default=ROOT / "data" / "guard" / "scores.json")
    args = parser.parse_args()
    from tunelab.errors import TunelabError
    from tunelab.serve.guard_classifier import GuardClassifier, choose_threshold, guard_figures
    from tunelab.serve.injection import screen
    try:
        classifier = GuardClassifier.load(args.run)
    except TunelabError as error:
        print(error, file=sys.stderr)
        return 2
    splits = {"val": read_jsonl(args.data / "val.jsonl"), "test": read_jsonl(args.data / "test.jsonl")}
    scored = {}
    for split, rows in splits.items():
        probabilities = classifier.probabilities([row["text"] for row in rows])
        scored[split] = [{"text": row["text"], "label": row["label"], "source": row["meta"]["source"],
                          "probability": round(p, 6), "rules": screen(row["text"]).flagged}
                         for row, p in zip(rows, probabilities)]

    def columns(split):
        rows = scored[split]
        return [r["label"] == "attack" for r in rows], [r["rules"] for r in rows], [r["probability"] for r in rows]

    threshold = choose_threshold(*columns("val"), max_false_positive_rate=args.max_fpr)
    figures = {split: guard_figures(*columns(split), threshold) for split in scored}
    manifest = json.loads((args.run / "manifest.json").read_text()) if (args.run / "manifest.json").is_file() else {}
    record = {"run": str(args.run), "weights_sha256": (manifest.get("outputs", {}).get("model.safetensors") or {}).get(
                  "sha256"), "git_commit": manifest.get("git_commit"), "threshold": threshold,
              "max_false_positive_rate": args.max_fpr, "figures": figures,
              **{split: [{k: r[k] for k in ("text", "label", "probability")} for r in rows]
                 for split, rows in scored.items()}}
    args.scores.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    print(f"threshold chosen on val (dev round 3): {threshold} (false-positive budget {args.max_fpr:.0%})\n")
    print("| split | screen | attacks | benign | recall | false-positive rate |\n|---|---|---|---|---|---|")
    for split, name in (("val", "val (dev round 3: threshold chosen here)"), ("test", "held-out (never tuned on)")):
        for screen_name, f in figures[split].items():
            print(f"| {name} | {screen_name} | {f['attacks']} | {f['benign']} | {f['recall']:.3f} | "
                  f"{f['false_positive_rate']:.3f} |")
    kinds = defaultdict(lambda: [0, 0, 0, 0])  # held-out attacks by kind: count, rules, classifier, both
    for row in scored["test"]:
        if row["label"] == "attack":
            kind = row["source"].split("/")[-1]
            by_classifier = row["probability"] >= threshold
            for i, hit in enumerate((True, row["rules"], by_classifier, row["rules"] or by_classifier)):
                kinds[kind][i] += hit
    print("\nheld-out attacks caught, by kind: rules / classifier / both")
    print(", ".join(f"{kind} {r}/{c}/{b} of {n}" for kind, (n, r, c, b) in sorted(kinds.items())))
    wrongly = [row["text"] for row in scored["test"] if row["label"] == "benign" and row["probability"] >= threshold]
    print(f"\nheld-out benign prompts the classifier refuses ({len(wrongly)}):")
    for text in wrongly:
        print(f"  - {text[:150]!r}")
    print(f"\nscores written to {args.scores}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
