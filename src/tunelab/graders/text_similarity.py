"""text_similarity: how close the rendered input is to the reference, from 0 to 1.

fuzzy_match  rapidfuzz fuzz.ratio / 100 (normalised Indel similarity: 2 * matches / total length)
bleu         sacrebleu sentence BLEU / 100 (reference tokenizer 13a, exponential smoothing)
gleu         NLTK sentence GLEU
meteor       NLTK METEOR (needs NLTK's WordNet data installed)
rouge_1..5   rouge-score ROUGE-N F-measure; rouge_l: ROUGE-L F-measure (no stemming)
cosine       cosine similarity of the embedded MiniLM encoder's sentence embeddings (below 0: 0)
"""
from __future__ import annotations

from typing import Any

from tunelab.graders.base import GradeResult, check_keys, require_number, spec_error
from tunelab.graders.templating import check_templates, render

FIELDS = ("type", "name", "input", "reference", "evaluation_metric", "pass_threshold")
REQUIRED = ("type", "name", "input", "reference", "evaluation_metric")
METRICS = ("fuzzy_match", "bleu", "gleu", "meteor", "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5",
           "rouge_l", "cosine")


def validate(spec: dict[str, Any], where: str | None) -> None:
    name = spec["name"]
    check_keys(spec, FIELDS, REQUIRED, name, where)
    check_templates(spec, ("input", "reference"), name, where)
    metric = spec["evaluation_metric"]
    if metric not in METRICS:
        raise spec_error(name, "evaluation_metric", f"must be one of {', '.join(METRICS)} (got {metric!r})", where)
    if metric == "meteor" and not _has_wordnet():
        raise spec_error(name, "evaluation_metric", "is meteor, which needs NLTK's WordNet data, and it is not "
                         "installed here", where, fix="run python -m nltk.downloader wordnet once, or use "
                                                      "rouge_l, bleu or fuzzy_match")
    if "pass_threshold" in spec:
        require_number(spec, "pass_threshold", name, where)


def similarity(metric: str, text: str, reference: str, runtime=None) -> float:
    if metric == "fuzzy_match":
        from rapidfuzz import fuzz
        return fuzz.ratio(text, reference) / 100.0
    if metric == "bleu":
        import sacrebleu
        return sacrebleu.sentence_bleu(text, [reference]).score / 100.0
    if metric == "gleu":
        from nltk.translate.gleu_score import sentence_gleu
        return float(sentence_gleu([reference.split()], text.split()))
    if metric == "meteor":
        from nltk.translate.meteor_score import meteor_score
        return float(meteor_score([reference.split()], text.split()))
    if metric.startswith("rouge_"):
        from rouge_score import rouge_scorer
        kind = "rougeL" if metric == "rouge_l" else f"rouge{metric[-1]}"
        return float(rouge_scorer.RougeScorer([kind]).score(reference, text)[kind].fmeasure)
    return max(0.0, runtime.cosine(text, reference))


def grade(spec: dict[str, Any], sample: dict[str, Any], item: dict[str, Any] | None, runtime) -> GradeResult:
    text = render(spec["input"], sample, item)
    reference = render(spec["reference"], sample, item)
    return GradeResult(similarity(spec["evaluation_metric"], text, reference, runtime))


def _has_wordnet() -> bool:
    try:
        import nltk
        nltk.data.find("corpora/wordnet")
        return True
    except LookupError:
        return False
