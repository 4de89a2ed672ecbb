"""Shared material of the label and retrain stage tests: cue-word classification records a tiny
BERT learns in seconds, and that tiny BERT trained by `tunelab train`."""
from __future__ import annotations

import random
from pathlib import Path

from cli_helpers import tunelab, write_jsonl

TOKENIZER = Path(__file__).resolve().parents[1] / "assets" / "tiny-chat-tokenizer"
CUES = {"negative": ["awful", "broken", "refund"], "neutral": ["okay", "arrived", "average"],
        "positive": ["great", "lovely", "perfect"]}
FILL = "the order was item service today really quite".split()


def cue_records(n: int, seed: int) -> list[dict]:
    """Records whose label is decided by one cue word among filler and a numbered token."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(sorted(CUES))
        words = [rng.choice(CUES[label])] + rng.sample(FILL, 3) + [f"w{rng.randint(0, 999)}"]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def cue_label(text: str) -> str:
    """What a careful annotator says: the label of the cue word in the text."""
    return next(label for word in text.lower().split() for label, cues in CUES.items() if word in cues)


def tiny_bert(directory: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def train_classifier(root: Path, data: Path, output: Path, *extra: str) -> Path:
    tunelab("train", "--model", tiny_bert(root / "base") if not (root / "base").exists() else root / "base",
            "--data", data, "--method", "full", "--task", "classification", "--output", output, "--epochs", "10",
            "--lr", "1e-3", "train.batch_size=16", "train.max_length=32", "train.tracking.backend=none", *extra,
            cwd=root)
    return output


def prepared_split(directory: Path, records: list[dict], seed: int = 0) -> Path:
    """train/val/test.jsonl as `data prepare` lays them out (a seeded 70/15/15 cut)."""
    rows = list(records)
    random.Random(seed).shuffle(rows)
    a, b = int(0.7 * len(rows)), int(0.85 * len(rows))
    for name, part in (("train", rows[:a]), ("val", rows[a:b]), ("test", rows[b:])):
        write_jsonl(directory / f"{name}.jsonl", part)
    return directory
