"""The `tunelab` command: one plain function per stage; each parses, calls the stage's run(),
prints a summary and exits. User errors print one sentence and exit 2, without a traceback."""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from tunelab import __version__
from tunelab.config import TASKS, field_description, load_config
from tunelab.errors import TunelabError
from tunelab.progress import quiet_library_output

app = typer.Typer(help="Fine-tune a model on your own examples, then prove, serve and watch it.\n\n"
                  "The usual order: data prepare, train, eval, serve, monitor. Each command reads its "
                  "section of one YAML config; KEY=VALUE arguments such as train.lr=1e-4 override it.",
                  no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, rich_markup_mode=None)
data_app = typer.Typer(help="Turn raw examples into training data.\n\nRecords are read, validated, "
                       "cleaned, redacted of PII, deduplicated and split; none is dropped silently.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")
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


@app.command("train")
def train(
    args: list[str] = typer.Argument(None, metavar="[CONFIG.yaml] [KEY=VALUE]...",
                                     help="A YAML config (its train: section) and overrides such as train.lr=1e-4."),
    model: Optional[str] = option("train.model", "--model"),
    data: Optional[str] = option("train.data", "--data"),
    task: Optional[str] = option("train.task", "--task"),
    method: Optional[str] = option("train.method", "--method"),
    epochs: Optional[float] = option("train.epochs", "--epochs"),
    lr: Optional[float] = option("train.lr", "--lr"),
    output: Optional[str] = option("train.output_dir", "--output", "-o"),
    resume: bool = option("train.resume", "--resume", default=False),
) -> None:
    """Fine-tune a model and write its run directory.

    The run directory holds the weights or adapter, the tokenizer, the resolved config, metrics,
    a manifest and a model card; transformers, PEFT and vLLM load it without tunelab."""
    config_files = [a for a in (args or []) if not OVERRIDE.match(a)]
    if len(config_files) > 1:
        raise TunelabError(f"expected one config file, got {', '.join(config_files)}",
                           fix="pass one YAML file, then key=value overrides")
    overrides = [a for a in (args or []) if OVERRIDE.match(a)]
    overrides += flag_overrides("train.", model=model, data=data, task=task, method=method, epochs=epochs, lr=lr,
                                output_dir=output, resume=True if resume else None)
    cfg = load_config(config_files[0] if config_files else None, overrides)
    from tunelab.train import run as train_run  # torch/transformers/TRL: after the config is known good

    quiet_library_output()
    result = train_run.run(cfg)
    if not result.main_process:  # a multi-process launch prints one summary, from process 0
        raise typer.Exit(130 if result.interrupted else 0)
    if result.interrupted:
        out.print(f"interrupted: checkpoint saved; continue with `tunelab train ... --resume` "
                  f"(run directory {result.run_dir})", highlight=False)
        raise typer.Exit(130)
    out.print(f"trained ({result.task}); run directory: {result.run_dir}", highlight=False)
    for name, value in result.metrics.items():
        if name.startswith("eval_") and isinstance(value, float) and not name.endswith(("runtime", "per_second")):
            out.print(f"  {name.removeprefix('eval_')}: {value:.4f}", highlight=False)


