"""Perturbations change only what they claim to, are seeded per text, and flips are counted on
the originally-correct examples."""
import random
import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunelab.evaluate.robustness import (QWERTY_NEIGHBOURS, flip_rate, perturb, perturb_conversation,
                                         perturb_conversations, perturb_texts, robustness_report)

SENTENCES = ["The delivery arrived two days late, and the box was damaged.",
             "Great value!  Would buy again.", "ok", "", "Çava? Très bien, merci.\tNext line\nhere"]
ascii_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126) | st.sampled_from("\t\n"))
any_text = st.text(max_size=200)
seeds = st.integers(min_value=0, max_value=2**32)


@pytest.mark.parametrize("kind", ["typos", "casing", "whitespace", "punctuation"])
def test_same_seed_same_output_and_appending_texts_keeps_earlier_ones(kind):
    first = perturb_texts(SENTENCES, kind, seed=3, typo_rate=0.3)
    assert perturb_texts(SENTENCES, kind, seed=3, typo_rate=0.3) == first
    longer = perturb_texts(SENTENCES + ["Another review, added later."] * 5, kind, seed=3, typo_rate=0.3)
    assert longer[:len(SENTENCES)] == first


@pytest.mark.parametrize("kind", ["typos", "casing", "whitespace"])
def test_seed_changes_the_random_perturbations(kind):
    texts = ["The delivery arrived two days late and the box was damaged badly"] * 5
    outputs = {tuple(perturb_texts(texts, kind, seed=seed, typo_rate=0.3)) for seed in range(5)}
    assert len(outputs) == 5
    # the index is mixed in too: identical texts are not perturbed identically
    assert len(set(perturb_texts(texts, kind, seed=0, typo_rate=0.3))) > 1


@settings(max_examples=200, deadline=None)
@given(text=any_text, seed=seeds, rate=st.floats(min_value=0.01, max_value=1.0))
def test_typos_only_swap_letters_for_keyboard_neighbours_of_the_same_case(text, seed, rate):
    out = perturb(text, "typos", random.Random(seed), typo_rate=rate)
    assert len(out) == len(text)
    for before, after in zip(text, out):
        if before != after:
            assert before.isascii()
            assert after.lower() in QWERTY_NEIGHBOURS[before.lower()]
            assert before.isupper() == after.isupper()


@pytest.mark.parametrize("rate", [0.05, 0.2])
def test_typo_rate_close_to_the_setting_on_long_text(rate):
    text = " ".join(["the quick brown fox jumps over the lazy dog"] * 600)
    letters = sum(c.isalpha() for c in text)
    out = perturb_texts([text], "typos", seed=7, typo_rate=rate)[0]
    hit = sum(a != b for a, b in zip(text, out))
    assert letters > 20_000
    assert hit / letters == pytest.approx(rate, rel=0.1)


def test_typos_leave_text_without_ascii_letters_alone():
    assert perturb("12345 ¿éü? ✓ \u212a", "typos", random.Random(0), typo_rate=1.0) == "12345 ¿éü? ✓ \u212a"
    assert perturb("abc", "typos", random.Random(0), typo_rate=1.0) != "abc"


@settings(max_examples=200, deadline=None)
@given(text=ascii_text, seed=seeds)
def test_casing_changes_only_case(text, seed):
    out = perturb(text, "casing", random.Random(seed))
    assert out.casefold() == text.casefold()
    assert re.split(r"\S+", out) == re.split(r"\S+", text)  # the spaces are untouched


def test_casing_uses_upper_lower_and_title_per_word():
    words = "mixed Case words here and there again and again"
    out = perturb_texts([words] * 20, "casing", seed=1)
    seen = {w for text in out for w in text.split()}
    assert {"MIXED", "mixed", "Mixed"} <= seen
    assert all(w in {word.upper(), word.lower(), word.title()}
               for text in out for w, word in zip(text.split(), words.split()))


@settings(max_examples=200, deadline=None)
@given(text=any_text, seed=seeds)
def test_whitespace_never_changes_non_space_characters(text, seed):
    out = perturb(text, "whitespace", random.Random(seed))
    assert out.split() == text.split()
    assert len(out) >= len(text)


def test_whitespace_adds_spaces_tabs_or_newlines_between_words():
    text = "one two three four five six seven eight nine ten"
    out = perturb_texts([text] * 10, "whitespace", seed=0)
    assert all(o.split() == text.split() for o in out)
    assert any("\t" in o for o in out) and any("\n" in o for o in out) and any("  " in o for o in out)
    assert all(o[0] == "o" and o[-1] == "n" for o in out)  # only between words, never at the ends


@settings(max_examples=200, deadline=None)
@given(text=any_text)
def test_punctuation_removes_punctuation_and_nothing_else(text):
    out = perturb(text, "punctuation", random.Random(0))
    assert not any(unicodedata.category(c).startswith("P") for c in out)
    assert out == "".join(c for c in text if not unicodedata.category(c).startswith("P"))


def test_punctuation_golden():
    assert perturb("Hello, world! It's 5$ (really)…", "punctuation", random.Random(0)) == "Hello world Its 5$ really"


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="typos, casing, whitespace, punctuation"):
        perturb("text", "emoji", random.Random(0))


def test_conversation_perturbs_only_the_last_user_turn():
    messages = [{"role": "system", "content": "Be brief, please."},
                {"role": "user", "content": "First question, please?"},
                {"role": "assistant", "content": "First answer."},
                {"role": "user", "content": "Second question, please?"},
                {"role": "assistant", "content": "Second answer."}]
    original = [dict(m) for m in messages]
    out = perturb_conversation(messages, "punctuation", random.Random(0))
    assert messages == original  # the input is not modified
    assert out[3]["content"] == "Second question please"
    assert [m for i, m in enumerate(out) if i != 3] == [m for i, m in enumerate(original) if i != 3]
    seeded = perturb_conversations([messages, messages], "typos", seed=2, typo_rate=0.5)
    assert seeded == perturb_conversations([messages, messages], "typos", seed=2, typo_rate=0.5)
    assert all(c[:3] + c[4:] == original[:3] + original[4:] and c[3] != original[3] for c in seeded)
    assert perturb_conversation([{"role": "system", "content": "x."}], "punctuation", random.Random(0)) == \
        [{"role": "system", "content": "x."}]


def test_flip_rate_golden_values():
    assert flip_rate([1, 1, 1, 0, 1], [1, 0, 1, 1, 0]) == 0.5  # 2 of the 4 correct flipped; 0->1 ignored
    assert flip_rate([True, True], [True, True]) == 0.0
    assert flip_rate([True, False, True], [False, False, False]) == 1.0
    assert flip_rate([False, False], [True, False]) is None
    with pytest.raises(ValueError, match="3 outcomes before"):
        flip_rate([1, 1, 1], [1, 1])


def test_robustness_report_shape_and_values():
    before = [True, True, True, False]
    report = robustness_report("macro_f1", 0.8, before,
                               {"typos": (0.6, [True, False, False, False]), "casing": (0.8, [True, True, True, True])},
                               examples=4)
    assert report == {"metric": "macro_f1", "original": 0.8, "examples": 4, "perturbations": {
        "typos": {"score": 0.6, "flip_rate": 2 / 3, "flipped": 2, "originally_correct": 3},
        "casing": {"score": 0.8, "flip_rate": 0.0, "flipped": 0, "originally_correct": 3}}}
