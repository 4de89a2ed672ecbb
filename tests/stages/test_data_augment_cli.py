"""`tunelab data augment` end to end, as a user runs it: rule-based variants of classification and
chat records, paraphrases and synthetic examples from an OpenAI-compatible endpoint (a stub that
answers like one, and a live `tunelab serve`), and the failures: an endpoint that is down or
answers garbage stops the run with one sentence and nothing written."""
import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cli_helpers import tunelab, write_jsonl

from tunelab.data.dedup import exact_key
from tunelab.data.text import joined_text

from serve_helpers import live_server, serve_config

SENTENCES = {
    "positive": ["I really love this movie, it was great", "What a wonderful day with James in London",
                 "The service was fast and the staff were very nice", "Such a beautiful house, I am so happy",
                 "Great job on the new car, truly awesome", "My kid thinks the film is funny and smart"],
    "negative": ["I hate this problem, it is terrible", "The road was dirty and the trip was boring",
                 "Very slow shop and a bad answer", "This is an awful mistake and I am angry",
                 "The meal was poor and the store was noisy", "Sad that Mary missed the train to Paris"],
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("augment")
    rows = [{"text": f"{text}, day {i}", "label": label} for i in range(12) for label, texts in SENTENCES.items()
            for text in texts[i % 6:i % 6 + 1]]
    write_jsonl(root / "raw.jsonl", rows)
    tunelab("data", "prepare", root / "raw.jsonl", "--out", root / "prepared", "-q", "data.dedup.near=false")
    chats = [{"messages": [{"role": "user", "content": f"Summarise the note from {name} about order {i}."},
                           {"role": "assistant", "content": f"{name} asks about order {i}."}]}
             for i, name in enumerate(["James", "Mary", "Olivia", "Noah", "Emma", "Liam"] * 4)]
    write_jsonl(root / "chat.jsonl", chats)
    tunelab("data", "prepare", root / "chat.jsonl", "--out", root / "chat", "-q")
    return root


def read(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def test_rule_variants_of_classification_records(prepared, tmp_path):
    out = tmp_path / "augmented"
    proc = tunelab("data", "augment", prepared / "prepared", "--out", out, "--variants", 3, "-q")
    assert "rules" in proc.stdout and "synthetic" in proc.stdout
    originals, train = read(prepared / "prepared" / "train.jsonl"), read(out / "train.jsonl")
    assert train[:len(originals)] == originals
    synthetic = train[len(originals):]
    assert synthetic and all(r["meta"]["synthetic"]["method"] == "rules" for r in synthetic)
    by_id = {r["meta"]["id"]: r for r in originals}
    for record in synthetic:
        source = by_id[record["meta"]["synthetic"]["source_id"]]
        assert record["label"] == source["label"] and record["text"] != source["text"]
        assert record["meta"]["synthetic"]["edits"]
    keys = [exact_key(joined_text(r)) for r in train]
    assert len(keys) == len(set(keys))  # no synthetic record duplicates an original or another one
    for split in ("val", "test"):  # the originals', byte for byte: synthetic data never reaches evaluation
        assert (out / f"{split}.jsonl").read_bytes() == (prepared / "prepared" / f"{split}.jsonl").read_bytes()
    report = json.loads((out / "augment_report.json").read_text())
    counts = report["by_method"]["rules"]
    assert counts["generated"] == counts["kept"] + counts["duplicates"] + counts["unusable"]
    assert counts["kept"] == len(synthetic) and counts["duplicates"] == len(read(out / "dropped.jsonl"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "data augment" and manifest["val_test_unchanged"] is True
    # the augmented directory trains like any prepared directory
    assert (out / "train.jsonl").is_file() and manifest["counts"]["synthetic"] == len(synthetic)


def test_chat_variants_rephrase_the_instruction_and_keep_answers_consistent(prepared, tmp_path):
    out = tmp_path / "chat-augmented"
    tunelab("data", "augment", prepared / "chat", "--out", out, "-q", "data.augment.edits=[entity_swap]")
    originals = {r["meta"]["id"]: r for r in read(prepared / "chat" / "train.jsonl")}
    synthetic = [r for r in read(out / "train.jsonl") if "synthetic" in r["meta"]]
    assert synthetic
    for record in synthetic:
        source = originals[record["meta"]["synthetic"]["source_id"]]
        assert "template" in record["meta"]["synthetic"]["edits"]
        user, answer = record["messages"][0]["content"], record["messages"][1]["content"]
        name = answer.split()[0]
        assert name in user  # the swapped name is the same in the question and the answer
        if "entity_swap" in record["meta"]["synthetic"]["edits"]:
            assert name != source["messages"][1]["content"].split()[0]
        else:
            assert answer == source["messages"][1]["content"]


class StubHandler(BaseHTTPRequestHandler):
    mode = "good"

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ask = body["messages"][-1]["content"]
        if self.mode == "garbage":
            payload = b"<html>not an API</html>"
        else:
            if self.mode == "empty":
                content = ""
            elif ask.startswith("Rewrite"):
                content = "In other words: " + " ".join(reversed(ask.split("\n\n", 1)[1].split()))
            else:
                content = f"A brand new example number {threading.get_ident() % 97} written for this label"
            payload = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"],
                                  "choices": [{"index": 0, "finish_reason": "stop",
                                               "message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@contextmanager
def stub_endpoint(mode):
    handler = type("Handler", (StubHandler,), {"mode": mode})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_paraphrases_and_synthetic_examples_from_an_endpoint(prepared, tmp_path):
    out = tmp_path / "paraphrased"
    with stub_endpoint("good") as url:
        tunelab("data", "augment", prepared / "prepared", "--out", out, "--variants", 0, "--endpoint", url,
                "--endpoint-model", "stub", "data.augment.endpoint.synthetic=2", "-q")
    synthetic = [r for r in read(out / "train.jsonl") if "synthetic" in r["meta"]]
    methods = [r["meta"]["synthetic"]["method"] for r in synthetic]
    originals = read(prepared / "prepared" / "train.jsonl")
    assert methods.count("paraphrase") == len(originals)
    paraphrase = next(r for r in synthetic if r["meta"]["synthetic"]["method"] == "paraphrase")
    assert paraphrase["text"].startswith("In other words:") and paraphrase["meta"]["synthetic"]["model"] == "stub"
    assert paraphrase["meta"]["synthetic"]["source_id"] in {r["meta"]["id"] for r in originals}
    made = [r for r in synthetic if r["meta"]["synthetic"]["method"] == "synthetic"]
    assert {r["label"] for r in made} <= {"positive", "negative"}
    assert all(len(r["meta"]["synthetic"]["shown_ids"]) == 5 for r in made)
    report = json.loads((out / "augment_report.json").read_text())
    assert report["by_method"]["synthetic"]["generated"] == 4  # 2 per label


@pytest.mark.parametrize("mode,expected", [
    ("down", "cannot be reached"),
    ("garbage", "did not answer in the chat-completions shape"),
    ("empty", "with unusable text (first: empty answer)"),
])
def test_an_endpoint_down_or_answering_garbage_stops_with_nothing_written(prepared, tmp_path, mode, expected):
    out = tmp_path / "never"
    if mode == "down":
        with stub_endpoint("good") as url:
            pass  # the port is closed again: nothing listens there now
        proc = tunelab("data", "augment", prepared / "prepared", "--out", out, "--endpoint", url,
                       "data.augment.endpoint.retries=0", check=False)
    else:
        with stub_endpoint(mode) as url:
            proc = tunelab("data", "augment", prepared / "prepared", "--out", out, "--endpoint", url, check=False)
    message = " ".join(proc.stderr.split())
    assert proc.returncode == 2, proc.stderr
    assert expected in message and message.count("error:") == 1 and "Traceback" not in proc.stderr
    assert not out.exists()


def test_a_live_tunelab_server_is_an_augmentation_endpoint(prepared, tiny_llama_run, tmp_path):
    out = tmp_path / "served"
    settings = serve_config(tiny_llama_run, tmp_path, model_name="tiny", cache_size=0, guard={"max_tokens": 64})
    with live_server(settings) as server:
        tunelab("data", "augment", prepared / "chat", "--out", out, "--variants", 0, "--endpoint",
                f"{server.base_url}/v1", "--endpoint-model", "tiny", "data.augment.endpoint.max_tokens=12",
                "data.augment.endpoint.max_unusable=1.0", "data.augment.endpoint.temperature=0", "-q")
    report = json.loads((out / "augment_report.json").read_text())
    counts = report["by_method"]["paraphrase"]
    originals = read(prepared / "chat" / "train.jsonl")
    assert counts["generated"] == len(originals)  # every request was answered in the OpenAI shape
    assert counts["kept"] + counts["duplicates"] + counts["unusable"] == len(originals)
