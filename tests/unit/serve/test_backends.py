"""The transformers backends on tiny local models: batched greedy output equals one-at-a-time
output, stop strings and max_tokens cut each request where it would stop alone, seeded sampling
repeats, LoRA adapters change the answer as PEFT alone would, and the classifier applies the
run's task prefix through tunelab.evaluate.predict.classify."""
import torch

from serve_helpers import PREFIX, lora_adapters, tiny_classifier_run, tiny_llama_run  # noqa: F401
from tunelab.serve.backends import GenerationJob, TransformersClassifier, first_stop, load_backend
from tunelab.train.run_dir import RunDir
from tunelab.serve.streaming import held_back


def prompts(backend, n):
    return [backend.render_chat([{"role": "user", "content": f"item {i} {'xyz'[i % 3] * (i % 5)}"}]) for i in range(n)]


def jobs_for(backend, texts, **kwargs):
    return [GenerationJob(prompt_ids=backend.encode(t, special_tokens=False), **kwargs) for t in texts]


def test_batched_greedy_equals_sequential_with_different_lengths_limits_and_stops(tiny_llama_run):
    backend = load_backend(tiny_llama_run)
    texts = prompts(backend, 10)
    jobs = [GenerationJob(prompt_ids=backend.encode(t, special_tokens=False), max_tokens=3 + i % 6,
                          stop=["G"] if i % 2 else []) for i, t in enumerate(texts)]
    alone = [backend.generate([job])[0] for job in jobs]
    together = backend.generate(jobs)
    assert together == alone
    assert len({g.texts[0] for g in alone}) > 5  # the model answers differently to different prompts
    assert all(g.completion_tokens[0] <= job.max_tokens for g, job in zip(alone, jobs))


def test_greedy_matches_plain_transformers_generate(tiny_llama_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    backend = load_backend(tiny_llama_run)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_run)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_run).eval()
    for text in prompts(backend, 3):
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**ids, do_sample=False, max_new_tokens=8, pad_token_id=tokenizer.pad_token_id)
        expected = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        (result,) = backend.generate(jobs_for(backend, [text], max_tokens=8))
        assert result.texts[0] == expected


def test_a_stop_string_is_cut_from_the_text_and_counted_in_the_tokens(tiny_llama_run):
    backend = load_backend(tiny_llama_run)
    (free,) = backend.generate(jobs_for(backend, prompts(backend, 1), max_tokens=12))
    text = free.texts[0]
    assert free.finish_reasons == ["length"] and len(text) >= 6
    stop = text[3:5]
    (stopped,) = backend.generate(jobs_for(backend, prompts(backend, 1), max_tokens=12, stop=[stop]))
    assert stopped.texts[0] == text[:text.index(stop)]
    assert stopped.finish_reasons == ["stop"]
    # usage counts the tokens generated up to the one that completed the stop string
    # (one token per visible character, plus any special tokens decoding to nothing)
    assert text.index(stop) + len(stop) <= stopped.completion_tokens[0] < free.completion_tokens[0]


def test_seeded_sampling_repeats_and_n_gives_n_choices(tiny_llama_run):
    backend = load_backend(tiny_llama_run)
    job = jobs_for(backend, prompts(backend, 1), max_tokens=10, temperature=1.0, top_p=0.9, seed=7, n=3)[0]
    first, again = backend.generate([job])[0], backend.generate([job])[0]
    assert first.texts == again.texts and len(first.texts) == 3
    assert len(set(first.texts)) > 1
    greedy = backend.generate(jobs_for(backend, prompts(backend, 1), max_tokens=10, n=2))[0]
    assert len(greedy.texts) == 2 and greedy.texts[0] == greedy.texts[1]


def test_adapters_answer_as_peft_alone_would_and_the_base_stays_the_base(tiny_llama_run, lora_adapters):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    served = load_backend(tiny_llama_run, adapters={k: str(v) for k, v in lora_adapters.items()})
    plain = load_backend(tiny_llama_run)
    text = prompts(plain, 2)
    answers = {}
    for name in [None, "support", "legal"]:
        adapter = served.adapters[name] if name else None
        answers[name] = served.generate(jobs_for(served, text, max_tokens=8, adapter=adapter))
    assert answers[None] == plain.generate(jobs_for(plain, text, max_tokens=8))
    assert answers["support"] != answers[None] and answers["legal"] != answers["support"]
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_run), lora_adapters["legal"])
    plain.model = reference.eval()
    assert plain.generate(jobs_for(plain, text, max_tokens=8)) == answers["legal"]


def test_classifier_applies_the_task_prefix_and_batches_like_single_calls(tiny_classifier_run):
    from tunelab.evaluate.predict import classify
    assert RunDir(tiny_classifier_run).is_classifier
    backend = load_backend(tiny_classifier_run)
    assert isinstance(backend, TransformersClassifier) and backend.prefix == PREFIX
    texts = ["great stuff", "awful", "it is fine I guess"]
    together = backend.classify(texts)
    alone = [backend.classify([t])[0] for t in texts]
    for (label, probs), (label_alone, probs_alone) in zip(together, alone):
        assert label == label_alone and abs(sum(probs.values()) - 1) < 1e-5
        assert all(abs(probs[k] - probs_alone[k]) < 1e-5 for k in probs)
    _, expected = classify(backend.model, backend.tokenizer, texts, prefix=PREFIX)
    assert [p["positive"] for _, p in together] == [float(row[2]) for row in expected]


def test_stop_helpers():
    assert first_stop("abc<end>def", ["def", "<end>"]) == 3
    assert first_stop("abc", ["x"]) is None
    assert held_back("hello <en", ["<end>"]) == 3
    assert held_back("hello", ["<end>"]) == 0
    assert held_back("ab", ["b!", "ab!"]) == 2
