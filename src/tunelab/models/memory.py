"""Pre-flight memory estimate: will this training run fit before we load a single weight?

The model is built on the meta device (shapes only, no storage), so every parameter count is
exact for the architecture; activations follow the per-layer transformer estimate of
Korthikanti et al. 2022. GB here means 10^9 bytes.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

from tunelab.config import ADAPTER_METHODS, METHODS, TASKS
from tunelab.errors import TunelabError

GB = 1e9
# Fit only below 90% of what is free: the allocator fragments, and kernels take workspace.
HEADROOM = 0.9
# NF4 with double quantisation: 4 bits per weight plus 0.127 bits of block constants
# (Dettmers et al. 2023, QLoRA, section 3).
QLORA_BYTES_PER_PARAM = 0.5 + 0.127 / 8
# PEFT keeps adapter weights in fp32 even on a bf16 base (autocast_adapter_dtype=True).
ADAPTER_BYTES = 4


@dataclass(frozen=True)
class ParameterCount:
    """Exact shape facts of one architecture, read from its meta-device instance."""
    total: int
    num_blocks: int
    hidden_size: int
    vocab_size: int
    num_heads: int
    num_kv_heads: int
    block_params: tuple[int, ...]
    head_params: int            # outside the base model: an untied lm_head, or the classifier
    block_linear_weights: int   # nn.Linear weights inside blocks: what QLoRA stores in 4 bits
    matmul_params: int          # every nn.Linear weight, a tied lm_head too: 2 FLOPs per token each
    mlp_width: float            # out-width of the MLP up-projections per block (2x for gated MLPs)
    block_linears: tuple[tuple[str, int, int], ...] = field(repr=False)  # (name, in, out)

    def last_blocks(self, n: int) -> int:
        """Parameters in the last n transformer blocks (what method `freeze` trains)."""
        return sum(self.block_params[-n:]) if n > 0 else 0

    def lora_params(self, r: int, targets: str | Sequence[str] = "all-linear",
                    *, dora: bool = False) -> int:
        """LoRA adds A (r x in) and B (out x r) to each targeted linear; DoRA adds a magnitude
        vector of size out. Targets match PEFT's way: a module name equal to or ending in one."""
        return sum(r * (fan_in + fan_out) + (fan_out if dora else 0)
                   for name, fan_in, fan_out in self.block_linears if _targeted(name, targets))


def _targeted(name: str, targets: str | Sequence[str]) -> bool:
    return targets == "all-linear" or any(name == t or name.endswith("." + t) for t in targets)


def count_parameters(model_config, *, task: str = "sft", num_labels: int = 2) -> ParameterCount:
    """Exact parameter count of a transformers config without allocating any weights."""
    _check_choice("task", task, TASKS)
    # Keyed by content: preflight and the recommender price many variants of one config.
    key = (type(model_config).__name__, model_config.to_json_string(use_diff=False), task, num_labels)
    if key not in _COUNTS:
        _COUNTS[key] = _count_on_meta(model_config, task, num_labels)
    return _COUNTS[key]


_COUNTS: dict[tuple, ParameterCount] = {}


def _count_on_meta(model_config, task: str, num_labels: int) -> ParameterCount:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    cfg = copy.deepcopy(model_config)
    if task == "classification":
        cfg.num_labels = num_labels
        builder = AutoModelForSequenceClassification
    else:
        builder = AutoModelForCausalLM
    # Meta tensors carry shape and dtype but no storage: an 80-layer model costs nothing.
    try:
        with torch.device("meta"):
            model = builder.from_config(cfg)
    except ValueError:
        kind = "sequence-classification" if task == "classification" else "causal language-model"
        raise TunelabError(f"model type '{cfg.model_type}' has no {kind} head, so it cannot be "
                           f"trained for task {task}",
                           fix="use an encoder (such as 'default') for classification and a "
                               "decoder for sft and dpo") from None
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    blocks = _find_blocks(model, text.num_hidden_layers)
    hidden = text.hidden_size
    intermediate = getattr(text, "intermediate_size", None) or 4 * hidden
    prefix = model.base_model_prefix + "."

    linears = []
    for i, block in enumerate(blocks):
        for name, module in block.named_modules():
            if isinstance(module, torch.nn.Linear):
                linears.append((name, module.in_features, module.out_features))
    # Up-projections read the hidden state and widen it to the intermediate size (gate and up
    # both do in a gated MLP, or one fused layer twice as wide): their outputs are stored.
    up_width = sum(o for _, i, o in linears if i == hidden and o in (intermediate, 2 * intermediate))
    heads = text.num_attention_heads
    return ParameterCount(
        total=sum(p.numel() for p in model.parameters()),  # parameters() counts tied weights once
        num_blocks=len(blocks),
        hidden_size=hidden,
        vocab_size=text.vocab_size,
        num_heads=heads,
        num_kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        block_params=tuple(sum(p.numel() for p in b.parameters()) for b in blocks),
        head_params=sum(p.numel() for n, p in model.named_parameters() if not n.startswith(prefix)),
        block_linear_weights=sum(i * o for _, i, o in linears),
        matmul_params=sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)),
        mlp_width=up_width / len(blocks),
        block_linears=tuple(linears),
    )