@app.command("grade")
def grade(
    grader: str = typer.Argument(..., metavar="GRADER.json", help="OpenAI grader JSON (string_check, "
                                 "text_similarity, python, score_model, multi)."),
    data: str = typer.Option(..., "--data", help="Items the grader reads as `item`: a JSONL file or a prepared "
                             "directory (its test.jsonl)."),
    predictions: str = typer.Option(..., "--predictions", help="One answer per item: JSON strings, objects with "
                                    "output_text or prediction, or chat records."),
    out_file: Path = typer.Option(Path("grades.jsonl"), "--out", "-o", help="Per-item results (JSONL)."),
    worst: int = typer.Option(10, "--worst", help="Lowest-scoring items shown."),
    allow_python: bool = typer.Option(False, "--allow-python", help="Run python graders' code (in a subprocess "
                                      "without network)."),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds a python grader may take per answer."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint for score_model "
                                           "graders (default: OPENAI_BASE_URL)."),
) -> None:
    """Run a grader over model answers, to check it before training.

    Prints the mean reward and the worst items with the reason for each score, and
    writes every item's score, reason and sub-scores to a JSONL file."""
    from tunelab.graders import GraderRuntime, load_grader
    from tunelab.graders.batch import grade_all, read_answers, read_items, write_results

    loaded = load_grader(grader)
    with GraderRuntime(allow_python=allow_python, python_timeout_s=timeout, base_url=base_url) as runtime:
        runtime.check_allowed(loaded)
        report = grade_all(loaded, read_items(data), read_answers(predictions), runtime=runtime, where=predictions)
    write_results(out_file, report)
    passed = f", pass rate {report.pass_rate:.3f}" if report.pass_rate is not None else ""
    out.print(f"{loaded.name} ({loaded.type}): mean reward {report.mean:.4f} (std {report.std:.4f}) over "
              f"{len(report.rows):,} items{passed}; grader failures: {report.failures}", highlight=False,
              soft_wrap=True)
    table = Table("item", "reward", "answer", "reason", title=f"lowest {min(worst, len(report.rows))} rewards")
    for row in report.worst(worst):
        answer = row["output_text"] if len(row["output_text"]) <= 40 else row["output_text"][:40] + "…"
        table.add_row(str(row["index"]), f"{row['score']:.4f}", answer, row["reason"] or "")
    out.print(table)
    out.print(f"per-item results: {out_file}", highlight=False, soft_wrap=True)


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


@app.command("tune")
def tune(
    args: list[str] = typer.Argument(..., metavar="CONFIG.yaml [KEY=VALUE]...",
                                     help="A YAML config (its train:, eval: and tune: sections) and overrides "
                                          "such as tune.pruner=none."),
    trials: Optional[int] = typer.Option(None, "--trials", "-n", help="Finished trials to reach (tune.trials)."),
    resume: bool = typer.Option(False, "--resume", help="Continue (or join) the study in tune.storage."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL, e.g. sqlite:///tune.db or "
                                          "postgresql://host/db, shared by machines."),
    out_dir: Optional[str] = typer.Option(None, "--out", "-o", help="Directory of trials and results (tune.output_dir)."),
) -> None:
    """Search hyperparameters with Optuna, each trial a run directory.

    TPE proposes values from tune.space, a pruner stops weak trials early, the eval stage scores
    each on the validation split. Results go to results.json and results.csv."""
    inputs, overrides = split_overrides(args or [])
    if len(inputs) != 1:
        raise TunelabError(f"expected one config file, got {', '.join(inputs) or 'none'}",
                           fix="pass one YAML file with a tune: section, then key=value overrides")
    overrides += flag_overrides("tune.", trials=trials, storage=storage, output_dir=out_dir)
    cfg = load_config(inputs[0], overrides)
    from tunelab import tune as tune_stage  # optuna, torch, transformers: after the config is known good

    quiet_library_output()
    result = tune_stage.run(cfg, resume=resume, log=lambda m: err.print(f"[dim]tune: {m}[/dim]", highlight=False))
    results = result.results
    names = sorted({p for t in results["trials"] for p in t["params"]})
    table = Table("trial", "state", results["metric"], *names, title=f"tunelab tune: {results['study']}")
    for t in results["trials"]:
        table.add_row(str(t["number"]), t["state"], "-" if t["value"] is None else f"{t['value']:.4f}",
                      *(f"{t['params'][n]:.3g}" if isinstance(t["params"].get(n), float) else str(t["params"].get(n, "-"))
                        for n in names))
    out.print(table)
    best = results["best"]
    if best:
        out.print(f"best: trial {best['number']}, {results['metric']} {best['value']:.4f}; run directory: "
                  f"{best['run_dir']}", highlight=False, soft_wrap=True)
    out.print(f"results: {result.out_dir / 'results.json'} (also results.csv); study {results['study']} in "
              f"{results['storage']}", highlight=False, soft_wrap=True)
    if result.interrupted:
        out.print("interrupted: continue with `tunelab tune ... --resume`", highlight=False)
        raise typer.Exit(130)


