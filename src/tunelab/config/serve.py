"""`serve:`: `tunelab serve`."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from tunelab.config.base import Section


class GuardSettings(Section):
    max_request_bytes: int = Field(65_536, ge=256, description="Largest request body accepted.")
    max_tokens: int = Field(512, ge=1, description="Largest max_tokens a request may ask for.")
    redact_pii: bool = Field(True, description="Redact PII in prompts (the data stage's detector) before the model and the log see them.")
    block_injection: bool = Field(True, description="Refuse prompts the prompt-injection/jailbreak screen flags.")
    classifier: str | None = Field(None, description="Run directory of a prompt-injection classifier (labels attack/benign, e.g. trained with examples/guard.yaml) screening beside the rules (None: rules only).")
    classifier_threshold: float = Field(0.5, gt=0, lt=1, description="Block when the classifier's attack probability is at least this, or the rules fire (docs/guard.md; examples/guard.yaml records the value chosen on the dev split).")


class ServeConfig(Section):
    model: str | None = Field(None, description="Run directory to serve (the CLI argument overrides it).")
    model_name: str | None = Field(None, description="Model id clients pass in `model` (default: the run directory's name).")
    adapters: dict[str, str] = Field(default_factory=dict, description="LoRA adapters of the served model's base registered at start-up, by the model name clients pass (NAME=ADAPTER_DIR on the command line, repeatable); more can be registered while it serves.")
    engine: Literal["transformers", "vllm", "onnx"] = Field("transformers", description="Inference engine: transformers; vllm (a GPU and the vllm package); onnx (ONNX Runtime on CPU, for an ONNX classifier export). `serve.backend` is its older name.")
    max_adapters: int = Field(8, ge=0, description="LoRA adapters of the served base kept loaded at once; the least recently used is unloaded to load another (0: none, and an adapter run is served merged).")
    max_models: int = Field(2, ge=0, description="Registered runs that are not adapters of the served base (full fine-tunes, other bases) kept loaded at once, each its own model; the least recently used is dropped first (0: none).")
    mix_adapters: bool = Field(True, description="Batch greedy requests for different adapters together (PEFT mixed-adapter batches, vLLM per-request LoRA); false: each adapter batches alone.")
    host: str | None = Field(None, description="Address to bind (default: 127.0.0.1; 0.0.0.0 only with API keys).")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on.")
    api_keys: list[str] = Field(default_factory=list, description="Accepted bearer tokens (TUNELAB_API_KEYS, comma-separated, adds to these).")
    max_batch_size: int = Field(8, ge=1, description="Requests grouped into one model call at most.")
    max_wait_ms: float = Field(10.0, ge=0, description="Longest a request waits for others to join its batch.")
    max_queue: int = Field(256, ge=1, description="Requests waiting at most; beyond it, 429 with Retry-After.")
    cache_size: int = Field(1024, ge=0, description="Responses kept for identical deterministic requests (0: no cache).")
    default_max_tokens: int = Field(128, ge=1, description="max_tokens when a request gives none.")
    guard: GuardSettings = Field(default_factory=GuardSettings, description="Input guard in front of the model.")
    prediction_log: str | None = Field("predictions.db", description="SQLite prediction log (WAL) the monitor reads (None: no log).")
    retention_days: float | None = Field(30, gt=0, description="Prediction log records older than this are deleted (None: keep all).")
    registry: str | None = Field("registry.json", description="Model registry file: served versions and which is live; it belongs to one served model (None: no registry, no hot swap).")
    registry_poll_s: float = Field(1.0, gt=0, description="Seconds between checks of the registry for a new live version.")
    shadow_max_queue: int = Field(64, ge=1, description="Copies waiting for the shadow version at most (its own queue and model thread, so live answers never wait on it); beyond it a copy is dropped and counted.")
    promote: bool = Field(False, description="Make the run given to `tunelab serve` live even while another server serves the registry's live version (that server then swaps to it too).")

    @model_validator(mode="before")
    @classmethod
    def _backend_is_engine(cls, data: Any) -> Any:
        """`serve.backend` (the older name) sets serve.engine."""
        if isinstance(data, dict) and "backend" in data:
            data = dict(data)
            backend = data.pop("backend")
            if data.get("engine", backend) != backend:
                raise ValueError(f"serve.backend ({backend}) and serve.engine ({data['engine']}) disagree: set only "
                                 "serve.engine")
            data["engine"] = backend
        return data


