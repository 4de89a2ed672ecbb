"""Pre-flight: `tunelab train` refuses a run that cannot fit in memory before loading any
weights, and says what would fit."""
import json
from pathlib import Path

from cli_helpers import tunelab


def huge_model_without_weights(directory: Path, tokenizer_dir: Path) -> Path:
    """A 70B-class Llama config beside the tiny tokenizer, and no weights at all: a check that
    came after loading would fail with 'cannot load model' instead of the memory sentence."""
    from transformers import AutoTokenizer, LlamaConfig
    LlamaConfig(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                num_key_value_heads=8, vocab_size=32000).save_pretrained(directory)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(directory)
    return directory


def test_impossible_config_is_refused_before_loading_weights_with_a_suggestion(tmp_path, tiny_tokenizer_path):
    model = huge_model_without_weights(tmp_path / "huge", tiny_tokenizer_path)
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}]}) + "\n")
    proc = tunelab("train", "--model", model, "--data", data, "--method", "full", "--output", tmp_path / "run",
                   "train.memory_limit_gb=20", "train.tracking.backend=none", check=False, timeout=300)
    assert proc.returncode == 2, proc.stderr
    message = " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr and "cannot load model" not in message
    assert "method full" in message and "needs about" in message and "20.0 GB available" in message
    assert "use " in message or "even method" in message  # a computed suggestion, or why nothing fits
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_a_config_that_fits_passes_the_same_check(tmp_path, tiny_tokenizer_path):
    from transformers import LlamaConfig

    from tunelab.models.memory import GB, available_memory, estimate_training_memory, preflight
    tiny = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       vocab_size=512)
    estimate = estimate_training_memory(tiny, task="sft", method="full", batch_size=8, max_length=128)
    assert estimate.total_gb < 1
    preflight(estimate, 20 * GB, "cpu", method="full", batch_size=8, gradient_checkpointing=False)
    assert available_memory()[0] > 0