@app.command("export")
def export(
    run_dir: Path = typer.Argument(..., metavar="RUN", help="Run directory from `tunelab train`."),
    merge: bool = typer.Option(False, "--merge", help="Fold the run's LoRA/DoRA adapter into its base model "
                                                      "(checked on logits before saving)."),
    format: Optional[str] = typer.Option(None, "--format", "-f",
                                         help="Write the run for another runtime: gguf (llama.cpp, Ollama; "
                                              "with a Modelfile) or onnx (ONNX Runtime on CPU)."),
    quant: Optional[str] = typer.Option(None, "--quant", help="GGUF weight type: f16 (default), q8_0 or q4_k_m."),
    int8: bool = typer.Option(False, "--int8", help="ONNX: dynamic int8 quantisation of the weights."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Output directory (default: RUN/merged, "
                                                                     "RUN/gguf, RUN/onnx or RUN/onnx-int8)."),
    tolerance: Optional[float] = typer.Option(None, "--tolerance", help="Largest logit difference accepted "
                                                                         "(default: 1e-4 fp32, 1e-2 bf16/fp16)."),
) -> None:
    """Write a run where people run models: merged, GGUF (+ Ollama Modelfile) or ONNX.

    Every export is checked against the run it came from (logits, greedy answers, labels) and
    nothing is written when a check fails; a manifest records the source run and the checks."""
    quiet_library_output()
    if format is None:
        if quant is not None or int8:
            raise TunelabError("--quant and --int8 go with --format", where="tunelab export",
                               fix="add --format gguf (for --quant) or --format onnx (for --int8)")
        from tunelab.export import merge as merge_export
        result = merge_export.run(run_dir, merge=merge, out_dir=out_dir, tolerance=tolerance)
    elif format == "gguf":
        from tunelab.export import gguf
        result = gguf.run(run_dir, quant=quant or "f16", out_dir=out_dir)
    elif format == "onnx":
        if quant is not None:
            raise TunelabError("--quant chooses a GGUF weight type; ONNX is quantised with --int8", where="--quant",
                               fix="use --format onnx --int8")
        from tunelab.export import onnx
        result = onnx.run(run_dir, int8=int8, out_dir=out_dir, tolerance=tolerance)
    else:
        raise TunelabError(f"unknown export format {format!r}", where="--format",
                           fix="use --format gguf or --format onnx (or --merge for a merged transformers model)")
    out.print(result.message, highlight=False, soft_wrap=True)


@app.command("recommend")
def recommend(
    task: str = typer.Option("sft", "--task", help=f"{', '.join(TASKS)}."),
    examples: int = typer.Option(..., "--examples", help="Number of training examples."),
    avg_tokens: int = typer.Option(256, "--avg-tokens", help="Tokens in a typical example."),
    epochs: float = typer.Option(3, "--epochs", help="Training epochs."),
    device: Optional[str] = typer.Option(None, "--device", help="cuda or cpu (default: what this machine has)."),
    memory_gb: Optional[float] = typer.Option(None, "--memory-gb", help="Device memory (default: free memory here)."),
    tflops: Optional[float] = typer.Option(None, "--tflops", help="Device peak TFLOPS (default: 0.2 CPU, 300 GPU)."),
    price: float = typer.Option(0.0, "--price-per-hour", help="Device price per hour (USD)."),
    privacy: str = typer.Option("local", "--privacy", help="local: data must stay here; any: hosted APIs allowed."),
    budget: Optional[float] = typer.Option(None, "--budget", help="Most you will spend on training (USD)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Rank base models for your data and hardware.

    Each row gives the training method, memory, time and cost, and whether it fits."""
    import torch

    from tunelab.models import memory
    from tunelab.models import recommend as ranking

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if memory_gb is None:
        memory_gb = memory.available_memory(device)[0] / memory.GB
    recs = ranking.recommend(task=task, examples=examples, avg_tokens=avg_tokens, epochs=epochs,
                             device_memory_gb=memory_gb, device_tflops=tflops or (300.0 if device == "cuda" else 0.2),
                             price_per_gpu_hour=price, privacy=privacy, budget_usd=budget, device=device)
    if as_json:
        print(ranking.to_json(recs))
    else:
        out.print(ranking.format_table(recs))


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
        out.print(f"live: {data['live'] or 'none'}; history: {' -> '.join(data['history']) or 'empty'}",
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
    split, and registered; --deploy promote makes the candidate live when the gate passes.
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
