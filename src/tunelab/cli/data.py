"""`tunelab data prepare` and `tunelab data augment`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from tunelab.cli.common import app, flag_overrides, option, out, split_overrides
from tunelab.config import load_config
from tunelab.errors import TunelabError


data_app = typer.Typer(help="Turn raw examples into training data.\n\nRecords are read, validated, "
                       "cleaned, redacted of PII, deduplicated and split; none is dropped silently.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("prepare")
def data_prepare(
    args: list[str] = typer.Argument(None, metavar="INPUT... [KEY=VALUE]...",
                                     help="Input files (.jsonl .json .csv .tsv .parquet, saved datasets "
                                          "directories, or example:sentiment; default: data.inputs) and "
                                          "config overrides such as data.pii.mode=drop."),
    out_dir: Optional[Path] = option("data.out_dir", "--out", "-o"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (its data: section)."),
    fmt: Optional[str] = option("data.format", "--format"),
    pii: Optional[str] = option("data.pii.mode", "--pii"),
    tokenizer: Optional[str] = option("data.tokenizer", "--tokenizer"),
    labels: Optional[str] = option("data.labels", "--labels", metavar="A,B,..."),
    text_column: Optional[str] = option("data.text_column", "--text-column"),
    label_column: Optional[str] = option("data.label_column", "--label-column"),
    val_file: Optional[str] = option("data.split.val_file", "--val-file"),
    test_file: Optional[str] = option("data.split.test_file", "--test-file"),
    strip_html: Optional[bool] = option("data.clean.strip_html", "--strip-html/--keep-html"),
    seed: Optional[int] = option("data.split.seed", "--seed"),
    num_proc: Optional[int] = option("data.num_proc", "--num-proc"),
    engine: Optional[str] = option("data.engine", "--engine"),
    ray_address: Optional[str] = option("data.ray_address", "--ray-address"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Prepare raw files for training.

    Writes train/val/test.jsonl, rejects.jsonl and duplicates.jsonl (each record set aside, with
    its reason), a report (json, md, html) and a manifest to the output directory."""
    from tunelab.data import prepare

    inputs, overrides = split_overrides(args or [])
    overrides += flag_overrides("data.", format=fmt, tokenizer=tokenizer, text_column=text_column,
                                label_column=label_column, labels=f"[{labels}]" if labels else None,
                                num_proc=num_proc, engine=engine, ray_address=ray_address)
    overrides += flag_overrides("data.pii.", mode=pii)
    overrides += flag_overrides("data.clean.", strip_html=strip_html)
    overrides += flag_overrides("data.split.", val_file=val_file, test_file=test_file, seed=seed)
    cfg = load_config(config, overrides).data
    if inputs:
        cfg.inputs = inputs
    if out_dir:
        cfg.out_dir = str(out_dir)
    result = prepare.run(cfg, show_progress=not quiet)
    _print_prepare_summary(result.report, result.out_dir)


def _print_prepare_summary(report: dict, out_dir: Path) -> None:
    counts = report["counts"]
    table = Table(title=f"tunelab data prepare: {report['kind']} data", show_header=False)
    for name in ("input", "kept", "rejected", "duplicates", "pii_redacted"):
        table.add_row(name, f"{counts[name]:,}")
    for split, n in report["splits"].items():
        table.add_row(f"  {split}", f"{n:,}")
    out.print(table)
    for warning in report["warnings"]:
        out.print(f"[yellow]warning:[/yellow] {warning}", markup=True, highlight=False)
    out.print(f"outputs in {out_dir}/ (report: {out_dir / 'report.html'})", highlight=False)


@data_app.command("augment")
def data_augment(
    prepared: Path = typer.Argument(..., metavar="PREPARED_DIR", help="Directory written by `tunelab data prepare`."),
    args: list[str] = typer.Argument(None, metavar="[KEY=VALUE]...",
                                     help="Overrides such as data.augment.variants=3."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="New prepared directory."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (its data.augment: section)."),
    variants: Optional[int] = typer.Option(None, "--variants", help="Rule-based variants per training record."),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", help="OpenAI-compatible API base URL for "
                                           "paraphrases and synthetic examples."),
    endpoint_model: Optional[str] = typer.Option(None, "--endpoint-model", help="Model name sent to the endpoint."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Add synthetic examples to the training split.

    Rule-based edits, instruction templates and, with --endpoint, paraphrases and few-shot
    examples from an OpenAI-compatible API; each marked meta.synthetic, deduplicated against
    the originals. val/test are copied unchanged; dropped.jsonl keeps what was set aside."""
    from tunelab.data import augment

    inputs, overrides = split_overrides(args or [])
    if inputs:
        raise TunelabError(f"unexpected arguments {', '.join(inputs)}",
                           fix="give one prepared directory, then key=value overrides")
    overrides += flag_overrides("data.augment.", variants=variants)
    overrides += flag_overrides("data.augment.endpoint.", url=endpoint, model=endpoint_model)
    cfg = load_config(config, overrides)
    report = augment.run(cfg.data, prepared, out_dir, show_progress=not quiet).report
    table = Table(title=f"tunelab data augment: {report['kind']} data", show_header=True)
    for column in ("method", "generated", "kept", "duplicates", "unusable"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for name, row in report["by_method"].items():
        table.add_row(name, *(f"{row[k]:,}" for k in ("generated", "kept", "duplicates", "unusable")))
    out.print(table)
    out.print(f"train: {report['originals']:,} originals + {report['synthetic']:,} synthetic; val and test "
              f"copied unchanged; outputs in {out_dir}/", highlight=False, soft_wrap=True)


