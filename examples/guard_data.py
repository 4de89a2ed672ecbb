"""The learned guard's training data, derived from the labelled prompt set the rules were built and
measured on (tests/assets/injection_prompts.jsonl; docs/guard.md tells its story):

- data/guard/train.jsonl: dev rounds 0-2, each prompt as written plus three rule-based variations
  (marked meta.synthetic with the kind and meta.origin with the original): an ordinary sentence
  before it, typos, punctuation removed, a greeting or thanks around it, or pasted into a request
  to summarise or proofread a message. Each keeps the label: an attack pasted into a message is
  an indirect injection, a benign prompt stays benign however it is framed. (No case changes:
  the embedded encoder is uncased.)
- data/guard/val.jsonl: dev round 3 as written, for choosing the checkpoint and the threshold.
- data/guard/test.jsonl: the held-out split (round 4) as written, never used for training or
  tuning: only for the figures in docs/guard.md.

Deterministic (each variation is seeded by its prompt's text): running it again writes the same
files, and tests/unit/serve/test_guard_classifier.py checks that the committed files are its output.
Run: python examples/guard_data.py [--source tests/assets/injection_prompts.jsonl] [--out data/guard]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN_ROUNDS, VAL_ROUND = (0, 1, 2), 3
VARIATIONS_PER_PROMPT = 3
OPENERS = ["Hi there!", "Hello,", "Quick question.", "Good morning.", "Please help me with this."]
CLOSERS = ["Thanks!", "Thank you in advance.", "Cheers.", "Much appreciated."]
CONTEXT = ["I'm planning a trip to Lisbon next month.", "Our team meeting moved to Thursday.",
           "I have been using your app for a year now.", "The weather here has been awful all week.",
           "I'm a teacher preparing next week's lessons."]
FRAMES = ["Here is a message I received, please summarise it:\n\n{}", "Can you proofread this for me?\n\n{}",
          "My colleague sent me this, what do you make of it?\n---\n{}\n---"]


def context(text: str, rng: random.Random) -> str:
    return f"{rng.choice(CONTEXT)} {text}"


def typos(text: str, rng: random.Random) -> str:
    """About one letter in 25 swapped with its right neighbour (a common typing slip)."""
    chars = list(text)
    for i in range(len(chars) - 1):
        if chars[i].isalpha() and chars[i + 1].isalpha() and rng.random() < 0.04:
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
    return "".join(chars)


def no_punctuation(text: str, rng: random.Random) -> str:
    stripped = re.sub(r"[^\w\s]", "", text)
    return re.sub(r"[^\S\n]+", " ", stripped).strip() or text


def greeting(text: str, rng: random.Random) -> str:
    return f"{rng.choice(OPENERS)} {text}" if rng.random() < 0.5 else f"{text} {rng.choice(CLOSERS)}"


def pasted(text: str, rng: random.Random) -> str:
    return rng.choice(FRAMES).format(text)


VARIATIONS = {"context": context, "typos": typos, "no_punctuation": no_punctuation, "greeting": greeting,
              "pasted": pasted}


def seeded(text: str, salt: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(f"{salt}\n{text}".encode()).digest()[:8], "big"))


def record(row: dict, **meta) -> dict:
    return {"text": row["text"], "label": row["label"],
            "meta": {"source": row["source"], "round": row["round"], "split": row["split"], **meta}}


def variations(row: dict) -> list[dict]:
    """VARIATIONS_PER_PROMPT different kinds of variation of one prompt, each differing from it."""
    kinds = seeded(row["text"], "kinds").sample(sorted(VARIATIONS), VARIATIONS_PER_PROMPT)
    made = []
    for kind in kinds:
        text = VARIATIONS[kind](row["text"], seeded(row["text"], kind))
        if text != row["text"]:
            made.append({**record(row, synthetic=kind, origin=row["text"]), "text": text})
    return made


def build(rows: list[dict]) -> dict[str, list[dict]]:
    dev = [row for row in rows if row["split"] == "dev"]
    train = []
    for row in (row for row in dev if row["round"] in TRAIN_ROUNDS):
        train += [record(row), *variations(row)]
    return {"train": train, "val": [record(row) for row in dev if row["round"] == VAL_ROUND],
            "test": [record(row) for row in rows if row["split"] == "heldout"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ROOT / "tests" / "assets" / "injection_prompts.jsonl")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "guard")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.source.read_text(encoding="utf-8").splitlines() if line.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    for split, records in build(rows).items():
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        (args.out / f"{split}.jsonl").write_text(text, encoding="utf-8")
        attacks = sum(r["label"] == "attack" for r in records)
        print(f"{args.out / split}.jsonl: {len(records)} prompts ({attacks} attacks, {len(records) - attacks} benign)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
