"""Rule-based augmentation edits: seeded, label-preserving by construction, and consistent."""
import random

from tunelab.data import augment_rules as rules


def test_synonyms_come_from_one_group_and_keep_capitalisation():
    text = "Great movie, I love it"
    edited = rules.synonym(text, random.Random(0), rate=1.0)
    assert edited != text
    first = edited.split()[0].rstrip(",")
    assert first in ("Excellent", "Superb", "Wonderful") or edited.startswith("Great")
    assert all(w.lower() not in {"bad", "terrible", "hate"} for w in edited.replace(",", "").split())


def test_no_sentiment_word_has_a_synonym_of_the_other_polarity():
    positive, negative = {"good", "great", "love", "happy", "awesome", "nice"}, {"bad", "terrible", "hate", "sad", "awful"}
    for word in positive:
        assert not set(rules.SYNONYMS.get(word, [])) & negative
    for word in negative:
        assert not set(rules.SYNONYMS.get(word, [])) & positive


def test_word_order_reorders_clauses_and_never_swaps_across_a_negation():
    assert rules.word_order("It rained. We stayed home.", random.Random(0)) == "We stayed home. It rained."
    for seed in range(50):
        edited = rules.word_order("this is not good", random.Random(seed))
        assert edited.split().index("not") < edited.split().index("good") or edited == "this is not good"


def test_entity_swaps_are_consistent_and_numbers_only_when_asked():
    rng = random.Random(1)
    swaps = rules.entity_swaps(["Ask James about order 42", "James said 42"], rng, numbers=False)
    assert set(swaps) == {"James"} and swaps["James"] in rules.FIRST_NAMES and swaps["James"] != "James"
    assert rules.apply_swaps("James said 42", swaps) == f"{swaps['James']} said 42"
    with_numbers = rules.entity_swaps(["order 42 for @bob"], random.Random(2), numbers=True)
    assert set(with_numbers) == {"42", "@bob"} and len(with_numbers["42"]) == 2


def test_instruction_templates_rephrase_imperatives_politely():
    seen = {rules.rephrase_instruction("Summarise this note.", random.Random(seed)) for seed in range(40)}
    assert "Could you summarise this note?" in seen and "Please summarise this note." in seen
    plain = {rules.rephrase_instruction("lamp", random.Random(seed)) for seed in range(40)}
    assert all("lamp" in p for p in plain) and not any(p.startswith(("Please lamp", "Could you")) for p in plain)
