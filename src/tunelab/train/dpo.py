"""Preference tuning with TRL's DPOTrainer, from a base model or an earlier SFT run. With LoRA the
reference model is the same weights with the adapter disabled, so no second copy is loaded."""
from __future__ import annotations

from trl import DPOConfig, DPOTrainer


def build_dpo_trainer(model, tokenizer, train_dataset, eval_dataset, *, common: dict, max_length: int,
                      beta: float, loss_type: str, callbacks: list):
    args = DPOConfig(**common, max_length=max_length, beta=beta, loss_type=[loss_type])
    return DPOTrainer(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                      processing_class=tokenizer, callbacks=callbacks)
