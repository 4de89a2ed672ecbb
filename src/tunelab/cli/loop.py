"""`tunelab monitor`, `tunelab label` and `tunelab retrain`: from served traffic to the next model."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tunelab.cli.common import app, err, flag_overrides, option, out, split_overrides
from tunelab.config import load_config
from tunelab.errors import TunelabError
from tunelab.progress import quiet_library_output


@app.command("monitor")
def monitor(
    args: list[str] = typer.Argument(None, metavar="[CONFIG.yaml] [KEY=VALUE]...",
                                     help="A YAML config (its monitor: section) and overrides such as monitor.window=200."),
    log: Optional[str] = option("monitor.prediction_log", "--log"),
    reference: Optional[str] = option("monitor.reference", "--reference"),
    window: Optional[str] = option("monitor.window", "--window", metavar="N|SPAN"),
    rollback: Optional[bool] = option("monitor.rollback", "--rollback/--no-rollback"),
    registry: Optional[str] = option("monitor.registry", "--registry"),
    out_dir: Optional[str] = option("monitor.out_dir", "--out", "-o"),
    watch: Optional[str] = option("monitor.watch", "--watch", metavar="INTERVAL"),
    watch_count: Optional[int] = option("monitor.watch_count", "--watch-count"),
    fail_on_drift: bool = typer.Option(False, "--fail-on-drift", help="Exit 1 when drift is found (for cron/CI alerts)."),
) -> None:
    """Check recent predictions for drift from the reference data.

    Writes a drift report, prints alerts and, with --rollback, rolls the served version back."""
    inputs, overrides = split_overrides(args or [])
    if len(inputs) > 1:
        raise TunelabError(f"expected one config file, got {', '.join(inputs)}",
                           fix="pass one YAML file, then key=value overrides")
    overrides += flag_overrides("monitor.", prediction_log=log, reference=reference, window=window,
                                rollback=None if rollback is None else str(rollback).lower(), registry=registry,
                                out_dir=out_dir, watch=watch, watch_count=watch_count)
    cfg = load_config(inputs[0] if inputs else None, overrides).monitor
    from tunelab.monitor import run as monitor_run

    if not cfg.watch:
        result = monitor_run.run(cfg)
        _print_monitor_summary(result)
        if fail_on_drift and result.drifted:
            raise typer.Exit(1)
        return
    try:
        result = monitor_run.watch(cfg, _print_monitor_summary)
    except KeyboardInterrupt:
        out.print("stopped watching", highlight=False)
        return
    if fail_on_drift and result.drifted:
        raise typer.Exit(1)


def _print_monitor_summary(result) -> None:
    report = result.report
    tested = sum(f["p_value"] is not None or f["statistic"] is not None for f in report["features"])
    out.print(f"monitor: {report['window']['predictions']:,} predictions against {report['reference']['source']}; "
              f"{tested} of {len(report['features'])} features tested", highlight=False, soft_wrap=True)
    drifted = [f["feature"] for f in report["features"] if f["drifted"]]
    out.print(f"drift: {', '.join(drifted)}" if drifted else "drift: none found", highlight=False)
    for sentence in report["notes"]:
        out.print(f"[yellow]note:[/yellow] {sentence}", highlight=False, soft_wrap=True)
    for sentence in report["alerts"]:
        out.print(f"[red]alert:[/red] {sentence}", highlight=False, soft_wrap=True)
    if report["rollback"] is not None:
        done = report["rollback"]
        out.print(f"rollback: {done['from']} -> {done['to']}" if not done["error"] else
                  f"rollback: not done ({done['error']})", highlight=False, soft_wrap=True)
    hook = report.get("webhook")
    if hook:
        out.print(f"webhook: delivered to {hook['url']} (HTTP {hook['status']})" if hook["delivered"] else
                  f"webhook: NOT delivered to {hook['url']} after {hook['attempts']} attempts ({hook['error']})",
                  highlight=False, soft_wrap=True)
    out.print(f"report: {result.out_dir / 'report.html'} (also report.json, report.md)", highlight=False, soft_wrap=True)


label_app = typer.Typer(help="Pick records to label, check labels, move them in and out.\n\n"
                        "select picks the records most worth labelling; issues finds likely wrong labels; "
                        "export and import move batches to and from annotators; feedback turns served "
                        "feedback into training records.", no_args_is_help=True)
app.add_typer(label_app, name="label")
CONFIG_ARGS = typer.Argument(None, metavar="[CONFIG.yaml] [KEY=VALUE]...",
                             help="A YAML config (its label: section) and overrides such as label.select.candidates=10.")


def _label_config(args: list[str] | None, overrides: list[str]):
    inputs, more = split_overrides(args or [])
    if len(inputs) > 1:
        raise TunelabError(f"expected one config file, got {', '.join(inputs)}",
                           fix="pass one YAML file, then key=value overrides")
    return load_config(inputs[0] if inputs else None, more + overrides)


@label_app.command("select")
def label_select(
    args: list[str] = CONFIG_ARGS,
    run_dir: str = typer.Option(..., "--run", help="Run directory whose uncertainty ranks the candidates."),
    pool: Optional[str] = typer.Option(None, "--pool", help="Unlabelled records to choose from (.jsonl .csv ...)."),
    log: Optional[str] = typer.Option(None, "--log", help="Or: the prediction log of the served run."),
    k: int = typer.Option(..., "--k", help="Records to pick."),
    out_file: Path = typer.Option(..., "--out", "-o", help="Batch file to write (JSONL)."),
    labelled: list[str] = typer.Option([], "--labelled", help="JSONL of records already labelled (repeatable); "
                                       "the run's training data is always left out."),
    strategy: Optional[str] = option("label.select.strategy", "--strategy"),
    window: Optional[str] = option("label.select.window", "--window", metavar="N|SPAN"),
    text_column: Optional[str] = option("label.text_column", "--text-column"),
) -> None:
    """Pick the k records most worth labelling.

    The most uncertain for the run, no near duplicates, spread over the embedding space, none
    already labelled; written as a batch to export for labelling."""
    from tunelab.label import select

    cfg = _label_config(args, flag_overrides("label.select.", strategy=strategy, window=window)
                        + flag_overrides("label.", text_column=text_column))
    quiet_library_output()
    result = select.run(cfg.label.select, run_dir=run_dir, k=k, out=out_file, pool=pool, log=log,
                        labelled=labelled, text_column=cfg.label.text_column, dedup_settings=cfg.data.dedup)
    out.print(f"selected {result.selected} of {result.candidates:,} candidates by {result.uncertainty} "
              f"({result.already_labelled:,} already labelled, {result.near_duplicates:,} near duplicates left out); "
              f"batch: {result.out}", highlight=False, soft_wrap=True)


@label_app.command("issues")
def label_issues(
    args: list[str] = CONFIG_ARGS,
    data: str = typer.Option(..., "--data", help="Labelled records to check (JSONL or CSV with text, label)."),
    run_dir: Optional[str] = typer.Option(None, "--run", help="Take probabilities from this classifier run."),
    probe: bool = typer.Option(False, "--probe", help="Take out-of-fold probabilities from a probe on frozen "
                                                     "embeddings."),
    out_file: Path = typer.Option(..., "--out", "-o", help="Issues file to write (JSONL, most likely first)."),
    text_column: Optional[str] = option("label.text_column", "--text-column"),
) -> None:
    """List records whose label is likely wrong, most likely first.

    Confident learning (cleanlab) on out-of-fold predicted probabilities; each issue gives the
    record's line, text, given label and suggested label."""
    from tunelab.label import issues

    cfg = _label_config(args, flag_overrides("label.", text_column=text_column))
    quiet_library_output()
    result = issues.run(cfg.label.issues, data=data, out=out_file, run_dir=run_dir, probe=probe,
                        text_column=cfg.label.text_column)
    out.print(f"{result.issues} likely label issues in {result.records:,} records; probabilities from "
              f"{result.probabilities_from}; issues: {result.out}", highlight=False, soft_wrap=True)


