"""The transformers backends on tiny local models: batched greedy output equals one-at-a-time
output, stop strings and max_tokens cut each request where it would stop alone, seeded sampling
repeats, LoRA adapters change the answer as PEFT alone would, and the classifier applies the
run's task prefix through tunelab.evaluate.predict.classify."""
import torch

from serve_helpers import PREFIX
from tunelab.serve.backend import (AdapterHost, Backend, ClassifierBackend, GenerationJob, GeneratorBackend,
                                   first_stop)
from tunelab.serve.classifier_backend import TransformersClassifier
from tunelab.serve.service import load_backend
from tunelab.serve.streaming import held_back
from tunelab.train.run_dir import RunDir


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
    served = load_backend(tiny_llama_run, adapter_slots=2)
    assert isinstance(served, AdapterHost)
    for name, path in lora_adapters.items():
        served.load_adapter(name, str(path))
    plain = load_backend(tiny_llama_run)
    text = prompts(plain, 2)
    answers = {name: served.generate(jobs_for(served, text, max_tokens=8, adapter=name))
               for name in [None, "support", "legal"]}
    assert answers[None] == plain.generate(jobs_for(plain, text, max_tokens=8))
    assert answers["support"] != answers[None] and answers["legal"] != answers["support"]
    # one batch naming the base and both adapters answers each row as its own adapter would
    mixed = served.generate([job for name in [None, "support", "legal"]
                             for job in jobs_for(served, text, max_tokens=8, adapter=name)])
    assert mixed == answers[None] + answers["support"] + answers["legal"]
    # a sampled request with several choices samples every choice from its adapter
    sampled = dict(max_tokens=8, temperature=1.0, seed=3, n=3)
    alone = load_backend(lora_adapters["legal"], adapter_slots=1)
    assert served.generate(jobs_for(served, text[:1], adapter="legal", **sampled)) == \
        alone.generate(jobs_for(alone, text[:1], **sampled))
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_run), lora_adapters["legal"])
    plain.model, plain.default_adapter = reference.eval(), "default"  # PEFT's own name for a lone adapter
    assert plain.generate(jobs_for(plain, text, max_tokens=8)) == answers["legal"]
    served.unload_adapter("legal")
    served.unload_adapter("support")  # the last one: the plain base is given back
    assert not hasattr(served.model, "peft_config")
    assert served.generate(jobs_for(served, text, max_tokens=8)) == answers[None]


def test_classifier_batches_like_single_calls_and_answers_as_evaluation_predicts(tiny_classifier_run):
    from tunelab.evaluate.predict import classify
    assert RunDir(tiny_classifier_run).is_classifier
    backend = load_backend(tiny_classifier_run)
    assert isinstance(backend, TransformersClassifier) and isinstance(backend, ClassifierBackend)
    texts = [PREFIX + t for t in ["great stuff", "awful", "it is fine I guess"]]  # the server prefixes them
    together = backend.classify(texts)
    alone = [backend.classify([t])[0] for t in texts]
    for (label, probs), (label_alone, probs_alone) in zip(together, alone):
        assert label == label_alone and abs(sum(probs.values()) - 1) < 1e-5
        assert all(abs(probs[k] - probs_alone[k]) < 1e-5 for k in probs)
    _, expected = classify(backend.model, backend.tokenizer, texts)
    assert [p["positive"] for _, p in together] == [float(row[2]) for row in expected]


def test_every_engine_implements_the_one_backend_protocol(tiny_llama_run, tiny_classifier_run):
    from tunelab.serve.transformers_backend import TransformersGenerator
    from tunelab.serve.vllm_backend import VllmGenerator
    generator = load_backend(tiny_llama_run)
    assert isinstance(generator, TransformersGenerator) and isinstance(generator, GeneratorBackend)
    assert isinstance(load_backend(tiny_classifier_run), ClassifierBackend)
    # vLLM needs a GPU to load; its class declares every member of the protocol
    members = {name for cls in (Backend, GeneratorBackend, AdapterHost)
               for name in [*cls.__annotations__, *(n for n, v in vars(cls).items() if callable(v))]
               if not name.startswith("_")}
    declared = set(dir(VllmGenerator)) | set(VllmGenerator.__init__.__code__.co_names)
    assert members and members <= declared, members - declared


def test_logprobs_of_generated_and_prompt_tokens_agree_with_a_plain_forward_pass(tiny_llama_run):
    backend = load_backend(tiny_llama_run)
    ids = backend.encode("abc abc", special_tokens=True)
    (result,) = backend.generate([GenerationJob(prompt_ids=ids, max_tokens=3, logprobs=2, echo_logprobs=True)])
    scored = result.prompt_logprobs + result.logprobs[0]
    tokens = [t.token for t in scored]
    assert tokens[:len(ids)] == ids and len(result.logprobs[0]) == result.completion_tokens[0] == 3
    assert backend.decode(tokens[len(ids):]) == result.texts[0] and scored[0].logprob is None
    with torch.inference_mode():
        expected = backend.model(input_ids=torch.tensor([tokens])).logits[0].float().log_softmax(-1)
    for position, token in enumerate(scored[1:], start=1):
        assert abs(token.logprob - float(expected[position - 1, token.token])) < 1e-4
        assert len(token.top) == 2 and token.top[0][1] >= token.top[1][1]
    for token in result.logprobs[0]:  # greedy: the chosen token is the best alternative, exactly
        assert token.top[0] == (token.token, token.logprob)


def test_stop_helpers():
    assert first_stop("abc<end>def", ["def", "<end>"]) == 3
    assert first_stop("abc", ["x"]) is None
    assert held_back("hello <en", ["<end>"]) == 3
    assert held_back("hello", ["<end>"]) == 0
    assert held_back("ab", ["b!", "ab!"]) == 2
