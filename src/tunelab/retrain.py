"""`tunelab retrain`: the next round. Newly labelled records (from `label import` or `label
feedback`) are prepared with the live run's own data settings together with its old data, so
the data stage drops any new record that duplicates an old one and checks leakage between the
splits; a replay share of the live run's training records is mixed in against forgetting; a
candidate is trained (from the live run's weights or its base); `tunelab eval` compares it
with the live model on the old test split AND on the new data's test split; the gate decides;
the candidate is registered, and when the gate passes put in place as deploy says: shadow (a
copy of each request), canary (a share of the traffic) or promote (live).

Everything is left in out_dir: prepared/ (the data stage's outputs over old + new), data/ (the
candidate's train/val/test), candidate/ (the run), eval_old/ and eval_new/ (the reports), and
summary.json (written last: its presence marks a complete round).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config import DataConfig, EvalConfig, RetrainConfig, RunConfig
from tunelab.errors import TunelabError
from tunelab.files import read_jsonl, write_json, write_jsonl
from tunelab.train.run_dir import RunDir

HEADLINE = {"classification": "macro_f1", "generative": "exact_match"}
SPLITS = ("train", "val", "test")


@dataclass
class RetrainResult:
    out_dir: Path
    summary: dict[str, Any]

    @property
    def passed(self) -> bool:
        return self.summary["gate"]["passed"]


def run(cfg: RetrainConfig, new_data: list[str], *, eval_cfg: EvalConfig,
        progress=lambda message: None) -> RetrainResult:
    out = Path(cfg.out_dir)
    (out / "summary.json").unlink(missing_ok=True)  # written last: a stale one must not pass for this round
    live = live_run(cfg)
    files = check_new_data([*cfg.new_data, *new_data])
    progress("preparing the new records with the live run's data settings")
    data = prepare_round(live, files, out, replay=cfg.replay, seed=cfg.seed)
    progress(f"training the candidate from the {cfg.start_from} model")
    candidate = train_candidate(live, cfg, out / "data", out / "candidate")
    progress("evaluating the candidate against the live model on the old test split")
    old = evaluate(candidate, live, live_test_data(live), out / "eval_old", eval_cfg)
    progress("evaluating it on the new data's test split")
    new = evaluate(candidate, live, str(out / "data"), out / "eval_new", eval_cfg) if data["new"]["test"] else None
    gate = judge(old, new, str(live.path), cfg.gate)
    registered = register(cfg, live, candidate, deploy=cfg.deploy if gate["passed"] else "none")
    summary = {"live": str(live.path), "candidate": str(candidate), "start_from": cfg.start_from, "data": data,
               "eval_old": _scores(old, str(live.path)), "eval_new": _scores(new, str(live.path)) if new else None,
               "gate": gate, "registry": registered, "deploy": cfg.deploy,
               "verdict": verdict(gate, registered, cfg.deploy)}
    write_json(out / "summary.json", summary)
    return RetrainResult(out, summary)


def live_run(cfg: RetrainConfig) -> RunDir:
    """The live model: retrain.live, else the registry's live version."""
    if cfg.live:
        run = RunDir.open(cfg.live)
    else:
        from tunelab.serve.registry import Registry
        entry = Registry(cfg.registry).live() if Path(cfg.registry).is_file() else None
        if entry is None:
            raise TunelabError("no live model: the registry has no live version", where=cfg.registry,
                               fix="pass --live RUN_DIR, or register and promote the served run first")
        run = RunDir.open(entry["path"])
    if not run.is_run:
        raise TunelabError("the live model is not a run directory of `tunelab train`", where=str(run.path),
                           fix="retrain needs the run's config.yaml and manifest.json to repeat its settings")
    train = run.train_config
    if train.get("mix") or train.get("stages"):
        raise TunelabError("retrain repeats single-source runs; this one used train.mix or train.stages",
                           where=str(run.path / "config.yaml"), fix="train the next round with `tunelab train`")
    return run


def check_new_data(files: list[str]) -> list[str]:
    if not files:
        raise TunelabError("no new labelled data given", where="retrain",
                           fix="pass the files `label import` or `label feedback` wrote, e.g. labelled/classification.jsonl")
    for name in files:
        if not Path(name).is_file():
            raise TunelabError("new data not found", where=name, fix="pass a JSONL of labelled records")
    return [str(Path(name).resolve()) for name in files]