def _find_blocks(model, num_layers: int):
    """The transformer blocks: the ModuleList as long as the config's layer count."""
    import torch
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == num_layers]
    if not lists:
        raise ValueError(f"{type(model).__name__} has no list of {num_layers} blocks")
    return max(lists, key=lambda m: sum(p.numel() for p in m.parameters()))


@dataclass(frozen=True)
class MemoryEstimate:
    params: int
    trainable_params: int
    weights_gb: float
    gradients_gb: float
    optimizer_gb: float
    activations_gb: float
    total_gb: float
    # What it was estimated from, so alternatives can be priced with with_changes().
    inputs: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    def breakdown(self) -> dict[str, float]:
        return {"weights": self.weights_gb, "gradients": self.gradients_gb,
                "optimizer": self.optimizer_gb, "activations": self.activations_gb,
                "total": self.total_gb}

    def with_changes(self, **changes) -> "MemoryEstimate":
        """The same run with some settings changed, e.g. with_changes(method="lora")."""
        return estimate_training_memory(**{**self.inputs, **changes})


def estimate_training_memory(model_config, *, task: str, method: str, batch_size: int,
                             max_length: int, weight_bytes: int = 4,
                             gradient_checkpointing: bool = False, lora_r: int = 16,
                             lora_targets_fraction: float | None = None,
                             lora_targets: str | Sequence[str] = "all-linear",
                             lora_dropout: float = 0.0, freeze_last_n: int = 4,
                             num_labels: int = 2, flash_attention: bool = False) -> MemoryEstimate:
    """Peak memory of one training step with AdamW, in GB.

    lora_targets: "all-linear" or module names as in PEFT's target_modules;
    lora_targets_fraction, when given, overrides them as a share of the all-linear adapter.
    lora_dropout above 0 makes PEFT store a dropped-out copy of each targeted layer's input.
    flash_attention: True when attention runs in a fused kernel (flash attention, or SDPA's
    flash/memory-efficient backends) that never stores the seq x seq scores.
    """
    _check_choice("task", task, TASKS)
    _check_choice("method", method, METHODS)
    if weight_bytes not in (2, 4):
        raise ValueError(f"weight_bytes must be 4 (fp32) or 2 (bf16/fp16), not {weight_bytes}")
    inputs = dict(locals())  # every argument, so with_changes() can re-price a variant
    shape = count_parameters(model_config, task=task, num_labels=num_labels)
    wb = weight_bytes
    classifier = shape.head_params if task == "classification" else 0

    adapter_inputs = 0.0  # summed in-width of the targeted layers, for lora_dropout's copies
    if method in ADAPTER_METHODS:
        targets = lora_targets if lora_targets_fraction is None else "all-linear"
        share = 1.0 if lora_targets_fraction is None else lora_targets_fraction
        adapter = round(share * shape.lora_params(lora_r, targets, dora=method == "dora"))
        adapter_inputs = share * sum(i for n, i, _ in shape.block_linears if _targeted(n, targets))
        trainable = adapter + classifier  # PEFT trains a classification head in full
        trainable_bytes = ADAPTER_BYTES
    elif method == "freeze":
        trainable = shape.last_blocks(freeze_last_n) + classifier
        trainable_bytes = wb
    else:
        trainable = shape.total
        trainable_bytes = wb

    if method == "qlora":
        # Only the block linears are quantised; PEFT's prepare_model_for_kbit_training upcasts
        # the rest (embeddings, norms, the head) to fp32.
        base = (shape.block_linear_weights * QLORA_BYTES_PER_PARAM
                + (shape.total - shape.block_linear_weights) * 4)
    else:
        base = shape.total * wb
    weights = base + (trainable * ADAPTER_BYTES if method in ADAPTER_METHODS else 0)
    if task in ("dpo", "rft") and method not in ADAPTER_METHODS:
        # DPO's (and GRPO's, with a KL penalty) reference model is a second frozen copy; with
        # adapters it is the same base with a frozen adapter copy, so it costs nothing more.
        weights += shape.total * wb

    gradients = trainable * trainable_bytes
    # AdamW keeps two fp32 moments per trainable parameter; a 2-byte parameter also gets an
    # fp32 master copy (mixed-precision accounting of ZeRO, Rajbhandari et al. 2020: 16 bytes
    # per parameter in all). Plain torch AdamW on a bf16 model keeps less, so this is an upper bound.
    optimizer = trainable * (8 + (4 if trainable_bytes == 2 else 0))

    activations = _activation_bytes(shape, task=task, method=method, batch_size=batch_size,
                                    seq=max_length, act_bytes=wb, checkpointing=gradient_checkpointing,
                                    freeze_last_n=freeze_last_n, flash_attention=flash_attention)
    if method in ADAPTER_METHODS and lora_dropout > 0:
        # PEFT applies dropout to the adapter's input, and autograd keeps that copy.
        activations += adapter_inputs * max_length * batch_size * (2 if task == "dpo" else 1) * wb
    total = weights + gradients + optimizer + activations
    return MemoryEstimate(
        params=shape.total, trainable_params=trainable, weights_gb=weights / GB,
        gradients_gb=gradients / GB, optimizer_gb=optimizer / GB,
        activations_gb=activations / GB, total_gb=total / GB, inputs=inputs)


