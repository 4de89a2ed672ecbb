"""The evaluation report's explanation part (classification runs, `eval.explain.examples` > 0):
Integrated Gradients attributions (tunelab.evaluate.explain) of a seeded sample of test
predictions, summed into the words that push hardest towards each predicted class, a few
misclassified examples with every word's score, and the deletion test that says whether the
attributions are faithful to the model on this data (measured on the same sample)."""
from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from tunelab.evaluate.explain import attribute, deletion_test
from tunelab.evaluate.robustness import sample_indices

METHOD = "integrated_gradients"


def explanation_report(model, tokenizer, texts: list[str], prefixes: list[str], y_true: np.ndarray,
                       predicted: np.ndarray, probabilities: np.ndarray, labels: list[str], predict, *, examples: int,
                       steps: int, precision: str, top_tokens: int, errors: int, deletion_tokens: int,
                       max_length: int, seed: int) -> dict[str, Any]:
    """report.json's "explanations": per-class influential tokens over `examples` sampled test
    predictions, up to `errors` misclassified examples explained, and the deletion test.
    `texts` are the inputs as written and `prefixes` the task prefix training put before each;
    `predict(prefixed texts) -> (indices, probabilities)` is the tuned model's batch classifier."""
    explained: dict[int, Any] = {}

    def explanation(index: int) -> list[dict[str, Any]]:
        if index not in explained:
            explained[index] = attribute(model, tokenizer, texts[index], target=int(predicted[index]), steps=steps,
                                         prefix=prefixes[index], max_length=max_length, precision=precision)
        return explained[index].spans

    sample = sample_indices(len(texts), examples, seed)
    sampled = [explanation(i) for i in sample]
    # how far the integration is from exact: |sum of scores - change in log-odds| over |change|
    relative = [explained[i].integration_error / abs(explained[i].change) for i in sample
                if abs(explained[i].change) > 1e-6]
    wrong = [i for i in range(len(texts)) if predicted[i] != y_true[i]]
    shown = sample_indices(len(wrong), errors, seed) if errors else []
    faithfulness = deletion_test(lambda batch: predict(batch)[1], [texts[i] for i in sample], sampled,
                                 [int(predicted[i]) for i in sample], k=deletion_tokens, seed=seed,
                                 prefixes=[prefixes[i] for i in sample])
    return {
        "method": METHOD, "steps": steps, "precision": _precision_used(explained.values(), precision),
        "examples": len(sample), "unit": "word",
        "integration_error": round(float(np.median(relative)), 4) if relative else None,
        "by_class": influential_tokens(sampled, [labels[int(predicted[i])] for i in sample], labels, top_tokens),
        "errors": [{"text": texts[i], "label": labels[int(y_true[i])], "predicted": labels[int(predicted[i])],
                    "confidence": round(float(probabilities[i, predicted[i]]), 4), "explanation": explanation(i)}
                   for i in (wrong[j] for j in shown)],
        "faithfulness": faithfulness,
    }


def _precision_used(explanations, asked: str) -> str:
    """What the integrations ran in (one device, so all alike); what was asked when none ran."""
    return next((e.precision for e in explanations if e.spans), asked)


def influential_tokens(explanations: list[list[dict[str, Any]]], predicted_labels: list[str], labels: list[str],
                       top: int) -> dict[str, list[dict[str, Any]]]:
    """Per predicted class, the words (casefolded) whose positive scores add up highest over the
    examples predicted as that class: [{"token", "total", "mean", "examples"}], highest first.
    Only positive scores count: they are what pushed the prediction to this class."""
    totals: dict[str, dict[str, list[float]]] = {label: defaultdict(list) for label in labels}
    for spans, label in zip(explanations, predicted_labels):
        per_text: dict[str, float] = defaultdict(float)
        for span in spans:
            if span["score"] > 0:
                per_text[span["token"].casefold()] += span["score"]
        for token, score in per_text.items():
            totals[label][token].append(score)
    ranked = {}
    for label in labels:
        rows = [{"token": token, "total": round(sum(scores), 4), "mean": round(sum(scores) / len(scores), 4),
                 "examples": len(scores)} for token, scores in totals[label].items()]
        ranked[label] = sorted(rows, key=lambda row: (-row["total"], row["token"]))[:top]
    return ranked
