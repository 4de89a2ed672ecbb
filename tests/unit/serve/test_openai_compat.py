"""What outside OpenAI clients (lm-evaluation-harness among them) need from /v1/completions and
/v1/chat/completions: token-id prompts, echo, log-probabilities in OpenAI's shapes (checked
against a plain forward pass), max_tokens and max_completion_tokens checked alike, errors that
name the right param in plain sentences, and a schema whose bounds are the served model's."""
import pytest
import torch
from fastapi.testclient import TestClient

from serve_helpers import serve_config, wait_ready
from tunelab.serve.app import create_app

COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"


@pytest.fixture(scope="module")
def client(tiny_llama_run, tmp_path_factory):
    cfg = serve_config(tiny_llama_run, tmp_path_factory.mktemp("compat"), model_name="tiny",
                       guard={"max_tokens": 64})
    with TestClient(create_app(cfg)) as http:
        wait_ready(http)
        yield http, http.app.state.service.live.backend


def complete(http, **fields):
    response = http.post(COMPLETIONS, json={"model": "tiny", "temperature": 0, "max_tokens": 4, **fields})
    assert response.status_code == 200, response.text
    return response.json()


def test_token_id_prompts_answer_as_their_text_does(client):
    http, backend = client
    ids = backend.encode("abc", special_tokens=True)
    by_text = complete(http, prompt="abc")["choices"][0]["text"]
    assert complete(http, prompt=ids)["choices"][0]["text"] == by_text
    several = complete(http, prompt=[ids, backend.encode("xyz", special_tokens=True)])["choices"]
    assert [c["index"] for c in several] == [0, 1] and several[0]["text"] == by_text
    outside = http.post(COMPLETIONS, json={"model": "tiny", "prompt": [1, backend.vocab_size]})
    assert outside.status_code == 400 and outside.json()["error"]["param"] == "prompt"
    assert outside.json()["error"]["code"] == "invalid_token_id"


def test_echo_and_logprobs_in_the_legacy_shape_agree_with_a_forward_pass(client):
    http, backend = client
    ids = backend.encode("hello there", special_tokens=False)
    answer = complete(http, prompt=ids, echo=True, logprobs=2, max_tokens=1, seed=1234)  # what lm-eval sends
    choice = answer["choices"][0]
    scores = choice["logprobs"]
    assert choice["text"].startswith(backend.decode(ids))
    assert len(scores["tokens"]) == len(scores["token_logprobs"]) == len(scores["top_logprobs"]) == len(ids) + 1
    assert scores["token_logprobs"][0] is None and scores["top_logprobs"][0] is None
    assert scores["text_offset"][0] == 0 and scores["text_offset"] == sorted(scores["text_offset"])
    generated = backend.encode(choice["text"][len(backend.decode(ids)):], special_tokens=False)
    with torch.inference_mode():
        expected = backend.model(input_ids=torch.tensor([ids + generated[:1]])).logits[0].log_softmax(-1)
    for position, (token, logprob) in enumerate(zip((ids + generated)[1:], scores["token_logprobs"][1:])):
        assert logprob == pytest.approx(float(expected[position, token]), abs=1e-4)
    for text, logprob, top in zip(scores["tokens"][1:], scores["token_logprobs"][1:], scores["top_logprobs"][1:]):
        assert top[text] == logprob and 2 <= len(top) <= 3  # two alternatives, and the token itself
    # greedy: the generated token is the best alternative, exactly (lm-eval's is_greedy test)
    assert scores["token_logprobs"][-1] == max(scores["top_logprobs"][-1].values())
    plain = complete(http, prompt=ids, logprobs=0, max_tokens=3)["choices"][0]
    assert len(plain["logprobs"]["tokens"]) == 3 and plain["logprobs"]["text_offset"][0] == len(backend.decode(ids))


