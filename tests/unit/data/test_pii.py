"""PII detection: validators separate real identifiers from look-alike numbers."""
from collections import Counter

import pytest

from tunelab.data.pii import DETECTION_ORDER, PLACEHOLDERS, PiiDetector, Span


@pytest.fixture(scope="module")
def detector() -> PiiDetector:
    return PiiDetector()


def only(text: str, detector: PiiDetector) -> tuple[str, str]:
    """(kind, matched text) of the single span found in text."""
    spans = detector.find(text)
    assert len(spans) == 1, spans
    return spans[0].kind, text[spans[0].start:spans[0].end]


@pytest.mark.parametrize("text, kind, matched", [
    ("write to jane.doe+news@example.co.uk today", "email", "jane.doe+news@example.co.uk"),
    ("call (415) 555-2671 after lunch", "phone", "(415) 555-2671"),
    ("call 415-555-2671.", "phone", "415-555-2671"),
    ("ring +44 20 7946 0958 please", "phone", "+44 20 7946 0958"),
    ("card 4111 1111 1111 1111 expires soon", "credit_card", "4111 1111 1111 1111"),
    ("card 4111-1111-1111-1111 expires soon", "credit_card", "4111-1111-1111-1111"),
    ("amex 378282246310005 on file", "credit_card", "378282246310005"),
    ("pay to GB82 WEST 1234 5698 7654 32 by Friday", "iban", "GB82 WEST 1234 5698 7654 32"),
    ("pay to DE89370400440532013000 by Friday", "iban", "DE89370400440532013000"),
    ("my SSN is 123-45-6789, keep it safe", "us_ssn", "123-45-6789"),
    ("server at 192.168.1.10 is down", "ip_address", "192.168.1.10"),
    ("the host is 10.0.0.1.", "ip_address", "10.0.0.1"),
    ("v6 host 2001:db8::1 is up", "ip_address", "2001:db8::1"),
    ("full 2001:0db8:85a3:0000:0000:8a2e:0370:7334 here", "ip_address",
     "2001:0db8:85a3:0000:0000:8a2e:0370:7334"),
])
def test_true_positives(detector, text, kind, matched):
    assert only(text, detector) == (kind, matched)


@pytest.mark.parametrize("text", [
    "card 4111 1111 1111 1112 is not Luhn-valid",
    "number 1234567890123456",
    "all ones 1111111111111111",
    "iban GB83 WEST 1234 5698 7654 32 has a wrong checksum",
    "iban DE88370400440532013000 has a wrong checksum",
    "ssn 000-12-3456",
    "ssn 666-12-3456",
    "ssn 912-34-5678",
    "ssn 123-00-6789",
    "ssn 123-45-0000",
    "ip 999.1.1.1",
    "dotted 1.2.3.4.5",
    "on 2023-01-15 we met",
    "at 12:30:45 sharp",
    "logged 2023-01-15 12:30:45 INFO start",
    "from 2023-01-15 08:00 to 2023-01-16 09:00",
    "order 12345 shipped",
    "order #4821 shipped",
    "upgrade to v2 or 3.11.4",
    "Python 3.12.1 released on 2024-01-02",
    "ISBN 978-0-306-40615-7",
    "zip 94103-1234",
    "mac 00:1a:2b:3c:4d:5e",
    "call 555-0100",
    "no identifiers here at all",
])
def test_false_positives_are_not_matched(detector, text):
    assert detector.find(text) == []
    assert detector.redact(text) == (text, Counter())


def test_redaction_uses_typed_placeholders_and_counts_each_type(detector):
    text = ("Mail jane@example.com or bob@example.org, call 415-555-2671, card 4111 1111 1111 1111, "
            "IBAN DE89370400440532013000, SSN 123-45-6789, hosts 10.0.0.1 and 2001:db8::1.")
    redacted, counts = detector.redact(text)
    assert redacted == ("Mail <EMAIL> or <EMAIL>, call <PHONE>, card <CREDIT_CARD>, "
                        "IBAN <IBAN>, SSN <US_SSN>, hosts <IP_ADDRESS> and <IP_ADDRESS>.")
    assert counts == Counter(email=2, phone=1, credit_card=1, iban=1, us_ssn=1, ip_address=2)


