"""Batched greedy generation equals one-at-a-time `model.generate`; log-likelihoods equal a hand
computation from the logits; run directories with full models or LoRA adapters load."""
import math
import random
import string

import pytest
import torch
from tiny_models import END, build_task_tokenizer, build_tiny_llama
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunelab.errors import TunelabError
from tunelab.evaluate.generate import (
    corpus_log_likelihood,
    corpus_perplexity,
    generate_answers,
    generate_one_at_a_time,
    load_generator,
    prompt_texts,
    reference_log_likelihood,
    text_log_likelihood,
)

MAX_NEW = 24


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny Llama whose answers vary with the prompt and stop at the end token about half the
    time: the default initialisation (std 0.02) answers every prompt with the same character, which
    would make "batched equals sequential" hold trivially."""
    out = tmp_path_factory.mktemp("tiny-generator")
    tokenizer = build_task_tokenizer(out)
    build_tiny_llama(out, tokenizer, tied=False)
    model = AutoModelForCausalLM.from_pretrained(out)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
        model.lm_head.weight[tokenizer.eos_token_id] *= 1.5
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def loaded(model_dir):
    return load_generator(str(model_dir), device="cpu")


def conversations(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        question = "".join(rng.choices(string.ascii_lowercase + " ", k=rng.randint(1, 60)))
        answer = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(1, 8)))
        records.append({"messages": [{"role": "user", "content": question},
                                     {"role": "assistant", "content": answer}]})
    return records


@pytest.fixture(scope="module")
def prompts(loaded):
    return prompt_texts(loaded[1], conversations(20))


@pytest.fixture(scope="module")
def sequential(loaded, prompts):
    model, tokenizer = loaded
    return generate_one_at_a_time(model, tokenizer, prompts, max_new_tokens=MAX_NEW)


def test_reference_answers_vary_and_some_stop_early(sequential):
    assert len(set(sequential.texts)) == len(sequential.texts)
    stopped = sum(n < MAX_NEW for n in sequential.new_tokens)
    assert 3 <= stopped <= len(sequential.texts) - 3


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_batched_equals_one_at_a_time(loaded, prompts, sequential, batch_size):
    model, tokenizer = loaded
    batched = generate_answers(model, tokenizer, prompts, max_new_tokens=MAX_NEW, batch_size=batch_size)
    assert batched.texts == sequential.texts
    assert batched.new_tokens == sequential.new_tokens


def test_results_come_back_in_input_order(loaded, prompts, sequential):
    model, tokenizer = loaded
    order = list(range(len(prompts)))
    random.Random(1).shuffle(order)
    shuffled = generate_answers(model, tokenizer, [prompts[i] for i in order], max_new_tokens=MAX_NEW, batch_size=8)
    assert shuffled.texts == [sequential.texts[i] for i in order]


def test_no_prompts_no_answers(loaded):
    model, tokenizer = loaded
    assert generate_answers(model, tokenizer, []).texts == []
    assert generate_one_at_a_time(model, tokenizer, [], max_new_tokens=4).new_tokens == []
    assert reference_log_likelihood(model, tokenizer, []) == ([], [])
    assert text_log_likelihood(model, tokenizer, []) == ([], [])


def test_answers_stop_at_the_end_token_and_count_it(loaded, prompts, sequential):
    model, tokenizer = loaded
    longer = generate_answers(model, tokenizer, prompts, max_new_tokens=MAX_NEW + 16, batch_size=8)
    for text, count, long_text, long_count in zip(sequential.texts, sequential.new_tokens, longer.texts,
                                                  longer.new_tokens):
        assert END not in long_text
        if count < MAX_NEW:  # stopped at the end token (counted): more room changes nothing
            assert (long_text, long_count) == (text, count)
        else:  # cut at the limit: the longer answer goes on from it
            assert long_text.startswith(text) and long_count > count


def test_prompt_is_the_conversation_up_to_the_assistant_turn(loaded):
    record = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                           {"role": "assistant", "content": "hello"}]}
    assert prompt_texts(loaded[1], [record]) == [f"<|system|>\nbe brief{END}\n<|user|>\nhi{END}\n<|assistant|>\n"]


def test_record_without_a_final_assistant_reply_is_a_user_error(loaded):
    with pytest.raises(TunelabError, match="record 2"):
        prompt_texts(loaded[1], [conversations(1)[0], {"messages": [{"role": "user", "content": "hi"}]}])


def test_reference_log_likelihood_matches_log_softmax_by_hand(loaded):
    model, tokenizer = loaded
    records = conversations(7, seed=3)
    means, counts = reference_log_likelihood(model, tokenizer, records, batch_size=4)  # padded batches
    record = records[5]
    prompt = prompt_texts(tokenizer, [record])[0]
    reply = record["messages"][-1]["content"] + END
    ids = tokenizer(prompt + reply, add_special_tokens=False, return_tensors="pt")["input_ids"]
    start = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=ids).logits[0], dim=-1)
    by_hand = [log_probs[t - 1, ids[0, t]].item() for t in range(start, ids.shape[1])]
    assert counts[5] == len(record["messages"][-1]["content"]) + 1
    assert means[5] == pytest.approx(sum(by_hand) / len(by_hand), abs=1e-5)
    assert counts == [len(r["messages"][-1]["content"]) + 1 for r in records]


def test_reply_is_scored_after_the_prompt_when_the_template_renders_history_differently(loaded):
    """A template whose full conversation does not begin with its generation prompt (here the
    user's turn gains a space once the reply is there): the reply is scored after the prompt as
    generation sees it, so the figures equal the ordinary template's."""
    import copy
    model, tokenizer = loaded
    odd = copy.deepcopy(tokenizer)
    user_turn = "message['content'] + '<|end|>"
    assert user_turn in tokenizer.chat_template
    odd.chat_template = tokenizer.chat_template.replace(
        user_turn, "message['content'] + ('' if add_generation_prompt else ' ') + '<|end|>")
    records = conversations(3, seed=4)
    assert not odd.apply_chat_template(records[0]["messages"], tokenize=False).startswith(
        prompt_texts(odd, records[:1])[0])
    means, counts = reference_log_likelihood(model, odd, records)
    expected_means, expected_counts = reference_log_likelihood(model, tokenizer, records)
    assert counts == expected_counts
    assert means == pytest.approx(expected_means, abs=1e-6)


def test_text_log_likelihood_matches_log_softmax_by_hand_and_truncates(loaded):
    model, tokenizer = loaded
    texts = ["the quick brown fox", "a", "jumps over the lazy dog " * 3]
    means, counts = text_log_likelihood(model, tokenizer, texts, batch_size=2, max_length=40)
    ids = tokenizer(texts[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=ids).logits[0], dim=-1)
    by_hand = [log_probs[t - 1, ids[0, t]].item() for t in range(1, ids.shape[1])]
    assert counts == [len(texts[0]) - 1, 0, 39]
    assert means[0] == pytest.approx(sum(by_hand) / len(by_hand), abs=1e-5)
    assert means[1] == 0.0


def test_corpus_figures_weigh_examples_by_their_tokens():
    assert corpus_log_likelihood([-1.0, -2.0], [1, 3]) == pytest.approx(-7 / 4)
    assert corpus_perplexity([-1.0, -2.0], [1, 3]) == pytest.approx(math.exp(7 / 4))
    with pytest.raises(ValueError):
        corpus_perplexity([0.0], [0])


def test_lora_adapter_directory_loads_onto_its_base(model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    torch.manual_seed(0)
    # init_lora_weights=False: a random (non-zero) update, so the adapter visibly changes the model
    tuned = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    tuned.save_pretrained(tmp_path / "adapter")  # no tokenizer saved: it comes from the base
    model, tokenizer = load_generator(str(tmp_path / "adapter"), device="cpu")
    ids = torch.tensor([[5, 9, 12, 30, 41]])
    with torch.no_grad():
        expected = tuned(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(model_dir)(input_ids=ids).logits
        got = model(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-3)
    assert tokenizer.padding_side == "left" and tokenizer.chat_template


def test_tokenizer_without_a_pad_token_pads_with_eos(model_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(tmp_path / "nopad")
    AutoModelForCausalLM.from_pretrained(model_dir).save_pretrained(tmp_path / "nopad")
    model, loaded_tokenizer = load_generator(str(tmp_path / "nopad"), device="cpu")
    assert loaded_tokenizer.pad_token == END and loaded_tokenizer.padding_side == "left"
    assert not model.training