def _activation_bytes(shape: ParameterCount, *, task, method, batch_size, seq, act_bytes,
                      checkpointing, freeze_last_n, flash_attention) -> float:
    # DPO runs chosen and rejected through the policy together: twice the sequences. The
    # reference forward runs under no_grad, so its transient peak stays below the policy's.
    b = batch_size * (2 if task == "dpo" else 1)
    s, h = seq, shape.hidden_size
    per_layer = _layer_activation_bytes(shape, s, b, act_bytes, flash_attention)
    # Autograd records nothing below the lowest trainable block: with `freeze`, only the last
    # blocks keep activations; adapters sit in every block, so every block does.
    stored_layers = min(freeze_last_n, shape.num_blocks) if method == "freeze" else shape.num_blocks
    if checkpointing:
        # Keep each layer's input (2sbh at 16-bit) and recompute one layer at a time in backward.
        layers = stored_layers * s * b * h * act_bytes + per_layer
    else:
        layers = stored_layers * per_layer
    # The LM head's fp32 logits, and as much again for the loss's softmax and gradient.
    logits = b * s * shape.vocab_size * 4 * 2 if task != "classification" else 0
    # PEFT's DoRA computes the norm of W + BA in each forward: one block's merged weights
    # exist at a time.
    merged = max(shape.block_params) * act_bytes if method == "dora" else 0
    return layers + logits + merged


def _layer_activation_bytes(shape: ParameterCount, s: int, b: int, act_bytes: int,
                            flash_attention: bool) -> float:
    """Activations one transformer layer stores for backward (Korthikanti et al. 2022, 4.1:
    s*b*h*(34 + 5*a*s/h) bytes at 16-bit with 1-byte dropout masks), with the MLP term taken
    from the real MLP width and K/V shrunk for grouped-query attention. For a standard GPT
    block (4h MLP, as many K/V heads as heads) this reduces to exactly their 34 + 5as/h."""
    h, a = shape.hidden_size, shape.num_heads
    kv_share = shape.num_kv_heads / a
    # QKV input 2, Q 2, K and V 2 each, output-projection input 2, dropout mask 1: 11.
    attention = 2 + 2 + 4 * kv_share + 2 + 1
    # MLP input 2, up-projection outputs and activation outputs 2 bytes each, dropout mask 1:
    # 19 for a 4h MLP; a gated MLP stores gate, up, act(gate) and their product.
    mlp = 2 + 4 * shape.mlp_width / h + 1
    norms = 4  # two layer norms' inputs
    # Softmax output 2as^2b, its dropout mask as^2b, dropout output 2as^2b; fused kernels
    # recompute these instead of storing them.
    scores = 0 if flash_attention else 5 * a * s / h
    return s * b * h * (attention + mlp + norms + scores) * act_bytes / 2


def fits(estimate: MemoryEstimate, available_bytes: float) -> bool:
    return estimate.total_gb * GB <= HEADROOM * available_bytes


def available_memory(device=None) -> tuple[int, str]:
    """Free bytes on the training device and a short name for it ("cuda:0 (NVIDIA H100)", "cpu")."""
    import torch
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TunelabError(f"device '{device}' was asked for but CUDA is not available",
                               fix="use device cpu, or install a CUDA build of torch")
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        free, _total = torch.cuda.mem_get_info(index)
        return int(free), f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    # CPU and Apple MPS (unified memory) both draw on host memory.
    name = "cpu" if dev.type == "cpu" else f"{dev.type} (host memory)"
    return _host_available_bytes(), name


