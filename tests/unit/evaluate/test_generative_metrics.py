import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from tunelab.evaluate.metrics import (bleu, chrf, chrf_scores, exact_match_scores, generative_example_scores,
                                      generative_metrics, normalize_answer, rouge_scores, slice_means,
                                      token_f1_scores)

ALL_STEPS = ["lower", "punctuation", "articles", "whitespace"]


def test_normalize_answer_squad_style():
    assert normalize_answer("  The  Quick, brown fox! ", ALL_STEPS) == "quick brown fox"
    assert normalize_answer("An apple a day", ALL_STEPS) == "apple day"
    assert normalize_answer("Theatre", ALL_STEPS) == "theatre"  # articles only as whole words
    assert normalize_answer("The Cat!", ["whitespace"]) == "The Cat!"
    assert normalize_answer("The cat", ["articles", "whitespace"]) == "The cat"  # articles are lower-case words


def test_normalize_answer_runs_steps_in_squad_order_whatever_the_listed_order():
    # punctuation goes before articles: "the-end" -> "theend" (no article left); the other way round
    # "the" would be dropped at the hyphen's word boundary and give "end"
    assert normalize_answer("the-end", ["whitespace", "articles", "punctuation"]) == "theend"
    assert normalize_answer("the-end", ["articles", "whitespace"]) == "-end"
    with pytest.raises(ValueError, match="unknown normalisation steps"):
        normalize_answer("x", ["stem"])


def test_exact_match_golden_values():
    predictions = ["The Cat!", "a dog", "Paris", ""]
    references = ["cat", "dog", "paris.", ""]
    assert exact_match_scores(predictions, references, ALL_STEPS).tolist() == [1.0, 1.0, 1.0, 1.0]
    assert exact_match_scores(predictions, references, ["whitespace"]).tolist() == [0.0, 0.0, 0.0, 1.0]
    assert exact_match_scores(predictions, references, ["lower"]).tolist() == [0.0, 0.0, 0.0, 1.0]
    with pytest.raises(ValueError):
        exact_match_scores(["a"], ["a", "b"], ALL_STEPS)


def test_token_f1_golden_values():
    predictions = ["The cat sat.", "cat cat cat", "", "", "dog", "red blue"]
    references = ["a cat sat down", "cat", "", "something", "cat", "blue red"]
    # 1: "cat sat" vs "cat sat down": overlap 2, precision 1, recall 2/3 -> 0.8
    # 2: overlap counts a token once per occurrence in both: 1 of 3 predicted, 1 of 1 -> 2(1/3)(1)/(4/3) = 0.5
    # 3: both empty -> 1; 4: one empty -> 0; 5: no overlap -> 0; 6: order does not matter -> 1
    assert token_f1_scores(predictions, references, ALL_STEPS) == pytest.approx([0.8, 0.5, 1, 0, 0, 1])
    # without normalisation "The" and "sat." are tokens of their own: overlap {cat}, 1/3 and 1/4 -> 2/7
    assert token_f1_scores(["The cat sat."], ["a cat sat down"], []) == pytest.approx([2 / 7])


def test_bleu_golden_values():
    # "the cat sat on the mat" vs "the cat sat on a mat", same length (brevity penalty 1):
    # 1-grams 5/6 (second "the" clipped), 2-grams 3/5, 3-grams 2/4, 4-grams 1/3
    # BLEU = (5/6 * 3/5 * 2/4 * 1/3) ** (1/4) = (1/12) ** (1/4)
    assert bleu(["the cat sat on the mat"], ["the cat sat on a mat"]) == pytest.approx(100 * (1 / 12) ** 0.25)
    # corpus BLEU pools counts: adding the exact "a b c d" gives 9/10, 6/8, 4/6, 2/4
    pooled = (9 / 10 * 6 / 8 * 4 / 6 * 2 / 4) ** 0.25
    assert bleu(["the cat sat on the mat", "a b c d"], ["the cat sat on a mat", "a b c d"]) == pytest.approx(100 * pooled)


