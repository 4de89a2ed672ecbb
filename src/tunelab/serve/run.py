"""`tunelab serve`: check the settings, load and warm the model (and only then register it),
then run uvicorn until SIGTERM/Ctrl-C (graceful: in-flight requests finish, the log is flushed)."""
from __future__ import annotations

import ipaddress

from tunelab.config import ServeConfig
from tunelab.errors import TunelabError
from tunelab.serve.auth import api_keys

LOOPBACK_NAMES = {"localhost"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_address(host: str | None, keys: list[str]) -> str:
    """127.0.0.1 unless told otherwise; anything reachable from other machines needs API keys."""
    host = host or "127.0.0.1"
    if not is_loopback(host) and not keys:
        raise TunelabError(f"refusing to listen on {host} without API keys: anyone who can reach it could use "
                           "the model", fix="set serve.api_keys or TUNELAB_API_KEYS, or bind 127.0.0.1")
    return host


def run(cfg: ServeConfig, model: str | None = None) -> None:
    """Serve `model` (a run directory; default cfg.model) or the registry's live version."""
    import uvicorn

    from tunelab.serve.app import create_app
    keys = api_keys(cfg.api_keys)
    host = bind_address(cfg.host, keys)
    app = create_app(cfg, api_keys=keys, model=model)
    app.state.service.open()
    uvicorn.run(app, host=host, port=cfg.port, log_level="info", timeout_graceful_shutdown=30)
