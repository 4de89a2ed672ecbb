"""Robustness: seeded input perturbations (keyboard typos, casing, whitespace, punctuation) and
how many originally-correct answers each one flips.

Each perturbation changes one surface property and nothing else, so a drop in score is
attributable to it: casing keeps the case-folded text, whitespace keeps every non-space
character, punctuation only removes characters, typos only substitute letters in place.
Perturbed texts are seeded per text from (seed, kind, index), so a text's perturbation does not
depend on which other texts are in the set or how many follow it.
"""
from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

PERTURBATIONS = ("typos", "casing", "whitespace", "punctuation")

# Keys touching each letter on a QWERTY keyboard (same row, and the staggered rows above/below).
QWERTY_NEIGHBOURS: dict[str, str] = {
    "q": "wa", "w": "qeas", "e": "wrsd", "r": "etdf", "t": "ryfg", "y": "tugh", "u": "yihj",
    "i": "uojk", "o": "ipkl", "p": "ol",
    "a": "qwsz", "s": "adwezx", "d": "sferxc", "f": "dgrtcv", "g": "fhtyvb", "h": "gjyubn",
    "j": "hkuinm", "k": "jliom", "l": "kop",
    "z": "asx", "x": "zcsd", "c": "xvdf", "v": "cbfg", "b": "vngh", "n": "bmhj", "m": "njk",
}
CASE_CHANGES = ("upper", "lower", "title")
# Extra whitespace put into a gap between words: more spaces, a tab, or a line break.
EXTRA_WHITESPACE = ("  ", "   ", "\t", "\n", " \t")
WHITESPACE_GAP_SHARE = 0.5  # share of the gaps between words that get extra whitespace


def perturb(text: str, kind: str, rng: random.Random, *, typo_rate: float = 0.05) -> str:
    """`text` under one perturbation kind, drawing its random choices from `rng`."""
    if kind == "typos":
        return keyboard_typos(text, rng, typo_rate)
    if kind == "casing":
        return change_word_case(text, rng)
    if kind == "whitespace":
        return add_whitespace(text, rng)
    if kind == "punctuation":
        return drop_punctuation(text)
    raise ValueError(f"unknown perturbation {kind!r}; expected one of {', '.join(PERTURBATIONS)}")


def keyboard_typos(text: str, rng: random.Random, rate: float) -> str:
    """Each ASCII letter is replaced, with probability `rate`, by a key next to it (same case)."""
    chars = list(text)
    for i, char in enumerate(chars):
        neighbours = QWERTY_NEIGHBOURS.get(char.lower()) if char.isascii() else None  # not the Kelvin sign
        if neighbours and rng.random() < rate:
            typo = rng.choice(neighbours)
            chars[i] = typo.upper() if char.isupper() else typo
    return "".join(chars)


def change_word_case(text: str, rng: random.Random) -> str:
    """Each word (run of non-space characters) is upper-cased, lower-cased or title-cased."""
    parts = re.split(r"(\s+)", text)
    for i in range(0, len(parts), 2):  # even positions are words, odd ones the spaces between
        if parts[i]:
            parts[i] = getattr(parts[i], rng.choice(CASE_CHANGES))()
    return "".join(parts)


def add_whitespace(text: str, rng: random.Random) -> str:
    """About half of the gaps between words get extra spaces, a tab or a newline added."""
    parts = re.split(r"(\s+)", text)
    for i in range(1, len(parts) - 1, 2):
        if parts[i - 1] and parts[i + 1] and rng.random() < WHITESPACE_GAP_SHARE:
            parts[i] += rng.choice(EXTRA_WHITESPACE)
    return "".join(parts)


def drop_punctuation(text: str) -> str:
    """Every Unicode punctuation character (category P*) removed; symbols and letters stay."""
    return "".join(char for char in text if not unicodedata.category(char).startswith("P"))


def text_rng(seed: int, kind: str, index: int) -> random.Random:
    """The generator for one text: seeded by (seed, kind, index) alone (str seeds hash with
    SHA-512, so the stream is the same in every process)."""
    return random.Random(f"tunelab-robustness:{seed}:{kind}:{index}")


def sample_indices(total: int, limit: int | None, seed: int) -> list[int]:
    """Up to `limit` of range(total), a seeded sample kept in order (all of them without a limit)."""
    if limit is None or limit >= total:
        return list(range(total))
    return sorted(random.Random(seed).sample(range(total), limit))


def perturb_texts(texts: Sequence[str], kind: str, *, seed: int = 0, typo_rate: float = 0.05) -> list[str]:
    return [perturb(text, kind, text_rng(seed, kind, i), typo_rate=typo_rate) for i, text in enumerate(texts)]


def perturb_conversation(messages: Sequence[Mapping[str, Any]], kind: str, rng: random.Random, *,
                         typo_rate: float = 0.05) -> list[dict[str, Any]]:
    """A copy of the conversation with only its last user turn perturbed (the system prompt and
    earlier turns are the application's own text, not the user input that varies)."""
    copied = [dict(message) for message in messages]
    last_user = next((m for m in reversed(copied) if m.get("role") == "user"), None)
    if last_user is not None:
        last_user["content"] = perturb(last_user["content"], kind, rng, typo_rate=typo_rate)
    return copied


def perturb_conversations(conversations: Sequence[Sequence[Mapping[str, Any]]], kind: str, *, seed: int = 0,
                          typo_rate: float = 0.05) -> list[list[dict[str, Any]]]:
    return [perturb_conversation(messages, kind, text_rng(seed, kind, i), typo_rate=typo_rate)
            for i, messages in enumerate(conversations)]


def flip_rate(correct_before: Sequence[bool], correct_after: Sequence[bool]) -> float | None:
    """Share of the originally-correct examples that the perturbation made wrong (None when no
    example was correct to begin with: there is nothing to flip)."""
    flipped, originally_correct = count_flips(correct_before, correct_after)
    return flipped / originally_correct if originally_correct else None


def count_flips(correct_before: Sequence[bool], correct_after: Sequence[bool]) -> tuple[int, int]:
    if len(correct_before) != len(correct_after):
        raise ValueError(f"{len(correct_before)} outcomes before the perturbation but {len(correct_after)} after")
    originally_correct = sum(bool(b) for b in correct_before)
    flipped = sum(bool(b) and not bool(a) for b, a in zip(correct_before, correct_after))
    return flipped, originally_correct


def robustness_report(metric: str, original_score: float, correct_before: Sequence[bool],
                      runs: Mapping[str, tuple[float, Sequence[bool]]], examples: int) -> dict[str, Any]:
    """The report's robustness section: per perturbation kind, the headline score on the
    perturbed inputs and the flips of originally-correct examples."""
    perturbations = {}
    for kind, (score, correct_after) in runs.items():
        flipped, originally_correct = count_flips(correct_before, correct_after)
        perturbations[kind] = {"score": float(score),
                               "flip_rate": flipped / originally_correct if originally_correct else None,
                               "flipped": flipped, "originally_correct": originally_correct}
    return {"metric": metric, "original": float(original_score), "examples": int(examples),
            "perturbations": perturbations}
