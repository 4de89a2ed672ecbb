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

import httpx
from openai import OpenAI

REQUESTS = 60  # enough traffic for the monitor's drift tests to mean something


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base: str, server: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode} before it was ready")
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server was not ready within {timeout:.0f} s")


def main(run_dir: str, prepared: str, work: str) -> None:
    work_dir = Path(work)
    work_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    tunelab = str(Path(sys.executable).with_name("tunelab"))
    server = subprocess.Popen(
        [tunelab, "serve", run_dir, "--port", str(port), f"serve.prediction_log={work_dir / 'predictions.db'}",
         f"serve.registry={work_dir / 'registry.json'}"], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        wait_ready(base, server)
        texts = [json.loads(line)["text"] for line in (Path(prepared) / "test.jsonl").open(encoding="utf-8")]
        sample = random.Random(0).sample(texts, REQUESTS)
        client = OpenAI(base_url=f"{base}/v1", api_key="not-needed-on-localhost")
        model = client.models.list().data[0].id
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": sample[0]}],
                                               max_tokens=8, temperature=0)
        print(f"openai client -> {model}: {sample[0][:60]!r} -> {reply.choices[0].message.content!r}")
        labels = {}
        with httpx.Client(base_url=base, timeout=30) as http:
            for text in sample[1:]:
                answer = http.post("/v1/classify", json={"text": text}).raise_for_status().json()
                labels[answer["label"]] = labels.get(answer["label"], 0) + 1
            metrics = http.get("/metrics").text
        print(f"/v1/classify x{len(sample) - 1}: {labels}")
        served = [line for line in metrics.splitlines() if line.startswith("tunelab_requests_total")]
        print("prometheus: " + "; ".join(served))
    finally:
        server.send_signal(signal.SIGTERM)  # graceful: drains requests and flushes the log
        server.wait(timeout=60)
    print(f"server stopped (exit {server.returncode}); prediction log {work_dir / 'predictions.db'}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
