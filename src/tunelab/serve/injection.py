"""Prompt-injection and jailbreak screen: a documented, weighted rule set (docs/guard.md).

The rules (tunelab.serve.injection_rules) are patterns with weights; a prompt is flagged when
the weights of the distinct rules it matches add up to BLOCK_SCORE. Strong, specific
phrasings ("ignore all previous instructions", "you are DAN", "<|im_start|>system") weigh 1.0
and block alone; weaker hints ("no restrictions", "stay in character", "base64") weigh less
and block only together, which is what keeps ordinary prompts that happen to say "ignore",
"previous" or "system" from being refused.

Normalisation, so that trivial obfuscation does not pass: Unicode NFKC (full-width and
ligature forms), casefolding, common Cyrillic/Greek look-alike letters mapped to Latin,
zero-width characters removed, whitespace collapsed; rules are also matched on leetspeak-folded
views (0->o, 1->i or l, 3->e, 4->a, 5->s, 7->t, @->a, $->s) and on letter-spaced words joined
("i g n o r e" -> "ignore"). Base64 and hex payloads are decoded, and text that mentions rot13
is rotated, and the decoded text is screened too.
"""
from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
from dataclasses import dataclass

from tunelab.serve.injection_rules import BLOCK_SCORE, CATEGORY_REASONS, COMPACT_KEYS, RULES

CONFUSABLES = str.maketrans("аеорсхуіјѕԁɡһӏοαεικνρτυχ", "aeopcxyijsdghlaoeiknptux")
MIXED_WORD = re.compile(r"\w+")
LATIN = re.compile(r"[a-z]")
ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"), None)
LEET = {"0": "o", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "€": "e"}
LEET_CHARS = re.compile(r"[013457@$€|!]")
SPACED_LETTERS = re.compile(r"(?<![\w])(?:[a-z][ .\-_*/]{1,2}){3,}[a-z](?![\w])")
JOINED_WORD = re.compile(r"(?<=[a-z])[-_.*·](?=[a-z])")  # "ign-ore", "in.struc.tions" read as words
BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")
HEX_RUN = re.compile(r"\b(?:[0-9a-fA-F]{2}[ :]?){12,}\b")


def normalise(text: str) -> str:
    """NFKC, casefolded, look-alike letters mapped to Latin, zero-width removed, whitespace collapsed
    (line breaks kept, as the fake-role-line rule anchors on them)."""
    text = unicodedata.normalize("NFKC", text).translate(ZERO_WIDTH).casefold()
    # look-alike letters are mapped only inside words that also hold Latin letters, so that
    # Cyrillic and Greek text stays itself for the rules written in those scripts
    text = MIXED_WORD.sub(lambda m: m.group().translate(CONFUSABLES) if LATIN.search(m.group()) else m.group(), text)
    text = re.sub(r"[^\S\n]+", " ", text)
    return re.sub(r"\s*\n\s*", "\n", text).strip()


def leet_views(text: str) -> list[str]:
    """The text with leetspeak digits and symbols folded to letters; 1, | and ! read as i and as l."""
    if not LEET_CHARS.search(text):
        return []
    folded = "".join(LEET.get(ch, ch) for ch in text)
    return [folded.translate(str.maketrans("1|!", "iii")), folded.translate(str.maketrans("1|!", "lll"))]


def despace(text: str) -> tuple[str, list[str]]:
    """Letter-spaced runs joined: single separators vanish, wider gaps become word breaks.
    Returns the text with the runs joined, and the runs with every gap removed."""
    compact = []

    def join(match: re.Match) -> str:
        run = match.group()
        compact.append(re.sub(r"[^a-z]", "", run))
        return re.sub(r"(?<=[a-z])[ .\-_*/](?=[a-z])", "", run).replace("  ", " ")

    return SPACED_LETTERS.sub(join, text), compact


def decoded_payloads(raw: str, normalised: str) -> list[str]:
    """Text hidden in base64 or hex runs, and the rot13 (reversed) reading of a prompt that
    mentions rot13 (reading backwards)."""
    payloads = []
    for match in BASE64_RUN.finditer(raw):
        chunk = match.group()
        try:
            decoded = base64.b64decode(chunk + "=" * (-len(chunk) % 4), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if decoded and sum(ch.isprintable() or ch.isspace() for ch in decoded) / len(decoded) > 0.95:
            payloads.append(decoded)
    for match in HEX_RUN.finditer(raw):
        try:
            payloads.append(bytes.fromhex(re.sub(r"[ :]", "", match.group())).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            continue
    if re.search(r"\brot\W?13\b", normalised):
        payloads.append(codecs.decode(raw, "rot13"))
    if re.search(r"\b(?:backwards?|reversed?|in\W+reverse)\b", normalised):
        payloads.append(raw[::-1])
    return payloads


@dataclass(frozen=True)
class Screen:
    flagged: bool
    score: float
    rules: tuple[str, ...]      # names of the rules that matched
    category: str | None        # category of the heaviest matching rule, when flagged
    reason: str | None          # its one-sentence reason, when flagged


def screen(text: str, *, _decode: bool = True) -> Screen:
    """Score one piece of text against RULES on all its normalised views."""
    plain = normalise(text)
    joined, compact = despace(plain)
    views = [plain, *leet_views(plain)]
    views += [view for view in (joined, JOINED_WORD.sub("", plain)) if view != plain]
    matched = {rule for rule in RULES if any(rule.matches(view) for view in views)}
    categories = {COMPACT_KEYS[key] for key in COMPACT_KEYS if any(key in run for run in compact)}
    weights = {rule.name: (rule.weight, rule.category) for rule in matched}
    weights.update({f"spaced_{category}": (1.0, category) for category in categories})
    if _decode:
        for payload in decoded_payloads(text, plain):
            inner = screen(payload, _decode=False)
            if inner.flagged:
                weights["encoded_payload"] = (1.0, "encoded")
                break
    score = round(sum(weight for weight, _ in weights.values()), 3)
    if score < BLOCK_SCORE:
        return Screen(False, score, tuple(sorted(weights)), None, None)
    heaviest = max(weights.items(), key=lambda item: (item[1][0], -list(CATEGORY_REASONS).index(item[1][1])))
    category = heaviest[1][1]
    return Screen(True, score, tuple(sorted(weights)), category, CATEGORY_REASONS[category])
