"""Evaluation of a generative (chat) run: greedy answers of the tuned model and its baselines to
the same test prompts, scored against the references, with robustness, forgetting and latency."""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from tunelab.errors import TunelabError
from tunelab.evaluate import forgetting, grading, robustness
from tunelab.evaluate.compare import paired_bootstrap
from tunelab.evaluate.endpoint import is_endpoint
from tunelab.evaluate.generate import corpus_log_likelihood, corpus_perplexity, load_generator
from tunelab.evaluate.metrics import exact_match_scores, generative_example_scores, generative_metrics, slice_means
from tunelab.evaluate.systems import generator_for
from tunelab.train.data import with_prefix
from tunelab.train.run_dir import RunDir

# per-example scores the paired bootstrap resamples (corpus BLEU is reported, not compared)
COMPARED = ("exact_match", "token_f1", "chrf", "rougeL")


def evaluate(model: str, records: list[dict], run: RunDir, *, prefixes: list[str], baselines: list[str], settings,
             data_where: str, progress, grader=None, runtime=None) -> dict[str, Any]:
    """The task-specific part of report.json for a chat model. Each conversation's first user
    turn carries its task's prefix, as in training. With a grader, each system's mean reward too
    (tunelab.evaluate.grading), compared like the other metrics."""
    conversations = [{"messages": with_prefix(r, prefix)["messages"] if prefix else r["messages"]}
                     for r, prefix in zip(records, prefixes)]
    raw = [{"messages": r["messages"]} for r in records]  # what an endpoint gets: inputs as a client sends them
    references = [r["messages"][-1]["content"] for r in records]
    systems = {"tuned": score_system(model, model, raw if is_endpoint(model) else conversations, references,
                                     settings, progress)}
    for name in baselines:
        source = baseline_source(name, run)
        systems[name] = score_system(name, source, raw if is_endpoint(source) else conversations, references,
                                     settings, progress)
    if grader is not None:
        progress("grading the answers")
        for s in systems.values():
            s["results"] = grading.score(grader, runtime, s["answers"], records)
            s["examples"]["reward"] = np.asarray([r.score for r in s["results"]], dtype=float)
            s["metrics"].update(grading.figures(grader, s["results"]))
    tuned = systems["tuned"]
    comparisons = {name: {metric: paired_bootstrap(_mean_of_scores, tuned["examples"][metric],
                                                   tuned["examples"][metric], s["examples"][metric],
                                                   resamples=settings.resamples, seed=settings.seed,
                                                   confidence=settings.confidence)
                          for metric in COMPARED + (("reward",) if grader is not None else ())}
                   for name, s in systems.items() if name != "tuned"}
    progress("robustness re-runs")
    robust = robustness_section(lambda perturbed: tuned["system"].answer(perturbed).texts, conversations,
                                references, tuned["examples"]["exact_match"], settings)
    progress("latency")
    timing = latency_section(systems, conversations, settings)
    progress("forgetting")
    kept = forgetting_section(tuned["system"], run, settings.forgetting)
    return {
        "metrics": tuned["metrics"],
        "baselines": {name: {**s["metrics"], "source": s["source"]} for name, s in systems.items() if name != "tuned"},
        "comparisons": comparisons,
        "calibration": None,
        "slices": slices_section(records, tuned["examples"]),
        "fairness": None,
        "robustness": robust,
        "forgetting": kept,
        "latency": timing,
        "timing_s": {name: round(s["seconds"], 2) for name, s in systems.items()},
        "reward": (grading.reward_section(grader, {n: s["results"] for n, s in systems.items()}, records,
                                          tuned["answers"], settings) if grader is not None else None),
        "headline": "exact_match",
        "predictions": tuned["answers"],
        # what an API would bill per request: prompt plus answer, with this model's tokenizer
        "tokens_per_request": tuned["tokens_per_request"],
    }


def latency_section(systems: dict[str, dict[str, Any]], conversations, settings) -> dict[str, Any]:
    """The tuned model's latency and tokens/s and, to show what serving it instead changes, the
    first baseline's measured the same way (base first)."""
    timing = systems["tuned"]["system"].latency(systems["tuned"]["conversations"])
    others = [name for name in ("base", *systems) if name != "tuned" and name in systems]
    if others:
        other = systems[others[0]]
        timing["baseline"] = {"system": others[0], **other["system"].latency(other["conversations"])}
    return timing


