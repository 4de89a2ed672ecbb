"""Evaluation of a classification run: the tuned model and its baselines on the same test
examples, with calibration, slices, fairness, robustness and latency of the tuned model."""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from tunelab.errors import TunelabError
from tunelab.evaluate import baselines as cheap
from tunelab.evaluate import calibration, fairness, latency, robustness
from tunelab.evaluate.compare import paired_bootstrap
from tunelab.evaluate.endpoint import EndpointModel, is_endpoint
from tunelab.evaluate.metrics import HEADLINE, METRIC_FUNCTIONS, classification_metrics, macro_f1, slice_metrics
from tunelab.evaluate.predict import classify, load_classifier, load_predictor
from tunelab.train.run_dir import RunDir

BUILTIN_BASELINES = ("probe", "base")


def evaluate(model: str, records: list[dict], run: RunDir, *, prefixes: list[str], baselines: list[str], settings,
             data_where: str, progress) -> dict[str, Any]:
    """The task-specific part of report.json (metrics, baselines, comparisons, calibration,
    slices, fairness, robustness, latency, timing) for a classifier. Every system reads each
    input as the tuned model was trained to: with its task's prefix, truncated where training
    truncated."""
    raw_texts = [r["text"] for r in records]
    texts = [prefix + text for prefix, text in zip(prefixes, raw_texts)]
    max_length = run.max_length
    if is_endpoint(model):  # a model behind an endpoint: the labels are the run's, else the test data's
        if settings.explain.examples:
            raise TunelabError("explanations need the tuned model's weights, and a model behind an endpoint gives "
                               "none", fix="set eval.explain.examples=0")
        tuned, tokenizer, remote = None, None, EndpointModel(model, settings.endpoint)
        labels = run.labels or sorted({r["label"] for r in records})

        def predict(batch: list[str]) -> tuple[np.ndarray, np.ndarray]:
            return remote.classify(batch, labels)[:2]
    else:  # a PyTorch classifier, or an ONNX export (no model: no gradients to explain with)
        remote = None
        predict, labels, tokenizer, tuned = load_predictor(model, max_length=max_length)
        if tuned is None and settings.explain.examples:
            raise TunelabError("explanations are computed with the PyTorch model's gradients, and this is an ONNX "
                               "export", where=model, fix="evaluate the run it was exported from for explanations, "
                                                          "or set eval.explain.examples=0")
    y_true = label_indices(records, labels, data_where)

    progress("scoring the tuned model")
    started = time.perf_counter()
    predicted, probabilities, unparsable = remote.classify(texts, labels) if remote else (*predict(texts), None)
    systems = {"tuned": {"predictions": predicted, "probabilities": probabilities, "unparsable": unparsable,
                         "seconds": time.perf_counter() - started, "source": model,
                         "device": remote.device if remote else None}}
    for name in baselines:
        progress(f"scoring baseline {name}")
        systems[name] = baseline_predictions(name, run, labels, texts, settings.seed, raw_texts=raw_texts,
                                             endpoint_settings=settings.endpoint)

    scores = {name: classification_metrics(y_true, s["predictions"], labels, probabilities=s["probabilities"],
                                           bins=settings.calibration_bins) for name, s in systems.items()}
    for name, s in systems.items():
        if s.get("unparsable") is not None:  # chat-classified by an endpoint: answers that named no label
            scores[name]["unparsable"] = s["unparsable"]
    comparisons = {name: {metric: paired_bootstrap(METRIC_FUNCTIONS[metric], y_true, predicted, s["predictions"],
                                                   resamples=settings.resamples, seed=settings.seed,
                                                   confidence=settings.confidence)
                          for metric in HEADLINE}
                   for name, s in systems.items() if name != "tuned"}
    progress("robustness re-runs")
    robust = robustness_section(predict, raw_texts, prefixes, y_true, predicted, len(labels), settings.robustness)
    explained, explain_seconds = None, {}
    if settings.explain.examples:
        progress("explaining predictions")
        started = time.perf_counter()
        explained = explanations_section(tuned, tokenizer, raw_texts, prefixes, y_true, predicted, probabilities,
                                         labels, predict, settings.explain, max_length=max_length, seed=settings.seed)
        explain_seconds = {"explanations": round(time.perf_counter() - started, 2)}
    progress("latency")
    timing = latency_section(predict, systems, texts, settings.latency)
    if remote:
        timing["device"] = remote.device
    return {
        "labels": labels,
        "metrics": scores["tuned"],
        "baselines": {name: {**scores[name], "source": systems[name]["source"]} for name in systems if name != "tuned"},
        "comparisons": comparisons,
        "calibration": calibration.calibration_report(probabilities, y_true, settings.calibration_bins),
        "slices": slices_section(records, y_true, predicted, labels),
        "fairness": fairness_section(records, y_true, predicted, labels, settings.fairness),
        "robustness": robust,
        "latency": timing,
        "explanations": explained,
        "timing_s": {**{name: round(s["seconds"], 2) for name, s in systems.items()}, **explain_seconds},
        "headline": "macro_f1",
        # what an API would bill per request, measured with this model's tokenizer (an endpoint's is unknown here)
        "tokens_per_request": (float(np.mean([len(ids) for ids in tokenizer(texts[:1000])["input_ids"]]))
                               if tokenizer is not None else None),
    }


