"""`tunelab train`, `grade`, `tune`, `export` and `recommend`: making and checking models."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from tunelab.cli.common import OVERRIDE, app, err, flag_overrides, option, out, split_overrides
from tunelab.config import TASKS, load_config
from tunelab.errors import TunelabError
from tunelab.progress import quiet_library_output


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
        out.print(getattr(result, "message", None) or f"interrupted: checkpoint saved; continue with `tunelab train "
                  f"... --resume` (run directory {result.run_dir})", highlight=False, soft_wrap=True)
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
    """Write a run for other runtimes: merged, GGUF (Ollama) or ONNX.

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