@label_app.command("export")
def label_export(
    args: list[str] = typer.Argument(None, metavar="[BATCH.jsonl] [CONFIG.yaml] [KEY=VALUE]...",
                                     help="The batch to export (from `label select`), a YAML config and "
                                          "overrides."),
    fmt: str = typer.Option("label-studio", "--format", help="label-studio, csv or jsonl."),
    out_file: Path = typer.Option(..., "--out", "-o", help="File to write (label-studio: tasks JSON, "
                                  "with the interface config beside it as .xml)."),
    log: Optional[str] = typer.Option(None, "--log", help="Instead of a batch: a review sample of the generated "
                                                         "answers in this prediction log."),
    labels: Optional[str] = typer.Option(None, "--labels", metavar="A,B,...", help="Labels to choose from "
                                         "(label-studio; default: the batch's)."),
    sample: Optional[int] = option("label.review.sample", "--sample"),
) -> None:
    """Write a batch for annotators: Label Studio, CSV or JSONL.

    Text records get a label to choose; generated answers a 1-5 rating and a corrected answer."""
    from tunelab.label import review

    inputs, overrides = split_overrides(args or [])
    batches = [a for a in inputs if not a.endswith((".yaml", ".yml"))]
    cfg = load_config(next((a for a in inputs if a.endswith((".yaml", ".yml"))), None),
                      overrides + flag_overrides("label.review.", sample=sample))
    if (len(batches) == 1) == (log is not None) or len(batches) > 1:
        raise TunelabError("give one batch file, or --log for a review sample of generated answers",
                           where="label export", fix="name what to export")
    if log is not None:
        from tunelab.monitor.features import answered
        from tunelab.serve.predlog import read_predictions
        rows = [r for r in answered(read_predictions(log)) if r.get("label") is None]
        records = review.review_sample(rows, cfg.label.review.sample, cfg.label.review.seed)
    else:
        records = review.read_batch(batches[0])
    written = review.export(records, fmt, out_file, labels=labels.split(",") if labels else None)
    out.print(f"exported {len(records)} records as {fmt}: {', '.join(map(str, written))}", highlight=False,
              soft_wrap=True)


