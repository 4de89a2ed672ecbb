"""Tiny local causal LMs and a task they can learn on 2 CPU cores in about a minute.

Used by the tests that must show real learning (not just "the loss went down"): a randomly
initialised Llama-style model, saved as a normal Hugging Face directory with its own
character-level tokenizer and chat template, fully fine-tuned with plain TRL on a few thousand
examples of a deterministic text transformation, must then answer held-out examples exactly.

Import from any test as ``from tiny_models import ...`` (pytest puts tests/, the top-level
conftest's directory, on sys.path). Everything here is offline and seeded: the same arguments give the same files.
"""
from __future__ import annotations

import random
import string
from pathlib import Path

SPECIALS = ["<pad>", "<unk>", "<s>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
END = "<|end|>"
# One token per character. Covers ordinary ASCII text (so TRL's template probes, which render
# words like "dummy", and any other short prompt stay in vocabulary); anything else is <unk>.
ALPHABET = list(string.ascii_lowercase + string.ascii_uppercase + string.digits
                + " \n.,:;!?'\"-_()/+*=<>|#@&%")
# The template of the tests' BPE tokenizer (written by tests/assets/make_tiny_tokenizer.py): its
# {% generation %} block covers each assistant reply *and* its end-of-turn token, so
# assistant_only_loss trains the model to stop.
CHAT_TEMPLATE = (Path(__file__).parent / "assets" / "tiny-chat-tokenizer" / "chat_template.jinja").read_text()


# A recipe checked with plain TRL (SFTTrainer + SFTConfig, assistant_only_loss=True, full fine-tune,
# use_cpu=True) on 2 cores: 3,000 training words, 300 held-out words, greedy exact match 1.000 on
# seeds 0-5 in ~30 s of single-thread CPU (564 steps). hidden=64 needs 8 epochs and is less robust
# (at lr 3e-3 one seed in six stalls at 0.71). With torch's default 2 intra-op threads the same
# run takes ~4x longer whenever anything else is using the cores, so callers should run it under
# torch.set_num_threads(1).
RECIPE_MODEL = {"hidden": 128, "layers": 2, "heads": 4}  # intermediate 512, ~0.54M parameters
RECIPE_DATA = {"n_train": 3000, "n_test": 300}
RECIPE_SFT = {  # SFTConfig keyword arguments, beside output_dir/seed/use_cpu/report_to
    "num_train_epochs": 6, "learning_rate": 1e-3, "per_device_train_batch_size": 32,
    "max_length": 32, "lr_scheduler_type": "cosine", "warmup_steps": 0.05,
    "assistant_only_loss": True,
    # TRL's SFTConfig defaults are bf16=True and gradient_checkpointing=True; on CPU that means
    # bf16 autocast plus recomputation, slower and pointless for a model this small.
    "bf16": False, "activation_checkpointing": False,
}


def build_task_tokenizer(out_dir: str | Path):
    """A character-level tokenizer (specials + ~90 ASCII characters) with the chat template
    above, saved to ``out_dir``; returns the loaded ``PreTrainedTokenizerFast``.

    Character-level keeps sequences short and every character transformation a one-to-one
    token mapping, which is what lets a 2-layer model learn the task in a minute.
    """
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + ALPHABET)}
    # BPE with no merges = one token per character, no pre-tokenizer needed; Fuse() joins the
    # characters back without the spaces a WordLevel decode would insert.
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token=END, pad_token="<pad>",
        unk_token="<unk>", additional_special_tokens=SPECIALS[4:])
    tokenizer.chat_template = CHAT_TEMPLATE
    out_dir = Path(out_dir)
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def build_tiny_llama(out_dir: str | Path, tokenizer, hidden: int = 64, layers: int = 2,
                     heads: int = 4, intermediate: int | None = None, max_positions: int = 128,
                     seed: int = 0, tied: bool = True) -> Path:
    """Save a randomly initialised (seeded) LlamaForCausalLM sized to ``tokenizer`` to
    ``out_dir`` as safetensors, together with the tokenizer; returns ``out_dir``.

    The generation config stops on the tokenizer's end-of-turn token, so plain
    ``model.generate`` stops where the chat template ends an assistant reply. The defaults
    make a ~0.14M-parameter model; the learning test wants ``**RECIPE_MODEL`` (hidden 128).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate or 4 * hidden,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=max_positions, tie_word_embeddings=tied,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def transform(text: str) -> str:
    """The task: reverse the characters of a short lowercase word ("lamp" -> "pmal").

    Why this task: the answer is fully determined by the prompt (exact match is a fair score),
    held-out words are unseen letter strings (so a high score means the rule was learnt, not
    memorised), and with one token per character it is a textbook two-layer attention circuit
    (a previous-token head, then a head that finds the character just emitted in the prompt
    and copies its left neighbour), which a 2-layer model finds in a few hundred steps.
    Words use distinct letters so "the character just emitted" has one place in the prompt.
    """
    return text[::-1]


def make_task_examples(n: int, seed: int = 0, min_len: int = 3, max_len: int = 6,
                       exclude: set[str] | None = None) -> list[dict]:
    """``n`` distinct chat records ``{"messages": [user, assistant]}`` for :func:`transform`:
    the user sends a random lowercase word of ``min_len``..``max_len`` distinct letters, the
    assistant answers it reversed. Words in ``exclude`` are never produced (pass the training
    words to get a held-out set that cannot overlap)."""
    rng = random.Random(seed)
    seen = set(exclude or ())
    records = []
    while len(records) < n:
        word = "".join(rng.sample(string.ascii_lowercase, rng.randint(min_len, max_len)))
        if word in seen:
            continue
        seen.add(word)
        records.append({"messages": [{"role": "user", "content": word},
                                     {"role": "assistant", "content": transform(word)}]})
    return records


def greedy_exact_match(model_dir: str | Path, examples: list[dict], batch_size: int = 64,
                       max_new_tokens: int = 16, return_predictions: bool = False):
    """Fraction of ``examples`` whose greedy answer equals the final assistant message exactly.

    Prompts are every message before the last, rendered with ``add_generation_prompt=True``;
    generation stops at the end-of-turn token (the model's eos). Left padding keeps batched
    greedy output equal to one-at-a-time output.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()
    prompts = [tokenizer.apply_chat_template(ex["messages"][:-1], tokenize=False,
                                             add_generation_prompt=True) for ex in examples]
    references = [ex["messages"][-1]["content"] for ex in examples]
    predictions = []
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(prompts[start:start + batch_size], return_tensors="pt",
                              padding=True, add_special_tokens=False)
            out = model.generate(**batch, do_sample=False, max_new_tokens=max_new_tokens,
                                 eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)
            for row in out[:, batch["input_ids"].shape[1]:].tolist():
                # Strict: the answer must end with the end token; tokens after it are padding.
                if tokenizer.eos_token_id in row:
                    predictions.append(tokenizer.decode(row[:row.index(tokenizer.eos_token_id)]))
                else:
                    predictions.append(None)  # never stopped: wrong whatever it said
    score = sum(p == r for p, r in zip(predictions, references)) / len(references)
    return (score, predictions) if return_predictions else score
