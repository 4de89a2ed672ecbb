"""`tunelab label` end to end, run as a user runs it: select from a pool and from the prediction
log, likely label errors with cleanlab (with the measured precision/recall on flipped labels),
a Label Studio round trip with two annotators, feedback into training records, and the bad
inputs that must stop with one sentence and write nothing."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from cli_helpers import tunelab, write_jsonl
from label_helpers import cue_label, cue_records, train_classifier

from tunelab.data.dedup import exact_key
from tunelab.serve.predlog import PredictionLog


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("label-cli")
    write_jsonl(root / "data" / "train.jsonl", cue_records(240, seed=0))
    write_jsonl(root / "data" / "val.jsonl", cue_records(40, seed=1))
    train_classifier(root, root / "data", root / "run")
    pool = [{"text": r["text"]} for r in cue_records(80, seed=5)]
    pool += [{"text": r["text"]} for r in cue_records(240, seed=0)[:5]]           # already in the training data
    pool += [{"text": pool[0]["text"]}, {"text": pool[0]["text"].upper() + " !"}]  # exact copies of a candidate
    write_jsonl(root / "pool.jsonl", pool)
    return root


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_select_from_a_pool_picks_uncertain_distinct_unlabelled_records(workspace):
    write_jsonl(workspace / "labelled.jsonl", [{"text": cue_records(80, seed=5)[1]["text"], "label": "x"}])
    proc = tunelab("label", "select", "--run", "run", "--pool", "pool.jsonl", "--k", "8", "--out", "batch.jsonl",
                   "--labelled", "labelled.jsonl", cwd=workspace)
    assert "selected 8 of 87 candidates by entropy (6 already labelled" in proc.stdout
    batch = read(workspace / "batch.jsonl")
    assert len(batch) == 8 and [r["meta"]["rank"] for r in batch] == list(range(1, 9))
    training = {exact_key(r["text"]) for r in read(workspace / "data" / "train.jsonl")}
    keys = [exact_key(r["text"]) for r in batch]
    assert not training & set(keys) and len(set(keys)) == 8  # nothing labelled, no two the same
    assert exact_key(cue_records(80, seed=5)[1]["text"]) not in keys
    assert all("label" not in r and set(r["meta"]["probabilities"]) == {"negative", "neutral", "positive"}
               for r in batch)
    assert all(r["meta"]["measure"] == "entropy" and r["meta"]["uncertainty"] > 0 for r in batch)


def test_select_without_diversity_takes_the_most_uncertain_in_order(workspace):
    tunelab("label", "select", "--run", "run", "--pool", "pool.jsonl", "--k", "5", "--out", "top.jsonl",
            "--strategy", "margin", "label.select.diversity=none", cwd=workspace)
    scores = [r["meta"]["uncertainty"] for r in read(workspace / "top.jsonl")]
    assert scores == sorted(scores, reverse=True) and read(workspace / "top.jsonl")[0]["meta"]["measure"] == "margin"


def test_select_from_the_log_and_an_empty_window(workspace):
    with PredictionLog(workspace / "p.db", retention_days=None) as log:
        for i, row in enumerate(cue_records(40, seed=9)):
            log.log({"ts": 1_700_000_000 + i, "request_id": f"r{i}", "endpoint": "/v1/classify", "model_version": "v1",
                     "input": row["text"], "output": "positive", "label": "positive", "confidence": 0.5,
                     "status": 200})
    proc = tunelab("label", "select", "--run", "run", "--log", "p.db", "--k", "4", "--out", "from-log.jsonl",
                   cwd=workspace)
    assert "selected 4 of 40 candidates" in proc.stdout
    assert all(r["meta"]["source"] == "log" and r["meta"]["request_id"].startswith("r")
               for r in read(workspace / "from-log.jsonl"))
    empty = tunelab("label", "select", "--run", "run", "--log", "p.db", "--k", "4", "--out", "none.jsonl",
                    "--window", "1h", cwd=workspace, check=False)
    assert empty.returncode == 2 and "no predictions in the last 1h" in empty.stderr
    assert "Traceback" not in empty.stderr and not (workspace / "none.jsonl").exists()


def test_a_pool_without_its_text_column_is_refused(workspace):
    write_jsonl(workspace / "bad-pool.jsonl", [{"body": "great service"}])
    proc = tunelab("label", "select", "--run", "run", "--pool", "bad-pool.jsonl", "--k", "2", "--out", "x.jsonl",
                   cwd=workspace, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "bad-pool.jsonl line 1: the pool record has no a 'text' text field (it has body)" in proc.stderr
    assert not (workspace / "x.jsonl").exists()
    ok = tunelab("label", "select", "--run", "run", "--pool", "bad-pool.jsonl", "--k", "1", "--out", "x.jsonl",
                 "--text-column", "body", "label.select.diversity=none", cwd=workspace)
    assert "selected 1 of 1" in ok.stdout


def test_label_issues_find_flipped_labels(workspace):
    """Acceptance: 5% of the labels flipped on purpose (20 of 400 cue-word records); the top-k
    issues at k = 20, from a 5-fold probe on frozen MiniLM embeddings, measured 17 of 17 issues
    flipped (precision 1.00) and 17 of 20 flips found (recall 0.85)."""
    words = {"negative": ["awful", "broken", "refund", "terrible", "rude"],
             "neutral": ["okay", "arrived", "average", "fine", "ordinary"],
             "positive": ["great", "lovely", "perfect", "excellent", "wonderful"]}
    filler = "the order was item service today really quite my delivery staff".split()
    rng = random.Random(0)
    rows = []
    for i in range(400):
        label = sorted(words)[i % 3]
        text = [rng.choice(words[label])] + rng.sample(filler, 4)
        rng.shuffle(text)
        rows.append({"text": " ".join(text), "label": label})
    flipped = rng.sample(range(400), 20)
    for i in flipped:
        rows[i]["label"] = rng.choice([label for label in words if label != rows[i]["label"]])
    write_jsonl(workspace / "noisy.jsonl", rows)
    proc = tunelab("label", "issues", "--data", "noisy.jsonl", "--probe", "--out", "issues.jsonl", cwd=workspace)
    assert "probabilities from probe (5-fold out-of-fold" in proc.stdout
    issues = read(workspace / "issues.jsonl")
    top = issues[:len(flipped)]
    lines = {i + 1 for i in flipped}
    hits = sum(issue["line"] in lines for issue in top)
    precision, recall = hits / len(top), hits / len(flipped)
    print(f"label issues on 5% flipped labels: {len(top)} issues at k={len(flipped)}, precision {precision:.2f}, "
          f"recall {recall:.2f}")
    assert precision >= 0.7 and recall >= 0.5  # measured 1.00 and 0.85
    first = top[0]
    assert first["given_label"] == rows[first["line"] - 1]["label"] and first["suggested_label"] != first["given_label"]
    assert first["text"] == rows[first["line"] - 1]["text"] and first["rank"] == 1


def test_label_issues_with_the_run_uses_it_only_on_data_it_did_not_train_on(workspace):
    unseen = tunelab("label", "issues", "--data", "data/val.jsonl", "--run", "run", "--out", "i-val.jsonl",
                     cwd=workspace)
    assert "probabilities from the run" in unseen.stdout and "trained on none of these" in unseen.stdout
    seen = tunelab("label", "issues", "--data", "data/train.jsonl", "--run", "run", "--out", "i-train.jsonl",
                   cwd=workspace)
    assert "the run trained on 240 of these 240 records, so its probabilities on them are not out-of-fold" in seen.stdout


def test_label_studio_round_trip_with_two_annotators(workspace):
    tunelab("label", "select", "--run", "run", "--pool", "pool.jsonl", "--k", "6", "--out", "ls-batch.jsonl",
            cwd=workspace)
    tunelab("label", "export", "ls-batch.jsonl", "--format", "label-studio", "--out", "tasks.json", cwd=workspace)
    assert '<Choice value="neutral"/>' in (workspace / "tasks.xml").read_text()
    tasks = json.loads((workspace / "tasks.json").read_text())
    for i, task in enumerate(tasks):  # Label Studio's JSON export: two annotators, who disagree once
        label = cue_label(task["data"]["text"])
        other = label if i else next(x for x in ("negative", "positive") if x != label)
        task["annotations"] = [
            {"id": 2 * i, "completed_by": 7, "was_cancelled": False, "result": [
                {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]},
            {"id": 2 * i + 1, "completed_by": {"id": 8, "email": "kim@example.com"}, "result": [
                {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [other]}}]}]
    (workspace / "export.json").write_text(json.dumps(tasks))
    proc = tunelab("label", "import", "export.json", "--out", "imported", cwd=workspace)
    assert "records: classification 5, conflicts 1" in proc.stdout and "Cohen's kappa" in proc.stdout
    records = read(workspace / "imported" / "classification.jsonl")
    assert all(r["label"] == cue_label(r["text"]) and r["meta"]["annotators"] == ["7", "kim@example.com"]
               for r in records)
    conflict = read(workspace / "imported" / "conflicts.jsonl")[0]
    assert conflict["text"] == tasks[0]["data"]["text"] and set(conflict["answers"]) == {"7", "kim@example.com"}
    summary = json.loads((workspace / "imported" / "summary.json").read_text())
    assert summary["agreement"]["measure"] == "cohen" and summary["agreement"]["items"] == 6


def test_csv_and_jsonl_exports_and_a_csv_import(workspace):
    tunelab("label", "export", "batch.jsonl", "--format", "csv", "--out", "batch.csv", cwd=workspace)
    tunelab("label", "export", "batch.jsonl", "--format", "jsonl", "--out", "to-label.jsonl", cwd=workspace)
    assert all(r["label"] is None for r in read(workspace / "to-label.jsonl"))
    lines = (workspace / "batch.csv").read_text().splitlines()
    assert lines[0] == "record_id,text,label,annotator" and len(lines) == 9
    import csv
    rows = list(csv.DictReader(lines))
    annotated = [{**r, "label": cue_label(r["text"]), "annotator": name} for r in rows for name in ("a", "b", "c")]
    with (workspace / "done.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(annotated)
    proc = tunelab("label", "import", "done.csv", "--out", "from-csv", cwd=workspace)
    assert "records: classification 8, conflicts 0" in proc.stdout and "Fleiss' kappa 1.000" in proc.stdout


def test_a_label_studio_file_with_missing_fields_is_refused_and_nothing_written(workspace):
    broken = [{"id": 1, "data": {"text": "fine"}, "annotations": [{"completed_by": 1, "result": [
        {"type": "choices", "value": {}}]}]}]
    (workspace / "broken.json").write_text(json.dumps(broken))
    proc = tunelab("label", "import", "broken.json", "--out", "nothing", cwd=workspace, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "broken.json task 1 annotation 1: a choices result has no `value.choices`" in proc.stderr
    (workspace / "no-data.json").write_text(json.dumps([{"id": 4, "annotations": []}]))
    proc = tunelab("label", "import", "no-data.json", "--out", "nothing", cwd=workspace, check=False)
    assert proc.returncode == 2 and "no-data.json task 4: the task has no `data` object" in proc.stderr
    assert not (workspace / "nothing").exists()


def test_feedback_becomes_training_records(workspace):
    with PredictionLog(workspace / "fb.db", retention_days=None) as log:
        log.log({"request_id": "c1", "endpoint": "/v1/classify", "model_version": "v1", "input": "awful item",
                 "output": "positive", "label": "positive", "confidence": 0.6, "status": 200})
        log.log({"request_id": "c2", "endpoint": "/v1/classify", "model_version": "v1", "input": "okay item",
                 "output": "positive", "label": "positive", "confidence": 0.6, "status": 200})
        log.log({"request_id": "g1", "endpoint": "/v1/chat/completions", "model_version": "v1",
                 "input": json.dumps([{"role": "user", "content": "Capital of France?"}]), "output": "Lyon",
                 "status": 200})
        log.log_feedback({"request_id": "c1", "label": "negative", "annotator": "ann"})
        log.log_feedback({"request_id": "c1", "label": "negative", "annotator": "bob"})
        log.log_feedback({"request_id": "c2", "label": "neutral", "annotator": "ann"})
        log.log_feedback({"request_id": "c2", "label": "positive", "annotator": "bob"})
        log.log_feedback({"request_id": "g1", "corrected": "Paris", "preferred": "Paris.", "rating": -1})
        log.log_feedback({"request_id": "gone", "label": "neutral"})
    proc = tunelab("label", "feedback", "--log", "fb.db", "--out", "fb", cwd=workspace)
    assert "records: classification 1, sft 1, dpo 1, conflicts 1" in proc.stdout
    assert "1 feedback records name requests the log does not hold" in proc.stdout
    [labelled] = read(workspace / "fb" / "classification.jsonl")
    assert labelled == {"text": "awful item", "label": "negative", "meta": {
        "source": "feedback", "request_id": "c1", "annotators": ["ann", "bob"], "model_version": "v1",
        "served_label": "positive"}}
    [chat] = read(workspace / "fb" / "sft.jsonl")
    assert chat["messages"][-1] == {"role": "assistant", "content": "Paris"} and chat["meta"]["request_id"] == "g1"
    [pair] = read(workspace / "fb" / "dpo.jsonl")
    assert (pair["chosen"], pair["rejected"]) == ("Paris.", "Lyon") and pair["meta"]["source"] == "feedback"
    assert read(workspace / "fb" / "skipped.jsonl")[0]["request_id"] == "gone"


def test_feedback_for_unknown_requests_only_is_refused(workspace):
    with PredictionLog(workspace / "ghosts.db") as log:
        log.log_feedback({"request_id": "nobody", "label": "neutral"})
    proc = tunelab("label", "feedback", "--log", "ghosts.db", "--out", "ghosts", cwd=workspace, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "none of the 1 feedback records names a request in the prediction log" in proc.stderr
    assert not (workspace / "ghosts").exists()


def test_generative_select_and_a_review_round_trip(workspace):
    """A causal LM: pool prompts are answered and ranked by the answer's mean token
    log-probability; logged answers with negative feedback rise; a review sample of the log goes
    out as CSV and comes back as corrections (SFT chats) and ratings."""
    from tiny_models import build_task_tokenizer, build_tiny_llama
    model = build_tiny_llama(workspace / "llm", build_task_tokenizer(workspace / "llm"), hidden=32)
    write_jsonl(workspace / "prompts.jsonl", [{"messages": [{"role": "user", "content": w}]}
                                              for w in ("abc", "hello", "quiet", "zebra", "mop")])
    proc = tunelab("label", "select", "--run", model, "--pool", "prompts.jsonl", "--k", "3", "--out", "gen.jsonl",
                   "label.select.max_new_tokens=4", "label.select.diversity=none", cwd=workspace)
    assert "selected 3 of 5 candidates by mean_logprob" in proc.stdout
    batch = read(workspace / "gen.jsonl")
    assert [r["messages"][-1]["role"] for r in batch] == ["assistant"] * 3
    logprobs = [r["meta"]["mean_logprob"] for r in batch]
    assert logprobs == sorted(logprobs) and all(lp < 0 for lp in logprobs)  # least likely answers first

    with PredictionLog(workspace / "gen.db", retention_days=None) as log:
        for i, word in enumerate(("abc", "hello", "quiet", "zebra", "mop", "kite")):
            log.log({"ts": 1_700_000_000 + i, "request_id": f"g{i}", "endpoint": "/v1/chat/completions",
                     "model_version": "v1", "input": json.dumps([{"role": "user", "content": word}]),
                     "output": word[::-1] * (i + 1), "status": 200})
        log.log_feedback({"request_id": "g2", "rating": -1})
    tunelab("label", "select", "--run", model, "--log", "gen.db", "--k", "1", "--out", "bad.jsonl",
            "label.select.diversity=none", "label.select.negative_feedback_weight=100", cwd=workspace)
    [worst] = read(workspace / "bad.jsonl")
    assert worst["meta"]["request_id"] == "g2" and worst["meta"]["negative_feedback"] is True

    tunelab("label", "export", "--log", "gen.db", "--format", "csv", "--out", "review.csv", "--sample", "6",
            cwd=workspace)
    import csv
    rows = list(csv.DictReader((workspace / "review.csv").read_text().splitlines()))
    assert len(rows) == 6 and set(rows[0]) == {"record_id", "prompt", "answer", "rating", "corrected", "annotator",
                                               "messages"}
    for row in rows:
        row.update(annotator="rev", rating="2" if row["prompt"] == "abc" else "5",
                   corrected="cba" if row["prompt"] == "abc" else "")
    with (workspace / "reviewed.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    proc = tunelab("label", "import", "reviewed.csv", "--out", "reviewed", cwd=workspace)
    assert "records: sft 1, ratings 6, conflicts 0" in proc.stdout
    [fixed] = read(workspace / "reviewed" / "sft.jsonl")
    assert fixed["messages"] == [{"role": "user", "content": "abc"}, {"role": "assistant", "content": "cba"}]
    assert {r["meta"]["mean_rating"] for r in read(workspace / "reviewed" / "ratings.jsonl")} == {2.0, 5.0}
