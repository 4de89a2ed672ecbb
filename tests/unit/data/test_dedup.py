"""Deduplication: exact keys fold case, punctuation and spacing; near duplicates are decided by the
exact word-shingle Jaccard similarity against the threshold."""
import random

import pytest

from tunelab.data.dedup import (
    Duplicate, exact_key, find_duplicates, jaccard, near_duplicate_pairs, normalised_words, shingles,
)

WORDS = 102  # 100 word-3-grams


def base_text(tag: str = "w", n: int = WORDS) -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


def with_tail_changed(text: str, k: int) -> str:
    """Replace the last k words: with n shingles, that changes exactly k of them."""
    words = text.split()
    return " ".join(words[:len(words) - k] + [f"new{i}" for i in range(k)])


def similarity(a: str, b: str, size: int = 3) -> float:
    return jaccard(shingles(a, size), shingles(b, size))


def test_exact_key_folds_case_punctuation_and_whitespace():
    key = exact_key("Hello, World! How are you?")
    assert exact_key("hello world how are you") == key
    assert exact_key("  HELLO   world\n\thow, are... you ") == key
    assert exact_key("hello world how are they") != key
    assert exact_key("Straße") == exact_key("STRASSE")  # casefold, not lower
    assert len(key) == 64


def test_normalised_words_and_short_shingles():
    assert normalised_words("It's a TEST, ok?") == ["it", "s", "a", "test", "ok"]
    assert shingles("a b c d", 3) == {b"a b c", b"b c d"}
    assert shingles("Two words", 3) == {b"two words"}  # short text: one shingle of all words


def test_jaccard_golden_values():
    assert jaccard({1, 2, 3}, {2, 3, 4}) == 0.5
    assert jaccard(set(), set()) == 1.0
    assert jaccard({1}, set()) == 0.0


def test_exact_duplicates_point_to_first_occurrence():
    texts = ["Hello world, this is it.", "something else entirely", "hello   WORLD this is it", "HELLO WORLD. THIS IS IT!"]
    result = find_duplicates(texts, near=False)
    assert result == [None, None, Duplicate(0, "exact", 1.0), Duplicate(0, "exact", 1.0)]


def test_precomputed_keys_are_used_as_given():
    texts = ["one two three", "four five six", "seven eight nine"]
    assert find_duplicates(texts, keys=["k", "x", "k"], near=False) == [None, None, Duplicate(0, "exact", 1.0)]


@pytest.mark.parametrize("k, expected", [(11, 89 / 111), (12, 88 / 112), (10, 90 / 110)])
def test_constructed_pairs_have_the_intended_similarity(k, expected):
    a = base_text()
    assert similarity(a, with_tail_changed(a, k)) == pytest.approx(expected)


def test_near_duplicate_just_above_threshold_is_flagged():
    a = base_text()
    b = with_tail_changed(a, 11)
    sim = similarity(a, b)
    assert 0.8 < sim < 0.81
    assert find_duplicates([a, b], threshold=0.8) == [None, Duplicate(0, "near", round(sim, 4))]


def test_near_duplicate_just_below_threshold_is_kept():
    a = base_text()
    b = with_tail_changed(a, 12)
    sim = similarity(a, b)
    assert 0.78 < sim < 0.8
    assert find_duplicates([a, b], threshold=0.8) == [None, None]


def test_threshold_is_inclusive():
    a = base_text(n=92)  # 90 shingles; changing 10 of them gives exactly 80 / 100
    b = with_tail_changed(a, 10)
    assert similarity(a, b) == 0.8
    assert find_duplicates([a, b], threshold=0.8) == [None, Duplicate(0, "near", 0.8)]


def test_lower_threshold_flags_the_pair_below_the_default():
    a = base_text()
    b = with_tail_changed(a, 12)
    assert find_duplicates([a, b], threshold=0.75)[1] == Duplicate(0, "near", round(88 / 112, 4))


def test_first_occurrence_is_kept_and_duplicates_point_to_it():
    a = base_text("a")
    other = base_text("z")
    texts = [other, a, with_tail_changed(a, 2), a.upper(), with_tail_changed(a, 5)]
    result = find_duplicates(texts)
    assert result[0] is None and result[1] is None
    assert result[2] == Duplicate(1, "near", round(98 / 102, 4))
    assert result[3] == Duplicate(1, "exact", 1.0)
    assert result[4] == Duplicate(1, "near", round(95 / 105, 4))
    for dup in result:
        if dup is not None:
            assert result[dup.of] is None  # always an earlier, kept text


def test_duplicate_of_a_duplicate_is_compared_with_kept_texts_only():
    a = base_text()
    b = with_tail_changed(a, 6)                                              # 94/106 to a
    c = " ".join([f"head{i}" for i in range(6)] + b.split()[6:])             # 94/106 to b, 88/112 to a
    assert similarity(a, b) == similarity(b, c) == pytest.approx(94 / 106)
    assert similarity(a, c) == pytest.approx(88 / 112)
    # b is dropped as a duplicate of a, so c is compared with a only and kept
    assert find_duplicates([a, b, c]) == [None, Duplicate(0, "near", round(94 / 106, 4)), None]


