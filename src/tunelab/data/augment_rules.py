"""Rule-based edits for augmentation: each takes a text and a seeded random generator and returns
the edited text (the same text when the edit does not apply). Pure functions, no I/O.

The edits keep what a label or an answer depends on: synonyms come from hand-checked groups of
words that mean the same in ordinary use (no word that flips sentiment), word-order edits
reorder clauses (or swap two content words, never across a negation), entity swaps replace a
name, city, number or @handle with another of its kind, consistently in every place it occurs.
"""
from __future__ import annotations

import random
import re

# Groups of interchangeable words. Sentiment-bearing words are grouped only with words of the
# same polarity and strength, so a swap never changes a sentiment label.
SYNONYM_GROUPS = [
    "good fine decent solid", "great excellent superb wonderful", "bad poor lousy", "terrible awful dreadful",
    "happy glad pleased", "sad unhappy", "angry mad furious", "love adore", "hate loathe detest",
    "big large huge", "small little tiny", "fast quick rapid speedy", "slow sluggish",
    "begin start commence", "end finish conclude", "buy purchase", "help assist aid",
    "show display", "tell inform notify", "answer reply respond", "ask inquire", "need require",
    "want wish desire", "try attempt", "use utilise employ", "create produce", "fix repair mend",
    "problem issue trouble", "question query", "mistake error", "job task chore", "idea notion thought",
    "movie film", "car automobile vehicle", "house home", "friend pal buddy", "kid child youngster",
    "shop store", "road street", "trip journey", "meal dinner", "photo picture",
    "really truly genuinely", "very extremely incredibly", "maybe perhaps possibly", "often frequently",
    "soon shortly", "now currently presently", "also additionally", "almost nearly",
    "easy simple effortless", "hard difficult tough", "smart clever", "funny hilarious amusing",
    "strange weird odd", "tired exhausted weary", "scared afraid frightened", "rich wealthy",
    "quiet silent", "loud noisy", "clean tidy", "dirty filthy", "beautiful lovely gorgeous",
    "ugly hideous", "important crucial vital", "enough sufficient", "correct accurate",
    "wrong incorrect", "whole entire complete", "choose pick select",
    "talk speak chat", "walk stroll", "run jog sprint", "sleep nap", "eat dine",
    "keep retain", "send dispatch", "explain describe clarify", "summarise summarize condense",
    "write compose", "list enumerate",
    "guy man", "lady woman", "awesome amazing fantastic", "nice pleasant lovely",
    "cool neat", "boring dull tedious", "excited thrilled eager", "worried anxious nervous",
]
SYNONYMS: dict[str, list[str]] = {}
for _group in SYNONYM_GROUPS:
    _words = _group.split()
    for _word in _words:
        SYNONYMS.setdefault(_word, []).extend(w for w in _words if w != _word)

FIRST_NAMES = ("James Mary John Patricia Robert Jennifer Michael Linda David Elizabeth William Barbara Richard "
               "Susan Joseph Jessica Thomas Sarah Charles Karen Daniel Nancy Matthew Lisa Anthony Betty Mark "
               "Sandra Paul Ashley Steven Emily Andrew Donna Kevin Michelle Brian Carol George Amanda Emma Olivia "
               "Noah Liam Sophia Lucas Mia Ethan Chloe Omar Aisha Mateo Yuki Priya Ravi Lena Tom Anna Ben Kate").split()
CITIES = ("London Paris Berlin Madrid Rome Vienna Prague Dublin Lisbon Oslo Boston Chicago Denver Seattle Austin "
          "Toronto Sydney Melbourne Tokyo Osaka Mumbai Delhi Cairo Lagos Nairobi Lima Bogota Miami Dallas Atlanta").split()
NEGATIONS = {"not", "no", "never", "nor", "nothing", "none", "nobody", "cannot", "without", "hardly", "barely"}
WORD = re.compile(r"[A-Za-z']+")
TOKEN = re.compile(r"\S+|\s+")
NUMBER = re.compile(r"(?<![\w.])\d+(?![\w.])")
HANDLE = re.compile(r"@\w+")
CLAUSE_BREAK = re.compile(r"(?<=[.!?;,])\s+")


def _match_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def synonym(text: str, rng: random.Random, rate: float = 0.15) -> str:
    """Replace about `rate` of the words that have synonyms (at least one) with a synonym."""
    spans = [m for m in WORD.finditer(text) if m.group().lower() in SYNONYMS]
    if not spans:
        return text
    words = len(WORD.findall(text))
    chosen = rng.sample(spans, min(len(spans), max(1, round(rate * words))))
    pieces, last = [], 0
    for m in sorted(chosen, key=lambda m: m.start()):
        replacement = rng.choice(SYNONYMS[m.group().lower()])
        pieces += [text[last:m.start()], _match_case(replacement, m.group())]
        last = m.end()
    return "".join(pieces) + text[last:]


