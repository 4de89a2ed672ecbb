"""Two `tunelab serve` processes on one registry file, as two teams in one directory would start
them: a classifier and another generative run are refused at start-up (one sentence, exit 2,
nothing registered) instead of hot-swapping the first server's model; with serve.promote=true
the second run is rolled out to both; `tunelab models promote` of another kind of model is
refused; a run that fails to load is never registered."""
import json
import shutil
import signal
import subprocess

import httpx2
import pytest

from cli_helpers import ENV, TUNELAB, tunelab
from serve_helpers import free_port, wait_ready, wait_until


def start(run, registry, *overrides, cwd):
    port = free_port()
    process = subprocess.Popen([TUNELAB, "serve", str(run), "--port", str(port), f"serve.registry={registry}",
                                f"serve.prediction_log={cwd / f'p{port}.db'}", *overrides],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd, env=ENV)
    return process, f"http://127.0.0.1:{port}"


def version(base: str) -> str:
    return httpx2.get(f"{base}/ready", timeout=10).json()["model_version"]


@pytest.mark.slow
def test_two_servers_on_one_registry_do_not_step_on_each_other(tiny_llama_run, tiny_classifier_run, tmp_path):
    from tiny_models import build_tiny_llama
    from transformers import AutoTokenizer
    second = build_tiny_llama(tmp_path / "second", AutoTokenizer.from_pretrained(tiny_llama_run), hidden=64,
                              layers=2, heads=4, max_positions=256, seed=5, tied=False)
    registry = tmp_path / "registry.json"
    first, first_url = start(tiny_llama_run, registry, "serve.model_name=chat", "serve.registry_poll_s=0.1",
                             cwd=tmp_path)
    promoted = None
    try:
        wait_ready(first_url, first)
        for run, refusal in [(tiny_classifier_run, "this registry belongs to a generative model ('chat') and this "
                                                   "server serves a classification one"),
                             (second, f"another server (pid {first.pid} on")]:
            refused = tunelab("serve", run, "--port", free_port(), f"serve.registry={registry}", check=False,
                              cwd=tmp_path, timeout=120)
            assert refused.returncode == 2 and refusal in refused.stderr and "Traceback" not in refused.stderr
        state = json.loads(registry.read_text())
        assert state["live"] == "v1" and [v["path"] for v in state["versions"]] == [str(tiny_llama_run.resolve())]
        assert version(first_url) == "v1"

        promoted, promoted_url = start(second, registry, "serve.promote=true", cwd=tmp_path)  # asked for
        wait_ready(promoted_url, promoted)
        assert version(promoted_url) == "v2" and json.loads(registry.read_text())["live"] == "v2"
        wait_until(lambda: version(first_url) == "v2", "the first server swaps to v2")

        tunelab("models", "register", tiny_classifier_run, "-r", registry)
        refused = tunelab("models", "promote", "v3", "-r", registry, check=False)
        assert refused.returncode == 2 and "v3 is a classification run and this registry serves a generative" \
            in refused.stderr
        assert version(first_url) == version(promoted_url) == "v2"
        assert len(json.loads(registry.read_text())["servers"]) == 2
    finally:
        for process in (first, promoted):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
    assert json.loads(registry.read_text())["servers"] == []  # each server took itself off at shutdown


def test_a_run_that_fails_to_load_is_not_registered(tiny_llama_run, tmp_path):
    broken = shutil.copytree(tiny_llama_run, tmp_path / "broken")
    for weights in broken.glob("*.safetensors"):
        weights.unlink()
    proc = tunelab("serve", broken, "--port", free_port(), check=False, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "cannot load" in proc.stderr and "Traceback" not in proc.stderr
    registry = tmp_path / "registry.json"
    assert not registry.exists() or json.loads(registry.read_text())["versions"] == []
