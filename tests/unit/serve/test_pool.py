"""The model pool of a running app: adapters registered while it serves (admin routes under the
API keys, the registry's models), loaded by their first request into an LRU of
serve.max_adapters (a ninth evicts the least recently used), requests for different adapters
answered in one batch, each answer what the adapter gives when served alone; whole runs served
as models of their own in an LRU of serve.max_models; /v1/models says what is registered and
what is loaded, by id only. Everything is counted (loads, evictions), never timed."""
import threading

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from serve_helpers import answered_alone, flush_log, live_server, serve_config, wait_ready, wait_until
from tunelab.serve.app import create_app
from tunelab.serve.predlog import read_predictions

CHAT, ADMIN = "/v1/chat/completions", "/v1/admin/models"
KEY = "pool-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


def conversation(i: int) -> list[dict]:
    return [{"role": "user", "content": f"item {i} {'xyz'[i % 3] * (i % 5)}"}]


def ask(http, model: str, i: int, max_tokens: int = 8) -> str:
    response = http.post(CHAT, json={"model": model, "messages": conversation(i), "max_tokens": max_tokens,
                                     "temperature": 0}, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def metric(http, name: str, **labels) -> float:
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def listed(http) -> dict[str, dict]:
    response = http.get("/v1/models", headers=AUTH)
    assert response.status_code == 200, response.text
    return {card["id"]: card for card in response.json()["data"]}


def register(http, model_id: str, path, status: int = 201):
    response = http.post(ADMIN, json={"id": model_id, "path": str(path)}, headers=AUTH)
    assert response.status_code == status, response.text
    return response.json()


@pytest.fixture()
def app_for(tmp_path):
    clients = []

    def make(run, **overrides):
        client = TestClient(create_app(serve_config(run, tmp_path, model_name="base", api_keys=[KEY], **overrides)))
        clients.append(client.__enter__())
        return wait_ready(client)

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def test_a_ninth_adapter_evicts_the_least_recently_used_and_a_request_loads_it_again(
        app_for, tiny_llama_run, eight_adapters, lora_adapters):
    http = app_for(tiny_llama_run, cache_size=0)
    adapters = {**eight_adapters, "ninth": lora_adapters["support"]}
    for name, path in adapters.items():
        card = register(http, name, path)
        assert (card["id"], card["parent"], card["loaded"]) == (name, "base", False)
    first = {name: ask(http, name, 1) for name in eight_adapters}  # each first request loads its adapter
    assert metric(http, "tunelab_model_loads_total", kind="adapter") == 8
    assert metric(http, "tunelab_model_load_seconds_count", kind="adapter") == 8
    assert metric(http, "tunelab_model_evictions_total", kind="adapter") == 0
    assert all(listed(http)[name]["loaded"] for name in eight_adapters) and not listed(http)["ninth"]["loaded"]
    ask(http, "a0", 2)  # a0 used again: a1 is now the least recently used
    ask(http, "ninth", 1)
    cards = listed(http)
    assert not cards["a1"]["loaded"] and cards["ninth"]["loaded"] and cards["a0"]["loaded"]
    assert sum(card["loaded"] for card in cards.values()) == 9  # the served model and 8 adapters
    assert metric(http, "tunelab_model_evictions_total", kind="adapter") == 1
    assert metric(http, "tunelab_models_loaded", kind="adapter") == 8
    assert ask(http, "a1", 1) == first["a1"]  # loaded again (evicting a2), the same answer
    assert metric(http, "tunelab_model_loads_total", kind="adapter") == 10
    assert not listed(http)["a2"]["loaded"]
    assert len(set(first.values())) >= 6  # different adapters, different answers (two random ones may agree)


def test_requests_for_different_adapters_share_a_batch_and_answer_as_each_adapter_alone(
        tmp_path, tiny_llama_run, eight_adapters):
    settings = serve_config(tiny_llama_run, tmp_path, model_name="base", max_batch_size=16, max_wait_ms=200,
                            adapters={name: str(path) for name, path in eight_adapters.items()}, cache_size=0)
    with live_server(settings) as server:
        backend = server.app.state.service.live.backend
        generate, calls = backend.generate, []

        def spy(jobs):  # the adapters each model call mixed
            calls.append({job.adapter for job in jobs})
            return generate(jobs)

        backend.generate = spy
        import httpx2
        names = list(eight_adapters) + ["base"]
        answers: dict[tuple[str, int], str] = {}

        def client(c: int) -> None:
            with httpx2.Client(base_url=server.base_url, timeout=120) as http:
                for k in range(2):
                    name, i = names[(c + k) % len(names)], c
                    answers[(name, i)] = ask(http, name, i)

        threads = [threading.Thread(target=client, args=(c,)) for c in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(answers) == 32
    assert any(len(adapters) > 1 for adapters in calls), calls  # adapters were mixed in one call
    runs = {**eight_adapters, "base": tiny_llama_run}
    for name, run in runs.items():
        asked = sorted(i for n, i in answers if n == name)
        alone = answered_alone(run, [conversation(i) for i in asked], max_tokens=8)
        assert [answers[(name, i)] for i in asked] == alone, name


def test_admin_routes_need_the_key_and_unregistering_frees_the_adapter(app_for, tiny_llama_run, lora_adapters,
                                                                       tiny_classifier_run, tmp_path):
    http = app_for(tiny_llama_run)
    body = {"id": "legal", "path": str(lora_adapters["legal"])}
    assert http.post(ADMIN, json=body).status_code == 401
    assert http.delete(f"{ADMIN}/legal").status_code == 401
    register(http, "legal", lora_adapters["legal"])
    assert str(lora_adapters["legal"]) not in http.get("/v1/models", headers=AUTH).text  # ids, never paths
    answer = ask(http, "legal", 3)
    assert answer == answered_alone(lora_adapters["legal"], [conversation(3)], 8)[0]
    # one sentence each, and nothing registered
    for bad, param in [({"id": "x", "path": str(tmp_path / "missing")}, "path"),
                       ({"id": "base", "path": str(lora_adapters["legal"])}, "id"),
                       ({"id": "has space", "path": str(lora_adapters["legal"])}, "id"),
                       ({"id": "x", "path": "bad\u0000path"}, "path")]:
        response = http.post(ADMIN, json=bad, headers=AUTH)
        assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text
    assert set(listed(http)) == {"base", "legal"}
    assert http.delete(f"{ADMIN}/legal", headers=AUTH).json() == {"id": "legal", "object": "model", "deleted": True}
    wait_until(lambda: metric(http, "tunelab_models_loaded", kind="adapter") == 0, "the adapter unloaded")
    assert http.post(CHAT, json={"model": "legal", "messages": conversation(3)}, headers=AUTH).status_code == 404
    assert http.delete(f"{ADMIN}/legal", headers=AUTH).status_code == 404
    assert http.delete(f"{ADMIN}/base", headers=AUTH).status_code == 404  # the served model is not in the pool
    # the id registered again with another adapter answers as that one (no stale cached answer)
    register(http, "legal", lora_adapters["support"])
    assert ask(http, "legal", 3) == answered_alone(lora_adapters["support"], [conversation(3)], 8)[0]
    flush_log(http.app)
    logged = [r for r in read_predictions(http.app.state.service.cfg.prediction_log) if r["adapter"] == "legal"]
    assert logged and all(r["status"] in (200, 404) for r in logged)


def test_whole_runs_are_models_of_their_own_in_an_lru_of_max_models(app_for, tiny_llama_run, other_llama_run,
                                                                   tiny_classifier_run):
    http = app_for(tiny_llama_run, max_models=1)
    card = register(http, "other", other_llama_run)
    assert (card["parent"], card["loaded"], card["task"]) == (None, False, "generative")
    register(http, "sentiment", tiny_classifier_run)
    other = ask(http, "other", 4)
    assert other == answered_alone(other_llama_run, [conversation(4)], 8)[0] != ask(http, "base", 4)
    assert listed(http)["other"]["loaded"] and listed(http)["other"]["context_length"] == 256
    classified = http.post("/v1/classify", json={"model": "sentiment", "text": "great"}, headers=AUTH)
    assert classified.status_code == 200 and classified.json()["label"] in {"negative", "neutral", "positive"}
    cards = listed(http)
    assert cards["sentiment"]["loaded"] and not cards["other"]["loaded"]  # max_models 1: the older one went
    assert metric(http, "tunelab_model_loads_total", kind="model") == 2
    assert metric(http, "tunelab_model_evictions_total", kind="model") == 1
    assert ask(http, "other", 4) == other  # loaded again on its next request
    assert metric(http, "tunelab_model_loads_total", kind="model") == 3


def test_models_in_the_registry_are_served_without_a_restart(app_for, tiny_llama_run, lora_adapters, tmp_path):
    from tunelab.serve.registry import Registry
    registry = Registry(tmp_path / "registry.json")
    http = app_for(tiny_llama_run, registry=str(registry.path), registry_poll_s=0.05)
    registry.add_model("support", lora_adapters["support"])
    wait_until(lambda: "support" in listed(http), "the registered adapter listed")
    assert ask(http, "support", 5) == answered_alone(lora_adapters["support"], [conversation(5)], 8)[0]
    register(http, "legal", lora_adapters["legal"])  # the admin route records it in the registry too
    assert [m["id"] for m in registry.models()] == ["support", "legal"]
    registry.remove_model("support")
    wait_until(lambda: "support" not in listed(http), "the removed adapter gone")
    assert http.delete(f"{ADMIN}/legal", headers=AUTH).status_code == 200 and registry.models() == []


def test_a_broken_adapter_fails_its_own_requests_only(app_for, tiny_llama_run, lora_adapters, tmp_path):
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(lora_adapters["legal"], broken)
    (broken / "adapter_model.safetensors").write_bytes(b"not weights")
    http = app_for(tiny_llama_run)
    register(http, "broken", broken)
    register(http, "legal", lora_adapters["legal"])
    response = http.post(CHAT, json={"model": "broken", "messages": conversation(1)}, headers=AUTH)
    assert response.status_code == 500 and response.json()["error"]["code"] == "model_load_failed"
    assert "broken" in response.json()["error"]["message"]
    assert ask(http, "legal", 1) == answered_alone(lora_adapters["legal"], [conversation(1)], 8)[0]
    assert metric(http, "tunelab_model_load_failures_total", kind="adapter") == 1


def test_the_pool_refuses_what_it_cannot_serve_in_one_sentence(app_for, tiny_llama_run, lora_adapters,
                                                              other_llama_run, tiny_classifier_run):
    http = app_for(tiny_llama_run, max_adapters=0, max_models=0)
    adapter = http.post(ADMIN, json={"id": "legal", "path": str(lora_adapters["legal"])}, headers=AUTH).json()
    assert "serve.max_adapters is 0" in adapter["error"]["message"]
    whole = http.post(ADMIN, json={"id": "other", "path": str(other_llama_run)}, headers=AUTH).json()
    assert "serve.max_models is 0" in whole["error"]["message"]
    # on a classifier's server a LoRA adapter of the Llama is no adapter of the served base: a model of its own
    classifier = app_for(tiny_classifier_run)
    card = register(classifier, "legal", lora_adapters["legal"])
    assert card["parent"] is None and card["task"] == "generative"


def test_a_pool_only_server_answers_the_runs_registered_in_process_under_fine_tuned_names(tmp_path, tiny_llama_run,
                                                                                        other_llama_run):
    """What the jobs server composes: no served model, only runs registered at runtime
    (`service.pool.register`), under OpenAI's `ft:` names, which an `ID:TASK` suffix can follow."""
    from tunelab.config import ServeConfig
    from tunelab.errors import TunelabError
    app = create_app(ServeConfig(prediction_log=None, registry=None, max_wait_ms=5.0), pool_only=True)
    with TestClient(app) as http:
        wait_ready(http)
        assert http.get("/v1/models").json()["data"] == []
        missing = http.post(CHAT, json={"model": "nope", "messages": conversation(1), "max_tokens": 4})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
        app.state.service.pool.register("ft:tiny:demo:ftjob-abc", other_llama_run, source="jobs")
        app.state.service.pool.register("tiny", tiny_llama_run, source="jobs")
        assert [m["id"] for m in http.get("/v1/models").json()["data"]] == ["ft:tiny:demo:ftjob-abc", "tiny"]
        response = http.post(CHAT, json={"model": "ft:tiny:demo:ftjob-abc", "messages": conversation(4),
                                         "max_tokens": 8, "temperature": 0})
        assert response.json()["choices"][0]["message"]["content"] == answered_alone(other_llama_run,
                                                                                    [conversation(4)], 8)[0]
        for bad in ("a:b", "ft:", "ft:x:y:z:w:v:u"):
            with pytest.raises(TunelabError):
                app.state.service.pool.register(bad, other_llama_run)
