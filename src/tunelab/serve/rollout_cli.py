"""`tunelab models shadow | canary | compare`: put a candidate version beside the live one on every
server of the registry (they take it up within about a second, without a restart), and compare
the two from the prediction log (tunelab.serve.rollout, tunelab.monitor.compare)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from tunelab.errors import TunelabError

out = Console()


def add_commands(models_app: typer.Typer, registry_option) -> None:
    @models_app.command("shadow")
    def models_shadow(version: Optional[str] = typer.Argument(None, metavar="[VERSION]",
                                                              help="Version that gets a copy of each request."),
                      off: bool = typer.Option(False, "--off", help="Stop the shadow."),
                      registry: Path = registry_option) -> None:
        """Run a version in shadow: copies of requests, never a client.

        Each request is copied to it after the live answer is sent; its answers are logged as
        shadow for `tunelab models compare`."""
        from tunelab.serve.registry import Registry
        entry = Registry(registry).set_shadow(None if off else required(version, "shadow"))
        out.print("shadow off" if entry is None else f"{entry['version']} is the shadow ({entry['path']})",
                  highlight=False, soft_wrap=True)

    @models_app.command("canary")
    def models_canary(version: Optional[str] = typer.Argument(None, metavar="[VERSION]",
                                                              help="Version that answers a share of the traffic."),
                      share: float = typer.Option(0.1, "--share", help="Share of the requests it answers (0-1]."),
                      off: bool = typer.Option(False, "--off", help="Stop the canary."),
                      registry: Path = registry_option) -> None:
        """Let a version answer a sticky share of the traffic.

        The split is a stable hash of the client's key (the X-Tunelab-Route-Key header, else the
        request's `user`, else the request itself)."""
        from tunelab.serve.registry import Registry
        entry = Registry(registry).set_canary(None if off else required(version, "canary"), share)
        out.print("canary off" if entry is None else f"{entry['version']} is the canary for {share:.0%} of the traffic "
                  f"({entry['path']})", highlight=False, soft_wrap=True)

    @models_app.command("compare")
    def models_compare(log: Path = typer.Option(Path("predictions.db"), "--log", help="Prediction log of the server."),
                       candidate: Optional[str] = typer.Option(None, "--candidate", help="Version to judge (default: "
                                                               "the registry's shadow, else its canary)."),
                       live: Optional[str] = typer.Option(None, "--live", help="Live version (default: the "
                                                          "registry's)."),
                       window: Optional[str] = typer.Option(None, "--window", metavar="SPAN",
                                                            help="Only the last time span (30m, 48h, 7d)."),
                       resamples: int = typer.Option(1000, "--resamples", min=100, help="Bootstrap resamples."),
                       out_file: Path = typer.Option(Path("compare.json"), "--out", "-o", help="JSON written here."),
                       registry: Path = registry_option) -> None:
        """Compare live with its shadow or canary, and recommend.

        Agreement, quality on feedback-labelled requests (paired bootstrap), latency p50/p99."""
        import time

        from tunelab.files import write_json
        from tunelab.monitor.compare import compare
        from tunelab.monitor.window import span_seconds
        from tunelab.serve.registry import Registry
        data = Registry(registry).load()
        live = live or data["live"]
        candidate = candidate or (data["shadow"] or data["canary"] or {}).get("version")
        if live is None or candidate is None:
            raise TunelabError("nothing to compare: " + ("no live version" if live is None else
                                                         "no shadow or canary version"), where=str(registry),
                               fix="name them with --live and --candidate, or start one with "
                                   "`tunelab models shadow VERSION`")
        since = time.time() - span_seconds(window) if window else None
        result = compare(log, live, candidate, since_ts=since, resamples=resamples)
        write_json(out_file, result)
        print_comparison(result)
        out.print(f"written: {out_file}", highlight=False, soft_wrap=True)


def required(version: str | None, role: str) -> str:
    if not version:
        raise TunelabError(f"no version given to run as the {role}", fix=f"pass one, e.g. `tunelab models {role} v2`, "
                                                                          "or --off to stop it")
    return version


def print_comparison(result: dict) -> None:
    quality = result["quality"]
    table = Table("", "version", "requests", "p50 ms", "p99 ms", quality["metric"] if quality else "quality")
    for name in ("live", "candidate"):
        side = result[name]
        latency = side["latency_ms"]
        table.add_row(name if name == "live" else result["role"], side["version"], f"{side['requests']:,}",
                      fmt(latency["p50"], ".1f"), fmt(latency["p99"], ".1f"), fmt(quality and quality[name], ".3f"))
    out.print(table)
    agreement = result["agreement"]
    if agreement:
        out.print(f"agreement with live: {agreement['rate']:.1%} of {agreement['pairs']:,} requests both answered",
                  highlight=False)
    if quality:
        c = quality["comparison"]
        interval = f", 95% CI {c['ci_low']:+.3f} to {c['ci_high']:+.3f}" if "ci_low" in c else ""
        out.print(f"quality on {quality['labelled']} feedback-labelled requests: {quality['metric']} difference "
                  f"{c['difference']:+.3f}{interval} ({c['verdict']})", highlight=False, soft_wrap=True)
    recommendation = result["recommendation"]
    out.print(f"recommendation: {recommendation['action']}: {recommendation['reason']}", highlight=False,
              soft_wrap=True)


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)
