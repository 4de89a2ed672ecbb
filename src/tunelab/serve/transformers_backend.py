"""The transformers generator (a GeneratorBackend and an AdapterHost): batched greedy decoding
with left padding, per-request sampling, stop strings and cancellation through a per-row
StoppingCriteria, streaming, log-probabilities, and LoRA adapters of one base loaded and
unloaded at runtime and mixed in one batch (PEFT).

The model is loaded through tunelab.models.load, the one loader of every stage; the run
directory is read through RunDir.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tunelab.serve.backend import (GENERATIVE, RUN_ADAPTER, Generation, GenerationJob, TokenizerText, TokenLogprob,
                                   first_stop, vocab_size)
from tunelab.train.run_dir import RunDir


class StopOnText:
    """transformers StoppingCriteria: a row is done once its generated text contains one of its
    stop strings, or once its request is cancelled (its client went away). Per row, so a batch
    stops each request exactly where it would have stopped alone, and generation ends as soon
    as every row is done."""

    def __init__(self, tokenizer, prompt_length: int, stops_per_row: list[list[str]], cancelled_per_row: list):
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length
        self.stops_per_row = stops_per_row
        self.cancelled_per_row = cancelled_per_row

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for row, (stops, cancelled) in enumerate(zip(self.stops_per_row, self.cancelled_per_row)):
            if cancelled.is_set():
                done[row] = True
            elif stops:
                text = self.tokenizer.decode(input_ids[row, self.prompt_length:], skip_special_tokens=True)
                done[row] = any(stop in text for stop in stops)
        return done


class TransformersGenerator(TokenizerText):
    """Also an AdapterHost: LoRA adapters of its base are loaded into one PeftModel by name, and
    a greedy batch whose jobs name different adapters (or the base) is one `generate` call with
    PEFT's `adapter_names` (one name per row, "__base__" for the base), so adapters never take
    turns and PEFT's active adapter (global state) is never switched."""
    task = GENERATIVE
    streams = True  # tokens can be relayed as they are generated

    def __init__(self, model, tokenizer, *, base_model: str, default_adapter: str | None = None):
        self.model = model  # a PeftModel once an adapter is loaded (or from the start, for an unmerged adapter run)
        self.tokenizer = tokenizer
        self.base_model = base_model
        self.default_adapter = default_adapter  # what a job without an adapter runs: the run's own adapter, or the base
        self.eos_ids = self._eos_ids()
        config = getattr(model, "config", None)
        self.context_length = getattr(config, "max_position_embeddings", None)
        self.vocab_size = vocab_size(tokenizer, config)
        generation = model.generation_config
        # a request without temperature decodes as the model's generation config says (as vLLM does)
        self.default_temperature = (generation.temperature or 1.0) if generation.do_sample else 0.0

    @classmethod
    def load(cls, run_dir: str | Path, *, adapter_slots: int = 0) -> "TransformersGenerator":
        """The run. An adapter run is merged onto its base when no other adapter will be served
        beside it (adapter_slots 0); otherwise it stays an adapter (RUN_ADAPTER) on its base, so
        adapters of the same base can be loaded next to it."""
        from tunelab.models.load import check_adapter_base, load_model, load_tokenizer
        run = RunDir.open(run_dir)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = "auto" if device == "cuda" else torch.float32
        tokenizer = load_tokenizer(str(run.path))
        tokenizer.padding_side = "left"  # batched greedy output must equal one-at-a-time output
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        base = run.adapter_base or str(run.path)
        if not (run.is_adapter and adapter_slots):
            model = load_model(str(run.path), "sft", dtype=dtype).to(device)
            return cls(model.eval(), tokenizer, base_model=base)
        from peft import PeftModel
        check_adapter_base(run.path, base)
        model = PeftModel.from_pretrained(load_model(base, "sft", dtype=dtype).to(device), str(run.path),
                                          adapter_name=RUN_ADAPTER)
        return cls(model.eval(), tokenizer, base_model=base, default_adapter=RUN_ADAPTER)

    def load_adapter(self, name: str, path: str) -> None:
        from peft import PeftModel
        from peft.utils import load_peft_weights
        # PEFT adds the adapter's layers to the model before it reads the weights: a damaged
        # file must fail here, before the model is touched
        load_peft_weights(path, device="cpu")
        if not isinstance(self.model, PeftModel):  # the first adapter of a full run: wrap the base
            self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name).eval()
            return
        try:
            self.model.load_adapter(path, adapter_name=name)
        except Exception:
            if name in self.model.peft_config:
                self.model.delete_adapter(name)
            raise
        self.model.eval()

    def unload_adapter(self, name: str) -> None:
        if list(self.model.peft_config) == [name]:
            # PEFT 0.21 cannot run a PeftModel left without adapters (its active adapter is gone):
            # give back the plain base instead (LoRA layers removed, nothing merged)
            self.model = self.model.unload()
        else:
            self.model.delete_adapter(name)

    def _adapter_names(self, jobs: list[GenerationJob]) -> dict[str, Any]:
        """PEFT's mixed-batch argument, one adapter name per row, when the model has adapters."""
        from peft import PeftModel
        if not isinstance(self.model, PeftModel):
            return {}
        return {"adapter_names": [job.adapter or self.default_adapter or "__base__" for job in jobs]}

    def _eos_ids(self) -> list[int]:
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return [eos] if isinstance(eos, int) else list(eos or [])

    @torch.inference_mode()
    def generate(self, jobs: list[GenerationJob]) -> list[Generation]:
        try:
            results = self._generate(jobs)
            for job, result in zip(jobs, results):
                if job.echo_logprobs and job.logprobs is not None and not job.cancelled.is_set():
                    result.prompt_logprobs = self._prompt_logprobs(job)
            return results
        except Exception:
            if jobs[0].streamer is not None:
                jobs[0].streamer.end()  # a reader waiting for text must hear that none is coming
            raise

    def _generate(self, jobs: list[GenerationJob]) -> list[Generation]:
        sampling = not jobs[0].greedy
        copies = jobs[0].n if sampling else 1  # greedy choices are all the same: generate one
        padded = self.tokenizer.pad({"input_ids": [job.prompt_ids for job in jobs]}, return_tensors="pt")
        padded = {k: v.to(self.model.device) for k, v in padded.items()}
        prompt_length = padded["input_ids"].shape[1]
        rows = [job for job in jobs for _ in range(copies)]
        criteria = StopOnText(self.tokenizer, prompt_length, [job.stop for job in rows],
                              [job.cancelled for job in rows])
        kwargs: dict[str, Any] = {"do_sample": False}
        if sampling:
            job = jobs[0]
            if job.seed is not None:
                torch.manual_seed(job.seed)  # safe: only the model thread samples
            kwargs = {"do_sample": True, "temperature": job.temperature, "top_p": job.top_p, "top_k": 0,
                      "num_return_sequences": copies}
        want_logprobs = any(job.logprobs is not None for job in jobs)
        output = self.model.generate(
            **padded, **kwargs, **self._adapter_names(rows), max_new_tokens=max(job.max_tokens for job in jobs), stopping_criteria=[criteria],
            pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.eos_ids or None,
            streamer=jobs[0].streamer, return_dict_in_generate=True, output_logits=want_logprobs)
        generated = output.sequences[:, prompt_length:].tolist()
        step_logprobs = torch.stack(output.logits, dim=1).float().log_softmax(-1) if want_logprobs else None
        results = []
        for index, job in enumerate(jobs):
            choices = [self._finish(generated[index * copies + c], job) for c in range(copies)]
            logprobs = None
            if job.logprobs is not None:
                logprobs = [token_logprobs(step_logprobs[index * copies + c], ids, job.logprobs)
                            for c, (_, _, _, ids) in enumerate(choices)]
            if not sampling:
                choices, logprobs = choices * job.n, (logprobs * job.n if logprobs else None)
            results.append(Generation(texts=[c[0] for c in choices], finish_reasons=[c[1] for c in choices],
                                      completion_tokens=[c[2] for c in choices], prompt_tokens=len(job.prompt_ids),
                                      logprobs=logprobs))
        return results

    def _finish(self, ids: list[int], job: GenerationJob) -> tuple[str, str, int, list[int]]:
        """(text, finish reason, tokens counted, tokens shown in logprobs) of one generated row,
        cut at its end token, its own max_tokens (a batch generates up to the largest) and its
        first stop string (whose tokens are shown, as vLLM does)."""
        ids = ids[:job.max_tokens]
        reason = "length"
        for position, token in enumerate(ids):
            if token in self.eos_ids:
                ids, reason = ids[:position], "stop"
                break
        text = self.decode(ids)
        cut = first_stop(text, job.stop)
        if cut is None:
            return text, reason, len(ids) + (reason == "stop"), ids  # the end token was generated too
        used = next(k for k in range(1, len(ids) + 1) if first_stop(self.decode(ids[:k]), job.stop) is not None)
        return text[:cut], "stop", used, ids[:used]

    def _prompt_logprobs(self, job: GenerationJob) -> list[TokenLogprob]:
        """Each prompt token's logprob given the tokens before it (one forward pass, no padding)."""
        ids = torch.tensor([job.prompt_ids], device=self.model.device)
        scores = self.model(input_ids=ids, **self._adapter_names([job])).logits[0, :-1].float().log_softmax(-1)
        return [TokenLogprob(job.prompt_ids[0], None)] + token_logprobs(scores, job.prompt_ids[1:], job.logprobs)

    def streamer(self):
        from transformers import AsyncTextIteratorStreamer
        return AsyncTextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)

    def warmup(self) -> None:
        self.generate([GenerationJob(prompt_ids=self.encode("warm up", special_tokens=True), max_tokens=2)])


def token_logprobs(scores: torch.Tensor, ids: list[int], top: int) -> list[TokenLogprob]:
    """TokenLogprobs of `ids` from a (positions, vocab) tensor of log-probabilities: row i scores
    ids[i]. The chosen token's value and the alternatives' come from the same tensor, so a greedy
    token's logprob equals the best alternative's exactly (lm-evaluation-harness relies on it)."""
    out = []
    for position, token in enumerate(ids):
        row = scores[position]
        alternatives = []
        if top:
            values, indices = row.topk(top)
            alternatives = list(zip(indices.tolist(), values.tolist()))
        out.append(TokenLogprob(token, float(row[token]), alternatives))
    return out