def label_indices(records, labels: list[str], where: str) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({r["label"] for r in records} - index.keys())
    if unknown:
        raise TunelabError(f"test labels {unknown} are not among the model's labels {labels}", where=where,
                           fix="evaluate on data prepared with the run's label set")
    return np.array([index[r["label"]] for r in records])


def baseline_predictions(name: str, run: RunDir, labels: list[str], texts: list[str], seed: int, *,
                         raw_texts: list[str] | None = None, endpoint_settings=None) -> dict[str, Any]:
    """A baseline's predictions and probabilities on texts (an endpoint gets `raw_texts`, the
    inputs without the tuned run's prefix); "predict" is its batch classifier for latency (None
    for the probe, which is not a model one would serve)."""
    started = time.perf_counter()
    source = name if name in BUILTIN_BASELINES else RunDir(name).endpoint or name
    if is_endpoint(source):
        remote = EndpointModel(source, endpoint_settings)
        predictions, probabilities, unparsable = remote.classify(raw_texts if raw_texts is not None else texts,
                                                                 labels)
        return {"predictions": predictions, "probabilities": probabilities, "unparsable": unparsable,
                "predict": lambda batch: remote.classify(batch, labels)[:2], "device": remote.device,
                "seconds": time.perf_counter() - started, "source": source}
    if name in BUILTIN_BASELINES and not (run.base_model and run.is_run):
        raise TunelabError(f"baseline '{name}' needs a run directory from `tunelab train` (its manifest names "
                           "the base model and training data)")
    if name == "probe":
        train_texts, train_labels = training_examples(run, labels)
        predictions, probabilities = cheap.embedding_probe(run.base_model, train_texts, train_labels, texts,
                                                           seed=seed, max_length=run.max_length)
        return {"predictions": predictions, "probabilities": probabilities, "predict": None,
                "seconds": time.perf_counter() - started, "source": run.base_model}
    model, tokenizer, source = baseline_model(name, run, labels, seed)

    def predict(batch: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return classify(model, tokenizer, batch, max_length=run.max_length)

    predictions, probabilities = predict(texts)
    return {"predictions": predictions, "probabilities": probabilities, "predict": predict,
            "seconds": time.perf_counter() - started, "source": source}


def baseline_model(name: str, run: RunDir, labels: list[str], seed: int):
    """(model, tokenizer, source) of the base model with a new head, or of a classifier directory."""
    if name != "base":
        return (*load_classifier(name), name)
    import torch

    from tunelab.models.load import load_model, load_tokenizer
    torch.manual_seed(seed)  # the untrained head is random: seed it so reruns agree
    model = load_model(run.base_model, "classification", labels=labels).eval()
    return model, load_tokenizer(run.base_model), run.base_model


def latency_section(predict, systems: dict[str, dict[str, Any]], texts: list[str], settings) -> dict[str, Any]:
    """The tuned model's latency and, for the cost of serving it instead, that of one model
    baseline measured the same way (base first; the probe is not a served model)."""
    def timed(classify_batch) -> dict[str, Any]:
        def run_batch(batch: list[str]) -> None:  # no generated tokens to count for a classifier
            classify_batch(batch)
        return latency.measure_latency(run_batch, texts, batch_sizes=settings.batch_sizes,
                                       requests=settings.requests)

    timing = timed(predict)
    servable = [name for name in ("base", *systems) if name != "tuned" and (systems.get(name) or {}).get("predict")]
    compared = servable[0] if servable else None
    if compared:
        timing["baseline"] = {"system": compared, **timed(systems[compared]["predict"])}
        if systems[compared].get("device"):  # an endpoint: timed over the network, on its hardware
            timing["baseline"]["device"] = systems[compared]["device"]
    return timing


def training_examples(run: RunDir, labels: list[str]) -> tuple[list[str], list[int]]:
    """The same training examples the fine-tune saw: its data, stages or mixture, sampled and
    prefixed as training sampled and prefixed them."""
    records = run.training_records()
    index = {label: i for i, label in enumerate(labels)}
    return [r["text"] for r in records], [index[r["label"]] for r in records]


def slices_section(records, y_true, predicted, labels) -> dict[str, Any]:
    slices = {}
    for key in ("group", "task"):
        values = [str((r.get("meta") or {}).get(key, "(none)")) for r in records]
        if len(set(values)) > 1:
            slices[key] = slice_metrics(y_true, predicted, values)
    return slices


def fairness_section(records, y_true, predicted, labels, settings) -> dict[str, Any] | None:
    groups = [(r.get("meta") or {}).get("group") for r in records]
    grouped = np.array([g is not None for g in groups])
    if not grouped.any():
        return None
    # records without a group are left out of the fairness check rather than made a group of their own
    return fairness.group_fairness(y_true[grouped], predicted[grouped], [str(g) for g in groups if g is not None],
                                   labels, max_gap=settings.max_gap, min_group_size=settings.min_group_size)


def explanations_section(model, tokenizer, raw_texts, prefixes, y_true, predicted, probabilities, labels, predict,
                         settings, *, max_length: int, seed: int) -> dict[str, Any]:
    from tunelab.evaluate.explanations import explanation_report  # captum loads only when asked for
    return explanation_report(model, tokenizer, raw_texts, prefixes, y_true, predicted, probabilities, labels, predict,
                              examples=settings.examples, steps=settings.steps, precision=settings.precision,
                              top_tokens=settings.top_tokens,
                              errors=settings.errors, deletion_tokens=settings.deletion_tokens,
                              max_length=max_length, seed=seed)


def robustness_section(predict, texts, prefixes, y_true, predicted, n_labels, settings) -> dict[str, Any] | None:
    """Each perturbation hits the input a user wrote, never the task prefix training put before it."""
    if not settings.perturbations:
        return None
    # a seeded sample, not the first rows: test files are often ordered (by label, by source)
    chosen = robustness.sample_indices(len(texts), settings.max_examples, settings.seed)
    texts, prefixes = [texts[i] for i in chosen], [prefixes[i] for i in chosen]
    y_true, predicted = y_true[chosen], predicted[chosen]
    runs = {}
    for kind in settings.perturbations:
        perturbed = robustness.perturb_texts(texts, kind, seed=settings.seed, typo_rate=settings.typo_rate)
        after, _ = predict([prefix + text for prefix, text in zip(prefixes, perturbed)])
        runs[kind] = (macro_f1(y_true, after, n_labels), after == y_true)
    return robustness.robustness_report("macro_f1", macro_f1(y_true, predicted, n_labels), predicted == y_true, runs,
                                        len(chosen))