def old_data_files(live: RunDir) -> list[str]:
    """The live run's data as prepared: its prepared directory's splits, or its data file(s)."""
    source = live.training_sources()[0]
    path = Path(source["data"])
    if path.is_dir():
        files = [path / f"{split}.jsonl" for split in SPLITS if (path / f"{split}.jsonl").is_file()]
    else:
        files = [path] + ([Path(source["eval_data"])] if source["eval_data"] else [])
    missing = [str(f) for f in files if not f.is_file()] or ([] if files else [str(path)])
    if missing:
        raise TunelabError(f"the live run's data {missing[0]} is not here", where=str(live.path / "config.yaml"),
                           fix="run retrain from the directory training ran in")
    return [str(f.resolve()) for f in files]


def prepare_round(live: RunDir, new_files: list[str], out: Path, *, replay: float, seed: int) -> dict[str, Any]:
    """Old + new through the data stage (the live run's data settings: old records come first, so
    a new record duplicating one is the copy dropped; leakage checked over all); then the
    candidate's data: new train + a replay sample of the live run's training records, new + old
    validation, and the new test split."""
    from tunelab.data import prepare
    settings = DataConfig.model_validate(live.config.get("data") or {})
    old_files = old_data_files(live)
    settings = settings.model_copy(update={"inputs": old_files + new_files, "out_dir": str(out / "prepared")})
    result = prepare.run(settings, show_progress=False)
    new_sources = set(new_files)
    new = {split: [r for r in read_jsonl(out / "prepared" / f"{split}.jsonl") if r["meta"]["source"] in new_sources]
           for split in SPLITS}
    duplicates = [d for d in read_jsonl(out / "prepared" / "duplicates.jsonl") if d["source"] in new_sources]
    old_train = live.training_records()
    replayed = random.Random(seed).sample(old_train, round(replay * len(old_train)))
    old_val = [r for f in old_files if Path(f).name == "val.jsonl" for r in read_jsonl(Path(f))]
    write_jsonl(out / "data" / "train.jsonl", new["train"] + replayed)
    write_jsonl(out / "data" / "val.jsonl", new["val"] + old_val)
    write_jsonl(out / "data" / "test.jsonl", new["test"])
    if not new["train"]:
        raise TunelabError("none of the new records is left to train on (all duplicates of old data, rejected, or "
                           "held out)", where=", ".join(new_files), fix=f"see {out / 'prepared'} and label more records")
    leakage = result.report["leakage"]
    return {"new": {split: len(rows) for split, rows in new.items()},
            "new_duplicates_of_old": sum(d["duplicate_of"]["source"] in set(old_files) for d in duplicates),
            "new_duplicates_within": sum(d["duplicate_of"]["source"] in new_sources for d in duplicates),
            "new_rejected": sum(r["source"] in new_sources for r in read_jsonl(out / "prepared" / "rejects.jsonl")),
            "replayed": len(replayed), "old_train": len(old_train),
            "leakage": {"val_vs_train": leakage["val_vs_train"], "test_vs_train": leakage["test_vs_train"]},
            "candidate_train": len(new["train"]) + len(replayed), "candidate_val": len(new["val"]) + len(old_val)}


def train_candidate(live: RunDir, cfg: RetrainConfig, data: Path, output: Path) -> Path:
    """The live run's own settings, on the round's data, from the live weights or its base."""
    from tunelab.train import run as train_run
    settings = dict(live.config)
    train = {**live.train_config, "model": str(live.path) if cfg.start_from == "live" else live.base_model,
             "data": str(data), "eval_data": None, "output_dir": str(output), "max_train_examples": None,
             "resume": False, "labels": live.labels if live.is_classifier else live.train_config.get("labels")}
    settings["train"] = {**train, **cfg.train}
    try:
        run_cfg = RunConfig.model_validate(settings)
    except Exception as exc:  # pydantic's ValidationError, said in one sentence
        raise TunelabError(f"the candidate's train settings are invalid ({str(exc).splitlines()[0]})",
                           where="retrain.train", fix="check the overrides against docs/configuration.md") from None
    train_run.run(run_cfg)
    return output


