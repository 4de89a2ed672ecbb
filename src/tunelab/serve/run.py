"""`tunelab serve`: check the settings, register the run, load and warm the model, then run
uvicorn until SIGTERM/Ctrl-C (graceful: in-flight requests finish, the log is flushed)."""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.serve.service import ServeSettings, initial_model, load_live

LOOPBACK_NAMES = {"localhost"}


def settings_from_config(cfg, model: str | None) -> ServeSettings:
    """Plain settings from the config's serve section (ServeConfig); TUNELAB_API_KEYS adds keys."""
    keys = list(cfg.api_keys) + [k.strip() for k in os.environ.get("TUNELAB_API_KEYS", "").split(",") if k.strip()]
    return ServeSettings(
        model=model or cfg.model, registry=cfg.registry, model_name=cfg.model_name, adapters=dict(cfg.adapters),
        engine=cfg.backend, max_batch_size=cfg.max_batch_size, max_wait_ms=cfg.max_wait_ms,
        max_queue=cfg.max_queue, cache_size=cfg.cache_size, default_max_tokens=cfg.default_max_tokens,
        max_request_bytes=cfg.guard.max_request_bytes, max_tokens_limit=cfg.guard.max_tokens,
        redact_pii=cfg.guard.redact_pii, block_injection=cfg.guard.block_injection,
        prediction_log=cfg.prediction_log, retention_days=cfg.retention_days, api_keys=keys)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_address(host: str | None, api_keys: list[str]) -> str:
    """127.0.0.1 unless told otherwise; anything reachable from other machines needs API keys."""
    host = host or "127.0.0.1"
    if not is_loopback(host) and not api_keys:
        raise TunelabError(f"refusing to listen on {host} without API keys: anyone who can reach it could use "
                           "the model", fix="set serve.api_keys or TUNELAB_API_KEYS, or bind 127.0.0.1")
    return host


def register(settings: ServeSettings) -> None:
    """The run given on the command line becomes the registry's live version."""
    if settings.model and settings.registry:
        from tunelab.serve.registry import Registry
        registry = Registry(settings.registry)
        registry.promote(registry.register(settings.model)["version"])


def run(cfg, model: str | None = None) -> None:
    """Serve `model` (a run directory) or the registry's live version, as `cfg` (ServeConfig) says."""
    import uvicorn

    from tunelab.serve.app import create_app
    settings = settings_from_config(cfg, model)
    host = bind_address(cfg.host, settings.api_keys)
    if settings.model and not Path(settings.model).is_dir():
        raise TunelabError("run directory not found", where=settings.model, fix="give a run directory from `tunelab train`")
    register(settings)
    run_dir, version = initial_model(settings)
    try:
        live = load_live(run_dir, version, settings)
    except TunelabError:
        raise
    except (OSError, ValueError, RuntimeError) as exc:
        why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise TunelabError(f"cannot load the model to serve ({why})", where=run_dir,
                           fix="check that it is a run directory from `tunelab train`") from None
    if settings.model_name is None:
        settings.model_name = Path(run_dir).resolve().name
    uvicorn.run(create_app(settings, live), host=host, port=cfg.port, log_level="info",
                timeout_graceful_shutdown=30)
