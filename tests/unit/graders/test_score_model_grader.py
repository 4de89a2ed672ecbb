"""score_model graders through an OpenAI-compatible chat completions endpoint: a small HTTP server
here stands in for one (a tunelab server answers the same requests). The grader renders its
messages' templates, reads the score from the reply (a number, or JSON {"result": ...}), clamps it
to its range, and turns an unusable reply or a failed request into a zero with the reason."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tunelab.graders import GraderRuntime, grade, run_grader

GRADER = {"type": "score_model", "name": "judge", "model": "judge-model", "range": [0, 10],
          "sampling_params": {"temperature": 0, "seed": 7, "max_completions_tokens": 5},
          "input": [{"role": "developer", "content": "Score the answer from 0 to 10."},
                    {"role": "user", "content": [
                        {"type": "input_text", "text": "Question: {{ item.question }}\nAnswer: {{ sample.output_text }}"}]}]}


class FakeEndpoint(BaseHTTPRequestHandler):
    replies: list[str] = []
    requests: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "body": body})
        reply = type(self).replies.pop(0)
        payload = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                   "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": reply}}],
                   "usage": {"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22}}
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    FakeEndpoint.replies, FakeEndpoint.requests = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", FakeEndpoint
    server.shutdown()


def test_the_scoring_model_gets_the_rendered_messages_and_its_score_is_read(endpoint):
    url, fake = endpoint
    fake.replies = ["7"]
    result = grade(GRADER, "Paris", {"question": "Capital of France?"}, runtime=GraderRuntime(base_url=url))
    assert result.score == 7.0 and result.error is None
    sent = fake.requests[0]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["messages"] == [
        {"role": "system", "content": "Score the answer from 0 to 10."},
        {"role": "user", "content": "Question: Capital of France?\nAnswer: Paris"}]
    assert sent["body"]["model"] == "judge-model" and sent["body"]["temperature"] == 0
    assert sent["body"]["seed"] == 7 and sent["body"]["max_completion_tokens"] == 5


@pytest.mark.parametrize("reply,score,error", [
    ('{"result": 8.5, "steps": []}', 8.5, None),   # OpenAI's structured form
    ('{"score": 3}', 3.0, None),
    ("I would give it 6 out of 10", 6.0, None),    # the first number in the text
    ("15", 10.0, None),                            # clamped to the range, with a reason
    ("-2", 0.0, None),
    ("no idea", 0.0, "model_grader_parse_error"),
])
def test_replies_become_scores(endpoint, reply, score, error):
    url, fake = endpoint
    fake.replies = [reply]
    result = grade(GRADER, "x", {"question": "q"}, runtime=GraderRuntime(base_url=url))
    assert (result.score, result.error) == (score, error)
    if reply in ("15", "-2", "no idea"):
        assert result.reason


def test_an_unreachable_endpoint_is_a_zero_with_the_servers_error():
    runtime = GraderRuntime(base_url="http://127.0.0.1:9/v1", request_timeout_s=2)
    result = grade(GRADER, "x", {"question": "q"}, runtime=runtime)
    assert (result.score, result.error) == (0.0, "model_grader_server_error") and "request failed" in result.reason


def test_run_grader_reports_the_scoring_models_token_usage(endpoint):
    url, fake = endpoint
    fake.replies = ["5"]
    response = run_grader(GRADER, "x", {"question": "q"}, runtime=GraderRuntime(base_url=url))
    assert response["reward"] == 5.0
    assert response["model_grader_token_usage_per_model"] == {"judge-model": 22}
    assert response["metadata"]["token_usage"] == 22
