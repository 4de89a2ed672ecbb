"""The pre-flight estimator: exact counts from meta-device configs, and estimates that move the
way memory does."""
import pytest
import torch
from transformers import (BertConfig, BertForSequenceClassification, LlamaConfig,
                          LlamaForCausalLM)

from tunelab.errors import TunelabError
from tunelab.models.memory import (GB, MemoryEstimate, available_memory, count_parameters,
                                   estimate_training_memory, fits, preflight)


def tiny_llama(**overrides) -> LlamaConfig:
    values = dict(hidden_size=64, intermediate_size=172, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, vocab_size=512,
                  tie_word_embeddings=False)
    return LlamaConfig(**{**values, **overrides})


def tiny_bert() -> BertConfig:
    return BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=256, vocab_size=512, max_position_embeddings=128)


def huge_llama() -> LlamaConfig:
    # ~300B parameters as a config only: the estimator builds it on the meta device.
    return LlamaConfig(hidden_size=16384, intermediate_size=53248, num_hidden_layers=80,
                       num_attention_heads=128, num_key_value_heads=8, vocab_size=32000)


def real_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def estimate(config=None, **overrides) -> MemoryEstimate:
    values = dict(task="sft", method="full", batch_size=4, max_length=128)
    return estimate_training_memory(config or tiny_llama(), **{**values, **overrides})


@pytest.mark.parametrize("tied", [False, True])
def test_count_matches_a_real_causal_lm(tied):
    config = tiny_llama(tie_word_embeddings=tied)
    counted = count_parameters(config)
    model = LlamaForCausalLM(config)
    assert counted.total == real_count(model)
    assert counted.num_blocks == 2 and counted.hidden_size == 64 and counted.vocab_size == 512
    assert counted.last_blocks(1) == real_count(model.model.layers[-1])
    assert counted.last_blocks(4) == real_count(model.model.layers)  # more than there are: all


def test_count_matches_a_real_sequence_classifier():
    config = tiny_bert()
    counted = count_parameters(config, task="classification", num_labels=3)
    model = BertForSequenceClassification(BertConfig(**{**config.to_dict(), "num_labels": 3}))
    assert counted.total == real_count(model)
    assert counted.head_params == real_count(model.classifier)
    assert counted.last_blocks(2) == real_count(model.bert.encoder.layer)


def test_lora_count_matches_peft():
    from peft import LoraConfig, get_peft_model
    config = tiny_llama()
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert count_parameters(config).lora_params(8, ["q_proj", "v_proj"]) == trainable
    est = estimate(method="lora", lora_r=8, lora_targets=["q_proj", "v_proj"])
    assert est.trainable_params == trainable


def test_huge_config_is_counted_without_allocating():
    counted = count_parameters(huge_llama())
    assert 2.5e11 < counted.total < 3.5e11
    assert counted.num_blocks == 80


def test_estimate_grows_with_batch_size_and_length():
    by_batch = [estimate(batch_size=b).total_gb for b in (1, 2, 4, 8)]
    by_length = [estimate(max_length=n).total_gb for n in (64, 128, 256, 512)]
    assert by_batch == sorted(by_batch) and len(set(by_batch)) == 4
    assert by_length == sorted(by_length) and len(set(by_length)) == 4


def test_breakdown_sums_to_total():
    est = estimate(method="qlora", task="dpo", weight_bytes=2)
    parts = est.breakdown()
    assert parts.pop("total") == pytest.approx(sum(parts.values()))


def test_adapters_train_far_fewer_parameters_than_full():
    config = LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
                         num_attention_heads=16, vocab_size=2000)
    full = estimate(config, method="full", weight_bytes=2)
    lora = estimate(config, method="lora", weight_bytes=2)
    qlora = estimate(config, method="qlora", weight_bytes=2)
    assert lora.trainable_params < full.trainable_params / 20
    assert lora.gradients_gb + lora.optimizer_gb < (full.gradients_gb + full.optimizer_gb) / 20
    assert lora.total_gb < full.total_gb / 2
    assert qlora.weights_gb < lora.weights_gb / 2  # blocks dominate: 4 bits instead of 16
    assert qlora.trainable_params == lora.trainable_params


def test_freeze_trains_only_the_last_blocks():
    config = tiny_llama(num_hidden_layers=6)
    frozen = estimate(config, method="freeze", freeze_last_n=2)
    assert frozen.trainable_params == count_parameters(config).last_blocks(2)
    assert frozen.activations_gb < estimate(config).activations_gb


