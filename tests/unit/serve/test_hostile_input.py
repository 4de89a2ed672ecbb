"""Bodies no fuzzer generates, sent as raw bytes over one keep-alive connection to a live server:
a lone UTF-16 surrogate in every string field of every route, malformed JSON, wrong content
types, numbers too large to read, nesting too deep, non-object bodies. Each gets a 4xx in the
OpenAI error shape naming the field, never a 500, and the connection stays open for the next
request; each is in the prediction log as refused."""
import http.client
import json

import pytest

from serve_helpers import flush_log, live_server, serve_config
from tunelab.serve.predlog import read_predictions

SURROGATE = "\ud800"
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi", "name": "ann"}], "max_tokens": 2,
        "user": "u1", "stop": ["x"]}
COMPLETION = {"model": "tiny", "prompt": "hi", "max_tokens": 2, "user": "u1", "stop": "x"}
CLASSIFY = {"model": "tiny", "text": "hi"}
# (route, valid body, a path to one of its string fields, the param the error must name)
STRING_FIELDS = [
    ("/v1/chat/completions", CHAT, ["model"], "model"),
    ("/v1/chat/completions", CHAT, ["user"], "user"),
    ("/v1/chat/completions", {**CHAT, "task": "t"}, ["task"], "task"),
    ("/v1/chat/completions", CHAT, ["messages", 0, "content"], "messages[0].content"),
    ("/v1/chat/completions", CHAT, ["messages", 0, "name"], "messages[0].name"),
    ("/v1/chat/completions", CHAT, ["messages", 0, "role"], "messages[0].role"),
    ("/v1/chat/completions", CHAT, ["stop", 0], "stop[0]"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
     ["messages", 0, "content", 0, "text"], "messages[0].content[0].text"),
    ("/v1/completions", COMPLETION, ["model"], "model"),
    ("/v1/completions", COMPLETION, ["user"], "user"),
    ("/v1/completions", COMPLETION, ["prompt"], "prompt"),
    ("/v1/completions", {**COMPLETION, "prompt": ["a", "b"]}, ["prompt", 1], "prompt[1]"),
    ("/v1/completions", COMPLETION, ["stop"], "stop"),
    ("/v1/completions", {**COMPLETION, "task": "t"}, ["task"], "task"),
    ("/v1/classify", CLASSIFY, ["text"], "text"),
    ("/v1/classify", CLASSIFY, ["model"], "model"),
    ("/predict", {**CLASSIFY, "task": "t"}, ["task"], "task"),
]


def with_value(body, path, value):
    body = json.loads(json.dumps(body))
    node = body
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return body


@pytest.fixture(scope="module")
def server(tiny_llama_run, tmp_path_factory):
    cfg = serve_config(tiny_llama_run, tmp_path_factory.mktemp("hostile"), model_name="tiny",
                       guard={"max_tokens": 8, "max_request_bytes": 65536})
    with live_server(cfg) as live:
        yield live


@pytest.fixture
def connection(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    yield conn
    conn.close()


def post(conn, path, body: bytes, content_type="application/json"):
    """POST on the open connection; (status, the error or the answer, whether the connection
    stayed open)."""
    before = conn.sock
    headers = {"Content-Type": content_type} if content_type else {}
    conn.request("POST", path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    assert response.getheader("content-type") == "application/json", data
    kept = not response.will_close and (before is None or conn.sock is before)
    answer = json.loads(data)
    return response.status, answer.get("error", answer), kept


@pytest.mark.parametrize("route, body, path, param", STRING_FIELDS, ids=[f"{r}:{p}" for r, _, _, p in STRING_FIELDS])
def test_a_lone_surrogate_in_any_string_field_is_a_400_naming_it(connection, route, body, path, param):
    raw = json.dumps(with_value(body, path, f"a{SURROGATE}b")).encode()  # ensure_ascii: a \ud800 escape
    assert b"\\ud800" in raw
    status, error, kept = post(connection, route, raw)
    assert status == 400 and error["param"] == param, error
    assert kept  # the keep-alive connection survives
    status, _, kept = post(connection, "/v1/completions", json.dumps(COMPLETION).encode())  # and serves the next
    assert status == 200 and kept


def test_surrogates_as_raw_bytes_and_as_object_keys_are_400s(connection):
    raw_bytes = json.dumps(CHAT).encode().replace(b'"tiny"', b'"ti\xed\xa0\x80ny"')  # CESU-8 encoded surrogate
    status, error, kept = post(connection, "/v1/chat/completions", raw_bytes)
    assert status == 400 and kept, error
    status, error, kept = post(connection, "/v1/chat/completions", json.dumps({**CHAT, SURROGATE: 1}).encode())
    assert status == 400 and "key that is not valid Unicode text" in error["message"] and kept


@pytest.mark.parametrize("name, body, content_type, status, code", [
    ("truncated", b'{"model": "tiny", "prompt": "hi"', "application/json", 400, "invalid_json"),
    ("not json", b"model=tiny&prompt=hi", "application/json", 400, "invalid_json"),
    ("invalid utf-8", b'{"model": "ti\xffny", "prompt": "hi"}', "application/json", 400, "invalid_json"),
    ("empty", b"", "application/json", 400, None),
    ("null", b"null", "application/json", 400, "invalid_request"),
    ("array", b"[1, 2]", "application/json", 400, "invalid_request"),
    ("a string", b'"hi"', "application/json", 400, "invalid_request"),
    ("text/plain", json.dumps(COMPLETION).encode(), "text/plain", 415, "unsupported_media_type"),
    ("form", b"model=tiny&prompt=hi", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ("no content type", json.dumps(COMPLETION).encode(), None, 415, "unsupported_media_type"),
    ("huge integer", b'{"model": "tiny", "prompt": "hi", "max_tokens": ' + b"9" * 5000 + b"}", "application/json",
     400, "invalid_json"),
    ("float overflow", b'{"model": "tiny", "prompt": "hi", "temperature": 1e400}', "application/json", 400,
     "invalid_request"),
    ("huge max_tokens", b'{"model": "tiny", "prompt": "hi", "max_tokens": 1' + b"0" * 30 + b"}", "application/json",
     400, "max_tokens_exceeded"),
    ("deep nesting", b'{"model": "tiny", "prompt": ' + b"[" * 20000 + b"]" * 20000 + b"}", "application/json",
     400, "invalid_json"),
])
def test_malformed_bodies_are_4xx_sentences_and_keep_the_connection(connection, name, body, content_type, status,
                                                                    code):
    got, error, kept = post(connection, "/v1/completions", body, content_type)
    assert got == status and kept, error
    if code:
        assert error["code"] == code, error
    assert error["message"][0].islower() and "Input should" not in error["message"], error  # a plain sentence


def test_every_refusal_is_in_the_prediction_log(server, connection):
    flush_log(server.app)
    start = len(read_predictions(server.cfg.prediction_log))
    post(connection, "/v1/completions", b"{broken")
    post(connection, "/v1/completions", json.dumps({**COMPLETION, "user": SURROGATE}).encode())
    post(connection, "/v1/completions", json.dumps(COMPLETION).encode(), "text/plain")
    flush_log(server.app)
    rows = read_predictions(server.cfg.prediction_log)[start:]
    assert [(r["endpoint"], r["status"], r["outcome"]) for r in rows] == [
        ("/v1/completions", 400, "refused"), ("/v1/completions", 400, "refused"),
        ("/v1/completions", 415, "refused")]
