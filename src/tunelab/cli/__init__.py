"""The `tunelab` command: one plain function per stage; each parses, calls the stage's run(),
prints a summary and exits. User errors print one sentence and exit 2, without a traceback.

The commands live in this package's modules by stage (data, train, evaluate, serve, loop); each
registers on the one root app in `common`; importing them here, in this order, is what lists
them in `tunelab --help`."""
from __future__ import annotations

import sys

# isort: off (the order of these imports is the order of the commands in `tunelab --help`)
from tunelab.cli import data  # noqa: F401
from tunelab.cli import train  # noqa: F401
from tunelab.cli import evaluate  # noqa: F401
from tunelab.cli import serve  # noqa: F401
from tunelab.cli import loop  # noqa: F401
# isort: on
from tunelab.cli.common import app, err
from tunelab.errors import TunelabError
from tunelab.jobs.cli import app as jobs_app

app.add_typer(jobs_app, name="jobs")


def main() -> None:
    try:
        app(standalone_mode=True)
    except TunelabError as exc:
        err.print(f"error: {exc}", style="red", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted; outputs already written are complete, the rest were not written", style="red")
        sys.exit(130)


if __name__ == "__main__":
    main()
