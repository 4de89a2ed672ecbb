"""Preference tuning with TRL's DPOTrainer, from a base model or an earlier run (SFT or a previous
stage). The reference model is always the policy as it was when this trainer was built:

- full / freeze: a frozen copy of the model in memory. TRL would otherwise reload the reference
  from `config._name_or_path`, which names the *base* model when the policy was merged from an
  adapter run or trained by an earlier stage, so DPO would pull towards the wrong model.
- LoRA / DoRA / QLoRA: TRL copies the trainable adapter into a frozen adapter named "ref" (one
  adapter's worth of memory, no second model). The copy is TRL's, not the run's: it is dropped
  after training so it is not saved beside the run's adapter.
"""
from __future__ import annotations

import copy

from trl import DPOConfig, DPOTrainer

REFERENCE_ADAPTER = "ref"  # the name TRL 1.x gives its frozen copy of a PEFT model's adapter


def build_dpo_trainer(model, tokenizer, train_dataset, eval_dataset, *, common: dict, max_length: int,
                      beta: float, loss_type: str, callbacks: list):
    args = DPOConfig(**common, max_length=max_length, beta=beta, loss_type=[loss_type])  # a list in TRL 1.x
    ref_model = None
    if is_peft(model):
        drop_reference_adapter(model)  # an earlier stage's copy: TRL makes a fresh one of the current adapter
    else:
        ref_model = frozen_copy(model)
    return DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=train_dataset,
                      eval_dataset=eval_dataset, processing_class=tokenizer, callbacks=callbacks)


def is_peft(model) -> bool:
    from peft import PeftModel
    return isinstance(model, PeftModel)


def frozen_copy(model):
    reference = copy.deepcopy(model)
    reference.eval()
    reference.requires_grad_(False)
    return reference


def drop_reference_adapter(model) -> None:
    """Remove TRL's frozen reference adapter (after a DPO stage's training and evaluation)."""
    if is_peft(model) and REFERENCE_ADAPTER in model.peft_config:
        model.delete_adapter(REFERENCE_ADAPTER)


def needs_chat_template(records: list[dict]) -> bool:
    """Conversational prompts are rendered with the chat template; string prompts are used as
    they are (TRL appends the EOS token to each completion), so a base model without a template
    can be preference-tuned on them."""
    return any(isinstance(r.get("prompt"), list) for r in records)
