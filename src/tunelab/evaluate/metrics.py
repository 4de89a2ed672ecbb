"""Evaluation metrics as pure functions: classification over label indices (sklearn does the
arithmetic), generative over answer strings (sacrebleu and rouge-score do theirs), and per-slice
tables over a value per example (meta.group, meta.task)."""
from __future__ import annotations

import re
import string
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU, CHRF
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, matthews_corrcoef, precision_recall_fscore_support

from tunelab.evaluate.calibration import brier_score, expected_calibration_error

HEADLINE = ("accuracy", "macro_f1", "mcc")
NORMALIZE_STEPS = ("lower", "punctuation", "articles", "whitespace")
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
GENERATIVE_EXAMPLE_METRICS = ("exact_match", "token_f1", "chrf", *ROUGE_TYPES)


def accuracy(y_true, y_pred) -> float:
    return float(accuracy_score(y_true, y_pred))


def macro_f1(y_true, y_pred, n_labels: int | None = None) -> float:
    labels = list(range(n_labels)) if n_labels else None
    return float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))


def mcc(y_true, y_pred) -> float:
    return float(matthews_corrcoef(y_true, y_pred))


METRIC_FUNCTIONS = {"accuracy": accuracy, "macro_f1": macro_f1, "mcc": mcc}


def classification_metrics(y_true, y_pred, labels: list[str], probabilities=None, bins: int = 15) -> dict[str, Any]:
    """Headline figures, per-class precision/recall/F1 and the confusion matrix (rows: true label,
    columns: predicted, in `labels` order). With `probabilities` (n_examples x n_labels, columns in
    `labels` order) also "ece" (top-label, `bins` equal-width bins) and "brier" (0-2 scale)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    indices = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=indices, zero_division=0)
    metrics = {
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred, len(labels)),
        "mcc": mcc(y_true, y_pred),
        "per_class": {label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for label, p, r, f, s in zip(labels, precision, recall, f1, support)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=indices).tolist(),
        "examples": int(y_true.size),
    }
    if probabilities is not None:
        metrics["ece"] = expected_calibration_error(probabilities, y_true, bins)
        metrics["brier"] = brier_score(probabilities, y_true)
    return metrics


# ---------------------------------------------------------------------------------------------
# Per-slice tables


def indices_by_value(slice_values: Iterable) -> dict[str, np.ndarray]:
    """Example indices for each distinct slice value, keyed by str(value) (JSON keys are strings)
    in sorted order; None is a value like any other ("None"), so callers drop unsliced examples."""
    positions: dict[str, list[int]] = defaultdict(list)
    for position, value in enumerate(slice_values):
        positions[str(value)].append(position)
    return {value: np.asarray(positions[value]) for value in sorted(positions)}


def headline_metrics(y_true, y_pred) -> dict[str, float | None]:
    """accuracy, macro_f1 and mcc on a subset of examples. Macro-F1 averages over the labels that
    occur in the subset (truth or prediction): a slice that never sees a class is not penalised for
    it. MCC is None when truth and predictions together hold a single label, where it is undefined
    (sklearn would warn and return 0)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    single_label = np.unique(np.concatenate([y_true, y_pred])).size < 2
    return {"accuracy": accuracy(y_true, y_pred), "macro_f1": macro_f1(y_true, y_pred),
            "mcc": None if single_label else mcc(y_true, y_pred)}