def live_test_data(live: RunDir) -> str:
    sources = live.test_sources()
    if not sources:
        raise TunelabError("the live run has no test split beside its training data", where=str(live.path),
                           fix="prepare its data with `tunelab data prepare` (which holds a test split out)")
    return sources[0]["path"]


def evaluate(candidate: Path, live: RunDir, data: str, out_dir: Path, settings: EvalConfig) -> dict[str, Any]:
    from tunelab.evaluate import run as eval_run
    cfg = settings.model_copy(update={"model": str(candidate), "data": data, "baselines": [str(live.path)],
                                      "out_dir": str(out_dir)}, deep=True)
    cfg.gate.enforce = False  # the round's gate is judged below, against the live model
    return eval_run.run(cfg).report


def judge(old: dict[str, Any], new: dict[str, Any] | None, live: str, gate) -> dict[str, Any]:
    """The gate, checked by `tunelab eval`'s gate machinery: no worse than the live model by more
    than max_old_drop on the old test split; better (or higher) on the new data's test split."""
    from tunelab.evaluate.gate import evaluate_gates
    headline = HEADLINE[old["task"]]
    floor = old["baselines"][live][headline] - gate.max_old_drop
    checks = [{**c, "split": "old test"} for c in
              evaluate_gates(old, minimums={headline: floor}, maximums={}, better_than=[], headline=headline)["checks"]]
    if new is None:
        checks.append({"metric": headline, "op": "better than", "threshold": live, "value": None, "passed": False,
                       "split": "new test", "reason": "the new data's test split is empty: label more records"})
    elif gate.new_data == "better":
        checks += [{**c, "split": "new test"} for c in
                   evaluate_gates(new, minimums={}, maximums={}, better_than=[live], headline=headline)["checks"]]
    else:
        above = math.nextafter(new["baselines"][live][headline], math.inf)
        checks += [{**c, "split": "new test"} for c in
                   evaluate_gates(new, minimums={headline: above}, maximums={}, better_than=[], headline=headline)["checks"]]
    return {"passed": all(c["passed"] for c in checks), "headline": headline, "checks": checks}


def register(cfg: RetrainConfig, live: RunDir, candidate: Path, *, deploy: str) -> dict[str, Any]:
    """The candidate as the registry's next version (the live run registered first, so an empty
    registry keeps the live model live); then made the shadow, the canary or live (`deploy`)."""
    from tunelab.serve.registry import Registry
    registry = Registry(cfg.registry)
    registry.register(live.path)
    entry = registry.register(candidate)
    if deploy == "promote":
        registry.promote(entry["version"])
    elif deploy == "shadow":
        registry.set_shadow(entry["version"])
    elif deploy == "canary":
        registry.set_canary(entry["version"], cfg.canary_share)
    data = registry.load()
    return {"path": str(registry.path), "version": entry["version"], "live": data["live"],
            "shadow": (data["shadow"] or {}).get("version"), "canary": (data["canary"] or {}).get("version")}


def _scores(report: dict[str, Any], live: str) -> dict[str, Any]:
    headline = HEADLINE[report["task"]]
    comparison = report["comparisons"][live][headline]
    return {"data": report["data"], "headline": headline, "candidate": report["metrics"][headline],
            "live": report["baselines"][live][headline], "difference": comparison["difference"],
            "ci_low": comparison["ci_low"], "ci_high": comparison["ci_high"], "verdict": comparison["verdict"]}


def verdict(gate: dict[str, Any], registered: dict[str, Any], deploy: str) -> str:
    version = registered["version"]
    if not gate["passed"]:
        failed = "; ".join(c["reason"] or c["metric"] for c in gate["checks"] if not c["passed"])
        return f"gate FAILED: {failed}; {version} registered, not deployed"
    if deploy == "promote":
        return f"gate passed: {version} promoted and live"
    if deploy == "shadow":
        return (f"gate passed: {version} is the shadow (a copy of each request); judge it with `tunelab models "
                f"compare`, then `tunelab models promote {version}`")
    if deploy == "canary":
        return (f"gate passed: {version} is the canary; judge it with `tunelab models compare`, then `tunelab models "
                f"promote {version}`")
    return f"gate passed: {version} registered; make it live with `tunelab models promote {version}`"
