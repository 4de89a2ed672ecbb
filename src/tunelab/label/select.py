"""`tunelab label select`: the k records most worth a person's time to label, from a pool file or
the prediction log, for a run: the most uncertain (entropy, margin or least confidence of the
classifier; for a generative run the answer's mean token log-probability and negative feedback),
never near copies of one another (the data stage's dedup) and spread over the embedding space
(k-center greedy over the most uncertain candidates), never what is already labelled.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.config import DedupConfig, SelectSettings
from tunelab.data import dedup
from tunelab.errors import TunelabError
from tunelab.files import write_jsonl
from tunelab.label.pool import labelled_keys, log_candidates, pool_candidates, prompt_key
from tunelab.label.uncertainty import (classifier_uncertainty, generative_uncertainty, k_center_greedy,
                                       most_uncertain)
from tunelab.train.run_dir import RunDir


@dataclass
class SelectResult:
    out: Path
    selected: int
    candidates: int
    already_labelled: int
    near_duplicates: int
    uncertainty: str


def run(settings: SelectSettings, *, run_dir: str, k: int, out: str | Path, pool: str | None = None,
        log: str | None = None, labelled: list[str] | None = None, text_column: str = "text",
        dedup_settings: DedupConfig | None = None) -> SelectResult:
    if (pool is None) == (log is None):
        raise TunelabError("give either --pool FILE or --log predictions.db", where="label select",
                           fix="name where the candidates come from")
    if k < 1:
        raise TunelabError(f"--k must be at least 1, got {k}", where="label select", fix="ask for a batch of 1 or more")
    run = RunDir.open(run_dir)
    generative = not run.is_classifier
    found = (pool_candidates(pool, generative=generative, text_column=text_column) if pool is not None
             else log_candidates(log, generative=generative, window=settings.window))
    known = labelled_keys(run, labelled or [])
    fresh = [c for c in found if prompt_key(_as_record(c)) not in known]
    if not fresh:
        raise TunelabError(f"all {len(found)} candidates are already labelled (in the run's training data or "
                           "the --labelled files)", where=pool or log, fix="choose from new records")
    scores, details = (score_generative(run, fresh, settings) if generative else
                       score_classifier(run, fresh, settings.strategy))
    order = most_uncertain(scores, len(fresh))  # most uncertain first, so dedup keeps the most uncertain copy
    distinct = distinct_candidates([fresh[i]["text"] for i in order], dedup_settings or DedupConfig())
    order = order[distinct]
    shortlist = order[:max(k, int(round(settings.candidates * k)))]
    if settings.diversity == "kcenter" and len(shortlist) > k:
        from tunelab.evaluate.baselines import embed
        from tunelab.models.load import resolve_model_path
        vectors = embed(resolve_model_path(settings.encoder), [fresh[i]["text"] for i in shortlist])
        picked = shortlist[k_center_greedy(vectors, k, first=0)]
    else:
        picked = shortlist[:k]
    rows = [batch_record(fresh[i], rank, float(scores[i]), details[i], settings.strategy if not generative
                         else "mean_logprob") for rank, i in enumerate(picked, start=1)]
    out = Path(out)
    write_jsonl(out, rows)
    return SelectResult(out, len(rows), len(found), len(found) - len(fresh),
                        len(fresh) - len(distinct), settings.strategy if not generative else "mean_logprob")


def distinct_candidates(texts: list[str], settings: DedupConfig) -> np.ndarray:
    """Positions of the texts that are no exact or near duplicate of an earlier one."""
    found = dedup.find_duplicates(texts, exact=True, near=settings.near, threshold=settings.threshold,
                                  num_perm=settings.num_perm, shingle_words=settings.shingle_words)
    return np.array([i for i, duplicate in enumerate(found) if duplicate is None], dtype=int)


def score_classifier(run: RunDir, candidates: list[dict[str, Any]], strategy: str):
    """Uncertainty of the run's classifier on each candidate, and its prediction."""
    from tunelab.evaluate.predict import classify, load_classifier
    model, tokenizer = load_classifier(str(run.path))
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    predicted, probabilities = classify(model, tokenizer, [c["text"] for c in candidates], max_length=run.max_length,
                                        prefix=run.prefix())
    details = [{"predicted": labels[p], "confidence": round(float(row.max()), 4),
                "probabilities": {label: round(float(v), 4) for label, v in zip(labels, row)}}
               for p, row in zip(predicted, probabilities)]
    return classifier_uncertainty(probabilities, strategy), details


def score_generative(run: RunDir, candidates: list[dict[str, Any]], settings: SelectSettings):
    """-(mean token log-probability of each answer) + the negative-feedback weight; pool prompts
    are answered first (greedy, as served)."""
    from tunelab.evaluate.generate import generate_answers, load_generator, prompt_texts, reference_log_likelihood
    model, tokenizer = load_generator(str(run.path))
    unanswered = [c for c in candidates if c["answer"] is None]
    if unanswered:
        prompts = prompt_texts(tokenizer, [{"messages": c["messages"] + [{"role": "assistant", "content": ""}]}
                                           for c in unanswered])
        for candidate, answer in zip(unanswered, generate_answers(model, tokenizer, prompts,
                                                                  max_new_tokens=settings.max_new_tokens).texts):
            candidate["answer"] = answer
    conversations = [{"messages": c["messages"] + [{"role": "assistant", "content": c["answer"]}]} for c in candidates]
    means, _ = reference_log_likelihood(model, tokenizer, conversations)
    negative = np.array([c["negative"] for c in candidates], dtype=float)
    details = [{"mean_logprob": round(float(m), 4), "negative_feedback": bool(c["negative"])}
               for m, c in zip(means, candidates)]
    return generative_uncertainty(np.array(means), negative, settings.negative_feedback_weight), details


def _as_record(candidate: dict[str, Any]) -> dict[str, Any]:
    return {"messages": candidate["messages"]} if "messages" in candidate else {"text": candidate["text"]}


def batch_record(candidate: dict[str, Any], rank: int, score: float, detail: dict[str, Any],
                 measure: str) -> dict[str, Any]:
    """A batch line: the record to label (no label yet; a generative one with the model's answer
    for review) and, in meta, where it came from and why it was picked."""
    record = _as_record(candidate)
    if "messages" in record:
        record["messages"] = record["messages"] + [{"role": "assistant", "content": candidate["answer"]}]
    meta = {"id": prompt_key(_as_record(candidate))[:16], **candidate["origin"], "rank": rank,
            "uncertainty": round(score, 4), "measure": measure, **detail}
    return {**record, "meta": meta}