def word_order(text: str, rng: random.Random) -> str:
    """Reorder the clauses of a text with several (sentences, or comma-separated parts); in a
    one-clause text, swap two content words that no negation sits between (EDA's random swap)."""
    clauses = [c for c in CLAUSE_BREAK.split(text.strip()) if c]
    if len(clauses) >= 2:
        order = list(range(len(clauses)))
        while order == sorted(order):
            rng.shuffle(order)
        return " ".join(clauses[i] for i in order)
    tokens = TOKEN.findall(text)
    words = [i for i, t in enumerate(tokens) if WORD.fullmatch(t) and t.lower() not in NEGATIONS]
    if len(words) < 3:
        return text
    a, b = sorted(rng.sample(words, 2))
    if any(tokens[i].lower() in NEGATIONS for i in range(a, b + 1)):
        return text
    tokens[a], tokens[b] = tokens[b], tokens[a]
    return "".join(tokens)


def punctuation(text: str, rng: random.Random) -> str:
    """One punctuation change: end mark added, dropped or varied, or commas removed."""
    stripped = text.rstrip()
    choice = rng.randrange(3)
    if choice == 0 and "," in stripped:
        return stripped.replace(",", "")
    if stripped[-1:] in ".!?":
        return stripped[:-1] if choice == 1 else stripped[:-1] + {".": "!", "!": ".", "?": "??"}[stripped[-1]]
    return stripped + rng.choice([".", "!"])


def casing(text: str, rng: random.Random) -> str:
    """All lower case, or a capital first letter (both common in real user text)."""
    if rng.random() < 0.5 or not text[:1].islower():
        return text.lower()
    return text[:1].upper() + text[1:]


def entity_swaps(texts: list[str], rng: random.Random, *, numbers: bool) -> dict[str, str]:
    """A replacement for each first name, city and @handle (and number, when `numbers`) found in
    any of `texts`: one mapping, so a record's messages stay consistent with each other."""
    found: dict[str, str] = {}
    for text in texts:
        for m in WORD.finditer(text):
            word = m.group()
            if word in FIRST_NAMES and word not in found:
                found[word] = rng.choice([n for n in FIRST_NAMES if n != word])
            elif word in CITIES and word not in found:
                found[word] = rng.choice([c for c in CITIES if c != word])
        for m in HANDLE.finditer(text):
            found.setdefault(m.group(), "@" + rng.choice(FIRST_NAMES).lower() + str(rng.randrange(10, 99)))
        if numbers:
            for m in NUMBER.finditer(text):
                digits = m.group()
                if digits not in found:
                    low = 10 ** (len(digits) - 1) if len(digits) > 1 else 0
                    found[digits] = str(rng.randrange(low, 10 ** len(digits)))
    return found


def apply_swaps(text: str, swaps: dict[str, str]) -> str:
    if not swaps:
        return text
    pattern = re.compile("|".join(rf"(?<![\w@]){re.escape(k)}(?!\w)" for k in sorted(swaps, key=len, reverse=True)))
    return pattern.sub(lambda m: swaps[m.group()], text)


# Instruction re-phrasings for chat records: the first user message `text`, with `lower` being
# it with a lower-case first letter and `bare` without its end mark.
INSTRUCTION_TEMPLATES = [
    "Please {lower}", "Could you {bare_lower}?", "I need your help: {text}", "Task: {text}",
    "{bare}, please.", "Here is what I need. {text}", "Can you help me with this? {text}", "Quick request: {text}",
]
IMPERATIVE = re.compile(r"^(write|summari[sz]e|translate|explain|list|give|describe|classify|extract|rewrite|"
                        r"convert|answer|tell|generate|create|find|name|make|reverse|compute|calculate|draft|"
                        r"suggest|fix|correct|sort|count|spell|repeat|turn|change|show|identify)\b", re.IGNORECASE)
POLITE_ONLY = (0, 1, 4)  # templates that read well only when the message starts with an imperative verb


def rephrase_instruction(text: str, rng: random.Random) -> str:
    """The instruction in other words from a template; imperative phrasings only for messages
    that open with an imperative verb ("Summarise ..." -> "Could you summarise ...?")."""
    allowed = [i for i in range(len(INSTRUCTION_TEMPLATES))
               if i not in POLITE_ONLY or IMPERATIVE.match(text.strip())]
    stripped = text.strip()
    bare = stripped[:-1] if stripped[-1:] in ".!?" else stripped
    lower = stripped[:1].lower() + stripped[1:]
    bare_lower = bare[:1].lower() + bare[1:]
    return INSTRUCTION_TEMPLATES[rng.choice(allowed)].format(text=stripped, lower=lower, bare=bare,
                                                             bare_lower=bare_lower)
