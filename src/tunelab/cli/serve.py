"""`tunelab serve` and `tunelab models`: serving runs and managing what is served."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from tunelab.cli.common import app, flag_overrides, option, out, split_overrides
from tunelab.config import load_config
from tunelab.errors import TunelabError
from tunelab.progress import quiet_library_output
from tunelab.serve.rollout_cli import add_commands as add_rollout_commands


@app.command("serve")
def serve(
    args: list[str] = typer.Argument(None, metavar="[RUN_DIR] [CONFIG.yaml] [KEY=VALUE]...",
                                     help="Run directory to serve (default: the registry's live version), a YAML "
                                          "config (its serve: section) and overrides such as serve.max_batch_size=16."),
    host: Optional[str] = option("serve.host", "--host"),
    port: Optional[int] = option("serve.port", "--port"),
    engine: Optional[str] = option("serve.engine", "--engine", "--backend"),
    adapter: list[str] = option("serve.adapters", "--adapter", default=[], metavar="NAME=DIR"),
) -> None:
    """Serve a run behind an OpenAI-compatible API.

    Requests are batched, cached, screened by the input guard and written to the prediction
    log; /metrics exports Prometheus metrics. Adapters and other runs registered with
    `tunelab models register RUN --id ID` are answered beside it without a restart."""
    inputs, overrides = split_overrides(args or [])
    configs = [a for a in inputs if a.endswith((".yaml", ".yml")) and Path(a).is_file()]
    runs = [a for a in inputs if a not in configs]
    if len(configs) > 1 or len(runs) > 1:
        raise TunelabError(f"expected at most one run directory and one config file, got {', '.join(inputs)}",
                           fix="pass RUN_DIR, then CONFIG.yaml, then key=value overrides")
    overrides += flag_overrides("serve.", host=host, port=port, engine=engine)
    for item in adapter:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise TunelabError(f"--adapter {item!r} is not NAME=ADAPTER_DIR", fix="write it like --adapter support=runs/support")
        overrides.append(f"serve.adapters.{name}={path}")
    cfg = load_config(configs[0] if configs else None, overrides).serve
    from tunelab.serve import run as serve_run  # torch/transformers: after the config is known good

    quiet_library_output()

    serve_run.run(cfg, runs[0] if runs else None)


models_app = typer.Typer(help="Manage the versions and models `tunelab serve` may serve.\n\n"
                         "The registry file lists every registered run, which one is live, and the models "
                         "served beside it.",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")
REGISTRY_OPTION = typer.Option(Path("registry.json"), "--registry", "-r", help="Registry file.")


@models_app.command("list")
def models_list(registry: Path = REGISTRY_OPTION) -> None:
    """Show the registered versions and models.

    The live version is marked; models registered with --id are served beside it."""
    from tunelab.serve.registry import Registry

    data = Registry(registry).load()
    if not data["versions"] and not data["models"]:
        out.print(f"no versions registered in {registry}; add one with `tunelab models register RUN_DIR`",
                  highlight=False, soft_wrap=True)
        return
    if data["versions"]:
        table = Table("", "version", "task", "base model", "registered")
        table.add_column("path", overflow="fold")
        for entry in data["versions"]:
            table.add_row("*" if entry["version"] == data["live"] else "", entry["version"], entry.get("task") or "-",
                          entry.get("base_model") or "-", entry.get("registered_at") or "-", entry["path"])
        out.print(table)
        out.print(f"live: {data['live'] or 'none'}; history: {' -> '.join(data['history']) or 'empty'}"
                  + (f"; shadow: {data['shadow']['version']}" if data["shadow"] else "")
                  + (f"; canary: {data['canary']['version']} ({data['canary']['share']:.0%})" if data["canary"] else ""),
                  highlight=False)
    if data["models"]:
        table = Table("model id", "registered")
        table.add_column("path", overflow="fold")
        for entry in data["models"]:
            table.add_row(entry["id"], entry.get("registered_at") or "-", entry["path"])
        out.print(table)


@models_app.command("register")
def models_register(run_dir: Path = typer.Argument(..., metavar="RUN_DIR",
                                                   help="Run directory written by `tunelab train`."),
                    model_id: Optional[str] = typer.Option(
                        None, "--id", metavar="ID",
                        help="Serve the run under this model id beside the live version (a LoRA adapter "
                             "of the served base, or a model of its own) instead of adding a version."),
                    registry: Path = REGISTRY_OPTION) -> None:
    """Add a run as the next version, or as a model (--id).

    With --id the run is served under that id beside the live version. The first version registered becomes live. Servers of the registry answer a model
    registered with --id within about a second, without a restart."""
    from tunelab.serve.registry import Registry

    if model_id is not None:
        entry = Registry(registry).add_model(model_id, run_dir)
        out.print(f"{entry['id']}: {entry['path']}", highlight=False, soft_wrap=True)
        return
    entry = Registry(registry).register(run_dir)
    out.print(f"{entry['version']}: {entry['path']}", highlight=False, soft_wrap=True)


@models_app.command("unregister")
def models_unregister(model_id: str = typer.Argument(..., metavar="ID", help="A model id registered with --id."),
                      registry: Path = REGISTRY_OPTION) -> None:
    """Stop serving a model registered with --id.

    Servers of the registry unload it once the requests they accepted for it are answered."""
    from tunelab.serve.registry import Registry

    if not Registry(registry).remove_model(model_id):
        known = ", ".join(m["id"] for m in Registry(registry).models()) or "none"
        raise TunelabError(f"no model '{model_id}' is registered (registered: {known})", where=str(registry),
                           fix="pick one from `tunelab models list`")
    out.print(f"{model_id} unregistered", highlight=False)


@models_app.command("promote")
def models_promote(version: str = typer.Argument(..., metavar="VERSION", help="Version to make live, e.g. v2."),
                   registry: Path = REGISTRY_OPTION) -> None:
    """Make a version live.

    A running server swaps it in within about a second."""
    from tunelab.serve.registry import Registry

    entry = Registry(registry).promote(version)
    out.print(f"{entry['version']} is live ({entry['path']})", highlight=False, soft_wrap=True)


@models_app.command("rollback")
def models_rollback(registry: Path = REGISTRY_OPTION) -> None:
    """Make the previously live version live again."""
    from tunelab.serve.registry import Registry

    reg = Registry(registry)
    was = reg.load()["live"]
    entry = reg.rollback()
    out.print(f"rolled back: {entry['version']} is live (was {was})", highlight=False, soft_wrap=True)


add_rollout_commands(models_app, REGISTRY_OPTION)  # shadow, canary, compare

