"""Paraphrases and synthetic examples from any OpenAI-compatible chat endpoint (a hosted API, vLLM,
or `tunelab serve`), over the standard library's HTTP client.

An endpoint that cannot be reached or does not answer in the chat-completions shape stops the
run with one sentence (nothing is written); an answer whose text cannot be used (empty, the
input repeated, JSON that does not parse) is set aside with its reason, and too many of those
stop the run too.
"""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tunelab.data.dedup import exact_key
from tunelab.errors import TunelabError

RETRIED_STATUS = {408, 429, 500, 502, 503, 504}


@dataclass
class Answer:
    text: str | None  # None: unusable
    reason: str | None = None  # why it is unusable


class ChatEndpoint:
    """POST {url}/chat/completions; `url` is the API base (e.g. http://127.0.0.1:8000/v1)."""

    def __init__(self, settings):
        self.url = settings.url.rstrip("/") + "/chat/completions"
        self.model = settings.model
        self.settings = settings
        key = os.environ.get(settings.api_key_env, "") if settings.api_key_env else ""
        self.headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}

    def complete(self, messages: list[dict[str, str]]) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": self.settings.temperature,
                           "max_tokens": self.settings.max_tokens}).encode()
        for attempt in range(self.settings.retries + 1):
            try:
                request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.settings.timeout_s) as response:
                    raw = response.read()
                break
            except urllib.error.HTTPError as exc:
                if exc.code not in RETRIED_STATUS or attempt == self.settings.retries:
                    detail = exc.read()[:200].decode("utf-8", "replace").strip()
                    raise self._failure(f"answered HTTP {exc.code} ({detail or exc.reason})") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                if attempt == self.settings.retries:
                    reason = getattr(exc, "reason", exc)
                    raise self._failure(f"cannot be reached ({reason})") from None
            time.sleep(0.5 * 2 ** attempt)
        return self._content(raw)

    def _content(self, raw: bytes) -> str:
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            shown = raw[:80].decode("utf-8", "replace")
            raise self._failure(f"did not answer in the chat-completions shape (got {shown!r})") from None
        if not isinstance(content, str):
            raise self._failure("answered a message whose content is not text")
        return content

    def _failure(self, what: str) -> TunelabError:
        return TunelabError(f"the augmentation endpoint {self.url} {what}", where="data.augment.endpoint",
                            fix="check that the server is up and OpenAI-compatible, and data.augment.endpoint.url/model")


def paraphrase_messages(text: str, label: str | None) -> list[dict[str, str]]:
    keep = f" It is labelled '{label}': the rewrite must deserve the same label." if label is not None else ""
    return [{"role": "system", "content": "You rewrite text in other words. Keep its meaning, tone and language; "
             "change the wording. Answer with the rewritten text only, no quotes or comments."},
            {"role": "user", "content": f"Rewrite this text.{keep}\n\n{text}"}]


def synthetic_messages(examples: list[str], label: str | None) -> list[dict[str, str]]:
    """Few-shot prompt for one new example: a text with `label` (classification), or a new
    conversation as JSON {"user": ..., "assistant": ...} (chat; label None)."""
    shown = "\n".join(f"- {e}" for e in examples)
    if label is not None:
        ask = (f"Here are examples of texts labelled '{label}':\n{shown}\n\nWrite one new text, different from "
               f"these, that deserves the label '{label}'. Answer with the text only.")
    else:
        ask = (f"Here are examples of requests and answers, as JSON:\n{shown}\n\nWrite one new request of the same "
               'kind and its correct answer. Answer with JSON only: {"user": "...", "assistant": "..."}')
    return [{"role": "system", "content": "You write realistic training examples."}, {"role": "user", "content": ask}]


def clean_text(answer: str, original: str | None, max_chars: int) -> Answer:
    text = answer.strip().strip('"').strip()
    if not text:
        return Answer(None, "empty answer")
    if len(text) > max_chars:
        return Answer(None, f"answer of {len(text):,} characters, over data.max_chars")
    if original is not None and exact_key(text) == exact_key(original):
        return Answer(None, "answer repeats the input")
    return Answer(text)


def parse_conversation(answer: str) -> dict[str, str] | Answer:
    """{"user", "assistant"} from a synthetic chat answer (code fences allowed), or an unusable Answer."""
    text = answer.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        value = json.loads(text)
    except ValueError:
        return Answer(None, "answer is not JSON")
    if not (isinstance(value, dict) and all(isinstance(value.get(k), str) and value[k].strip()
                                            for k in ("user", "assistant"))):
        return Answer(None, 'answer lacks "user" and "assistant" texts')
    return {"user": value["user"].strip(), "assistant": value["assistant"].strip()}


def ask_all(endpoint: ChatEndpoint, prompts: list[list[dict[str, str]]], concurrency: int,
            progress: Callable[[int], None] | None = None) -> list[str]:
    """Each prompt's answer text, in order, `concurrency` requests at a time. The first failure
    of the endpoint itself stops everything (TunelabError)."""
    answers: list[str] = [""] * len(prompts)
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = {pool.submit(endpoint.complete, p): i for i, p in enumerate(prompts)}
        try:
            for future, index in futures.items():
                answers[index] = future.result()
                if progress:
                    progress(1)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return answers


def usable_share_check(unusable: list[dict[str, Any]], total: int, limit: float, url: str) -> None:
    if total and len(unusable) / total > limit:
        example = unusable[0]["reason"]
        raise TunelabError(f"the augmentation endpoint {url} answered {len(unusable)} of {total} requests with "
                           f"unusable text (first: {example})", where="data.augment.endpoint",
                           fix="check that data.augment.endpoint.model follows instructions, or raise "
                               "data.augment.endpoint.max_unusable")
