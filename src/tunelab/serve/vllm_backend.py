"""vLLM generator (GPU): the same interface as backends.TransformersGenerator, so tunelab's
guard, cache, prediction log, metrics and batcher stay in front while vLLM's engine (paged
attention, CUDA graphs) generates. Written against vLLM's offline `LLM` API (`LLM.generate` with
token-id prompts, `SamplingParams`, `LoRARequest`); vllm is imported only when this backend is
chosen (`pip install tunelab[vllm]`).

Each batch the tunelab batcher forms is one `LLM.generate` call, in which vLLM schedules the
requests itself. `LLM` has no token streaming, so a streamed request is answered with its whole
text in one event.
"""
from __future__ import annotations

import json
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.models.load import adapter_base, resolve_model_path
from tunelab.serve.backends import RUN_ADAPTER, Generation, GenerationJob, encode_prompt, render_chat


class VllmGenerator:
    task = "generative"
    streams = False

    def __init__(self, llm, tokenizer, *, adapters: dict[str, str], lora_paths: dict[str, str],
                 default_adapter: str | None, context_length: int | None, default_temperature: float):
        self.llm = llm
        self.tokenizer = tokenizer
        self.adapters = adapters  # client model id -> adapter name
        self.lora_paths = lora_paths  # adapter name -> directory
        self.lora_ids = {name: i + 1 for i, name in enumerate(lora_paths)}  # vLLM wants a positive int id each
        self.default_adapter = default_adapter
        self.context_length = context_length
        self.default_temperature = default_temperature
        self.supports_chat = bool(getattr(tokenizer, "chat_template", None))

    @classmethod
    def load(cls, run_dir: str | Path, adapters: dict[str, str] | None = None,
             engine_options: dict | None = None) -> "VllmGenerator":
        """engine_options: extra `vllm.LLM` arguments (gpu_memory_utilization, max_model_len, ...)."""
        try:
            from vllm import LLM
        except ImportError:
            raise TunelabError("serve.backend is vllm but the vllm package is not installed",
                               fix="pip install 'tunelab[vllm]' on a CUDA machine, or use serve.backend=transformers") from None
        from transformers import AutoConfig, AutoTokenizer, GenerationConfig
        run_dir = str(run_dir)
        base = adapter_base(run_dir)
        model_path = resolve_model_path(base) if base else run_dir
        lora_paths = ({RUN_ADAPTER: run_dir} if base else {}) | {
            f"adapter_{i}": path for i, path in enumerate((adapters or {}).values())}
        for path in lora_paths.values():
            if adapter_base(path) is None:
                raise TunelabError("not a LoRA adapter directory (no adapter_config.json)", where=str(path),
                                   fix="list adapter run directories under serve.adapters")
        options = {}
        if lora_paths:
            ranks = [json.loads((Path(p) / "adapter_config.json").read_text()).get("r", 16) for p in lora_paths.values()]
            options = {"enable_lora": True, "max_loras": len(lora_paths), "max_lora_rank": max(ranks)}
        llm = LLM(model=model_path, tokenizer=run_dir, **options, **(engine_options or {}))
        tokenizer = AutoTokenizer.from_pretrained(run_dir)
        config = AutoConfig.from_pretrained(model_path)
        try:
            generation = GenerationConfig.from_pretrained(model_path)
            temperature = (generation.temperature or 1.0) if generation.do_sample else 0.0
        except OSError:
            temperature = 0.0
        return cls(llm, tokenizer, adapters={client: f"adapter_{i}" for i, client in enumerate(adapters or {})},
                   lora_paths=lora_paths, default_adapter=RUN_ADAPTER if base else None,
                   context_length=getattr(config, "max_position_embeddings", None), default_temperature=temperature)

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return render_chat(self.tokenizer, messages)

    def encode(self, text: str, *, special_tokens: bool) -> list[int]:
        return encode_prompt(self.tokenizer, text, special_tokens=special_tokens)

    def sampling_params(self, job: GenerationJob):
        from vllm import SamplingParams
        # vLLM leaves the stop string out of the text, as the OpenAI API and the transformers backend do
        return SamplingParams(n=job.n, temperature=job.temperature, top_p=job.top_p if job.temperature else 1.0,
                              max_tokens=job.max_tokens, stop=job.stop or None, seed=job.seed,
                              skip_special_tokens=True)

    def lora_request(self, adapter: str | None):
        name = adapter or self.default_adapter
        if name is None:
            return None
        from vllm.lora.request import LoRARequest
        return LoRARequest(name, self.lora_ids[name], self.lora_paths[name])

    def generate(self, jobs: list[GenerationJob]) -> list[Generation]:
        prompts = [{"prompt_token_ids": job.prompt_ids} for job in jobs]
        outputs = self.llm.generate(prompts, [self.sampling_params(job) for job in jobs],
                                    lora_request=self.lora_request(jobs[0].adapter), use_tqdm=False)
        results = []
        for job, output in zip(jobs, outputs):
            choices = output.outputs
            results.append(Generation(
                texts=[c.text for c in choices],
                finish_reasons=["length" if c.finish_reason == "length" else "stop" for c in choices],
                completion_tokens=[len(c.token_ids) for c in choices], prompt_tokens=len(job.prompt_ids)))
        return results

    def warmup(self) -> None:
        self.generate([GenerationJob(prompt_ids=self.encode("warm up", special_tokens=True), max_tokens=2)])
