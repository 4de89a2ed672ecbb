"""What every `tunelab` command shares: the root Typer app, the consoles, and the rules that turn
arguments into config overrides (an option's help is its config field's description)."""
from __future__ import annotations

import re
from pathlib import Path

import typer
from rich.console import Console

from tunelab import __version__
from tunelab.config import field_description

app = typer.Typer(help="Fine-tune a model on your own examples, then prove, serve and watch it.\n\n"
                  "The usual order: data prepare, train, eval, serve, monitor. Each command reads its "
                  "section of one YAML config; KEY=VALUE arguments such as train.lr=1e-4 override it.",
                  no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, rich_markup_mode=None)
out = Console()
err = Console(stderr=True)
OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def _version(value: bool) -> None:
    if value:
        out.print(f"tunelab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    pass


def split_overrides(args: list[str]) -> tuple[list[str], list[str]]:
    """Positional arguments are inputs, except `key.sub=value` ones that name no existing file."""
    inputs, overrides = [], []
    for arg in args:
        (overrides if OVERRIDE.match(arg) and not Path(arg).exists() else inputs).append(arg)
    return inputs, overrides


def option(field: str, *flags: str, default=None, **kwargs):
    """A command-line option that sets the config field `field` (e.g. "train.lr"): its help is the
    field's description, so each option's help lives in one place, the config, which the
    configuration reference is generated from too."""
    return typer.Option(default, *flags, help=field_description(field), **kwargs)


def flag_overrides(prefix: str, **flags) -> list[str]:
    return [f"{prefix}{key}={value}" for key, value in flags.items() if value is not None]

