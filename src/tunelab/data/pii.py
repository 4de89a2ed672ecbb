"""PII detection and redaction.

Candidates are found with compiled patterns (fast, so that 100k records take seconds) and then
confirmed by maintained validators, which is what separates a card number from any 16 digits:
- phone numbers: Google's libphonenumber port `phonenumbers` (is_valid_number, by region);
- credit cards: Luhn check from `python-stdnum` (stdnum.luhn), 13-19 digits;
- IBANs: ISO 13616 mod-97 checksum and country length from `python-stdnum` (stdnum.iban);
- IP addresses: the standard library's `ipaddress`;
- e-mail addresses and US SSNs: patterns (SSNs exclude the never-issued 000/666/9xx areas).
Earlier types in DETECTION_ORDER claim a span first, so an IBAN's digits are not also a phone.
"""
from __future__ import annotations

import ipaddress
import re
from collections import Counter
from dataclasses import dataclass

import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum import luhn

PLACEHOLDERS = {
    "email": "<EMAIL>", "phone": "<PHONE>", "credit_card": "<CREDIT_CARD>", "iban": "<IBAN>",
    "us_ssn": "<US_SSN>", "ip_address": "<IP_ADDRESS>",
}
DETECTION_ORDER = ("email", "iban", "credit_card", "us_ssn", "ip_address", "phone")

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}\b")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")
IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)")  # a full stop may end the sentence
IPV6 = re.compile(r"(?<![\w:])(?=[0-9A-Fa-f:]*::|(?:[0-9A-Fa-f]{1,4}:){7})[0-9A-Fa-f:]{2,39}(?![\w:])")
PHONE = re.compile(r"(?<![\w+])\+?\(?\d[\d ().-]{5,18}\d(?!\w|:\d)")  # not the hour of a timestamp
DIGITS = re.compile(r"\d")
FOUR_DIGITS = re.compile(r"\d{4}")
# Necessary conditions on ASCII text (where \d is [0-9]), several times cheaper to scan for than
# the patterns themselves, whose lookbehinds are tried at every position: a card number is a run
# of 13 or more digits, spaces and dashes; a phone number a run of 7 or more digits and
# separators; an IBAN starts with two capitals and two digits.
CARD_RUN = re.compile(r"[0-9][0-9 -]{11,}[0-9]")
PHONE_RUN = re.compile(r"[0-9][0-9 ().-]{5,}[0-9]")
IBAN_HEAD = re.compile(r"[A-Z]{2}[0-9]{2}")


def _may_hold(necessary: re.Pattern, text: str) -> bool:
    return not text.isascii() or necessary.search(text) is not None


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str


class PiiDetector:
    def __init__(self, types: list[str] | tuple[str, ...] = DETECTION_ORDER, phone_region: str = "US"):
        self.types = [t for t in DETECTION_ORDER if t in set(types)]
        self.phone_region = phone_region

    def find(self, text: str) -> list[Span]:
        """Non-overlapping PII spans, in text order."""
        if "@" not in text and ":" not in text and not DIGITS.search(text):
            return []  # nothing below can match without digits, an @ or a colon (IPv6)
        spans: list[Span] = []
        for kind in self.types:
            for start, end in getattr(self, f"_find_{kind}")(text):
                if not any(s.start < end and start < s.end for s in spans):
                    spans.append(Span(start, end, kind))
        return sorted(spans, key=lambda s: s.start)

    def redact(self, text: str) -> tuple[str, Counter]:
        """The text with each span replaced by its typed placeholder, and counts per type."""
        spans = self.find(text)
        if not spans:
            return text, Counter()
        out, last = [], 0
        for span in spans:
            out += [text[last:span.start], PLACEHOLDERS[span.kind]]
            last = span.end
        out.append(text[last:])
        return "".join(out), Counter(s.kind for s in spans)

    # one finder per type: each yields (start, end) of confirmed matches

    def _find_email(self, text):
        if "@" in text:
            for m in EMAIL.finditer(text):
                yield m.span()

    def _find_iban(self, text):
        if not _may_hold(IBAN_HEAD, text):
            return
        for m in IBAN.finditer(text):
            if stdnum_iban.is_valid(m.group()):
                yield m.span()

    # Each finder first rules out, with a cheap test, texts its pattern cannot match: the
    # patterns' lookarounds make a full scan costly and most texts hold no PII.

    def _find_credit_card(self, text):
        if not FOUR_DIGITS.search(text) or not _may_hold(CARD_RUN, text):
            return
        for m in CARD.finditer(text):
            digits = re.sub(r"\D", "", m.group())
            if 13 <= len(digits) <= 19 and luhn.is_valid(digits) and len(set(digits)) > 1:
                yield m.span()

    def _find_us_ssn(self, text):
        if "-" not in text:
            return
        for m in SSN.finditer(text):
            yield m.span()

    def _find_ip_address(self, text):
        patterns = ([IPV4] if "." in text else []) + ([IPV6] if text.count(":") >= 2 else [])
        for pattern in patterns:
            for m in pattern.finditer(text):
                try:
                    ipaddress.ip_address(m.group())
                except ValueError:
                    continue
                yield m.span()

    def _find_phone(self, text):
        if not _may_hold(PHONE_RUN, text):
            return
        for m in PHONE.finditer(text):
            candidate = m.group().rstrip(".-) ")
            if not 7 <= len(DIGITS.findall(candidate)) <= 15:
                continue
            try:
                number = phonenumbers.parse(candidate, self.phone_region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(number):
                yield m.start(), m.start() + len(candidate)
