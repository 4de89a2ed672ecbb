"""Input guard in front of the model: PII redaction and the prompt-injection screen.

PII is found by the data stage's detector (tunelab.data.pii.PiiDetector: patterns confirmed
by phonenumbers / stdnum / ipaddress), so served prompts are redacted exactly as training data
was. Injection screening is tunelab.serve.injection's weighted rule set (docs/guard.md). The
screen runs on the original text, so a placeholder never hides or creates an attack phrase.
"""
from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tunelab.data.pii import DETECTION_ORDER, PiiDetector
from tunelab.errors import TunelabError
from tunelab.serve.guard_classifier import combined_screen
from tunelab.serve.injection import screen

SCREENED_ROLES = ("user", "system")  # text the client wrote; assistant/tool turns are redacted only


@dataclass
class GuardVerdict:
    allowed: bool
    reason: str | None               # one sentence for the 4xx when not allowed
    text: str                        # the text after PII redaction
    redactions: dict[str, int] = field(default_factory=dict)  # PII type -> count redacted
    category: str | None = None      # low-cardinality block reason, for metrics labels
    score: float = 0.0               # the injection screen's summed rule weights
    rules: tuple[str, ...] = ()      # the injection rules that matched


class Guard:
    def __init__(self, *, redact_pii: bool = True, block_injection: bool = True,
                 pii_types: list[str] | None = None, phone_region: str = "US", classifier=None,
                 classifier_threshold: float = 0.5):
        """classifier: a learned prompt-injection classifier (serve.guard_classifier) whose say is
        added to the rules' (combined_screen); its forward passes run one at a time."""
        unknown = sorted(set(pii_types or ()) - set(DETECTION_ORDER))
        if unknown:
            raise TunelabError(f"unknown PII type(s) {', '.join(unknown)}", where="guard",
                               fix=f"choose from {', '.join(DETECTION_ORDER)}")
        self.redact_pii = redact_pii
        self.block_injection = block_injection
        self.detector = PiiDetector(pii_types if pii_types is not None else DETECTION_ORDER, phone_region=phone_region)
        self.classifier, self.classifier_threshold = classifier, classifier_threshold
        self._classifier_lock = threading.Lock()

    def check(self, text: str) -> GuardVerdict:
        """Redact one piece of user text and screen it for injection."""
        if not isinstance(text, str):
            raise TunelabError(f"guard input must be text, got {type(text).__name__}", where="guard",
                               fix="pass the prompt as a string")
        redacted, counts = self.detector.redact(text) if self.redact_pii else (text, Counter())
        if not self.block_injection:
            return GuardVerdict(True, None, redacted, dict(counts))
        result = screen(text)
        if self.classifier is not None:
            with self._classifier_lock:
                probability = self.classifier.probability(text)
            result = combined_screen(result, probability, self.classifier_threshold)
        return GuardVerdict(not result.flagged, result.reason, redacted, dict(counts), result.category,
                            result.score, result.rules)

    def check_messages(self, messages: list[dict[str, Any]]) -> tuple[GuardVerdict, list[dict[str, Any]]]:
        """Screen the user and system turns and redact every turn. The verdict's text is the
        screened turns' redacted text, one per line; the messages come back with redacted content
        (copies; the caller's are untouched)."""
        if not isinstance(messages, list) or not messages:
            raise TunelabError("messages must be a non-empty list", where="guard",
                               fix='send [{"role": "user", "content": "..."}]')
        verdict = GuardVerdict(True, None, "", {})
        screened_text, counts, redacted_messages = [], Counter(), []
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise TunelabError(f"message {index} has no role", where="guard",
                                   fix='give every message a "role" and a "content"')
            copy = dict(message)
            for part_text, put in _text_parts(copy, index):
                turn = self.check(part_text) if message["role"] in SCREENED_ROLES else self._redact_only(part_text)
                put(turn.text)
                counts.update(turn.redactions)
                if message["role"] in SCREENED_ROLES:
                    screened_text.append(turn.text)
                    verdict.score = max(verdict.score, turn.score)
                    verdict.rules = tuple(sorted(set(verdict.rules) | set(turn.rules)))
                    if not turn.allowed and verdict.allowed:
                        verdict.allowed, verdict.reason, verdict.category = False, turn.reason, turn.category
            redacted_messages.append(copy)
        verdict.text = "\n".join(screened_text)
        verdict.redactions = dict(counts)
        return verdict, redacted_messages

    def _redact_only(self, text: str) -> GuardVerdict:
        redacted, counts = self.detector.redact(text) if self.redact_pii else (text, Counter())
        return GuardVerdict(True, None, redacted, dict(counts))


def _text_parts(message: dict[str, Any], index: int):
    """(text, setter) for each piece of text in a message: a string content, or the text parts
    of an OpenAI-style content list ({"type": "text", "text": ...}). `message` is a copy."""
    content = message.get("content")
    if content is None:
        return
    if isinstance(content, str):
        yield content, lambda new: message.__setitem__("content", new)
        return
    if not isinstance(content, list):
        raise TunelabError(f"message {index} content must be text or a list of parts", where="guard",
                           fix='send "content": "..." or [{"type": "text", "text": "..."}]')
    parts = message["content"] = [dict(part) if isinstance(part, dict) else part for part in content]
    for part in parts:
        if isinstance(part, dict) and part.get("type") == "text":
            if not isinstance(part.get("text"), str):
                raise TunelabError(f"message {index} has a text part without text", where="guard",
                                   fix='give each {"type": "text"} part a "text" string')
            yield part["text"], lambda new, part=part: part.__setitem__("text", new)