def test_best_match_is_the_most_similar_kept_text():
    a = base_text()
    far = with_tail_changed(a, 30)                                           # 70/130 to a
    close = " ".join([f"head{i}" for i in range(30)] + a.split()[30:])       # 70/130 to a, 40/160 to far
    query = " ".join(close.split()[:WORDS - 2] + far.split()[WORDS - 2:])    # 0.96 to close, 0.35 to far
    assert find_duplicates([far, close], threshold=0.3) == [None, None]
    sim = similarity(query, close)
    assert sim > 0.9 and similarity(query, far) < 0.5
    assert find_duplicates([far, close, query], threshold=0.3) == [None, None, Duplicate(1, "near", round(sim, 4))]


def test_switches_turn_each_check_off():
    a = base_text()
    texts = [a, a.upper(), with_tail_changed(a, 3)]
    assert find_duplicates(texts) == [None, Duplicate(0, "exact", 1.0), Duplicate(0, "near", round(97 / 103, 4))]
    # without the exact pass, the identical text is found as a near duplicate of similarity 1
    assert find_duplicates(texts, exact=False) == [None, Duplicate(0, "near", 1.0),
                                                   Duplicate(0, "near", round(97 / 103, 4))]
    assert find_duplicates(texts, near=False) == [None, Duplicate(0, "exact", 1.0), None]
    assert find_duplicates(texts, exact=False, near=False) == [None, None, None]


def test_distinct_texts_are_all_kept():
    texts = [base_text(tag) for tag in "abcdefgh"]
    assert find_duplicates(texts) == [None] * len(texts)
    assert find_duplicates([]) == []


def test_progress_reports_processed_counts():
    seen = []
    find_duplicates([base_text(t) for t in "abc"], progress=seen.append)
    assert seen == [3]


def test_near_duplicate_pairs_between_queries_and_corpus():
    a, b, c = base_text("a"), base_text("b"), base_text("c")
    corpus = [a, b, c]
    queries = [with_tail_changed(c, 4), base_text("q"), b.upper(), with_tail_changed(a, 12)]
    assert near_duplicate_pairs(queries, corpus, threshold=0.8) == [(0, 2, round(96 / 104, 4)), (2, 1, 1.0)]
    assert near_duplicate_pairs(queries, corpus, threshold=0.75) == [
        (0, 2, round(96 / 104, 4)), (2, 1, 1.0), (3, 0, round(88 / 112, 4))]
    assert near_duplicate_pairs([], corpus) == []
    assert near_duplicate_pairs(queries, []) == []


def test_results_are_deterministic():
    a = base_text()
    texts = [a] + [with_tail_changed(a, k) for k in range(1, 20)] + [base_text(t) for t in "xyz"]
    first = find_duplicates(texts)
    assert find_duplicates(texts) == first
    assert near_duplicate_pairs(texts, texts[:5]) == near_duplicate_pairs(texts, texts[:5])


def test_pairs_at_the_threshold_are_found_reliably():
    """LSH only proposes candidates; pairs at exactly the threshold must not slip past it."""
    rng = random.Random(0)
    found = 0
    for _ in range(200):
        words = [f"t{rng.randrange(10**9)}" for _ in range(92)]
        other = words[:82] + [f"n{rng.randrange(10**9)}" for _ in range(10)]  # 80/100 = 0.8
        a, b = " ".join(words), " ".join(other)
        assert similarity(a, b) == 0.8
        found += find_duplicates([a, b], threshold=0.8)[1] is not None
    assert found >= 196  # equal-weight LSH banding found only ~89%


def test_first_occurrences_of_fixed_width_keys():
    import numpy as np
    from tunelab.data.dedup import first_occurrences
    keys = np.array([[1, 2], [3, 4], [1, 2], [0, 0], [3, 4], [1, 2]], np.uint8)
    assert first_occurrences(keys).tolist() == [0, 1, 0, 3, 1, 0]
    assert first_occurrences(np.zeros((0, 32), np.uint8)).tolist() == []


def sequential_lsh_reference(texts, threshold=0.8, num_perm=128, size=3):
    """The definition the ordered pass must meet: records inserted one by one into an LSH index
    of kept records (bucket = band and band hash), each candidate confirmed by exact Jaccard."""
    from tunelab.data.dedup import band_hashes, lsh_bands, normalised_words, shingle_strings
    sets = [shingle_strings(normalised_words(t), size) for t in texts]
    bands = band_hashes(sets, num_perm, *lsh_bands(threshold, num_perm))
    index: dict = {}
    result = []
    for i, row in enumerate(bands.tolist()):
        candidates = sorted({c for j, h in enumerate(row) for c in index.get((j, h), ())})
        best = None
        for c in candidates:
            s = jaccard(sets[i], sets[c])
            if s >= threshold and (best is None or s > best[1]):
                best = (c, s)
        if best:
            result.append(Duplicate(best[0], "near", round(best[1], 4)))
            continue
        result.append(None)
        for j, h in enumerate(row):
            index.setdefault((j, h), []).append(i)
    return result


def test_ordered_pass_equals_one_by_one_insertion_into_an_index_of_kept_records():
    rng = random.Random(7)
    vocab = [f"v{i}" for i in range(60)]
    originals = [" ".join(rng.choices(vocab, k=40)) for _ in range(40)]
    texts = []
    for _ in range(400):  # chains of edits: duplicates of duplicates, near the threshold and below
        words = rng.choice(originals + texts[-20:] if texts else originals).split()
        for _ in range(rng.randint(0, 6)):
            words[rng.randrange(len(words))] = rng.choice(vocab)
        texts.append(" ".join(words))
    expected = sequential_lsh_reference(texts)
    assert sum(d is not None for d in expected) > 50  # the data exercises the index
    assert find_duplicates(texts, exact=False) == expected
