"""`tunelab label export` and `label import`: batches to people and their answers back.

Export: a batch to label (classification records: a label to choose), or generated answers to
review (chat records ending with the model's answer: a 1-5 rating and a corrected answer), as
Label Studio tasks (+ the labelling interface's XML config), CSV or JSONL. A review sample from the
prediction log is stratified by model version and answer length, so long answers and every
version are seen, not only the common case.

Import: Label Studio's JSON export or a CSV back to canonical records with the annotators' ids in
meta.annotators. Items that several people answered are measured for agreement (Cohen's or
Fleiss' kappa, tunelab.label.agreement) and kept only where they agree; the rest go to
conflicts.jsonl with every answer, for a person to settle.
"""
from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError
from tunelab.files import read_jsonl, write_json, write_jsonl, write_text
from tunelab.label import labelstudio
from tunelab.label.agreement import agreement, resolve
from tunelab.label.pool import prompt_key
from tunelab.monitor.features import messages_text

FORMATS = ("label-studio", "csv", "jsonl")
CLASSIFY_COLUMNS = ["record_id", "text", "label", "annotator"]
REVIEW_COLUMNS = ["record_id", "prompt", "answer", "rating", "corrected", "annotator", "messages"]


# export

def read_batch(path: str) -> list[dict[str, Any]]:
    """A batch to export: canonical JSONL, all classification records (text) or all chat records
    ending with an assistant answer (reviewed)."""
    file = Path(path)
    if not file.is_file():
        raise TunelabError("batch not found", where=path, fix="pass the JSONL `label select` wrote")
    try:
        records = read_jsonl(file)
    except ValueError as exc:
        raise TunelabError(f"the batch is not JSONL ({exc})", where=path, fix="pass the JSONL `label select` wrote")
    kinds = {"review" if _is_answered_chat(r) else "classification" if isinstance(r.get("text"), str) else "other"
             for r in records}
    if not records or len(kinds) != 1 or "other" in kinds:
        raise TunelabError("the batch must hold text records, or chat records ending with an answer, one kind only",
                           where=path, fix="pass the JSONL `label select` wrote")
    return records


def _is_answered_chat(record: dict[str, Any]) -> bool:
    messages = record.get("messages")
    return isinstance(messages, list) and len(messages) >= 2 and messages[-1].get("role") == "assistant"


