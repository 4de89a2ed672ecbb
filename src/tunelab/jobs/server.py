"""`tunelab jobs serve`: check the settings, then run the jobs app under uvicorn until
SIGTERM/Ctrl-C (graceful: the worker stops the jobs' processes, which the next start resumes)."""
from __future__ import annotations

from tunelab.config import JobsConfig
from tunelab.errors import TunelabError


def run(cfg: JobsConfig) -> None:
    import uvicorn

    from tunelab.jobs.app import create_jobs_app
    from tunelab.serve.auth import api_keys
    from tunelab.serve.run import bind_address

    keys = api_keys(cfg.api_keys)
    host = bind_address(cfg.host, keys)
    if cfg.executor == "local" and cfg.max_concurrent < 1:
        raise TunelabError("jobs.max_concurrent must be at least 1")
    app = create_jobs_app(cfg, api_keys=keys)
    uvicorn.run(app, host=host, port=cfg.port, log_level="info", timeout_graceful_shutdown=30)
