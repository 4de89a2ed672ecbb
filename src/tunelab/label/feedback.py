"""`tunelab label feedback`: what people said about served answers, as training records.

- a label on a classification answer -> a classification record (text, label);
- a corrected answer to a generated one -> an SFT chat (the prompt, then the correction);
- a preferred answer -> a DPO pair (the prompt; chosen: the preferred answer; rejected: the
  answer that was served).
Each record carries meta.source = "feedback", the request_id and the annotators. When several
people gave different labels (corrections, preferred answers) for one request, the request goes
to conflicts.jsonl instead, every answer listed. Feedback naming a request the log does not hold
(pruned, or sent to another server's log) goes to skipped.jsonl, and the summary says how many.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError
from tunelab.files import write_json, write_jsonl
from tunelab.label.agreement import agreement, resolve
from tunelab.label.pool import logged_messages
from tunelab.monitor.features import logged_input_text


def run(log: str, out_dir: str | Path) -> dict[str, Any]:
    from tunelab.serve.predlog import read_feedback
    feedback = read_feedback(log)
    if not feedback:
        raise TunelabError("the prediction log holds no feedback", where=log,
                           fix="collect feedback on served answers first (POST /v1/feedback)")
    known = [f for f in feedback if f["prediction"] is not None]
    skipped = [{k: v for k, v in f.items() if k != "prediction"} for f in feedback if f["prediction"] is None]
    if not known:
        raise TunelabError(f"none of the {len(feedback)} feedback records names a request in the prediction log "
                           f"(the first names {feedback[0]['request_id']!r})", where=log,
                           fix="pass the log of the server that answered those requests")
    outputs: dict[str, list[dict[str, Any]]] = {"classification": [], "sft": [], "dpo": [], "conflicts": []}
    classified = [f for f in known if f["prediction"].get("label") is not None]
    generated = [f for f in known if f["prediction"].get("label") is None]
    for field, rows, build in (("label", classified, _classification), ("corrected", generated, _sft),
                               ("preferred", generated, _dpo)):
        by_request, predictions = _answers(rows, field)
        agreed, conflicts = resolve(by_request)
        kind = {"label": "classification", "corrected": "sft", "preferred": "dpo"}[field]
        outputs[kind] += [build(predictions[rid], answer, sorted(by_request[rid])) for rid, answer in agreed.items()]
        outputs["conflicts"] += [{"request_id": rid, "field": field, "answers": by} for rid, by in conflicts.items()]
    labels = _answers(classified, "label")[0]
    summary = {"feedback": len(feedback), "skipped_unknown_request": len(skipped),
               **{name: len(rows) for name, rows in outputs.items()}, "agreement": agreement(labels)}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in outputs.items():
        write_jsonl(out_dir / f"{name}.jsonl", rows)
    write_jsonl(out_dir / "skipped.jsonl", skipped)
    write_json(out_dir / "summary.json", summary)
    return summary


def _answers(rows: list[dict[str, Any]], field: str):
    """request_id -> {annotator: answer} for the feedback that gives `field`, and each request's
    prediction. Unnamed annotators count one each (two anonymous answers that differ conflict)."""
    by_request: dict[str, dict[str, str]] = defaultdict(dict)
    predictions = {}
    for row in rows:
        if row.get(field) is None:
            continue
        by_request[row["request_id"]][row.get("annotator") or f"anonymous#{row['id']}"] = row[field]
        predictions[row["request_id"]] = row["prediction"]
    return dict(by_request), predictions


def _meta(prediction: dict[str, Any], annotators: list[str]) -> dict[str, Any]:
    return {"source": "feedback", "request_id": prediction["request_id"], "annotators": annotators,
            "model_version": prediction.get("model_version")}


def _classification(prediction: dict[str, Any], label: str, annotators: list[str]) -> dict[str, Any]:
    return {"text": logged_input_text(prediction.get("input")), "label": label,
            "meta": {**_meta(prediction, annotators), "served_label": prediction.get("label")}}


def _sft(prediction: dict[str, Any], corrected: str, annotators: list[str]) -> dict[str, Any]:
    return {"messages": logged_messages(prediction.get("input")) + [{"role": "assistant", "content": corrected}],
            "meta": _meta(prediction, annotators)}


def _dpo(prediction: dict[str, Any], preferred: str, annotators: list[str]) -> dict[str, Any]:
    return {"prompt": logged_messages(prediction.get("input")), "chosen": preferred,
            "rejected": prediction.get("output") or "", "meta": _meta(prediction, annotators)}
