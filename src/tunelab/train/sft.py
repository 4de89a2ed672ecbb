"""Supervised fine-tuning of causal LMs with TRL's SFTTrainer: assistant-only loss (the chat
template's {% generation %} span, which covers the end-of-turn token) and optional packing."""
from __future__ import annotations

from trl import SFTConfig, SFTTrainer


def build_sft_trainer(model, tokenizer, train_dataset, eval_dataset, *, common: dict, max_length: int,
                      assistant_only_loss: bool, packing: bool, callbacks: list):
    args = SFTConfig(**common, max_length=max_length, assistant_only_loss=assistant_only_loss, packing=packing,
                     eos_token=tokenizer.eos_token, pad_token=tokenizer.pad_token)
    return SFTTrainer(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                      processing_class=tokenizer, callbacks=callbacks)
