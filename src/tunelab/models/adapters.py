"""Which weights train: full fine-tuning, LoRA / DoRA / QLoRA adapters (PEFT), or freezing all
but the last N transformer blocks."""
from __future__ import annotations

from torch import nn

from tunelab.config import ADAPTER_METHODS
from tunelab.errors import TunelabError

HEAD_NAMES = ("classifier", "score", "lm_head", "pooler")


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The model's stack of transformer blocks: its longest ModuleList."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise TunelabError(f"cannot find the transformer blocks of {type(model).__name__}",
                           fix="use method full or lora for this model")
    return max(lists, key=len)


def linear_module_names(model: nn.Module) -> set[str]:
    return {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)}


def head_module_names(model: nn.Module) -> list[str]:
    return sorted({name.split(".")[0] for name, _ in model.named_children() if name in HEAD_NAMES})


def lora_targets(model: nn.Module, requested, task: str) -> list[str]:
    """Explicit target names: all linear layers except the heads, or the requested ones checked
    against the model (a misspelt target would otherwise silently train nothing)."""
    available = linear_module_names(model)
    heads = set(HEAD_NAMES)
    if requested == "all-linear":
        return sorted(n for n in available if n not in heads and not n.startswith("out_proj_head"))
    missing = [t for t in requested if t not in available]
    if missing:
        raise TunelabError(f"LoRA target module{'s' if len(missing) > 1 else ''} {', '.join(missing)} not in "
                           f"{type(model).__name__}", fix=f"choose from {', '.join(sorted(available - heads))} "
                           "(train.lora.target_modules), or use all-linear")
    return list(requested)


def check_method(model: nn.Module, method: str, *, task: str, lora=None, freeze_last_n: int = 4) -> None:
    """The checks apply_method makes, run on the model's structure alone (a meta-device skeleton
    will do), so a misspelt LoRA target or too many blocks to train is found before loading weights."""
    if method == "freeze":
        _last_blocks(model, freeze_last_n)
    elif method in ADAPTER_METHODS:
        lora_targets(model, lora.target_modules, task)


def _last_blocks(model: nn.Module, n: int) -> list[nn.Module]:
    blocks = transformer_blocks(model)
    if n > len(blocks):
        raise TunelabError(f"train.freeze_last_n is {n} but the model has {len(blocks)} blocks",
                           fix=f"set it to at most {len(blocks)}, or use method full")
    return list(blocks[-n:])


def apply_method(model: nn.Module, method: str, *, task: str, lora=None, freeze_last_n: int = 4) -> nn.Module:
    if method == "full":
        for parameter in model.parameters():
            parameter.requires_grad = True
        return model
    if method == "freeze":
        return _freeze_all_but_last(model, freeze_last_n, task)
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    if method == "qlora":
        model = prepare_model_for_kbit_training(model)
    config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=lora_targets(model, lora.target_modules, task),
        use_dora=method == "dora",
        task_type="SEQ_CLS" if task == "classification" else "CAUSAL_LM",
        # the classification head is new: it trains in full beside the adapters
        modules_to_save=head_module_names(model) if task == "classification" else None,
    )
    return get_peft_model(model, config)


def _freeze_all_but_last(model: nn.Module, n: int, task: str) -> nn.Module:
    trainable = _last_blocks(model, n)
    for parameter in model.parameters():
        parameter.requires_grad = False
    # the final norm sits after the blocks and the head reads it: both train with the last blocks
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("norm", "final_layernorm", "ln_f") or (task == "classification" and leaf in HEAD_NAMES):
            trainable.append(module)
    for module in trainable:
        for parameter in module.parameters():
            parameter.requires_grad = True
    return model


def count_trainable(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
