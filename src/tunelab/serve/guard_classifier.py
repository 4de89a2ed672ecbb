"""A learned prompt-injection screen beside the rules: a classification run (labels `attack` and
`benign`, e.g. the embedded MiniLM fine-tuned by `make guard` with examples/guard.yaml) that
gives each prompt an attack probability, and the documented rule that combines it with the rules:

    block when the rules flag the prompt OR the classifier's attack probability >= threshold

The threshold is `serve.guard.classifier_threshold`; the shipped recipe chose it on the dev
split only (`choose_threshold`), and docs/guard.md reports rules, classifier and both on the
held-out split (`guard_figures`). A prompt longer than the model's window is scored window by
window (overlapping) and its probability is the highest, so an attack appended to a long,
harmless text is not truncated away.

How the server is to use it (not wired yet): at start-up, before listening (tunelab.serve.run.run,
next to create_app), `load_guard_classifier(cfg.guard.classifier)`, so a directory that will not
do is one TunelabError sentence; the Guard built in create_app keeps it and the threshold, and
Guard.check replaces `result = screen(text)` by `result = combined_screen(screen(text),
classifier.probability(text), cfg.guard.classifier_threshold)` (the original, unredacted text,
as the rules see it). `probability` is one forward pass of the guard's own model (milliseconds
for a short prompt on CPU): off the event loop, one call at a time per GuardClassifier.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunelab.errors import TunelabError
from tunelab.serve.injection import Screen

ATTACK_LABEL = "attack"
CLASSIFIER_CATEGORY = "classifier"  # the verdict category (a metrics label) when only the classifier blocks
WINDOW_STRIDE = 32                  # tokens shared by consecutive windows of a long prompt
FIX = "give serve.guard.classifier a classification run trained on attack/benign prompts (`make guard` trains one)"


class GuardClassifier:
    def __init__(self, model, tokenizer, *, attack_index: int, max_length: int, prefix: str = "", source: str = ""):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.attack_index = attack_index
        self.max_length = max_length
        self.prefix = prefix
        self.source = source

    @classmethod
    def load(cls, run_dir: str | Path) -> "GuardClassifier":
        """The classifier of a classification run with an `attack` label; anything else is one
        sentence naming the directory and what is wrong with it."""
        facts = read_guard_run(run_dir)
        from tunelab.evaluate.predict import load_classifier
        try:
            model, tokenizer = load_classifier(str(run_dir))
        except (OSError, ValueError, RuntimeError) as exc:
            why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise TunelabError(f"cannot load the guard classifier ({why})", where=str(run_dir), fix=FIX) from None
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        if ATTACK_LABEL not in labels:
            raise TunelabError(f"the guard classifier's labels ({', '.join(map(str, labels))}) have no "
                               f"'{ATTACK_LABEL}' label", where=str(run_dir), fix=FIX)
        limits = [facts["max_length"], getattr(tokenizer, "model_max_length", None),
                  getattr(model.config, "max_position_embeddings", None)]
        max_length = min(int(limit) for limit in limits if limit)
        return cls(model, tokenizer, attack_index=labels.index(ATTACK_LABEL), max_length=max_length,
                   prefix=facts["prefix"], source=str(run_dir))

    def probability(self, text: str) -> float:
        """The probability that `text` is a prompt-injection or jailbreak attempt."""
        return self.probabilities([text])[0]

    @torch.inference_mode()
    def probabilities(self, texts: list[str], batch_size: int = 64) -> list[float]:
        encoded = self.tokenizer([self.prefix + text for text in texts], truncation=True, max_length=self.max_length,
                                 stride=min(WINDOW_STRIDE, self.max_length // 4), return_overflowing_tokens=True,
                                 padding=True, return_tensors="pt")
        owner = encoded.pop("overflow_to_sample_mapping").tolist()  # window -> text it came from
        encoded.pop("offset_mapping", None)
        scores = []
        for start in range(0, len(owner), batch_size):
            batch = {name: tensor[start:start + batch_size] for name, tensor in encoded.items()}
            logits = self.model(**batch).logits.double()
            scores.append(torch.softmax(logits, dim=-1)[:, self.attack_index].numpy())
        by_window = np.concatenate(scores) if scores else np.zeros(0)
        best = np.zeros(len(texts))
        np.maximum.at(best, np.asarray(owner, dtype=int), by_window)
        return [float(p) for p in best]


def read_guard_run(run_dir: str | Path) -> dict[str, Any]:
    """What serving the guard needs from its run directory (through RunDir, the one reader of
    run directories): that it is a classification run, its task prefix and training length."""
    from tunelab.train.run_dir import RunDir
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise TunelabError("guard classifier run directory not found", where=str(run_dir), fix=FIX)
    if not (run.manifest or run.model_config or run.adapter_config):
        raise TunelabError("the guard classifier must be a classification run, and this is not a run directory "
                           "(no manifest.json or config.json)", where=str(run_dir), fix=FIX)
    if not run.is_classifier:
        raise TunelabError(f"the guard classifier must be a classification run, and this is a {run.task} run",
                           where=str(run_dir), fix=FIX)
    return {"prefix": run.prefix(), "max_length": run.max_length}


def load_guard_classifier(run_dir: str | None) -> GuardClassifier | None:
    """`serve.guard.classifier` at start-up: None when unset, else the loaded classifier (or the
    TunelabError that says why the directory will not do, before the server listens)."""
    return GuardClassifier.load(run_dir) if run_dir else None


def blocks(rules_flagged: bool, probability: float | None, threshold: float) -> bool:
    """The combination rule: the rules fire, or the classifier's attack probability reaches the
    threshold (no classifier: the rules alone)."""
    return bool(rules_flagged) or (probability is not None and probability >= threshold)


def combined_screen(rules: Screen, probability: float | None, threshold: float) -> Screen:
    """The rules' Screen with the classifier's say added: unchanged when the rules flag the prompt
    (their reason is the more specific) or the classifier stays below the threshold; flagged with
    the classifier's reason when only the classifier fires."""
    if rules.flagged or not blocks(False, probability, threshold):
        return rules
    return replace(rules, flagged=True, category=CLASSIFIER_CATEGORY,
                   reason=f"The prompt-injection classifier rates this prompt as an attack "
                          f"(probability {probability:.2f}, threshold {threshold:.2f}).")


