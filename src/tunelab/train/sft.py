"""Supervised fine-tuning of causal LMs with TRL's SFTTrainer: assistant-only loss (each reply
and its end-of-turn token) and optional packing.

With `{% generation %}` markers in the chat template (the tokenizer's own, or TRL's marked copy)
TRL finds the assistant tokens itself; without them the conversations reach TRL tokenized, with
the assistant masks found by rendering each turn (assistant_spans), and TRL builds the labels,
truncates and packs those rows just the same. An assistant message with `"weight": 0` (OpenAI's
chat format) is context only: its tokens are left out of the mask."""
from __future__ import annotations

from trl import SFTConfig, SFTTrainer

from tunelab.train.assistant_spans import has_generation_markers, has_zero_weights, tokenized_conversations


def build_sft_trainer(model, tokenizer, train_dataset, eval_dataset, *, common: dict, max_length: int,
                      assistant_only_loss: bool, packing: bool, callbacks: list):
    # conversations with messages weighted 0 (OpenAI's chat format) take the rendered spans too,
    # which leave those replies out of the loss
    if assistant_only_loss and (not has_generation_markers(tokenizer.chat_template)
                                or has_zero_weights(train_dataset)
                                or (eval_dataset is not None and has_zero_weights(eval_dataset))):
        train_dataset = tokenized_conversations(tokenizer, train_dataset)
        eval_dataset = tokenized_conversations(tokenizer, eval_dataset) if eval_dataset is not None else None
        assistant_only_loss = False  # TRL's flag means "find the markers"; the rows carry their masks
    args = SFTConfig(**common, max_length=max_length, assistant_only_loss=assistant_only_loss, packing=packing,
                     eos_token=tokenizer.eos_token, pad_token=tokenizer.pad_token)
    return SFTTrainer(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                      processing_class=tokenizer, callbacks=callbacks)
