"""The report's explanation section (report.json's "explanations", tunelab.evaluate.explanations):
how the attributions were made, whether they passed the deletion test, the words that push
hardest towards each predicted class, and misclassified examples with every word's score
(tunelab.report_shell's Highlighted blocks: shaded in the page, listed in Markdown)."""
from __future__ import annotations

from typing import Any

from tunelab.report_shell import Highlighted, Note, Section, Status, Table, format_value


def explanation_section(r: dict[str, Any]) -> Section | None:
    explained = r.get("explanations")
    if not explained:
        return None
    blocks: list = [Note(f"Integrated Gradients (captum, {explained.get('steps')} steps"
                         f"{', ' + explained['precision'] if explained.get('precision') else ''}) on "
                         f"{format_value(explained.get('examples'))} sampled test predictions of the tuned model. "
                         "A word's score is its contribution, in nats, to the predicted label's log-odds against "
                         "an all-pad input: positive pushes towards the label, negative away from it."
                         + _integration_note(explained.get("integration_error")))]
    faithfulness = explained.get("faithfulness") or {}
    if faithfulness.get("examples"):
        k, top, rand = faithfulness["k"], faithfulness["top_k_drop"], faithfulness["random_drop"]
        words = "word" if k == 1 else f"{k} words"
        blocks.append(Note(Status(top > rand, f"Deletion test: removing the top-attributed {words} lowers the "
                                              f"predicted label's probability by {top:.3f} on average, against "
                                              f"{rand:.3f} for {'a random word' if k == 1 else f'{k} random words'} "
                                              f"({'faithful' if top > rand else 'NOT faithful'}; larger in "
                                              f"{faithfulness['top_k_beats_random']:.0%} of "
                                              f"{faithfulness['examples']} texts).")))
    else:
        blocks.append(Note(f"Deletion test: no sampled text has more than {faithfulness.get('k')} words.", "muted"))
    rows = [[label, row["token"], row["total"], row["mean"], row["examples"]]
            for label, tokens in (explained.get("by_class") or {}).items() for row in tokens]
    if rows:
        blocks.append(Table(["predicted class", "word", "total score", "mean score", "examples"], rows))
    errors = explained.get("errors") or []
    if errors:
        blocks.append(Note(f"{len(errors)} misclassified test examples, each word shaded by its score for the "
                           "predicted label (green: towards it, red: against it)."))
    for error in errors:
        blocks.append(Highlighted(f"true {error['label']}, predicted {error['predicted']} "
                                  f"(confidence {error['confidence']:.2f})", error["text"], error["explanation"]))
    return Section("explanations", "Explanations", blocks)


def _integration_note(error) -> str:
    if error is None:
        return ""
    advice = " (raise eval.explain.steps for closer scores)" if error > 0.05 else ""
    return (f" The scores of a text add up to that change in log-odds to within {error:.1%} (median){advice}.")