def tuned_against_baselines(systems: dict[str, dict[str, Any]], compared: dict[str, str], settings) -> dict[str, Any]:
    """report.json's metrics, baselines and comparisons for systems scored per example: each
    baseline's figures beside the tuned model's, and tuned minus each baseline on every `compared`
    metric (report name -> per-example score key) by paired bootstrap over the same examples."""
    tuned = systems["tuned"]
    others = {name: s for name, s in systems.items() if name != "tuned"}
    return {
        "metrics": tuned["metrics"],
        "baselines": {name: {**s["metrics"], "source": s["source"]} for name, s in others.items()},
        "comparisons": {name: {shown: paired_bootstrap(_mean_of_scores, tuned["examples"][key], tuned["examples"][key],
                                                       s["examples"][key], resamples=settings.resamples,
                                                       seed=settings.seed, confidence=settings.confidence)
                               for shown, key in compared.items()}
                        for name, s in others.items()},
    }


def _mean_of_scores(_, scores) -> float:
    return float(np.mean(scores))


def baseline_source(name: str, run: RunDir) -> str:
    if name == "probe":
        raise TunelabError("baseline 'probe' is a classification baseline",
                           fix="compare a chat model with base or another model directory")
    if name == "base" and run.remote:  # a run trained remotely: its base, as that API serves it
        return f"endpoint:{run.remote['base_url']}#{run.base_model_id}"
    if name == "base":
        if not run.base_model:
            raise TunelabError("baseline 'base' needs a run directory from `tunelab train` (its manifest names "
                               "the base model)")
        return run.base_model
    return RunDir(name).endpoint or name  # a run trained remotely answers from its endpoint


def score_system(name: str, source: str, conversations, references, settings, progress) -> dict[str, Any]:
    """A system's answers and scores. An endpoint reports no log-likelihood or perplexity (None):
    it does not score a given reply."""
    progress(f"generating with {name}")
    started = time.perf_counter()
    system = generator_for(source, settings)
    answered = system.answer(conversations)
    answers = answered.texts
    scored = system.reference_log_likelihood(conversations)
    examples = generative_example_scores(answers, references, settings.normalize)
    metrics = generative_metrics(answers, references, settings.normalize, example_scores=examples)
    metrics["log_likelihood"] = corpus_log_likelihood(*scored) if scored else None
    metrics["perplexity"] = corpus_perplexity(*scored) if scored else None
    return {"metrics": metrics, "examples": examples, "answers": answers, "source": source, "system": system,
            "conversations": conversations,
            "tokens_per_request": float(np.mean(answered.prompt_tokens) + np.mean(answered.new_tokens)),
            "seconds": time.perf_counter() - started}


def robustness_section(answer_texts, conversations, references, exact_before, settings) -> dict[str, Any] | None:
    options = settings.robustness
    if not options.perturbations:
        return None
    # a seeded sample, not the first rows: test files are often ordered (by task, by source)
    chosen = robustness.sample_indices(len(conversations), options.max_examples, options.seed)
    correct_before = np.asarray(exact_before)[chosen] == 1
    runs = {}
    for kind in options.perturbations:
        perturbed = [{"messages": messages} for messages in robustness.perturb_conversations(
            [conversations[i]["messages"] for i in chosen], kind, seed=options.seed, typo_rate=options.typo_rate)]
        exact = exact_match_scores(answer_texts(perturbed), [references[i] for i in chosen], settings.normalize)
        runs[kind] = (float(np.mean(exact)), exact == 1)
    return robustness.robustness_report("exact_match", float(np.mean(correct_before)), correct_before, runs,
                                        len(chosen))


def slices_section(records, example_scores) -> dict[str, Any]:
    slices = {}
    for key in ("group", "task"):
        values = [str((r.get("meta") or {}).get(key, "(none)")) for r in records]
        if len(set(values)) > 1:
            slices[key] = slice_means(example_scores, values)
    return slices


def forgetting_section(system, run: RunDir, settings) -> dict[str, Any] | None:
    """Perplexity of general text (or of a general task's replies) under the tuned model (a local
    one: `system.loaded`) and its base: retention = base / tuned."""
    if not settings.data:
        return None
    if system.loaded is None:
        raise TunelabError("the forgetting check scores general text with the tuned model's weights, and a model "
                           "behind an endpoint gives none", where=settings.data,
                           fix="leave eval.forgetting.data unset when the tuned side is an endpoint")
    model, tokenizer = system.loaded
    if not run.base_model:
        raise TunelabError("the forgetting check needs the base model, named by a run directory's manifest",
                           where=settings.data, fix="evaluate a run directory from `tunelab train`")
    general = forgetting.load_general_data(settings.data, settings.max_examples)
    base, base_tokenizer = load_generator(run.base_model)
    tuned_ppl = forgetting.general_perplexity(model, tokenizer, general)
    base_ppl = forgetting.general_perplexity(base, base_tokenizer, general)
    return forgetting.forgetting_report("perplexity", tuned_ppl, base_ppl, settings.min_retention, settings.data)
