"""What grading needs beyond the grader JSON, held for a whole run and closed after it: whether
python graders may run and their time limit, their worker processes, the sentence encoder of
cosine similarity, and the OpenAI-compatible client of score_model graders."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunelab.errors import TunelabError


@dataclass
class GraderRuntime:
    allow_python: bool = False
    python_timeout_s: float = 10.0
    python_memory_mb: int = 2048
    base_url: str | None = None
    api_key: str | None = None
    request_timeout_s: float = 60.0
    token_usage: dict[str, int] = field(default_factory=dict)  # scoring model -> tokens used
    _processes: dict[str, Any] = field(default_factory=dict, repr=False)
    _encoder: Any = field(default=None, repr=False)
    _client: Any = field(default=None, repr=False)

    def check_allowed(self, grader) -> None:
        """Refuse, before anything runs, a grader with python code that this run does not allow."""
        if grader.uses_python and not self.allow_python:
            names = ", ".join(g.name for g in grader.walk() if g.type == "python")
            raise TunelabError(f"grader '{grader.name}' runs python code ({names}), and python graders are off",
                               fix="read the code, then enable them with train.rft.allow_python_graders=true "
                                   "(or --allow-python for `tunelab grade`)")

    def python_process(self, spec: dict[str, Any]):
        from tunelab.graders.python_grader import PythonGraderProcess
        if not self.allow_python:
            raise TunelabError(f"python grader '{spec['name']}' is not enabled",
                               fix="enable python graders (train.rft.allow_python_graders=true)")
        key = spec["source"]
        if key not in self._processes:
            self._processes[key] = PythonGraderProcess(spec["source"], self.python_timeout_s, self.python_memory_mb)
        return self._processes[key]

    def cosine(self, text: str, reference: str) -> float:
        if self._encoder is None:
            from sentence_transformers import SentenceTransformer

            from tunelab.examples import default_model_path
            self._encoder = SentenceTransformer(str(default_model_path()), device="cpu")
        first, second = self._encoder.encode([text, reference], normalize_embeddings=True)
        return float(first @ second)

    def openai_client(self):
        if self._client is None:
            from openai import OpenAI
            # a local OpenAI-compatible server (tunelab serve) may take no key at all
            self._client = OpenAI(base_url=self.base_url, api_key=self.api_key or _env_key() or "not-needed",
                                  timeout=self.request_timeout_s, max_retries=1)
        return self._client

    def count_tokens(self, model: str, usage) -> None:
        total = getattr(usage, "total_tokens", None)
        if total:
            self.token_usage[model] = self.token_usage.get(model, 0) + int(total)

    def close(self) -> None:
        for process in self._processes.values():
            process.close()
        self._processes.clear()

    def __enter__(self) -> "GraderRuntime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _env_key() -> str | None:
    import os
    return os.environ.get("OPENAI_API_KEY")
