"""`tunelab jobs ...`: the fine-tuning jobs server's commands (registered in tunelab.cli)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tunelab.config import field_description, load_config

app = typer.Typer(help="OpenAI's fine-tuning API, served from your own machine.\n\n"
                  "Upload files, create jobs, follow their events and chat with the fine-tuned models, "
                  "with the official openai client pointed at this server.", no_args_is_help=True)


@app.command("serve")
def serve(
    args: list[str] = typer.Argument(None, metavar="[CONFIG.yaml] [KEY=VALUE]...",
                                     help="A YAML config (its jobs: section) and overrides such as "
                                          "jobs.max_concurrent=2 or jobs.models.tiny=/models/tiny."),
    host: Optional[str] = typer.Option(None, "--host", help=field_description("jobs.host")),
    port: Optional[int] = typer.Option(None, "--port", help=field_description("jobs.port")),
    jobs_dir: Optional[Path] = typer.Option(None, "--jobs-dir", help=field_description("jobs.jobs_dir")),
    model: list[str] = typer.Option([], "--model", metavar="NAME=PATH", help="A base model jobs may fine-tune "
                                    "(repeatable; adds to jobs.models)."),
) -> None:
    """Serve OpenAI's fine-tuning API and the models it trains.

    Jobs run as their own processes (`tunelab train`, then `tunelab eval` against the base),
    jobs.max_concurrent at a time; a restarted server resumes them from their last checkpoint.
    A succeeded job's ft: model is answered by /v1/chat/completions of the same server."""
    from tunelab.errors import TunelabError

    inputs = [a for a in args or [] if "=" not in a or Path(a).exists()]
    overrides = [a for a in args or [] if a not in inputs]
    if len(inputs) > 1:
        raise TunelabError(f"expected one config file, got {', '.join(inputs)}",
                           fix="pass one YAML file, then key=value overrides")
    overrides += [f"jobs.{key}={value}" for key, value in
                  {"host": host, "port": port, "jobs_dir": jobs_dir}.items() if value is not None]
    for item in model:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise TunelabError(f"--model {item!r} is not NAME=PATH", fix="write it like --model tiny=/models/tiny")
        overrides.append(f"jobs.models.{name}={path}")
    cfg = load_config(inputs[0] if inputs else None, overrides).jobs
    from tunelab.jobs import server  # uvicorn, torch: after the config is known good

    server.run(cfg)
