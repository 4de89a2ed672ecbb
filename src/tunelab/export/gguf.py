"""`tunelab export RUN --format gguf [--quant f16|q8_0]`: a Llama-family run as one GGUF file for
llama.cpp and Ollama, with an Ollama Modelfile beside it.

The file is written with the `gguf` package (llama.cpp's own Python writer: `GGUFWriter`, its
tensor-name map and its Q8_0 quantiser), following what llama.cpp's `convert_hf_to_gguf.py` does
for `LlamaForCausalLM`: the same metadata keys, the same tensor names, Q and K rows permuted to
llama.cpp's rotary layout, norms and other 1-D tensors kept in F32, the tokenizer as a token
list with types, merges, special token ids and the chat template. An adapter run is merged first
(`export.merge`, checked on logits).

Nothing is kept unless the file reads back as the run: transformers loads it (`gguf_file=`), its
tokenizer must encode the check prompts to the same ids and carry the same chat template and
special tokens, and its greedy answers on the run's test prompts must equal the run's (all of
them for f16; for q8_0 the agreement rate is measured, recorded, and must reach MIN_AGREEMENT).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError
from tunelab.export import checks
from tunelab.export.merge import ExportResult
from tunelab.files import manifest, write_json, write_text
from tunelab.train.run_dir import RunDir

QUANTS = ("f16", "q8_0")
# Asked for often, but the gguf package has no K-quant quantiser (only dequantisation): it takes
# llama.cpp's C++ `llama-quantize`, which tunelab does not ship.
UNAVAILABLE = {"q4_k_m": "the gguf package can only dequantize Q4_K, not quantize to it"}
CHECK_PROMPTS = 50
MAX_NEW_TOKENS = 32
# f16 rounds each weight once: greedy answers must not change. q8_0 may flip a near-tie.
MIN_AGREEMENT = {"f16": 1.0, "q8_0": 0.9}
# the pre-tokenizer name llama.cpp gives each split pattern transformers knows (llama.cpp reads
# several names for one pattern; these are the ones its converter writes)
PREFERRED_PRE = ("llama-bpe", "qwen2", "gpt-4o", "tekken")


def run(run_dir: str | Path, *, quant: str = "f16", out_dir: str | Path | None = None,
        prompts: int = CHECK_PROMPTS, min_agreement: float | None = None) -> ExportResult:
    quant = _check_quant(quant)
    run = RunDir.open(run_dir)
    config = _check_llama(run)
    out_dir = Path(out_dir) if out_dir else run.path / "gguf"
    checks.check_destination(out_dir)
    floor = MIN_AGREEMENT[quant] if min_agreement is None else min_agreement

    from tunelab.export import ollama
    from tunelab.models.load import load_model, load_tokenizer
    tokenizer = load_tokenizer(str(run.path))
    # before the slow part: a tokenizer or template with no GGUF / Ollama form is refused now
    pre = tokenizer_pre(tokenizer)
    template = ollama.translate(tokenizer)
    with tempfile.TemporaryDirectory(prefix=".gguf-source-", dir=run.path.parent) as scratch, \
            checks.staged_output(out_dir) as stage:
        merge_check = None
        source = run.path
        if run.is_adapter:
            from tunelab.export import merge
            merged = merge.run(run.path, merge=True, out_dir=Path(scratch) / "merged")
            source = merged.out_dir
            merge_check = {"max_abs_logit_diff": merged.max_abs_diff, "tolerance": merged.tolerance}
        model = load_model(str(source), "sft").eval()
        name = f"model-{quant}.gguf"
        write_gguf(model, tokenizer, stage / name, quant=quant, name=run.path.name,
                   tokenizer_files=Path(scratch) / "tokenizer", pre=pre, add_bos=template.bos_from_runtime)
        conversations, source_name = checks.generation_prompts(run, tokenizer, prompts)
        check = check_gguf(model, tokenizer, stage, name, conversations, source_name, quant=quant, floor=floor)
        template_check = ollama.check_template(template, tokenizer, conversations)
        stops = [tokenizer.convert_ids_to_tokens(i) for i in _stop_ids(model, tokenizer)]
        modelfile = ollama.modelfile(name, template, tokenizer, stops)
        write_text(stage / "Modelfile", modelfile)
        outputs = {p.name: p for p in stage.iterdir() if p.is_file()}
        write_json(stage / "manifest.json", manifest(
            stage="export", inputs=_inputs(run), outputs=outputs, config={"format": "gguf", "quant": quant},
            extra={"source_run": str(run.path.resolve()), "base_model": {"id": run.base_model_id,
                                                                         "path": run.base_model},
                   "task": run.task, "architecture": config.model_type, "merge_check": merge_check,
                   "checks": {**check, "modelfile_template": template_check},
                   "checks_passed": True}))
    agreement = check["greedy"]["agreement"]
    return ExportResult(run.path, out_dir, (
        f"wrote {out_dir / name} ({quant}) and an Ollama Modelfile; read back with transformers: tokenizer "
        f"identical, greedy answers agree on {agreement:.0%} of {check['greedy']['prompts']} "
        f"{check['greedy']['prompt_source']} prompts; Modelfile template renders as the chat template on "
        f"{template_check['conversations']} conversations. Ollama: ollama create NAME -f {out_dir / 'Modelfile'}"))


def _check_quant(quant: str) -> str:
    quant = (quant or "f16").lower()
    if quant in UNAVAILABLE:
        raise TunelabError(f"--quant {quant} is not available: {UNAVAILABLE[quant]}", where="--quant",
                           fix=f"export f16 and run llama.cpp's `llama-quantize model-f16.gguf model-{quant}.gguf "
                               f"{quant.upper()}`, or use --quant q8_0")
    if quant not in QUANTS:
        raise TunelabError(f"unknown GGUF quant type {quant!r}", where="--quant",
                           fix=f"use one of {', '.join(QUANTS)} (q4_k_m needs llama.cpp's llama-quantize)")
    return quant


def _check_llama(run: RunDir):
    """The run's model config, when the run is a Llama-family causal LM with its files present."""
    from tunelab.models.load import load_model_config
    weights = ("adapter_model.safetensors", "adapter_model.bin") if run.is_adapter else (
        "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    if not run.is_adapter and not (run.path / "config.json").is_file():
        raise TunelabError("the run directory has no config.json", where=str(run.path),
                           fix="export the output directory of `tunelab train` (a model saved with save_pretrained)")
    if not any((run.path / w).is_file() for w in weights):
        raise TunelabError(f"the run directory has no weights ({' or '.join(weights[:2])})", where=str(run.path),
                           fix="export a finished run directory (its weights are written at the end of training)")
    if not any((run.path / t).is_file() for t in ("tokenizer.json", "tokenizer.model")):
        raise TunelabError("the run directory has no tokenizer (tokenizer.json)", where=str(run.path),
                           fix="export a run directory written by `tunelab train`, which saves the tokenizer")
    config = load_model_config(str(run.path))
    model_type = getattr(config, "model_type", None)
    if run.task == "classification" or model_type != "llama":
        what = "a classifier" if run.task == "classification" else "a causal LM"
        raise TunelabError(f"GGUF export is for Llama-family causal LMs, and this run is {what} of type "
                           f"{model_type!r}", where=str(run.path),
                           fix="export it with --format onnx, or fine-tune a Llama-family base model")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise TunelabError(f"the model's rope scaling {rope.get('rope_type', rope.get('type'))!r} is not "
                           "exported (transformers' GGUF reader cannot check it)", where=str(run.path),
                           fix="export a model with default rotary embeddings")
    return config


def _inputs(run: RunDir) -> dict[str, Path]:
    names = ("adapter_config.json", "adapter_model.safetensors") if run.is_adapter else ("config.json",
                                                                                       "model.safetensors")
    return {n: run.path / n for n in names if (run.path / n).is_file()}


# writing

def write_gguf(model, tokenizer, path: Path, *, quant: str, name: str, tokenizer_files: Path, pre: str,
               add_bos: bool) -> None:
    """The model and tokenizer as llama.cpp's converter writes a LlamaForCausalLM."""
    import gguf

    config = model.config
    file_type = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[quant]
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_vocab_size(config.vocab_size)
    writer.add_rope_dimension_count(head_dim)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_tokenizer(writer, tokenizer, config.vocab_size, tokenizer_files, pre, add_bos)
    _add_tensors(writer, model, gguf.GGMLQuantizationType[quant.upper()])
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def _add_tensors(writer, model, qtype) -> None:
    import gguf
    import numpy as np

    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    for hf_name, tensor in model.state_dict().items():
        if hf_name.endswith("rotary_emb.inv_freq") or (hf_name == "lm_head.weight" and config.tie_word_embeddings):
            continue  # recomputed by the reader; a tied head is the embedding, stored once
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise TunelabError(f"the model has a tensor llama.cpp's Llama layout has no place for ({hf_name})",
                               fix="export a plain LlamaForCausalLM")
        data = tensor.detach().float()
        if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            data = _permute(data, heads)
        elif hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            data = _permute(data, kv_heads)
        data = data.numpy()
        target = gguf.GGMLQuantizationType.F32 if data.ndim <= 1 or name.endswith("_norm.weight") else qtype
        try:
            packed = gguf.quants.quantize(data, target)
        except gguf.QuantError:  # a row not a multiple of the block size: F16, as llama.cpp's converter does
            target = gguf.GGMLQuantizationType.F16
            packed = gguf.quants.quantize(data, target)
        if packed.dtype == np.uint8:
            writer.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=target)
        else:
            writer.add_tensor(name, packed, raw_dtype=target)


