"""`tunelab label issues`: records whose given label is likely wrong, most likely first, found by
confident learning (cleanlab.filter.find_label_issues) on out-of-fold predicted probabilities.

Where the probabilities come from matters: a model scoring records it was trained on has
memorised their labels, right or wrong, and hides exactly the errors sought. So:
- --probe: a logistic regression on frozen sentence embeddings (the embedded MiniLM by
  default), each record scored by a model fitted on the other folds (sklearn's
  cross_val_predict with stratified folds): out-of-fold by construction;
- --run: the run's classifier, used only when none of the records was in its training data
  (then every probability is out-of-sample); when some were, the probe is used instead and the
  output says so (each row's `probabilities_from`, and the printed summary).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.config import IssuesSettings
from tunelab.data import readers
from tunelab.errors import TunelabError
from tunelab.files import write_jsonl
from tunelab.label.pool import prompt_key
from tunelab.train.run_dir import RunDir


@dataclass
class IssuesResult:
    out: Path
    issues: int
    records: int
    probabilities_from: str


def run(settings: IssuesSettings, *, data: str, out: str | Path, run_dir: str | None = None,
        probe: bool = False, text_column: str = "text") -> IssuesResult:
    if (run_dir is None) == (not probe):
        raise TunelabError("give either --run RUN or --probe", where="label issues",
                           fix="name where the predicted probabilities come from")
    records = read_labelled(data, text_column)
    texts, given = [r["text"] for r in records], [r["label"] for r in records]
    source, labels, probabilities = None, sorted(set(given)), None
    if run_dir is not None:
        run = RunDir.open(run_dir)
        if not run.is_classifier:
            raise TunelabError("label issues needs a classifier run", where=run_dir,
                               fix="pass a run trained on text/label records, or use --probe")
        trained = {prompt_key(r) for r in run.training_records()} if run.training_sources() else set()
        seen = sum(prompt_key(r) in trained for r in records)
        if seen:
            source = (f"probe ({settings.folds}-fold out-of-fold, {settings.encoder} embeddings): the run trained on "
                      f"{seen} of these {len(records)} records, so its probabilities on them are not out-of-fold")
        else:
            labels, probabilities = run_probabilities(run, texts, given, data)
            source = f"the run {run.path} (it trained on none of these records)"
    if probabilities is None:
        check_folds(given, settings.folds, data)
        probabilities = probe_probabilities(texts, [labels.index(g) for g in given], settings)
        source = source or f"probe ({settings.folds}-fold out-of-fold, {settings.encoder} embeddings)"
    from cleanlab.filter import find_label_issues
    y = np.array([labels.index(g) for g in given])
    ranked = find_label_issues(labels=y, pred_probs=probabilities, filter_by=settings.filter_by,
                               return_indices_ranked_by=settings.rank_by)
    rows = [issue_row(records[i], rank, probabilities[i], labels, source)
            for rank, i in enumerate(ranked, start=1)]
    out = Path(out)
    write_jsonl(out, rows)
    return IssuesResult(out, len(rows), len(records), source)


def read_labelled(spec: str, text_column: str) -> list[dict[str, Any]]:
    """Labelled records with where each came from: text, label, source, line."""
    records = []
    for raw in readers.read_input(spec):
        where = f"{spec} {raw.unit} {raw.line}"
        value = raw.value if isinstance(raw.value, dict) else None
        if raw.problem or value is None:
            raise TunelabError(f"the record cannot be read ({raw.problem.detail if raw.problem else 'not an object'})",
                               where=where, fix="fix or remove that record")
        text, label = value.get(text_column), value.get("label")
        if not isinstance(text, str) or not text.strip() or label is None or str(label) == "":
            raise TunelabError(f"the record lacks a {text_column!r} text or a 'label'", where=where,
                               fix="pass labelled classification records (set --text-column for another field)")
        records.append({"text": text, "label": str(label), "source": spec, "line": raw.line})
    if len({r["label"] for r in records}) < 2:
        raise TunelabError("the data holds fewer than two labels", where=spec,
                           fix="label issues compares labels: pass records of at least two classes")
    return records


def check_folds(given: list[str], folds: int, where: str) -> None:
    rare = [(label, n) for label, n in Counter(given).items() if n < folds]
    if rare:
        label, n = min(rare, key=lambda item: item[1])
        raise TunelabError(f"label {label!r} has only {n} records, fewer than the {folds} folds of the probe",
                           where=where, fix="label more examples of it, or lower label.issues.folds")


def probe_probabilities(texts: list[str], y: list[int], settings: IssuesSettings) -> np.ndarray:
    """Out-of-fold class probabilities of a logistic regression on frozen sentence embeddings."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from tunelab.evaluate.baselines import embed
    from tunelab.models.load import resolve_model_path
    features = embed(resolve_model_path(settings.encoder), texts).astype(np.float64)
    folds = StratifiedKFold(n_splits=settings.folds, shuffle=True, random_state=settings.seed)
    probe = LogisticRegression(max_iter=2000, random_state=settings.seed)
    return cross_val_predict(probe, features, np.asarray(y), cv=folds, method="predict_proba")


def run_probabilities(run: RunDir, texts: list[str], given: list[str], where: str):
    """(labels in the run's head order, probabilities) of the run's classifier."""
    from tunelab.evaluate.predict import classify, load_classifier
    model, tokenizer = load_classifier(str(run.path))
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    unknown = sorted(set(given) - set(labels))
    if unknown:
        raise TunelabError(f"labels {unknown} are not among the run's labels {labels}", where=where,
                           fix="use --probe, or check the records against the run's label set")
    return labels, classify(model, tokenizer, texts, max_length=run.max_length, prefix=run.prefix())[1]


def issue_row(record: dict[str, Any], rank: int, probabilities: np.ndarray, labels: list[str],
              source: str) -> dict[str, Any]:
    suggested = int(np.argmax(probabilities))
    return {"rank": rank, "source": record["source"], "line": record["line"], "text": record["text"],
            "given_label": record["label"], "suggested_label": labels[suggested],
            "given_label_probability": round(float(probabilities[labels.index(record["label"])]), 4),
            "suggested_label_probability": round(float(probabilities[suggested]), 4),
            "probabilities_from": source}