def test_placeholders_cover_every_type():
    assert set(PLACEHOLDERS) == set(DETECTION_ORDER)
    assert PLACEHOLDERS == {"email": "<EMAIL>", "phone": "<PHONE>", "credit_card": "<CREDIT_CARD>",
                            "iban": "<IBAN>", "us_ssn": "<US_SSN>", "ip_address": "<IP_ADDRESS>"}


def test_spans_are_sorted_and_non_overlapping(detector):
    text = "ip 10.0.0.1 then a@b.com then 123-45-6789"
    spans = detector.find(text)
    assert [s.kind for s in spans] == ["ip_address", "email", "us_ssn"]
    assert [s.start for s in spans] == sorted(s.start for s in spans)
    assert all(a.end <= b.start for a, b in zip(spans, spans[1:]))
    assert spans[0] == Span(3, 11, "ip_address")


def test_overlapping_span_is_claimed_once_by_the_earlier_type():
    text = "write 415-555-2671@example.com now"
    # on its own the phone finder sees the local part of the address
    assert PiiDetector(types=["phone"]).find(text) == [Span(6, 18, "phone")]
    # email comes first in DETECTION_ORDER and claims the whole address
    for types in (DETECTION_ORDER, ["phone", "email"]):
        assert PiiDetector(types=types).redact(text) == ("write <EMAIL> now", Counter(email=1))


def test_card_inside_an_email_is_claimed_by_the_email():
    text = "mail 4111111111111111@example.com"
    assert PiiDetector(types=["credit_card"]).find(text) == [Span(5, 21, "credit_card")]
    assert PiiDetector().redact(text) == ("mail <EMAIL>", Counter(email=1))


def test_restricting_types_leaves_other_pii_alone():
    text = "mail jane@example.com, ssn 123-45-6789, ip 10.0.0.1"
    redacted, counts = PiiDetector(types=["email", "ip_address"]).redact(text)
    assert redacted == "mail <EMAIL>, ssn 123-45-6789, ip <IP_ADDRESS>"
    assert counts == Counter(email=1, ip_address=1)
    assert PiiDetector(types=[]).find(text) == []


def test_types_keep_detection_order_whatever_order_given():
    assert PiiDetector(types=["phone", "email", "iban"]).types == ["email", "iban", "phone"]


def test_phone_region_applies_to_numbers_without_country_code():
    text = "call 020 7946 0958 today"
    assert PiiDetector(phone_region="US").find(text) == []
    assert PiiDetector(phone_region="GB").redact(text) == ("call <PHONE> today", Counter(phone=1))


def test_text_without_pii_is_returned_unchanged(detector):
    text = "The quick brown fox jumps over the lazy dog."
    assert detector.redact(text) == (text, Counter())


def test_cheap_necessary_conditions_never_change_what_is_found(monkeypatch):
    """The ASCII run tests that spare most texts the full patterns only rule out texts the
    patterns cannot match: with them switched off, every finder finds the same spans."""
    import random
    import re

    from tunelab.data import pii
    rng = random.Random(0)
    pieces = ["4111 1111 1111 1111", "4111-1111-1111-1111", "+1 415 555 2671", "(415) 555-2671", "415.555.2671",
              "GB82 WEST 1234 5698 7654 32", "DE89370400440532013000", "123-45-6789", "10.0.0.1", "a.b@example.org",
              "١٢٣٤٥٦٧٨٩٠١٢٣٤", "order 12", " ", "-", "(", ")", ".", "+", "x", "Z", "ab12", "7", "0042"]
    texts = ["".join(rng.choice(pieces) + rng.choice(["", " ", "-", "."]) for _ in range(rng.randint(1, 12)))
             for _ in range(3000)]
    detector = PiiDetector()
    filtered = [detector.find(t) for t in texts]
    everything = re.compile("")
    for name in ("CARD_RUN", "PHONE_RUN", "IBAN_HEAD"):
        monkeypatch.setattr(pii, name, everything)
    assert [detector.find(t) for t in texts] == filtered
    assert sum(bool(spans) for spans in filtered) > 1000  # the texts hold plenty to find
