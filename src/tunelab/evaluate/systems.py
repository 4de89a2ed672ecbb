"""What answers the test prompts of a generative evaluation: a model loaded here (a run or model
directory, through the one model loader) or a model behind an OpenAI-compatible endpoint
(`endpoint:URL#MODEL`, tunelab.evaluate.endpoint). Both answer greedily and count tokens; only a
local model scores the reference replies (log-likelihood, perplexity) and the forgetting check."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunelab.evaluate import latency
from tunelab.evaluate.endpoint import EndpointModel, is_endpoint
from tunelab.evaluate.generate import generate_answers, load_generator, prompt_texts, reference_log_likelihood


@dataclass
class Answers:
    texts: list[str]
    prompt_tokens: list[int]
    new_tokens: list[int]


class LocalGenerator:
    def __init__(self, source: str, settings):
        self.model, self.tokenizer = load_generator(source)
        self.generation = settings.generation
        self.latency_settings = settings.latency

    @property
    def loaded(self):
        return self.model, self.tokenizer

    def answer(self, conversations: list[dict[str, Any]]) -> Answers:
        """Each record's answer to its messages before the final (reference or empty) reply."""
        prompts = prompt_texts(self.tokenizer, conversations)
        generated = generate_answers(self.model, self.tokenizer, prompts,
                                     max_new_tokens=self.generation.max_new_tokens,
                                     batch_size=self.generation.batch_size)
        prompt_tokens = [len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        return Answers(generated.texts, prompt_tokens, generated.new_tokens)

    def reference_log_likelihood(self, conversations) -> tuple[list[float], list[int]]:
        return reference_log_likelihood(self.model, self.tokenizer, conversations)

    def latency(self, conversations) -> dict[str, Any]:
        def answer(batch: list[str]) -> int:
            return sum(generate_answers(self.model, self.tokenizer, batch,
                                        max_new_tokens=self.generation.max_new_tokens,
                                        batch_size=len(batch)).new_tokens)
        return latency.measure_latency(answer, prompt_texts(self.tokenizer, conversations),
                                       batch_sizes=self.latency_settings.batch_sizes,
                                       requests=self.latency_settings.requests)


class EndpointGenerator:
    loaded = None  # no weights here: no perplexity, no forgetting check

    def __init__(self, spec: str, settings):
        self.remote = EndpointModel(spec, settings.endpoint)
        self.generation = settings.generation
        self.latency_settings = settings.latency

    def answer(self, conversations: list[dict[str, Any]]) -> Answers:
        answered = self.remote.chat([c["messages"][:-1] for c in conversations], self.generation.max_new_tokens)
        return Answers([a[0] for a in answered], [a[1] for a in answered], [a[2] for a in answered])

    def reference_log_likelihood(self, conversations) -> None:
        return None

    def latency(self, conversations) -> dict[str, Any]:
        """A batch is that many requests in flight at once (up to eval.endpoint.concurrency)."""
        def answer(batch: list[list[dict]]) -> int:
            return sum(a[2] for a in self.remote.chat(batch, self.generation.max_new_tokens))
        timing = latency.measure_latency(answer, [c["messages"][:-1] for c in conversations],
                                         batch_sizes=self.latency_settings.batch_sizes,
                                         requests=self.latency_settings.requests)
        return {**timing, "device": self.remote.device}


def generator_for(source: str, settings) -> LocalGenerator | EndpointGenerator:
    return EndpointGenerator(source, settings) if is_endpoint(source) else LocalGenerator(source, settings)
