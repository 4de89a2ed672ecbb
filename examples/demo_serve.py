"""Step 4 of `make demo`: serve the tuned classifier, send it traffic the way an application
would (the official `openai` client and plain HTTP to /v1/classify), then stop the server
gracefully so its prediction log is complete for `tunelab monitor`.

Usage: python examples/demo_serve.py RUN_DIR PREPARED_DIR WORK_DIR
"""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from urllib.error import URLError
from urllib.request import Request, urlopen

from openai import OpenAI

REQUESTS = 60  # enough traffic for the monitor's drift tests to mean something


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: dict | None = None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    request = Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urlopen(request, timeout=30) as response:
        return response.status, response.read().decode()


def wait_ready(base: str, server: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode} before it was ready")
        try:
            if http("GET", f"{base}/ready")[0] == 200:
                return
        except (URLError, OSError):  # not listening yet, or 503 while warming up
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server was not ready within {timeout:.0f} s")


def main(run_dir: str, prepared: str, work: str) -> None:
    work_dir = Path(work)
    work_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    tunelab = str(Path(sys.executable).with_name("tunelab"))
    server_log = (work_dir / "server.log").open("w")  # uvicorn's access log: one line a request
    server = subprocess.Popen(
        [tunelab, "serve", run_dir, "--port", str(port), f"serve.prediction_log={work_dir / 'predictions.db'}",
         f"serve.registry={work_dir / 'registry.json'}"], env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=server_log, stderr=subprocess.STDOUT)
    print(f"tunelab serve {run_dir} on {base} (log: {server_log.name})")
    try:
        wait_ready(base, server)
        texts = [json.loads(line)["text"] for line in (Path(prepared) / "test.jsonl").open(encoding="utf-8")]
        sample = random.Random(0).sample(texts, REQUESTS)
        client = OpenAI(base_url=f"{base}/v1", api_key="not-needed-on-localhost")
        model = client.models.list().data[0].id
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": sample[0]}],
                                               max_tokens=8, temperature=0)
        print(f"openai client -> {model}: {sample[0][:60]!r} -> {reply.choices[0].message.content!r}")
        labels: dict[str, int] = {}
        for text in sample[1:]:
            answer = json.loads(http("POST", f"{base}/v1/classify", {"text": text})[1])
            labels[answer["label"]] = labels.get(answer["label"], 0) + 1
        metrics = http("GET", f"{base}/metrics")[1]
        print(f"/v1/classify x{len(sample) - 1}: {labels}")
        served = [line for line in metrics.splitlines() if line.startswith("tunelab_requests_total")]
        print("prometheus: " + "; ".join(served))
    finally:
        server.send_signal(signal.SIGTERM)  # graceful: drains requests and flushes the log
        server.wait(timeout=60)
        server_log.close()
    # uvicorn re-raises the SIGTERM it handled, so a clean stop reads as killed by that signal
    how = "gracefully" if server.returncode in (0, -signal.SIGTERM) else f"with exit code {server.returncode}"
    print(f"server stopped {how}; prediction log {work_dir / 'predictions.db'}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