def test_gradient_checkpointing_reduces_activations():
    config = tiny_llama(num_hidden_layers=8)
    plain = estimate(config, batch_size=8, max_length=512)
    checkpointed = estimate(config, batch_size=8, max_length=512, gradient_checkpointing=True)
    assert checkpointed.activations_gb < plain.activations_gb
    assert checkpointed.weights_gb == plain.weights_gb


def test_dpo_costs_a_reference_copy_unless_adapters_disable_themselves():
    sft, dpo = estimate(task="sft"), estimate(task="dpo")
    assert dpo.weights_gb == pytest.approx(2 * sft.weights_gb)
    assert dpo.activations_gb == pytest.approx(2 * sft.activations_gb)  # chosen + rejected
    assert estimate(task="dpo", method="lora").weights_gb == estimate(method="lora").weights_gb


def test_mixed_precision_keeps_sixteen_bytes_per_trained_parameter():
    est = estimate(weight_bytes=2)
    per_param = (est.weights_gb + est.gradients_gb + est.optimizer_gb) * GB / est.params
    assert per_param == pytest.approx(16)


def test_preflight_passes_a_tiny_model():
    preflight(estimate(), 8 * GB, "cpu", method="full", batch_size=4, gradient_checkpointing=False)


def test_preflight_refuses_a_huge_model_and_says_nothing_fits():
    est = estimate(huge_llama(), batch_size=8, max_length=2048, weight_bytes=2)
    with pytest.raises(TunelabError) as caught:
        preflight(est, 20 * GB, "cpu", method="full", batch_size=8, gradient_checkpointing=False)
    message = str(caught.value)
    assert f"needs about {est.total_gb:.1f} GB" in message and "cpu has 20.0 GB available" in message
    assert "even method lora at batch_size 1 with gradient checkpointing" in message


def test_preflight_suggestion_is_one_the_estimator_says_fits():
    config = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
                         num_attention_heads=16, vocab_size=32000)
    est = estimate(config, batch_size=16, max_length=1024, weight_bytes=2)
    available = 20 * GB
    with pytest.raises(TunelabError) as caught:
        preflight(est, available, "cuda:0 (test GPU)")
    message = str(caught.value)
    assert message.count(";") == 1 and message.endswith(".")  # one sentence: what; fix.
    assert "method lora" in message
    suggested = est.with_changes(method="lora", **_settings_in(message))
    assert fits(suggested, available)
    assert f"{suggested.total_gb:.1f} GB" in message


def _settings_in(message: str) -> dict:
    """Read back the batch size and checkpointing the lora suggestion names."""
    lora_part = message.split("method lora", 1)[1].split(" or ")[0]
    settings = {"gradient_checkpointing": "gradient checkpointing" in lora_part}
    if "batch_size" in lora_part:
        settings["batch_size"] = int(lora_part.split("batch_size ")[1].split()[0])
    return settings


def test_preflight_prefers_checkpointing_when_that_alone_fits():
    config = tiny_llama(num_hidden_layers=8)
    est = estimate(config, batch_size=8, max_length=1024)
    checkpointed = est.with_changes(gradient_checkpointing=True)
    available = (est.total_gb + checkpointed.total_gb) / 2 / 0.9 * GB
    with pytest.raises(TunelabError, match=r"use gradient checkpointing \(about"):
        preflight(est, available, "cpu")


def test_available_memory_reports_the_host_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("the CUDA path is exercised on GPU machines")
    free, name = available_memory()
    assert name == "cpu" and free > 0


def test_wrong_head_for_the_task_is_a_user_error():
    from transformers import DebertaV2Config
    encoder = DebertaV2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=128, vocab_size=512)
    with pytest.raises(TunelabError, match="no causal language-model head"):
        count_parameters(encoder, task="sft")


def test_qlora_stores_block_linears_in_four_bits_and_the_rest_in_fp32():
    from tunelab.models.memory import QLORA_BYTES_PER_PARAM
    config = tiny_llama()
    shape = count_parameters(config)
    est = estimate(config, method="qlora", weight_bytes=2)
    expected = (shape.block_linear_weights * QLORA_BYTES_PER_PARAM
                + (shape.total - shape.block_linear_weights) * 4 + est.trainable_params * 4)
    assert est.weights_gb * GB == pytest.approx(expected)


def test_lora_dropout_keeps_a_copy_of_each_adapter_input():
    assert estimate(method="lora", lora_dropout=0.1).activations_gb > estimate(method="lora").activations_gb
