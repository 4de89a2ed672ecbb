"""API keys: an empty or whitespace key is refused at start-up (it would turn authentication off
and let the server bind a public address), a short one is warned about; the key is checked
before the body is read, so a wrong key with a broken or oversized body is a 401, and the
refusal is in the prediction log."""
import logging

import pytest
from fastapi.testclient import TestClient

from cli_helpers import tunelab
from serve_helpers import flush_log, serve_config
from tunelab.errors import TunelabError
from tunelab.serve.app import create_app
from tunelab.serve.auth import MIN_KEY_LENGTH, api_keys
from tunelab.serve.predlog import read_predictions

KEY = "k" * MIN_KEY_LENGTH


@pytest.mark.parametrize("keys", [[""], ["   "], [KEY, ""], [f" {KEY}"]])
def test_empty_whitespace_or_padded_keys_are_refused(keys, monkeypatch):
    monkeypatch.delenv("TUNELAB_API_KEYS", raising=False)
    with pytest.raises(TunelabError) as refused:
        api_keys(keys)
    message = str(refused.value)
    assert message.startswith("serve.api_keys[") and message.count(". ") == 0 and "\n" not in message


def test_short_keys_are_warned_about_and_the_environment_adds_keys(monkeypatch, caplog):
    monkeypatch.setenv("TUNELAB_API_KEYS", f" {KEY}2 , ,")
    with caplog.at_level(logging.WARNING, logger="tunelab.serve"):
        assert api_keys([KEY]) == [KEY, f"{KEY}2"]
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="tunelab.serve"):
        assert api_keys(["abc"]) == ["abc", f"{KEY}2"]
    assert "1 API key is shorter than 16 characters" in caplog.text


@pytest.mark.slow  # starts a process of its own (seconds)
def test_serve_with_an_empty_key_exits_2_in_one_sentence_even_on_an_open_address(tmp_path):
    proc = tunelab("serve", tmp_path, "--host", "0.0.0.0", "serve.api_keys=['']", check=False, cwd=tmp_path,
                   timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "serve.api_keys[0] is empty" in proc.stderr


def test_the_key_is_checked_before_the_body_is_read(tiny_llama_run, tmp_path):
    cfg = serve_config(tiny_llama_run, tmp_path, model_name="tiny", guard={"max_request_bytes": 1024})
    chat = "/v1/chat/completions"
    good = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    with TestClient(create_app(cfg, api_keys=[KEY])) as http:
        wrong = {**good, "Authorization": "Bearer nope"}
        for headers in (wrong, {"Content-Type": "application/json"}, {**good, "Authorization": f"Basic {KEY}"}):
            broken = http.post(chat, content=b"{not json", headers=headers)
            assert broken.status_code == 401 and broken.json()["error"]["code"] == "invalid_api_key"
            assert broken.headers["www-authenticate"] == "Bearer"
            oversized = http.post(chat, content=b"x" * 5000, headers=headers)
            assert oversized.status_code == 401
        assert http.post(chat, content=b"{not json", headers=good).status_code == 400  # with the key: parsed
        assert http.get("/health").status_code == 200 and http.get("/metrics").status_code == 200
        flush_log(http.app)
        refused = [r for r in read_predictions(cfg.prediction_log) if r["status"] == 401]
        assert len(refused) == 6 and {r["outcome"] for r in refused} == {"refused"}
        assert all(r["input"] is None for r in refused)  # nothing of an unauthenticated body is kept
