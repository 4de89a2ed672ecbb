"""Many adapters on one `tunelab serve` process, as a user runs it: eight LoRA adapters of the
served base registered while it serves with `tunelab models register RUN --id ID` (no
restart), 32 clients sending interleaved requests for all of them through the `openai` client,
every answer equal to that adapter's answer when served alone; `tunelab models list` shows
them and `tunelab models unregister` takes one away."""
import json
import subprocess
import threading

import pytest

from cli_helpers import ENV, TUNELAB, tunelab
from serve_helpers import answered_alone, free_port, wait_ready, wait_until

CLIENTS, EACH = 32, 4


@pytest.mark.slow
def test_eight_adapters_registered_on_a_live_server_answer_32_clients_as_each_alone(tiny_llama_run, eight_adapters,
                                                                                    tmp_path):
    import httpx2
    from openai import OpenAI
    registry, port = tmp_path / "registry.json", free_port()
    server = subprocess.Popen([TUNELAB, "serve", str(tiny_llama_run), "--port", str(port), "serve.model_name=base",
                               f"serve.registry={registry}", "serve.registry_poll_s=0.1", "serve.max_batch_size=32",
                               f"serve.prediction_log={tmp_path / 'predictions.db'}"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=ENV)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url, server)
        for name, path in eight_adapters.items():
            assert tunelab("models", "register", path, "--id", name, "-r", registry).stdout.startswith(f"{name}: ")
        listing = tunelab("models", "list", "-r", registry).stdout
        assert all(name in listing for name in eight_adapters)

        def served() -> set[str]:
            return {card["id"] for card in httpx2.get(f"{base_url}/v1/models", timeout=10).json()["data"]}

        wait_until(lambda: served() >= set(eight_adapters), "the eight adapters listed by the server")
        client = OpenAI(base_url=f"{base_url}/v1", api_key="unused-on-localhost", max_retries=0, timeout=300)
        names = list(eight_adapters)
        answers: dict[tuple[str, int], str] = {}

        def send(c: int) -> None:
            for k in range(EACH):  # each client walks the adapters from its own starting point
                name, prompt = names[(c + k) % len(names)], c * EACH + k
                reply = client.chat.completions.create(model=name, messages=[{"role": "user", "content": f"q{prompt}"}],
                                                       max_tokens=8, temperature=0)
                answers[(name, prompt)] = reply.choices[0].message.content

        threads = [threading.Thread(target=send, args=(c,)) for c in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(answers) == CLIENTS * EACH
        for name, path in eight_adapters.items():
            prompts = sorted(p for n, p in answers if n == name)
            alone = answered_alone(path, [[{"role": "user", "content": f"q{p}"}] for p in prompts], max_tokens=8)
            assert [answers[(name, p)] for p in prompts] == alone, name
        cards = {c["id"]: c for c in httpx2.get(f"{base_url}/v1/models", timeout=10).json()["data"]}
        assert all(cards[name]["loaded"] and cards[name]["parent"] == "base" for name in eight_adapters)
        assert str(tmp_path) not in json.dumps(cards)

        assert tunelab("models", "unregister", "a3", "-r", registry).stdout.strip() == "a3 unregistered"
        wait_until(lambda: "a3" not in served(), "a3 no longer served")
        missing = tunelab("models", "unregister", "a3", "-r", registry, check=False)
        assert missing.returncode == 2 and "no model 'a3' is registered" in missing.stderr
    finally:
        server.terminate()
        server.wait(timeout=60)
