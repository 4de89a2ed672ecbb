"""API keys: which are accepted (checked once, at start-up) and the check itself, an ASGI
middleware that runs before routing and before the body is read, so a request with a wrong key
is a 401 whatever its body holds (nothing of it is parsed, nothing is logged of it but the
refusal)."""
from __future__ import annotations

import hmac
import logging
import os

from tunelab.errors import TunelabError
from tunelab.serve.errors import error_body

log = logging.getLogger("tunelab.serve")
ENV = "TUNELAB_API_KEYS"
MIN_KEY_LENGTH = 16  # shorter keys can be guessed; warned about, not refused (a test key is fine on loopback)
# probes, scrapers and the API's own description stay open
OPEN_PATHS = frozenset({"/health", "/ready", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


def api_keys(configured: list[str]) -> list[str]:
    """The accepted keys: serve.api_keys plus the comma-separated TUNELAB_API_KEYS. An empty or
    whitespace key is refused (it would turn authentication off, and with it the refusal to bind
    a public address without keys); a key shorter than MIN_KEY_LENGTH is warned about."""
    for index, key in enumerate(configured):
        if not key.strip():
            raise TunelabError(f"serve.api_keys[{index}] is empty, and an empty key would let anyone in",
                               fix="remove it, or set a long random key (python -c 'import secrets; "
                                   "print(secrets.token_urlsafe(32))')")
        if key != key.strip():
            raise TunelabError(f"serve.api_keys[{index}] starts or ends with whitespace, which no Authorization "
                               "header can carry", fix="remove the surrounding spaces")
    from_env = [key.strip() for key in os.environ.get(ENV, "").split(",") if key.strip()]
    keys = list(configured) + from_env
    short = sum(len(key) < MIN_KEY_LENGTH for key in keys)
    if short:
        log.warning("%d API key%s shorter than %d characters: easy to guess; use long random keys", short,
                    " is" if short == 1 else "s are", MIN_KEY_LENGTH)
    return keys


class ApiKeyCheck:
    """401 in the OpenAI error shape for any request outside OPEN_PATHS without a valid
    `Authorization: Bearer <key>`; the key is compared in constant time (no timing oracle)."""

    def __init__(self, app, keys: list[str], open_paths: frozenset[str] = OPEN_PATHS):
        """open_paths: the paths answered without a key (an app adds its own, such as the jobs
        page's shell, which holds no data)."""
        self.app = app
        self.keys = [key.encode() for key in keys]
        self.open_paths = open_paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not self.keys or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        valid = scheme.lower() == b"bearer" and any(hmac.compare_digest(given.strip(), key) for key in self.keys)
        if not valid:
            await error_body(401, "missing or invalid API key; send `Authorization: Bearer <key>`",
                             code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        await self.app(scope, receive, send)