def review_sample(rows: list[dict[str, Any]], size: int, seed: int) -> list[dict[str, Any]]:
    """A stratified sample of logged generated answers: strata are model version x answer length
    (short / medium / long, at the terciles), each given a share of `size` proportional to its
    traffic and at least one answer."""
    from tunelab.label.pool import logged_messages
    if not rows:
        raise TunelabError("the prediction log holds no generated answers to review", where="label export",
                           fix="serve a generative run and send it traffic first")
    lengths = sorted(len(r["output"]) for r in rows)
    cuts = (lengths[len(lengths) // 3], lengths[2 * len(lengths) // 3])

    def stratum(row: dict[str, Any]) -> str:
        size = len(row["output"])
        return f"{row.get('model_version')}/{'short' if size < cuts[0] else 'medium' if size < cuts[1] else 'long'}"

    strata: dict[str, list] = defaultdict(list)
    for row in rows:
        strata[stratum(row)].append(row)
    rng = random.Random(seed)
    picked = []
    for key in sorted(strata):
        members = strata[key]
        share = max(1, round(size * len(members) / len(rows)))
        picked += rng.sample(members, min(share, len(members)))
    picked = sorted(picked, key=lambda r: (r["ts"], r["id"]))
    return [{"messages": logged_messages(r.get("input")) + [{"role": "assistant", "content": r["output"]}],
             "meta": {"source": "log", "request_id": r["request_id"], "model_version": r.get("model_version"),
                      "stratum": stratum(r)}}
            for r in picked]


def export(records: list[dict[str, Any]], fmt: str, out: Path, labels: list[str] | None = None) -> list[Path]:
    """Write the batch for people in `fmt`; returns the files written (Label Studio: tasks + config)."""
    if fmt not in FORMATS:
        raise TunelabError(f"unknown export format {fmt!r}", where="label export", fix=f"use one of {', '.join(FORMATS)}")
    review = _is_answered_chat(records[0])
    items = [_review_item(r) if review else _classify_item(r) for r in records]
    if fmt == "jsonl":
        write_jsonl(out, [{**r, **({"rating": None, "corrected": None} if review else {"label": None})}
                          for r in records])
        return [out]
    if fmt == "csv":
        columns = REVIEW_COLUMNS if review else CLASSIFY_COLUMNS
        write_text(out, _csv_text(columns, [{**item, "messages": json.dumps(item["messages"], ensure_ascii=False)}
                                            if review else item for item in items]))
        return [out]
    if not review:
        labels = labels or sorted({label for r in records for label in (r.get("meta") or {}).get("probabilities", {})})
        if not labels:
            raise TunelabError("the labels to choose from are unknown (the batch does not name them)",
                               where="label export", fix="name them with --labels A,B,C")
    config = out.with_suffix(".xml")
    write_json(out, labelstudio.tasks([{k: v for k, v in item.items() if k not in ("label", "annotator")}
                                       for item in items]))
    write_text(config, labelstudio.review_config() if review else labelstudio.classification_config(labels))
    return [out, config]


def _classify_item(record: dict[str, Any]) -> dict[str, Any]:
    return {"record_id": _record_id(record), "text": record["text"], "label": "", "annotator": ""}


def _review_item(record: dict[str, Any]) -> dict[str, Any]:
    prompt = record["messages"][:-1]
    return {"record_id": _record_id(record), "prompt": messages_text(prompt), "answer": record["messages"][-1]["content"],
            "rating": "", "corrected": "", "annotator": "", "messages": prompt}


def _record_id(record: dict[str, Any]) -> str:
    return str((record.get("meta") or {}).get("id") or prompt_key(record)[:16])


def _csv_text(columns: list[str], rows: list[dict[str, Any]]) -> str:
    import io
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


# import

def read_annotations(path: str) -> list[dict[str, Any]]:
    """Annotations from a Label Studio JSON export or a CSV (one row per annotation), each
    {"data": {record_id, text | prompt, answer, messages}, "annotator", "label", "rating", "corrected"}."""
    file = Path(path)
    if not file.is_file():
        raise TunelabError("annotations not found", where=path, fix="pass the Label Studio JSON export or a CSV")
    if file.suffix.lower() == ".csv":
        return _csv_annotations(file)
    return labelstudio.read_export(file)


def _csv_annotations(file: Path) -> list[dict[str, Any]]:
    with file.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    columns = set(rows[0]) if rows else set()
    review = "answer" in columns
    needed = {"answer", "annotator"} if review else {"text", "label", "annotator"}
    if not rows or needed - columns:
        missing = ", ".join(sorted(needed - columns)) or "every row"
        raise TunelabError(f"the CSV lacks {missing}", where=str(file),
                           fix=f"use the columns `label export --format csv` wrote ({', '.join(sorted(needed))})")
    found = []
    for line, row in enumerate(rows, start=2):
        where = f"{file} row {line}"
        if not (row.get("annotator") or "").strip():
            if any((row.get(k) or "").strip() for k in ("label", "rating", "corrected")):
                raise TunelabError("the row has an answer but no annotator", where=where, fix="fill in the annotator column")
            continue  # not annotated yet
        data = {"record_id": row.get("record_id") or None, "text": row.get("text"), "prompt": row.get("prompt"),
                "answer": row.get("answer")}
        if review and row.get("messages"):
            try:
                data["messages"] = json.loads(row["messages"])
            except ValueError:
                raise TunelabError("the messages column is not JSON", where=where,
                                   fix="keep the column as `label export` wrote it") from None
        rating = (row.get("rating") or "").strip()
        try:
            found.append({"data": data, "annotator": row["annotator"].strip(), "where": where,
                          "label": (row.get("label") or "").strip() or None, "corrected": (row.get("corrected") or "").strip() or None,
                          "rating": float(rating) if rating else None})
        except ValueError:
            raise TunelabError(f"rating {rating!r} is not a number", where=where, fix="rate 1 to 5") from None
    return found


def import_annotations(paths: list[str], out_dir: Path) -> dict[str, Any]:
    """Canonical records from every annotation file into out_dir (classification.jsonl, or sft.jsonl
    and ratings.jsonl for reviews), conflicts.jsonl and summary.json; returns the summary. Every
    input is read and checked before anything is written."""
    annotations = [a for path in paths for a in read_annotations(path)]
    if not annotations:
        raise TunelabError("the files hold no annotations", where=", ".join(paths),
                           fix="annotate the tasks first, then export them")
    review = any(a["data"].get("answer") is not None for a in annotations)
    items: dict[str, dict[str, Any]] = {}
    answers: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for a in annotations:
        item = _item_key(a, review)
        items.setdefault(item, a["data"])
        if not review and a["label"] is None:
            raise TunelabError("the annotation chose no label", where=a["where"], fix="label it, or skip the task")
        answers[item][a["annotator"]] = a
    outputs = _review_outputs(items, answers) if review else _classification_outputs(items, answers)
    summary = {"kind": "review" if review else "classification", "annotations": len(annotations), "items": len(items),
               **{name: len(rows) for name, rows in outputs.items()}}
    summary["agreement"] = agreement({item: {who: _answer(a, review) for who, a in by.items() if _answer(a, review)
                                             is not None} for item, by in answers.items()})
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in outputs.items():
        write_jsonl(out_dir / f"{name}.jsonl", rows)
    write_json(out_dir / "summary.json", summary)
    return summary


def _answer(annotation: dict[str, Any], review: bool):
    return annotation["rating"] if review else annotation["label"]


def _item_key(annotation: dict[str, Any], review: bool) -> str:
    data = annotation["data"]
    if data.get("record_id"):
        return str(data["record_id"])
    text = data.get("prompt") if review else data.get("text")
    if not isinstance(text, str) or not text:
        field = "prompt" if review else "text"
        raise TunelabError(f"the task's data has no record_id or {field}", where=annotation["where"],
                           fix="import the tasks `label export` wrote, which carry both")
    return prompt_key({"text": text})[:16]


def _classification_outputs(items, answers) -> dict[str, list[dict[str, Any]]]:
    agreed, conflicts = resolve({item: {who: a["label"] for who, a in by.items()} for item, by in answers.items()})
    labelled = [{"text": items[item]["text"], "label": label,
                 "meta": {"id": item, "source": "annotation", "annotators": sorted(answers[item])}}
                for item, label in agreed.items()]
    return {"classification": labelled, "conflicts": [{"record_id": item, "text": items[item]["text"], "answers": by}
                                                      for item, by in conflicts.items()]}


def _review_outputs(items, answers) -> dict[str, list[dict[str, Any]]]:
    corrections = {item: {who: a["corrected"] for who, a in by.items() if a["corrected"]} for item, by in answers.items()}
    agreed, conflicts = resolve(corrections)
    sft, ratings = [], []
    for item, data in items.items():
        prompt = data.get("messages") or [{"role": "user", "content": data.get("prompt") or ""}]
        meta = {"id": item, "source": "review", "annotators": sorted(answers[item])}
        if item in agreed:
            sft.append({"messages": prompt + [{"role": "assistant", "content": agreed[item]}],
                        "meta": {**meta, "annotators": sorted(corrections[item])}})
        scores = {who: a["rating"] for who, a in answers[item].items() if a["rating"] is not None}
        if scores:
            ratings.append({"messages": prompt + [{"role": "assistant", "content": data.get("answer") or ""}],
                            "meta": {**meta, "ratings": scores,
                                     "mean_rating": round(sum(scores.values()) / len(scores), 4)}})
    return {"sft": sft, "ratings": ratings,
            "conflicts": [{"record_id": item, "prompt": items[item].get("prompt"), "answers": by}
                          for item, by in conflicts.items()]}
