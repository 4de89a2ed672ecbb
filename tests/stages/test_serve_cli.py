"""`tunelab serve RUN_DIR` as a user runs it: the command registers the run, serves it on
127.0.0.1, and on SIGTERM stops taking connections, finishes the answer it is streaming, flushes
the prediction log and exits. Refusals (0.0.0.0 without keys, a missing run, a run that is no ONNX
export with --engine onnx) are TunelabErrors: one sentence and exit code 2."""
import json
import os
import signal
import subprocess
import sys

import httpx2

from cli_helpers import tunelab as run_tunelab
from serve_helpers import free_port, wait_ready
from tunelab.serve.predlog import read_predictions


def tunelab(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "tunelab.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, **kwargs)


def test_serve_registers_answers_and_drains_on_sigterm(tiny_llama_run, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = tunelab("serve", str(tiny_llama_run), "--port", str(port), f"serve.prediction_log={tmp_path / 'p.db'}",
                     f"serve.registry={tmp_path / 'registry.json'}", "serve.model_name=tiny", cwd=tmp_path)
    try:
        wait_ready(base, server)
        registry = json.loads((tmp_path / "registry.json").read_text())
        assert registry["live"] == "v1" and registry["versions"][0]["path"] == str(tiny_llama_run.resolve())
        body = {"model": "tiny", "messages": [{"role": "user", "content": "drain me"}], "max_tokens": 200,
                "temperature": 0, "stream": True}
        with httpx2.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=60) as response:
            lines = response.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            assert json.loads(first[6:])["system_fingerprint"] == "v1"
            server.send_signal(signal.SIGTERM)  # mid-answer
            rest = [line for line in lines if line.startswith("data: ")]
        assert rest[-1] == "data: [DONE]"
        # uvicorn shuts down cleanly, then re-raises the signal it caught, as process managers expect
        assert server.wait(timeout=60) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in server.stdout.read()
    finally:
        if server.poll() is None:
            server.kill()
    logged = read_predictions(tmp_path / "p.db")
    assert len(logged) == 1 and logged[0]["status"] == 200 and logged[0]["model_version"] == "v1"
    assert logged[0]["completion_tokens"] > 0


def test_serve_refuses_open_binding_without_keys_and_missing_runs(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tunelab.cli import app
    from tunelab.errors import TunelabError
    monkeypatch.delenv("TUNELAB_API_KEYS", raising=False)
    open_bind = CliRunner().invoke(app, ["serve", str(tmp_path), "--host", "0.0.0.0"])
    assert isinstance(open_bind.exception, TunelabError)  # main() prints it in one sentence, exit code 2
    assert "refusing to listen on 0.0.0.0 without API keys" in str(open_bind.exception)
    missing = CliRunner().invoke(app, ["serve", str(tmp_path / "nope")])
    assert isinstance(missing.exception, TunelabError) and "run directory not found" in str(missing.exception)
    monkeypatch.setenv("TUNELAB_API_KEYS", "k1")  # with a key, an open address is allowed
    keyed = CliRunner().invoke(app, ["serve", str(tmp_path / "nope"), "--host", "0.0.0.0"])
    assert "run directory not found" in str(keyed.exception)


def test_serve_engine_onnx_refuses_a_run_that_is_no_onnx_export(tiny_classifier_run, tmp_path):
    for flag in ("--engine", "--backend"):  # --backend: the older name of the option
        refused = run_tunelab("serve", tiny_classifier_run, flag, "onnx", "--port", free_port(),
                          f"serve.registry={tmp_path / 'r.json'}", check=False, cwd=tmp_path, timeout=120)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert "serve.engine onnx serves an ONNX export, and this directory is not one" in refused.stderr
    assert not (tmp_path / "r.json").exists()  # nothing registered