def guard_figures(attack: list[bool], rules_flagged: list[bool], probabilities: list[float],
                  threshold: float) -> dict[str, dict[str, float | int]]:
    """Recall on attacks and false-positive rate on benign prompts of the rules, the classifier
    at `threshold`, and both combined by `blocks`."""
    attack_mask = np.asarray(attack, dtype=bool)
    verdicts = {"rules": np.asarray(rules_flagged, dtype=bool),
                "classifier": np.asarray(probabilities) >= threshold}
    verdicts["both"] = verdicts["rules"] | verdicts["classifier"]
    return {name: {"attacks": int(attack_mask.sum()), "benign": int((~attack_mask).sum()),
                   "recall": round(float(flagged[attack_mask].mean()), 3),
                   "false_positive_rate": round(float(flagged[~attack_mask].mean()), 3)}
            for name, flagged in verdicts.items()}


def choose_threshold(attack: list[bool], rules_flagged: list[bool], probabilities: list[float], *,
                     max_false_positive_rate: float) -> float:
    """The lowest threshold (0.001 to 0.999, in steps of 0.001) at which the rules OR the classifier
    refuse at most `max_false_positive_rate` of the benign prompts: as many attacks as that
    false-positive budget allows. Recall on the same prompts does not enter: on a split the
    rules were developed on they already catch every attack, so it cannot tell thresholds apart,
    and attacks phrased in new ways score lower than these, which argues for the lowest
    threshold the budget allows."""
    benign = ~np.asarray(attack, dtype=bool)
    rules = np.asarray(rules_flagged, dtype=bool)[benign]
    scores = np.asarray(probabilities, dtype=float)[benign]
    for threshold in np.round(np.arange(1, 1000) / 1000, 3):
        if (rules | (scores >= threshold)).mean() <= max_false_positive_rate:
            return float(threshold)
    reason = ("the rules alone refuse" if rules.mean() > max_false_positive_rate
              else "even at 0.999 the rules and the classifier refuse")
    raise TunelabError(f"{reason} more than {max_false_positive_rate:.1%} of the benign prompts, so no classifier "
                       "threshold meets that false-positive budget", fix="raise the budget or check the benign prompts")