def slice_metrics(y_true, y_pred, slice_values) -> dict[str, dict[str, Any]]:
    """{value: {accuracy, macro_f1, mcc, examples}} for each distinct slice value (see
    headline_metrics for how a slice's macro-F1 and MCC are defined)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return {value: {**headline_metrics(y_true[idx], y_pred[idx]), "examples": int(idx.size)}
            for value, idx in indices_by_value(slice_values).items()}


def slice_means(example_scores: dict[str, np.ndarray], slice_values) -> dict[str, dict[str, Any]]:
    """{value: {name: mean of that metric's per-example scores, "examples"}} for each slice value."""
    arrays = {name: np.asarray(scores, dtype=float) for name, scores in example_scores.items()}
    return {value: {**{name: float(scores[idx].mean()) for name, scores in arrays.items()}, "examples": int(idx.size)}
            for value, idx in indices_by_value(slice_values).items()}


# ---------------------------------------------------------------------------------------------
# Generative metrics

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str, steps: Iterable[str] = NORMALIZE_STEPS) -> str:
    """The SQuAD v1.1 evaluation script's normalisation, restricted to `steps`. Steps run in the
    script's order whatever order they are listed in: lower-case, drop ASCII punctuation, replace
    the English articles a/an/the with a space (case-sensitive, as in the script, so without
    "lower" a capitalised "The" stays), collapse runs of whitespace and strip the ends."""
    steps = set(steps)
    unknown = steps - set(NORMALIZE_STEPS)
    if unknown:
        raise ValueError(f"unknown normalisation steps {sorted(unknown)}; choose from {NORMALIZE_STEPS}")
    if "lower" in steps:
        text = text.lower()
    if "punctuation" in steps:
        text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    if "articles" in steps:
        text = _ARTICLES.sub(" ", text)
    if "whitespace" in steps:
        text = " ".join(text.split())
    return text


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")


def exact_match_scores(predictions: Sequence[str], references: Sequence[str],
                       steps: Iterable[str] = NORMALIZE_STEPS) -> np.ndarray:
    """1.0 where the normalised prediction equals the normalised reference, else 0.0."""
    _check_pairs(predictions, references)
    steps = tuple(steps)
    return np.array([float(normalize_answer(p, steps) == normalize_answer(r, steps))
                     for p, r in zip(predictions, references)], dtype=float)


def _token_f1(prediction_tokens: list[str], reference_tokens: list[str]) -> float:
    # SQuAD v2 script: an empty answer matches only an empty answer (both empty: 1).
    if not prediction_tokens or not reference_tokens:
        return float(prediction_tokens == reference_tokens)
    overlap = sum((Counter(prediction_tokens) & Counter(reference_tokens)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(prediction_tokens), overlap / len(reference_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1_scores(predictions: Sequence[str], references: Sequence[str],
                    steps: Iterable[str] = NORMALIZE_STEPS) -> np.ndarray:
    """SQuAD token F1 per example: F1 of the multiset overlap of whitespace tokens of the
    normalised prediction and reference (0-1 scale); both empty scores 1, one empty scores 0."""
    _check_pairs(predictions, references)
    steps = tuple(steps)
    return np.array([_token_f1(normalize_answer(p, steps).split(), normalize_answer(r, steps).split())
                     for p, r in zip(predictions, references)], dtype=float)


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu corpus BLEU (default 13a tokenisation, one reference per example), 0-100 scale.
    Corpus-level: n-gram counts are pooled over examples, so it is not a mean of sentence scores."""
    _check_pairs(predictions, references)
    return float(BLEU().corpus_score(list(predictions), [list(references)]).score)


def chrf(predictions: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu corpus chrF (character 6-grams, beta 2), 0-100 scale, counts pooled over examples."""
    _check_pairs(predictions, references)
    return float(CHRF().corpus_score(list(predictions), [list(references)]).score)


def chrf_scores(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """sacrebleu sentence-level chrF per example, 0-100 scale (for bootstrapping over examples;
    their mean differs from the corpus chrF, which pools counts)."""
    _check_pairs(predictions, references)
    metric = CHRF()
    return np.array([metric.sentence_score(p, [r]).score for p, r in zip(predictions, references)], dtype=float)


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """{"rouge1", "rouge2", "rougeL": per-example F-measure, 0-1 scale} from rouge-score's
    RougeScorer with the Porter stemmer on (use_stemmer=True, as ROUGE-1.5.5's -m option that
    summarisation papers report). rouge-score's tokenizer lower-cases and keeps only [a-z0-9] runs,
    so text in other scripts scores 0, and two empty strings score 0 (unlike token F1)."""
    _check_pairs(predictions, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    scored = [scorer.score(r, p) for p, r in zip(predictions, references)]  # score(target, prediction)
    return {name: np.array([s[name].fmeasure for s in scored], dtype=float) for name in ROUGE_TYPES}


def generative_example_scores(predictions: Sequence[str], references: Sequence[str],
                              steps: Iterable[str] = NORMALIZE_STEPS) -> dict[str, np.ndarray]:
    """Per-example scores for a paired bootstrap over examples: exact_match, token_f1 (0-1),
    chrf (sentence-level, 0-100), rouge1, rouge2, rougeL (F-measure, 0-1)."""
    steps = tuple(steps)
    return {"exact_match": exact_match_scores(predictions, references, steps),
            "token_f1": token_f1_scores(predictions, references, steps),
            "chrf": chrf_scores(predictions, references),
            **rouge_scores(predictions, references)}


def generative_metrics(predictions: Sequence[str], references: Sequence[str],
                       steps: Iterable[str] = NORMALIZE_STEPS,
                       example_scores: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """exact_match, token_f1, rouge1, rouge2, rougeL (means of per-example scores, 0-1), corpus
    bleu and chrf (0-100) and the example count. Pass `example_scores` from
    generative_example_scores to avoid scoring the examples twice."""
    if not predictions:
        raise ValueError("no examples to score")
    scores = example_scores if example_scores is not None else generative_example_scores(predictions, references, steps)
    return {"exact_match": float(np.mean(scores["exact_match"])),
            "token_f1": float(np.mean(scores["token_f1"])),
            "bleu": bleu(predictions, references),
            "chrf": chrf(predictions, references),
            **{name: float(np.mean(scores[name])) for name in ROUGE_TYPES},
            "examples": len(predictions)}
