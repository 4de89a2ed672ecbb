"""Work for clients that left is dropped: requests still queued when their client closes the
connection never reach the model, a running generation stops at its next token (a batch stops
once all its rows are abandoned), and a stream whose text is all held back stops too. Each is
in the prediction log as status 499, outcome abandoned. The model thread is held at a gate, so
what happens is decided by the order of events, never by timing; the assertions count model
calls and forward passes."""
import json
import shutil
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest

from serve_helpers import flush_log, live_server, serve_config, wait_until
from tunelab.serve.predlog import read_predictions

CHAT = "/v1/chat/completions"


def body(content: str, max_tokens: int, **extra) -> bytes:
    return json.dumps({"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
                       "temperature": 0, **extra}).encode()


def open_request(port: int, payload: bytes) -> socket.socket:
    """A client that sends its request and will close the connection without reading the answer."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
    return sock


def abandoned_rows(live) -> list[dict]:
    flush_log(live.app)
    return [r for r in read_predictions(live.cfg.prediction_log) if r["status"] == 499]


class Gate:
    """Holds the model thread in its `at`-th call of `target` until released; counts the calls."""

    def __init__(self, at: int):
        self.at, self.calls = at, 0
        self.reached, self.release = threading.Event(), threading.Event()

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.at:
            self.reached.set()
            assert self.release.wait(60), "the test never released the gate"


def gated(backend, gate: Gate) -> Gate:
    """Pass every generate() call of `backend` through `gate` first."""
    generate = backend.generate

    def generate_at_the_gate(jobs):
        gate()
        return generate(jobs)

    backend.generate = generate_at_the_gate
    return gate


@pytest.fixture
def served(tiny_llama_run, tmp_path):
    def serve(run=tiny_llama_run, **options):
        cfg = serve_config(run, tmp_path, model_name="tiny", cache_size=0, guard={"max_tokens": 200}, **options)
        return live_server(cfg)
    return serve


def test_queued_requests_of_clients_that_left_never_reach_the_model(served):
    with served(max_batch_size=1) as live:
        backend = live.app.state.service.live.backend
        gate = gated(backend, Gate(at=1))
        with ThreadPoolExecutor(1) as pool:
            kept = pool.submit(httpx2.post, f"{live.base_url}{CHAT}", content=body("first", 2),
                               headers={"Content-Type": "application/json"}, timeout=60)
            assert gate.reached.wait(60)  # the model thread is busy with the first request
            clients = [open_request(live.port, body(f"client {i}", 100)) for i in range(20)]
            service = live.app.state.service
            wait_until(lambda: service.batcher.depth == 20, "20 requests queued")
            for client in clients:
                client.close()
            wait_until(lambda: len(abandoned_rows(live)) == 20, "20 abandoned requests logged")
            assert service.batcher.depth == 0  # dropped from the queue as they were abandoned
            gate.release.set()
            assert kept.result().status_code == 200
        after = httpx2.post(f"{live.base_url}{CHAT}", content=body("last", 2),
                            headers={"Content-Type": "application/json"}, timeout=60)
        assert after.status_code == 200
        assert gate.calls == 2  # the first request and the last: none of the 20 in between
        rows = abandoned_rows(live)
        assert {(r["outcome"], r["endpoint"], r["completion_tokens"]) for r in rows} == {("abandoned", CHAT, None)}
        assert "tunelab_abandoned_requests_total 20.0" in httpx2.get(f"{live.base_url}/metrics").text


def test_a_running_batch_stops_once_its_clients_have_left(served):
    with served(max_batch_size=4) as live:
        backend = live.app.state.service.live.backend
        first = gated(backend, Gate(at=1))
        forwards = Gate(at=10**9)  # counts forward passes; holds the second batch at its third below
        with ThreadPoolExecutor(1) as pool:
            kept = pool.submit(httpx2.post, f"{live.base_url}{CHAT}", content=body("first", 2),
                               headers={"Content-Type": "application/json"}, timeout=60)
            assert first.reached.wait(60)
            clients = [open_request(live.port, body(f"long answer {i}", 200)) for i in range(2)]
            wait_until(lambda: live.app.state.service.batcher.depth == 2, "2 requests queued")
            backend.model.register_forward_pre_hook(lambda *_: forwards())
            forwards.at = 3  # the third forward pass of the next batch: both requests are generating
            first.release.set()
            assert forwards.reached.wait(60) and kept.result().status_code == 200
        for client in clients:
            client.close()
        wait_until(lambda: len(abandoned_rows(live)) == 2, "2 abandoned requests logged")
        forwards.release.set()
        after = httpx2.post(f"{live.base_url}{CHAT}", content=body("last", 2),
                            headers={"Content-Type": "application/json"}, timeout=60)
        assert after.status_code == 200 and first.calls == 3  # first, the abandoned batch, last
        # the abandoned batch ran at most one more step after its clients left, not its 200 tokens;
        # the last request took one prefill and its tokens
        assert forwards.calls <= 3 + 1 + 3, forwards.calls


def test_a_stream_whose_text_is_held_back_stops_when_its_client_leaves(served, tiny_llama_run, tmp_path):
    from safetensors.torch import load_file, save_file
    silent = shutil.copytree(tiny_llama_run, tmp_path / "silent")  # zero final norm: always the pad token,
    weights = load_file(silent / "model.safetensors")             # which decodes to nothing: no text is sent
    weights["model.norm.weight"].zero_()
    save_file(weights, silent / "model.safetensors", metadata={"format": "pt"})
    with served(run=silent) as live:
        model = live.app.state.service.live.backend.model
        forwards = Gate(at=3)
        model.register_forward_pre_hook(lambda *_: forwards())
        client = open_request(live.port, body("stream me", 200, stream=True))
        assert forwards.reached.wait(60)  # generating; nothing but the role chunk has been sent
        client.close()
        wait_until(lambda: len(abandoned_rows(live)) == 1, "the abandoned stream logged")
        forwards.release.set()
        wait_until(lambda: live.app.state.service.batcher.depth == 0, "queue empty")
        after = httpx2.post(f"{live.base_url}{CHAT}", content=body("last", 1),
                            headers={"Content-Type": "application/json"}, timeout=60)
        assert after.status_code == 200
        assert forwards.calls <= 3 + 1 + 1, forwards.calls  # not the 200 the stream asked for