def test_chat_logprobs_in_the_chat_shape(client):
    http, _ = client
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": 0}
    plain = http.post(CHAT, json=body).json()["choices"][0]
    scored = http.post(CHAT, json={**body, "logprobs": True, "top_logprobs": 2}).json()["choices"][0]
    assert scored["message"] == plain["message"] and plain["logprobs"] is None
    content = scored["logprobs"]["content"]
    assert "".join(t["token"] for t in content) == plain["message"]["content"]
    assert all(len(t["top_logprobs"]) == 2 and t["top_logprobs"][0]["logprob"] == t["logprob"] for t in content)


@pytest.mark.parametrize("fields, param, code", [
    ({"max_tokens": 65}, "max_tokens", "max_tokens_exceeded"),
    ({"max_completion_tokens": 65}, "max_completion_tokens", "max_tokens_exceeded"),
    ({"max_tokens": 65, "max_completion_tokens": 4}, "max_tokens", "max_tokens_exceeded"),
    ({"max_tokens": 4, "max_completion_tokens": 65}, "max_completion_tokens", "max_tokens_exceeded"),
    ({"max_completion_tokens": "x"}, "max_completion_tokens", "invalid_request"),
])
def test_max_tokens_and_max_completion_tokens_are_checked_alike(client, fields, param, code):
    http, _ = client
    response = http.post(CHAT, json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], **fields})
    error = response.json()["error"]
    assert response.status_code == 400 and (error["param"], error["code"]) == (param, code), error


@pytest.mark.parametrize("route, fields, message", [
    (COMPLETIONS, {"prompt": "hi", "max_tokens": "x"}, "max_tokens must be a whole number"),
    (COMPLETIONS, {"prompt": "hi", "max_tokens": 1.5}, "max_tokens must be a whole number"),
    (COMPLETIONS, {"prompt": "hi", "max_tokens": 0}, "max_tokens must be at least 1"),
    (COMPLETIONS, {"prompt": "hi", "temperature": 3}, "temperature must be at most 2"),
    (COMPLETIONS, {"prompt": "hi", "n": 9}, "n must be at most 8"),
    (COMPLETIONS, {"prompt": 5}, "prompt must be text, a list of texts, a list of token ids or a list of lists "
                                 "of token ids"),
    (COMPLETIONS, {"prompt": [1, -2]}, "prompt[1] must be at least 0"),
    (COMPLETIONS, {"prompt": "hi", "stream": "yes"}, "stream must be true or false"),
    (COMPLETIONS, {"prompt": "hi", "suffix": "x"}, "suffix is not a field this server accepts"),
    (COMPLETIONS, {"prompt": "hi", "stop": ["a", ""]}, "stop[1] must not be empty"),
    (COMPLETIONS, {}, "prompt is required"),
    (CHAT, {"messages": [{"role": "bot", "content": "x"}]},
     "messages[0].role must be one of 'system', 'developer', 'user' or 'assistant'"),
    (CHAT, {"messages": [{"role": "user", "content": 3}]}, "messages[0].content must be text or a list of text parts"),
    (CHAT, {"messages": []}, "messages must hold at least 1 item(s)"),
])
def test_errors_are_plain_sentences_naming_the_param(client, route, fields, message):
    http, _ = client
    response = http.post(route, json={"model": "tiny", **fields})
    error = response.json()["error"]
    assert response.status_code == 400 and error["message"] == message, error
    assert error["param"] == message.split(" ")[0]


def test_the_schema_states_the_served_models_bounds(client):
    http, backend = client
    schemas = http.get("/openapi.json").json()["components"]["schemas"]
    ceiling = min(64, backend.context_length - 1)
    for name, field in [("CompletionRequest", "max_tokens"), ("ChatCompletionRequest", "max_completion_tokens")]:
        options = schemas[name]["properties"][field]["anyOf"]
        assert [o["maximum"] for o in options if o.get("type") == "integer"] == [ceiling]
    prompt = str(schemas["CompletionRequest"]["properties"]["prompt"])
    assert f"'maximum': {backend.vocab_size - 1}" in prompt
    assert schemas["ClassifyRequest"]["properties"]["task"]["anyOf"] == [{"type": "null"}]  # a single-task run
    card = http.get("/v1/models").json()["data"][0]
    assert card["context_length"] == backend.context_length and card["task"] == "generative"
