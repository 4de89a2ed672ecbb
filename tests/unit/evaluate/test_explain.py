"""Token attributions (Integrated Gradients through captum) on a classifier whose evidence is known:
a tiny BERT trained here on sentences where one cue word decides the label among filler words.
Attributions must point at the cue word, keep character offsets into the text, add up to the
change in log-probability they explain, and pass the deletion test (deleting the top-attributed
word hurts the prediction more than deleting a random one), with the figures printed."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from tunelab.errors import TunelabError
from tunelab.evaluate.explain import attribute, deletion_test, delete_spans, explain, top_spans
from tunelab.evaluate.explanations import influential_tokens

TOKENIZER = Path(__file__).resolve().parents[2] / "assets" / "tiny-chat-tokenizer"
CUES = {"negative": ["awful", "broken", "refund"], "neutral": ["okay", "arrived", "average"],
        "positive": ["great", "lovely", "perfect"]}
LABELS = sorted(CUES)
FILLER = ["the", "order", "was", "item", "service", "today", "my", "box", "and", "it", "came", "with", "a", "note"]


def sentence(rng: random.Random) -> tuple[str, str, str]:
    """(text, label, cue word): six filler words and one cue word at a random place."""
    label = rng.choice(LABELS)
    cue = rng.choice(CUES[label])
    words = [rng.choice(FILLER) for _ in range(6)]
    words.insert(rng.randrange(len(words) + 1), cue)
    return " ".join(words) + ".", label, cue


@pytest.fixture(scope="module")
def trained():
    """(model, tokenizer) after ~150 steps of plain torch training: it reads the cue words."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
                        num_labels=3, id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)})
    model = BertForSequenceClassification(config)
    rng = random.Random(0)
    data = [sentence(rng) for _ in range(600)]
    # sentences without a cue word, labelled evenly: no class is what the model says when it sees
    # no evidence, so each class's cue words carry the prediction (and the attributions)
    data += [(" ".join(rng.choice(FILLER) for _ in range(7)) + ".", LABELS[i % 3], "") for i in range(150)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for epoch in range(8):
        rng.shuffle(data)
        for start in range(0, len(data), 32):
            batch = data[start:start + 32]
            encoded = tokenizer([t for t, _, _ in batch], padding=True, return_tensors="pt")
            loss = model(**encoded, labels=torch.tensor([LABELS.index(l) for _, l, _ in batch])).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.eval()
    return model, tokenizer


@pytest.fixture(scope="module")
def held_out(trained):
    model, tokenizer = trained
    rng = random.Random(1)
    rows = [sentence(rng) for _ in range(60)]
    with torch.no_grad():
        logits = model(**tokenizer([t for t, _, _ in rows], padding=True, return_tensors="pt")).logits
    accuracy = (logits.argmax(-1).numpy() == np.array([LABELS.index(l) for _, l, _ in rows])).mean()
    assert accuracy >= 0.95, f"the tiny model did not learn the cue words (accuracy {accuracy:.2f})"
    return rows


def probabilities(model, tokenizer, texts: list[str]) -> np.ndarray:
    with torch.no_grad():
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    return torch.softmax(logits.double(), -1).numpy()


def test_spans_are_whole_words_with_offsets_into_the_text(trained):
    model, tokenizer = trained
    text = "my  box came with a refund-note, today"
    spans = explain(model, tokenizer, text)
    assert all(text[s["start"]:s["end"]] == s["token"] for s in spans)
    assert [s["start"] for s in spans] == sorted(s["start"] for s in spans)
    # word pieces merged into the pre-tokenizer's words (punctuation is a word of its own)
    assert [s["token"] for s in spans] == ["my", "box", "came", "with", "a", "refund", "-", "note", ",", "today"]
    pieces = explain(model, tokenizer, text, merge_subwords=False)
    assert len(pieces) > len(spans)  # "refund", "today" are several BPE pieces in a 512-token vocabulary
    assert all(text[s["start"]:s["end"]] == s["token"] for s in pieces)
    assert sum(s["score"] for s in pieces) == pytest.approx(sum(s["score"] for s in spans), abs=1e-4)


def test_scores_add_up_to_the_change_in_log_odds(trained):
    """Completeness: the attributions of a text sum to the label's log-odds on the text minus
    those on the all-pad baseline, up to the integration error that captum reports (which
    shrinks with the steps: this tiny model's path is steep, so it needs many)."""
    model, tokenizer = trained
    text = "the order was awful and it came with a note."
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    baseline = torch.full_like(ids, tokenizer.pad_token_id)  # this tokenizer adds no special tokens
    with torch.no_grad():
        label = int(model(input_ids=ids).logits.argmax())
        p_text = torch.softmax(model(input_ids=ids).logits.double(), -1)[0, label].item()
        p_base = torch.softmax(model(input_ids=baseline).logits.double(), -1)[0, label].item()
    change = np.log(p_text / (1 - p_text)) - np.log(p_base / (1 - p_base))
    assert LABELS[label] == "negative"
    exact = attribute(model, tokenizer, text, steps=256, precision="fp32")
    assert exact.precision == "fp32"
    assert exact.label == label and exact.change == pytest.approx(change, abs=1e-3)
    assert sum(s["score"] for s in exact.spans) == pytest.approx(change, abs=0.01 * abs(change))
    assert exact.integration_error < 0.01 * abs(change)
    coarse = attribute(model, tokenizer, text, steps=8, precision="fp32")
    assert coarse.integration_error == pytest.approx(abs(sum(s["score"] for s in coarse.spans) - change), abs=1e-3)


def test_attributions_point_at_the_cue_word_and_pass_the_deletion_test(trained, held_out):
    model, tokenizer = trained
    texts = [t for t, _, _ in held_out]
    explanations = [explain(model, tokenizer, t) for t in texts]
    cue_on_top = np.mean([top_spans(spans, 1)[0]["token"] == cue for spans, (_, _, cue) in zip(explanations, held_out)])
    predicted = probabilities(model, tokenizer, texts).argmax(1).tolist()
    result = deletion_test(lambda batch: probabilities(model, tokenizer, batch), texts, explanations, predicted,
                           k=1, seed=0)
    print(f"\ncue word ranked first in {cue_on_top:.0%} of {len(texts)} texts; deleting the top word lowers the "
          f"predicted label's probability by {result['top_k_drop']:.3f}, a random word by {result['random_drop']:.3f} "
          f"(top beats random in {result['top_k_beats_random']:.0%})")
    assert cue_on_top >= 0.9
    assert result["examples"] == len(texts)
    assert result["top_k_drop"] > 0.3 and result["top_k_drop"] > 3 * result["random_drop"]
    assert result["top_k_beats_random"] >= 0.9


def test_bf16_integration_agrees_with_fp32_and_leaves_the_model_as_it_was(trained, held_out):
    """bf16 (what `auto` picks on a CPU with AVX512-BF16 or AMX) ranks the words as fp32 does and
    adds up to the same change in log-odds within the integration error; the model's attention
    is back to what it was afterwards, also when the integration fails."""
    from scipy.stats import spearmanr
    model, tokenizer = trained
    attention = model.config._attn_implementation
    assert attention == "sdpa"  # swapped for eager during a CPU bf16 integration
    texts = [t for t, _, _ in held_out[:20]]
    full = [attribute(model, tokenizer, t, steps=64, precision="fp32") for t in texts]
    half = [attribute(model, tokenizer, t, steps=64, precision="bf16") for t in texts]
    assert {e.precision for e in half} == {"bf16"} and model.config._attn_implementation == attention
    rank = [spearmanr([s["score"] for s in a.spans], [s["score"] for s in b.spans]).statistic for a, b in zip(full, half)]
    same_top = np.mean([top_spans(a.spans, 1)[0]["token"] == top_spans(b.spans, 1)[0]["token"] for a, b in zip(full, half)])
    change_gap = np.median([abs(a.change - b.change) / abs(a.change) for a, b in zip(full, half)])
    print(f"\nbf16 against fp32 on {len(texts)} texts: median Spearman {np.median(rank):.4f}, same top word in "
          f"{same_top:.0%}, median change gap {change_gap:.2%}")
    assert np.median(rank) > 0.95 and same_top >= 0.95 and change_gap < 0.02
    with pytest.raises(TypeError):
        attribute(model, tokenizer, texts[0], steps=None, precision="bf16")
    assert model.config._attn_implementation == attention


def test_auto_precision_follows_the_device_and_unknown_values_are_refused(monkeypatch):
    from tunelab.evaluate.explain import resolve_precision
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert resolve_precision("auto", cpu) == "bf16"
    with pytest.raises(TunelabError, match="unknown explanation precision 'fp16'"):
        resolve_precision("fp16", cpu)


def test_explaining_another_label_gives_the_cue_a_negative_score(trained):
    model, tokenizer = trained
    text = "my box came with a lovely note."
    for_positive = {s["token"]: s["score"] for s in explain(model, tokenizer, text)}
    for_negative = {s["token"]: s["score"] for s in explain(model, tokenizer, text, target="negative")}
    assert for_positive["lovely"] > 0 > for_negative["lovely"]
    assert explain(model, tokenizer, text, target=LABELS.index("negative")) == explain(model, tokenizer, text,
                                                                                      target="negative")
    with pytest.raises(TunelabError, match="unknown label 'angry'"):
        explain(model, tokenizer, text, target="angry")


def test_prefix_is_attributed_but_left_out_and_truncated_tokens_are_not_listed(trained):
    model, tokenizer = trained
    text = "the item was great."
    spans = explain(model, tokenizer, text, prefix="review: ")
    assert [s["token"] for s in spans] == ["the", "item", "was", "great", "."]
    assert all(text[s["start"]:s["end"]] == s["token"] for s in spans)
    long_text = " ".join(["box"] * 40) + " awful"
    kept = tokenizer(long_text, truncation=True, max_length=10, return_offsets_mapping=True)["offset_mapping"][-1][1]
    cut = explain(model, tokenizer, long_text, max_length=10)
    assert 0 < len(cut) < 10 and cut[-1]["end"] <= kept and "awful" not in {s["token"] for s in cut}
    assert explain(model, tokenizer, "") == []


def test_a_lora_classifier_is_explained_through_its_base_embeddings(trained):
    """The default training method is LoRA: a PEFT-wrapped classifier explains like any other (a
    fresh adapter changes nothing, so its attributions are the base model's)."""
    import copy

    from peft import LoraConfig, get_peft_model
    model, tokenizer = trained
    wrapped = get_peft_model(copy.deepcopy(model), LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value"]))
    text = "the box came with a great note."
    through_lora, plain = explain(wrapped.eval(), tokenizer, text), explain(model, tokenizer, text)
    assert [(s["token"], s["start"], s["end"]) for s in through_lora] == [(s["token"], s["start"], s["end"]) for s in plain]
    assert [s["score"] for s in through_lora] == pytest.approx([s["score"] for s in plain], abs=1e-4)


def test_a_slow_tokenizer_is_refused_in_one_sentence(trained):
    model, _ = trained

    class Slow:
        is_fast = False
        name_or_path = "my-tokenizer"
    with pytest.raises(TunelabError, match="my-tokenizer: explanations need a fast tokenizer"):
        explain(model, Slow(), "text")


def test_delete_spans_and_influential_tokens_golden_values():
    text = "Great food, awful service"
    spans = [{"token": "Great", "start": 0, "end": 5, "score": 0.5}, {"token": "food", "start": 6, "end": 10, "score": 0.1},
             {"token": ",", "start": 10, "end": 11, "score": -0.05},
             {"token": "awful", "start": 12, "end": 17, "score": -0.4},
             {"token": "service", "start": 18, "end": 25, "score": 0.2}]
    assert delete_spans(text, top_spans(spans, 2)) == " food, awful "
    assert [s["token"] for s in top_spans(spans, 3)] == ["Great", "service", "food"]
    other = [{"token": "great", "start": 0, "end": 5, "score": 0.3}, {"token": "bad", "start": 6, "end": 9, "score": -0.2}]
    ranked = influential_tokens([spans, other, other], ["pos", "pos", "neg"], ["neg", "pos"], top=2)
    assert ranked["pos"] == [{"token": "great", "total": 0.8, "mean": 0.4, "examples": 2},
                             {"token": "service", "total": 0.2, "mean": 0.2, "examples": 1}]
    assert ranked["neg"] == [{"token": "great", "total": 0.3, "mean": 0.3, "examples": 1}]