def test_chrf_golden_values():
    # "abc" vs "ab": character 1-grams 2/3 precision, recall 1; 2-grams 1/2, 1; no 3..6-grams in the
    # reference, so two effective orders: precision 7/12, recall 1;
    # chrF (beta 2) = 5 * 7/12 * 1 / (4 * 7/12 + 1) = 35/40
    assert chrf(["abc"], ["ab"]) == pytest.approx(87.5)
    assert chrf_scores(["abc", "ab", "xyz"], ["ab", "ab", "ab"]) == pytest.approx([87.5, 100.0, 0.0])


def test_rouge_golden_values():
    scores = rouge_scores(["the cat sat", "b a c", "cats"], ["the cat ran", "a b c", "cat"])
    # 1: unigrams 2 of 3 each way -> 2/3; bigrams {the cat} 1 of 2 -> 1/2; LCS "the cat" -> 2/3
    # 2: unigrams all shared -> 1; no shared bigram -> 0; LCS length 2 of 3 -> 2/3
    # 3: the Porter stemmer maps "cats" to "cat" -> 1 for unigram and LCS, no bigrams -> 0
    assert scores["rouge1"] == pytest.approx([2 / 3, 1, 1])
    assert scores["rouge2"] == pytest.approx([1 / 2, 0, 0])
    assert scores["rougeL"] == pytest.approx([2 / 3, 2 / 3, 1])


def _random_sentences(rng, count):
    vocabulary = "the a cat dog sat ran on mat house red big small quickly home".split()
    return [" ".join(rng.choice(vocabulary, rng.integers(1, 12))) for _ in range(count)]


def test_agrees_with_sacrebleu_and_rouge_score_on_random_sentences():
    rng = np.random.default_rng(0)
    predictions, references = _random_sentences(rng, 60), _random_sentences(rng, 60)
    assert bleu(predictions, references) == pytest.approx(sacrebleu.corpus_bleu(predictions, [references]).score)
    assert chrf(predictions, references) == pytest.approx(sacrebleu.corpus_chrf(predictions, [references]).score)
    assert chrf_scores(predictions, references) == pytest.approx(
        [sacrebleu.sentence_chrf(p, [r]).score for p, r in zip(predictions, references)])
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    ours = rouge_scores(predictions, references)
    for name in ("rouge1", "rouge2", "rougeL"):
        assert ours[name] == pytest.approx([scorer.score(r, p)[name].fmeasure for p, r in zip(predictions, references)])


def test_generative_metrics_means_and_corpus_scores():
    predictions = ["The cat sat.", "Paris", "abc"]
    references = ["a cat sat down", "paris", "xyz"]
    example_scores = generative_example_scores(predictions, references, ALL_STEPS)
    assert set(example_scores) == {"exact_match", "token_f1", "chrf", "rouge1", "rouge2", "rougeL"}
    assert all(len(scores) == 3 for scores in example_scores.values())
    metrics = generative_metrics(predictions, references, ALL_STEPS)
    assert set(metrics) == {"exact_match", "token_f1", "bleu", "chrf", "rouge1", "rouge2", "rougeL", "examples"}
    assert metrics["examples"] == 3
    assert metrics["exact_match"] == pytest.approx(1 / 3)  # only "Paris"
    assert metrics["token_f1"] == pytest.approx((0.8 + 1 + 0) / 3)
    assert metrics["rouge1"] == pytest.approx(np.mean(example_scores["rouge1"]))
    assert metrics["chrf"] == pytest.approx(chrf(predictions, references))  # corpus, not the sentence mean
    assert metrics["chrf"] != pytest.approx(np.mean(example_scores["chrf"]))
    assert generative_metrics(predictions, references, ALL_STEPS, example_scores=example_scores) == metrics
    with pytest.raises(ValueError):
        generative_metrics([], [], ALL_STEPS)


def test_slice_means_by_task():
    scores = {"exact_match": np.array([1.0, 0.0, 1.0, 1.0]), "token_f1": np.array([1.0, 0.5, 1.0, 0.0])}
    # qa: examples 0 and 2 -> exact match 1, F1 1; summary: 1 and 3 -> exact match .5, F1 .25
    assert slice_means(scores, ["qa", "summary", "qa", "summary"]) == {
        "qa": {"exact_match": 1.0, "token_f1": 1.0, "examples": 2},
        "summary": {"exact_match": 0.5, "token_f1": 0.25, "examples": 2},
    }
