"""vLLM generator (GPU), a GeneratorBackend like transformers_backend.TransformersGenerator, so
tunelab's guard, cache, prediction log, metrics and batcher stay in front while vLLM's engine
(paged attention, CUDA graphs) generates. Written against vLLM's offline `LLM` API
(`LLM.generate` with token-id prompts, `SamplingParams` with `logprobs` / `prompt_logprobs`,
`LoRARequest` per request); vllm is imported only when this backend is chosen (`pip install
tunelab[vllm]`).

Each batch the tunelab batcher forms is one `LLM.generate` call, in which vLLM schedules the
requests itself. `LLM` has no token streaming, so a streamed request is answered with its whole
text in one event; and a batch, once started, runs to its end (a request whose client left is
dropped while it waits in the queue, not mid-batch).
"""
from __future__ import annotations

import itertools
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.serve.backend import (GENERATIVE, RUN_ADAPTER, Generation, GenerationJob, TokenizerText, TokenLogprob,
                                   vocab_size)
from tunelab.train.run_dir import RunDir

MIN_LORA_RANK = 16  # vLLM's max_lora_rank when the adapters known at start are smaller: room for later ones


class VllmGenerator(TokenizerText):
    """Also an AdapterHost: an adapter "loaded" here is a name, a path and a LoRA id; vLLM loads
    its weights when a request first names it (`LoRARequest` per request, so one `generate` call
    mixes adapters) and keeps up to `max_loras` on the GPU itself; unloading removes it from the
    engine (`LLMEngine.remove_lora`). Written against vLLM's API; not run on this project's CPU
    machines."""
    task = GENERATIVE
    streams = False

    def __init__(self, llm, tokenizer, *, base_model: str, lora_paths: dict[str, str], default_adapter: str | None,
                 max_lora_rank: int, context_length: int | None, default_temperature: float, vocab: int,
                 eos_ids: list[int]):
        self.llm = llm
        self.tokenizer = tokenizer
        self.base_model = base_model
        self.lora_paths = dict(lora_paths)  # adapter name -> directory
        self._ids = itertools.count(1)  # vLLM wants a positive int id each, never reused for another adapter
        self.lora_ids = {name: next(self._ids) for name in self.lora_paths}
        self.max_lora_rank = max_lora_rank
        self.default_adapter = default_adapter
        self.context_length = context_length
        self.default_temperature = default_temperature
        self.vocab_size = vocab
        self.eos_ids = eos_ids

    @classmethod
    def load(cls, run_dir: str | Path, *, adapter_slots: int = 0, engine_options: dict | None = None) -> "VllmGenerator":
        """LoRA is enabled when the run is an adapter or adapters may be loaded (adapter_slots: how
        many vLLM keeps on the GPU at once). engine_options: extra `vllm.LLM` arguments
        (gpu_memory_utilization, max_model_len, ...)."""
        try:
            from vllm import LLM
        except ImportError:
            raise TunelabError("serve.engine is vllm but the vllm package is not installed",
                               fix="pip install 'tunelab[vllm]' on a CUDA machine, or use serve.engine=transformers") from None
        from transformers import AutoConfig, GenerationConfig

        from tunelab.models.load import check_adapter_base, load_tokenizer, resolve_model_path
        run = RunDir.open(run_dir)
        if run.is_adapter:
            check_adapter_base(run.path, run.adapter_base)
        model_path = resolve_model_path(run.adapter_base) if run.is_adapter else str(run.path)
        lora_paths = {RUN_ADAPTER: str(run.path)} if run.is_adapter else {}
        rank = max([MIN_LORA_RANK] + [RunDir(p).adapter_config.get("r", 16) for p in lora_paths.values()])
        options = {}
        if lora_paths or adapter_slots:
            options = {"enable_lora": True, "max_loras": max(1, adapter_slots + len(lora_paths)), "max_lora_rank": rank}
        llm = LLM(model=model_path, tokenizer=str(run.path), **options, **(engine_options or {}))
        tokenizer = load_tokenizer(str(run.path))
        config = AutoConfig.from_pretrained(model_path)
        try:
            generation = GenerationConfig.from_pretrained(model_path)
            temperature = (generation.temperature or 1.0) if generation.do_sample else 0.0
            eos = generation.eos_token_id
        except OSError:
            temperature, eos = 0.0, None
        eos = tokenizer.eos_token_id if eos is None else eos
        return cls(llm, tokenizer, base_model=run.adapter_base or str(run.path), lora_paths=lora_paths,
                   default_adapter=RUN_ADAPTER if run.is_adapter else None, max_lora_rank=rank,
                   context_length=getattr(config, "max_position_embeddings", None), default_temperature=temperature,
                   vocab=vocab_size(tokenizer, config), eos_ids=[eos] if isinstance(eos, int) else list(eos or []))

    def load_adapter(self, name: str, path: str) -> None:
        rank = (RunDir(path).adapter_config or {}).get("r", 0)
        if rank > self.max_lora_rank:
            raise TunelabError(f"the adapter's rank {rank} is above the {self.max_lora_rank} this vLLM engine was "
                               "started with", where=path, fix="restart the server to serve it")
        self.lora_paths[name] = path
        self.lora_ids[name] = next(self._ids)

    def unload_adapter(self, name: str) -> None:
        self.lora_paths.pop(name)
        self.llm.llm_engine.remove_lora(self.lora_ids.pop(name))

    def sampling_params(self, job: GenerationJob):
        from vllm import SamplingParams
        # vLLM leaves the stop string out of the text, as the OpenAI API and the transformers backend do
        return SamplingParams(n=job.n, temperature=job.temperature, top_p=job.top_p if job.temperature else 1.0,
                              max_tokens=job.max_tokens, stop=job.stop or None, seed=job.seed,
                              skip_special_tokens=True, logprobs=job.logprobs,
                              prompt_logprobs=job.logprobs if job.echo_logprobs else None)

    def lora_request(self, adapter: str | None):
        """The LoRARequest of a job's adapter (None: the base)."""
        name = adapter or self.default_adapter
        if name is None:
            return None
        from vllm.lora.request import LoRARequest
        return LoRARequest(name, self.lora_ids[name], self.lora_paths[name])

    def generate(self, jobs: list[GenerationJob]) -> list[Generation]:
        skipped = [job.cancelled.is_set() for job in jobs]  # clients that left while it was queued
        live = [job for job, skip in zip(jobs, skipped) if not skip]
        prompts = [{"prompt_token_ids": job.prompt_ids} for job in live]
        outputs = iter(self.llm.generate(prompts, [self.sampling_params(job) for job in live],
                                         lora_request=[self.lora_request(job.adapter) for job in live], use_tqdm=False)
                       if live else [])
        results = []
        for job, skip in zip(jobs, skipped):
            if skip:
                results.append(Generation([""] * job.n, ["stop"] * job.n, [0] * job.n, len(job.prompt_ids)))
                continue
            output = next(outputs)
            choices = output.outputs
            results.append(Generation(
                texts=[c.text for c in choices],
                finish_reasons=["length" if c.finish_reason == "length" else "stop" for c in choices],
                completion_tokens=[len(c.token_ids) for c in choices], prompt_tokens=len(job.prompt_ids),
                logprobs=[self._logprobs(c.token_ids, c.logprobs, job.logprobs) for c in choices]
                if job.logprobs is not None else None,
                prompt_logprobs=self._logprobs(job.prompt_ids, output.prompt_logprobs, job.logprobs)
                if job.echo_logprobs and job.logprobs is not None else None))
        return results

    def _logprobs(self, ids, per_token, top: int) -> list[TokenLogprob]:
        """vLLM's per-position {token id: Logprob} dicts (the chosen token and the top ones; None
        for a prompt's first token) as TokenLogprobs; a final end token is left out, as the
        transformers backend does."""
        ids = list(ids)
        if ids and ids[-1] in self.eos_ids:
            ids = ids[:-1]
        out = []
        for token, scores in zip(ids, per_token or []):
            if scores is None:
                out.append(TokenLogprob(token, None))
                continue
            ranked = sorted(scores.items(), key=lambda item: item[1].logprob, reverse=True)[:top]
            out.append(TokenLogprob(token, scores[token].logprob, [(t, s.logprob) for t, s in ranked]))
        return out

    def streamer(self) -> None:
        """Not called: `streams` is False (the offline `LLM` has no token streaming)."""
        return None

    def warmup(self) -> None:
        self.generate([GenerationJob(prompt_ids=self.encode("warm up", special_tokens=True), max_tokens=2)])
