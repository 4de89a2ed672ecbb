"""Retention of general ability: the arithmetic, the flag, the general-data reader and its errors,
and general perplexity on a tiny model."""
import math
import re

import pytest
from tiny_models import build_task_tokenizer, build_tiny_llama

from tunelab.errors import TunelabError
from tunelab.evaluate.forgetting import (
    GeneralData,
    forgetting_flag,
    forgetting_report,
    general_perplexity,
    load_general_data,
    retention,
)
from tunelab.evaluate.generate import corpus_perplexity, load_generator, reference_log_likelihood, text_log_likelihood

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def test_retention_is_tuned_over_base_for_scores_and_base_over_tuned_for_perplexity():
    assert retention(0.6, 0.8, higher_is_better=True) == pytest.approx(0.75)
    assert retention(20.0, 15.0, higher_is_better=False) == pytest.approx(0.75)
    assert retention(12.0, 15.0, higher_is_better=False) == pytest.approx(1.25)
    assert retention(0.5, 0.0, higher_is_better=True) is None


def test_report_flags_retention_below_the_minimum():
    report = forgetting_report("perplexity", 20.0, 15.0, 0.9, "general.jsonl")
    assert report == {"measure": "perplexity", "tuned": 20.0, "base": 15.0, "retention": pytest.approx(0.75),
                      "min_retention": 0.9, "flagged": True, "data": "general.jsonl"}
    assert forgetting_flag(report) == ("The tuned model kept 75% of the base model's general ability "
                                       "(perplexity 20 against 15 on general.jsonl), below the 90% minimum.")
    kept = forgetting_report("exact_match", 0.78, 0.8, 0.9, "general.jsonl")
    assert kept["retention"] == pytest.approx(0.975) and kept["flagged"] is False
    assert forgetting_flag(kept) is None
    assert forgetting_report("exact_match", 0.1, 0.0, 0.9, "g")["flagged"] is False


def test_text_lines_load_up_to_max_examples(write_jsonl):
    path = write_jsonl("general.jsonl", [{"text": f"line {i}"} for i in range(5)])
    data = load_general_data(str(path), 3)
    assert (data.kind, data.items, data.path) == ("text", ["line 0", "line 1", "line 2"], str(path))


def test_chat_records_load_whole(write_jsonl):
    path = write_jsonl("general.jsonl", [CHAT, {**CHAT, "meta": {"id": "2"}}])
    data = load_general_data(str(path), 10)
    assert data.kind == "chat" and data.items[1]["meta"] == {"id": "2"}


@pytest.mark.parametrize("rows, message", [
    ([{"text": "a"}, CHAT], 'record 2 of the general data is not a {"text": ...} line like the first'),
    ([CHAT, {"prompt": "x"}], "record 2 of the general data is not a {\"text\": ...} line or a chat record"),
    ([{"messages": [{"role": "user", "content": "no reply"}]}], "record 1 of the general data is not"),
    ([{"text": "   "}], "record 1"),
    ([b"{not json"], "general data is not JSON Lines"),
    ([], "general data has no records"),
])
def test_unusable_general_data_is_one_clear_user_error(write_jsonl, rows, message):
    path = write_jsonl("general.jsonl", rows)
    with pytest.raises(TunelabError, match=re.escape(message)) as caught:
        load_general_data(str(path), 10)
    assert "\n" not in str(caught.value) and caught.value.where == str(path)


def test_missing_general_data_names_the_path(tmp_path):
    with pytest.raises(TunelabError, match="not found") as caught:
        load_general_data(str(tmp_path / "absent.jsonl"), 10)
    assert str(tmp_path / "absent.jsonl") in str(caught.value)


def test_general_perplexity_of_texts_and_of_chat_replies(tmp_path):
    tokenizer = build_task_tokenizer(tmp_path)
    model, tokenizer = load_generator(str(build_tiny_llama(tmp_path, tokenizer)), device="cpu")
    texts = ["the quick brown fox", "jumps over the lazy dog"]
    text_ppl = general_perplexity(model, tokenizer, GeneralData("text", texts, "g"))
    assert text_ppl == pytest.approx(corpus_perplexity(*text_log_likelihood(model, tokenizer, texts)))
    # an untrained model is close to uniform over its vocabulary
    assert 0.5 * len(tokenizer) < text_ppl < 2 * len(tokenizer)
    chat_ppl = general_perplexity(model, tokenizer, GeneralData("chat", [CHAT], "g"))
    means, counts = reference_log_likelihood(model, tokenizer, [CHAT])
    assert counts == [len("hello") + 1]
    assert chat_ppl == pytest.approx(math.exp(-means[0]))
