"""`tunelab eval`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tunelab.cli.common import app, err, flag_overrides, option, out, split_overrides
from tunelab.config import load_config
from tunelab.errors import TunelabError
from tunelab.progress import quiet_library_output


@app.command("eval")
def evaluate(
    model: str = typer.Argument(..., metavar="RUN_OR_MODEL", help="Run directory from `tunelab train` (or a "
                                "model directory)."),
    args: list[str] = typer.Argument(None, metavar="[CONFIG.yaml] [KEY=VALUE]...",
                                     help="A YAML config (its eval: section) and overrides such as "
                                          "eval.calibration_bins=10."),
    data: Optional[str] = option("eval.data", "--data"),
    baseline: list[str] = option("eval.baselines", "--baseline", default=[], metavar="NAME_OR_DIR"),
    out_dir: Optional[Path] = option("eval.out_dir", "--out", "-o"),
    gate: bool = option("eval.gate.enforce", "--gate", default=False),
    resamples: Optional[int] = option("eval.resamples", "--resamples"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress messages."),
) -> None:
    """Compare the tuned model with baselines on held-out data.

    The report gives confidence intervals, calibration, robustness, fairness, forgetting,
    latency and cost; --gate turns the thresholds in eval.gate into an exit code."""
    inputs, overrides = split_overrides(args or [])
    if len(inputs) > 1:
        raise TunelabError(f"expected one config file, got {', '.join(inputs)}",
                           fix="pass one YAML file, then key=value overrides")
    overrides += flag_overrides("eval.", model=model, data=data, out_dir=out_dir, resamples=resamples)
    overrides += flag_overrides("eval.gate.", enforce="true" if gate else None)
    cfg = load_config(inputs[0] if inputs else None, overrides).eval
    cfg.baselines = cfg.baselines + baseline
    from tunelab.evaluate import run as eval_run  # torch/transformers: after the config is known good

    quiet_library_output()

    def progress(message: str) -> None:
        if not quiet:
            err.print(f"[dim]eval: {message}[/dim]", highlight=False)

    result = eval_run.run(cfg, progress=progress)
    out.print(result.report["verdict"], highlight=False, soft_wrap=True)
    for flag in result.report["flags"]:
        out.print(f"[yellow]flag:[/yellow] {flag}", highlight=False, soft_wrap=True)
    out.print(f"report: {result.out_dir / 'report.html'} (also report.json, report.md)", highlight=False,
              soft_wrap=True)
    if cfg.gate.enforce:
        out.print("gate: passed" if not result.gate_failed else "gate: FAILED", highlight=False)
        if result.gate_failed:
            raise typer.Exit(1)