def _permute(weights, heads: int):
    """Q/K rows from transformers' rotary layout (halves) to llama.cpp's (interleaved pairs)."""
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _add_tokenizer(writer, tokenizer, vocab_size: int, files: Path, pre: str, add_bos: bool) -> None:
    """Byte-level BPE as llama.cpp's converter writes it (`_set_vocab_gpt2`): every id up to the
    model's vocabulary size, its type (added special tokens are CONTROL, so readers keep them
    whole), merges, special token ids, whether BOS is added, and the chat template."""
    import gguf

    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise TunelabError(f"the tokenizer has ids up to {max(vocab.values())} but the model only {vocab_size} "
                           "embeddings", fix="resize the model's embeddings to the tokenizer before training")
    reverse = {i: t for t, i in vocab.items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    tokenizer.save_pretrained(str(files))  # one normalised copy for gguf's reader of tokenizer files
    special = gguf.SpecialVocab(files, load_merges=True, n_vocab=vocab_size)
    # llama.cpp adds BOS to every prompt when told to; the chat path must match the chat template,
    # which writes BOS itself or not at all (the Modelfile's template then leaves it to the runtime)
    special.add_special_token["bos"] = add_bos
    special.add_special_token["eos"] = False
    special.add_to_gguf(writer, quiet=True)


def tokenizer_pre(tokenizer) -> str:
    """llama.cpp's pre-tokenizer name for the run's tokenizer; refused unless it is a byte-level BPE
    (a sentencepiece-style vocabulary needs scores llama.cpp merges by, which a tokenizer.json
    does not carry, and the check here could not confirm them)."""
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    pre = _byte_level_pre(backend)
    if pre is None:
        model = backend.get("model") or {}
        kind = "byte-fallback BPE (sentencepiece style)" if model.get("byte_fallback") else f"{model.get('type')}"
        raise TunelabError(f"the run's tokenizer ({kind} model, pre-tokenizer "
                           f"{(backend.get('pre_tokenizer') or {}).get('type')}) is not a byte-level BPE, the one "
                           "kind tunelab writes to GGUF", where="tokenizer.json",
                           fix="fine-tune a base model with a byte-level BPE tokenizer (Llama 3, SmolLM), or convert "
                               "with llama.cpp's convert_hf_to_gguf.py")
    return pre


def _byte_level_pre(backend: dict[str, Any]) -> str | None:
    """llama.cpp's name for a byte-level BPE tokenizer's pre-tokenizer, or None when it is not one."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS
    model, pre = backend.get("model") or {}, backend.get("pre_tokenizer") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or (backend.get("decoder") or {}).get(
            "type") != "ByteLevel" or backend.get("normalizer"):
        return None
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"  # GPT-2's own split pattern
    steps = pre.get("pretokenizers") or []
    if (pre.get("type") == "Sequence" and len(steps) == 2 and steps[0].get("type") == "Split"
            and steps[1].get("type") == "ByteLevel" and not steps[1].get("use_regex", True)):
        pattern = (steps[0].get("pattern") or {}).get("Regex")
        names = [n for n, regex in GGUF_PRE_TOKENIZER_SPLITS.items() if regex == pattern]
        return next((n for n in PREFERRED_PRE if n in names), names[0] if names else None)
    return None


# checking

def check_gguf(model, tokenizer, directory: Path, name: str, conversations: list[list[dict]], source: str, *,
               quant: str, floor: float) -> dict[str, Any]:
    """Read the file back with transformers and compare it with the run; raises when it differs."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = name
    try:
        read_tokenizer = AutoTokenizer.from_pretrained(str(directory), gguf_file=name)
        read_model = AutoModelForCausalLM.from_pretrained(str(directory), gguf_file=name, dtype=torch.float32).eval()
    except (OSError, ValueError, KeyError) as exc:
        raise TunelabError(f"transformers cannot read the GGUF file back ({str(exc).splitlines()[0][:200]}), "
                           "so nothing was written", where=where, fix="report this as a bug") from None
    texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    ids = [tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    read_ids = [read_tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    differences = []
    if read_ids != ids:
        differences.append(f"it encodes {sum(a != b for a, b in zip(ids, read_ids))} of {len(ids)} prompts "
                           "to other token ids")
    if (read_tokenizer.chat_template or "") != (tokenizer.chat_template or ""):
        differences.append("its chat template differs")
    for special in ("bos_token_id", "eos_token_id"):
        if getattr(read_tokenizer, special) != getattr(tokenizer, special):
            differences.append(f"its {special} is {getattr(read_tokenizer, special)}, not "
                               f"{getattr(tokenizer, special)}")
    if differences:
        raise TunelabError(f"the GGUF file's tokenizer does not match the run's: {'; '.join(differences)}, so "
                           "nothing was written", where=where, fix="report this as a bug")

    eos = _stop_ids(model, tokenizer)
    expected = checks.greedy_answers(model, ids, eos_token_ids=eos, max_new_tokens=MAX_NEW_TOKENS)
    answers = checks.greedy_answers(read_model, read_ids, eos_token_ids=eos, max_new_tokens=MAX_NEW_TOKENS)
    same = [a == b for a, b in zip(expected, answers)]
    agreement = sum(same) / len(same)
    decoded = [tokenizer.decode(a, skip_special_tokens=True) for a in expected]
    if [read_tokenizer.decode(a, skip_special_tokens=True) for a in expected] != decoded:
        raise TunelabError("the GGUF file's tokenizer decodes the run's answers to other text, so nothing was "
                           "written", where=where, fix="report this as a bug")
    if agreement < floor:
        example = ""
        if False in same:
            first = same.index(False)
            example = (f"; first difference: {decoded[first]!r} became "
                       f"{tokenizer.decode(answers[first], skip_special_tokens=True)!r}")
        raise TunelabError(f"the GGUF file ({quant}) gives the run's greedy answer on only {sum(same)} of "
                           f"{len(same)} {source} prompts (at least {floor:.0%} needed{example}), so nothing was "
                           "written", where=where, fix="use --quant f16" if quant != "f16" else "report this as a bug")
    return {"tokenizer": {"prompts": len(ids), "same_token_ids": True, "same_chat_template": True,
                          "same_special_tokens": True},
            "greedy": {"prompts": len(same), "prompt_source": source, "agreement": agreement,
                       "min_agreement": floor, "max_new_tokens": MAX_NEW_TOKENS, "same_answers": sum(same)},
            "reader": "transformers"}


def _stop_ids(model, tokenizer) -> list[int]:
    """The tokens that end an answer: the generation config's (one id or several) and the tokenizer's eos."""
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    ids = [i for i in [*ids, tokenizer.eos_token_id] if i is not None]
    return list(dict.fromkeys(ids))