def _host_available_bytes() -> int:
    try:
        import psutil
        host = int(psutil.virtual_memory().available)
    except ImportError:
        host = _meminfo_available_bytes()
    # In a container the cgroup limit, not the host, is what the kernel enforces.
    limit = _cgroup_available_bytes()
    return min(host, limit) if limit is not None else host


def _meminfo_available_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _cgroup_available_bytes() -> int | None:
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open("/sys/fs/cgroup/memory.current") as f:
            return max(0, int(limit) - int(f.read().strip()))
    except (OSError, ValueError):
        return None


def preflight(estimate: MemoryEstimate, available_bytes: float, device_desc: str, *,
              method: str | None = None, batch_size: int | None = None,
              gradient_checkpointing: bool | None = None, on_gpu: bool | None = None) -> None:
    """Raise TunelabError, with a computed suggestion, when the run would not fit.

    method, batch_size and gradient_checkpointing default to those the estimate was made with;
    on_gpu (may QLoRA be suggested) defaults to whether device_desc starts with "cuda".
    """
    method = method or estimate.inputs["method"]
    batch_size = batch_size or estimate.inputs["batch_size"]
    if gradient_checkpointing is None:
        gradient_checkpointing = estimate.inputs["gradient_checkpointing"]
    settings = dict(method=method, batch_size=batch_size, gradient_checkpointing=gradient_checkpointing)
    current = estimate if all(estimate.inputs[k] == v for k, v in settings.items()) else \
        estimate.with_changes(**settings)
    if fits(current, available_bytes):
        return
    parts = ", ".join(f"{k} {v:.1f}" for k, v in current.breakdown().items() if k != "total")
    what = (f"method {method} at batch_size {batch_size}"
            f"{' with gradient checkpointing' if gradient_checkpointing else ''} needs about "
            f"{current.total_gb:.1f} GB ({parts}) but {device_desc} has "
            f"{available_bytes / GB:.1f} GB available")
    on_gpu = device_desc.startswith("cuda") if on_gpu is None else on_gpu
    suggestions = [s for s in (
        _first_fit(current, available_bytes, [method], batch_size, gradient_checkpointing),
        _first_fit(current, available_bytes, _lighter_methods(method, on_gpu), batch_size,
                   gradient_checkpointing, name_method=True),
    ) if s]
    if suggestions:
        fix = "use " + " or ".join(suggestions)
    else:
        lightest = "qlora" if on_gpu else "lora"
        floor = current.with_changes(method=lightest, batch_size=1, gradient_checkpointing=True)
        fix = (f"even method {lightest} at batch_size 1 with gradient checkpointing needs about "
               f"{floor.total_gb:.1f} GB: use a smaller model, a shorter max_length or a device "
               f"with more memory")
    raise TunelabError(what, fix=fix)


def _lighter_methods(method: str, on_gpu: bool) -> list[str]:
    # Ordered by how much of the result they keep; QLoRA needs bitsandbytes on CUDA.
    lighter = {"full": ["lora"], "freeze": ["lora"], "dora": ["lora"], "lora": [], "qlora": []}[method]
    return lighter + (["qlora"] if on_gpu and method != "qlora" else [])


def _first_fit(current: MemoryEstimate, available_bytes: float, methods: list[str],
               batch_size: int, checkpointing: bool, *, name_method: bool = False) -> str | None:
    """The least disruptive change that fits: checkpointing first (same results, about a third
    more compute), then halving the batch (gradient accumulation keeps the effective batch)."""
    settings = [(batch_size, checkpointing)] if name_method else []
    if not checkpointing:
        settings.append((batch_size, True))
    smaller = batch_size // 2
    while smaller >= 1:
        settings += [(smaller, checkpointing)] + ([] if checkpointing else [(smaller, True)])
        smaller //= 2
    for method in methods:
        for b, gc in settings:
            alt = current.with_changes(method=method, batch_size=b, gradient_checkpointing=gc)
            if fits(alt, available_bytes):
                change = _describe_change(method if name_method else None,
                                          b if b != batch_size else None, gc and not checkpointing)
                return f"{change} (about {alt.total_gb:.1f} GB)"
    return None


def _describe_change(method: str | None, batch_size: int | None, checkpointing: bool) -> str:
    """e.g. "method lora at batch_size 2 with gradient checkpointing"."""
    text = f"method {method}" if method else ""
    if batch_size is not None:
        text = f"{text} at batch_size {batch_size}" if text else f"batch_size {batch_size}"
    if checkpointing:
        text = f"{text} with gradient checkpointing" if text else "gradient checkpointing"
    return text


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