@label_app.command("import")
def label_import(
    files: list[str] = typer.Argument(..., metavar="FILE...", help="Label Studio JSON exports or CSV files."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Directory for the records, conflicts and summary."),
) -> None:
    """Read annotations back as training records.

    Annotator ids go to meta.annotators; agreement (Cohen's or Fleiss' kappa) is measured where
    several people answered an item, and disagreements go to conflicts.jsonl, not guessed."""
    from tunelab.label import review

    summary = review.import_annotations(files, out_dir)
    _print_label_summary(summary, out_dir)


@label_app.command("feedback")
def label_feedback(
    log: str = typer.Option(..., "--log", help="Prediction log holding the feedback."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Directory for the records, conflicts and summary."),
) -> None:
    """Turn feedback on served answers into training records.

    Labels become classification records, corrections SFT chats, preferred answers DPO pairs."""
    from tunelab.label import feedback

    summary = feedback.run(log, out_dir)
    _print_label_summary(summary, out_dir)
    if summary["skipped_unknown_request"]:
        out.print(f"[yellow]warning:[/yellow] {summary['skipped_unknown_request']} feedback records name requests "
                  f"the log does not hold; listed in {out_dir / 'skipped.jsonl'}", highlight=False, soft_wrap=True)


def _print_label_summary(summary: dict, out_dir: Path) -> None:
    counts = ", ".join(f"{name} {summary[name]:,}" for name in ("classification", "sft", "ratings", "dpo", "conflicts")
                       if name in summary)
    out.print(f"records: {counts} (in {out_dir}/)", highlight=False, soft_wrap=True)
    found = summary.get("agreement")
    if found:
        name = "Cohen's" if found["measure"] == "cohen" else "Fleiss'"
        out.print(f"agreement: {name} kappa {found['kappa']:.3f} over {found['items']} items with several annotators "
                  f"({found['percent_agreement']:.0%} unanimous)", highlight=False, soft_wrap=True)


@app.command("retrain")
def retrain(
    args: list[str] = typer.Argument(None, metavar="[NEW.jsonl...] [CONFIG.yaml] [KEY=VALUE]...",
                                     help="Newly labelled records (from `label import` / `label feedback`), a YAML "
                                          "config (its retrain: and eval: sections) and overrides."),
    live: Optional[str] = option("retrain.live", "--live"),
    registry: Optional[str] = option("retrain.registry", "--registry"),
    start_from: Optional[str] = option("retrain.start_from", "--from"),
    replay: Optional[float] = option("retrain.replay", "--replay"),
    deploy: Optional[str] = option("retrain.deploy", "--deploy"),
    out_dir: Optional[str] = option("retrain.out_dir", "--out", "-o"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress messages."),
) -> None:
    """Train a candidate on new labels, gated against the live model.

    The new records are prepared with the live run's data settings, mixed with a replay of its
    training data, trained on, evaluated against the live model on the old and the new test
    split, and registered; when the gate passes, --deploy shadow, canary or promote puts it
    beside the live model or in its place.
    Exits 1 when the gate fails."""
    inputs, overrides = split_overrides(args or [])
    configs = [a for a in inputs if a.endswith((".yaml", ".yml"))]
    if len(configs) > 1:
        raise TunelabError(f"expected one config file, got {', '.join(configs)}",
                           fix="pass the new data files, one YAML file, then key=value overrides")
    overrides += flag_overrides("retrain.", live=live, registry=registry, start_from=start_from, replay=replay,
                                deploy=deploy, out_dir=out_dir)
    cfg = load_config(configs[0] if configs else None, overrides)
    from tunelab import retrain as retrain_stage  # torch/transformers: after the config is known good

    quiet_library_output()

    def progress(message: str) -> None:
        if not quiet:
            err.print(f"[dim]retrain: {message}[/dim]", highlight=False)

    result = retrain_stage.run(cfg.retrain, [a for a in inputs if a not in configs], eval_cfg=cfg.eval,
                               progress=progress)
    summary = result.summary
    data = summary["data"]
    out.print(f"new records: {data['new']['train']} train, {data['new']['val']} val, {data['new']['test']} test "
              f"({data['new_duplicates_of_old']} duplicates of old data dropped); replayed {data['replayed']:,} of "
              f"{data['old_train']:,} old training records", highlight=False, soft_wrap=True)
    for name, split in (("eval_old", "old test"), ("eval_new", "new test")):
        scores = summary[name]
        if scores:
            out.print(f"{split}: candidate {scores['headline']} {scores['candidate']:.3f} vs live {scores['live']:.3f} "
                      f"({scores['verdict']}, diff {scores['difference']:+.3f}, CI {scores['ci_low']:+.3f} to "
                      f"{scores['ci_high']:+.3f})", highlight=False, soft_wrap=True)
    out.print(summary["verdict"], highlight=False, soft_wrap=True)
    out.print(f"artefacts: {result.out_dir}/ (summary.json, candidate/, eval_old/, eval_new/, data/, prepared/)",
              highlight=False, soft_wrap=True)
    if not result.passed:
        raise typer.Exit(1)


