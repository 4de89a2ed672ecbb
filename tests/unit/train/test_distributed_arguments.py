"""train.distributed -> the settings transformers and accelerate act on: DeepSpeed ZeRO and FSDP
configs that TrainingArguments accepts, gloo for CPU processes, and clear refusals, before any
weights load, of what this machine or this launch cannot do.

TrainingArguments is built here only where its package is installed: FSDP always (it is part of
torch and accelerate), DeepSpeed only with `deepspeed` present (skipped otherwise)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from train_helpers import train_config

from tunelab.errors import TunelabError
from tunelab.train import arguments
from tunelab.train.arguments import check_supported, distributed_kwargs, training_kwargs

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "accelerate"
LAUNCHER_VARIABLES = ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP", "WORLD_SIZE", "FSDP_CPU_RAM_EFFICIENT_LOADING")


@pytest.fixture(autouse=True)
def plain_launch(monkeypatch):
    """No launcher variables from the environment, nor left behind (TrainingArguments and the
    accelerate plugins set some of them): setenv records the original state, undone last."""
    for name in LAUNCHER_VARIABLES:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def packages(monkeypatch):
    """packages(missing=..., installed=...): what the checks see as installed, whatever this machine has."""
    find_spec = importlib.util.find_spec

    def pretend(missing=(), installed=()):
        def spec(name, *args):
            return None if name in missing else object() if name in installed else find_spec(name, *args)
        monkeypatch.setattr(importlib.util, "find_spec", spec)
    return pretend


def kwargs_for(**train):
    return training_kwargs(train_config(**train).train, task="sft", checkpoints_dir=Path("unused"), has_eval=False,
                           run_name="test")


def test_deepspeed_zero2_takes_its_numbers_from_the_training_arguments():
    config = kwargs_for(**{"distributed.strategy": "deepspeed", "distributed.zero_stage": 2})["deepspeed"]
    assert config["zero_optimization"]["stage"] == 2
    assert config["zero_optimization"]["offload_optimizer"] == {"device": "none"}
    assert "offload_param" not in config["zero_optimization"]  # parameters are not partitioned below ZeRO-3
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                "gradient_clipping"):
        assert config[key] == "auto", key  # filled by transformers, so the two configs cannot disagree
    assert config["bf16"] == {"enabled": "auto"}
    assert "optimizer" not in config  # the Trainer's own optimizer (train.optimizer)


def test_deepspeed_zero3_offload_gathers_weights_on_save_and_steps_on_the_cpu():
    zero = kwargs_for(**{"distributed.strategy": "deepspeed", "distributed.zero_stage": 3,
                         "distributed.offload": True})["deepspeed"]
    assert zero["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert zero["zero_optimization"]["offload_param"]["device"] == "cpu"
    # the run directory must hold a plain save_pretrained model, not ZeRO shards
    assert zero["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    # ZeRO-Offload refuses a torch optimizer on the CPU: DeepSpeed's AdamW with the run's numbers
    assert zero["optimizer"]["type"] == "AdamW"
    assert set(zero["optimizer"]["params"].values()) == {"auto"}


def test_deepspeed_config_is_accepted_by_training_arguments():
    pytest.importorskip("deepspeed")
    from transformers import TrainingArguments
    args = TrainingArguments(**kwargs_for(**{"distributed.strategy": "deepspeed", "distributed.zero_stage": 3,
                                            "distributed.offload": True, "batch_size": 4, "grad_accum": 2}))
    filled = args.hf_deepspeed_config.config
    assert filled["train_micro_batch_size_per_gpu"] == 4 and filled["gradient_accumulation_steps"] == 2
    assert filled["gradient_clipping"] == 1.0 and filled["optimizer"]["params"]["weight_decay"] == 0.01
    assert args.deepspeed_plugin.zero_stage == 3 and args.hf_deepspeed_config.is_offload()


def test_fsdp_options_become_a_valid_fsdp2_plugin(monkeypatch):
    from accelerate.utils import FullyShardedDataParallelPlugin
    from transformers import TrainingArguments
    kwargs = kwargs_for(**{"distributed.strategy": "fsdp", "distributed.fsdp": "shard_grad_op auto_wrap",
                           "distributed.offload": True, "gradient_checkpointing": True})
    # FSDP checkpoints activations itself; the Trainer's flag would add an all-gather in backward
    assert kwargs["activation_checkpointing"] is False
    plugin_args = TrainingArguments(**kwargs).fsdp_plugin_args
    assert plugin_args["fsdp_version"] == 2
    assert plugin_args["reshard_after_forward"] is False  # shard_grad_op: weights stay gathered until backward
    assert plugin_args["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert plugin_args["cpu_offload"] is True and plugin_args["activation_checkpointing"] is True
    assert plugin_args["state_dict_type"] == "FULL_STATE_DICT"  # save_pretrained weights in the run directory
    plugin = FullyShardedDataParallelPlugin(**plugin_args)
    assert plugin.fsdp_version == 2 and plugin.cpu_offload is not None and plugin.activation_checkpointing


def test_fsdp_full_shard_without_wrapping_reshards_one_unit():
    config = distributed_kwargs(train_config(**{"distributed.strategy": "fsdp",
                                                "distributed.fsdp": "full_shard"}).train.distributed)["fsdp_config"]
    assert config["reshard_after_forward"] is True and config["auto_wrap_policy"] == "NO_WRAP"
    assert config["cpu_offload"] is False


@pytest.mark.parametrize("options", ["full_shard shard_grad_op", "hybrid_shard", "full_shard autowrap"])
def test_fsdp_options_that_mean_nothing_here_are_refused(options):
    with pytest.raises(TunelabError, match="not a valid set of FSDP options"):
        kwargs_for(**{"distributed.strategy": "fsdp", "distributed.fsdp": f"'{options}'"})


def test_cpu_processes_talk_over_gloo(monkeypatch, cpu_only):
    assert kwargs_for()["ddp_backend"] is None  # one process: no backend to choose
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert kwargs_for()["ddp_backend"] == "gloo"  # NCCL is for GPUs
    assert "deepspeed" not in kwargs_for() and "fsdp" not in kwargs_for()  # strategy auto: plain DDP


def test_deepspeed_without_its_package_says_how_to_install_it(packages):
    packages(missing=["deepspeed"])
    with pytest.raises(TunelabError, match=r"deepspeed package is not installed; pip install deepspeed"):
        check_supported(train_config(**{"distributed.strategy": "deepspeed"}).train)


def test_deepspeed_without_its_package_fails_before_weights_load(packages, monkeypatch, tiny_llama_dir, chat_jsonl):
    from tunelab.train import run as run_module
    packages(missing=["deepspeed"])
    monkeypatch.setattr(run_module, "load_model", lambda *a, **k: pytest.fail("weights were loaded"))
    cfg = train_config(model=tiny_llama_dir, data=chat_jsonl, output_dir="unused",
                       **{"distributed.strategy": "deepspeed"})
    with pytest.raises(TunelabError, match="pip install deepspeed"):
        run_module.run(cfg)


@pytest.mark.parametrize("strategy", ["deepspeed", "fsdp"])
def test_sharding_on_cpu_is_refused_rather_than_quietly_run_as_ddp(strategy, cpu_only, packages):
    packages(installed=["deepspeed"])  # installed, yet no GPU to run it on
    with pytest.raises(TunelabError, match=f"{'DeepSpeed' if strategy == 'deepspeed' else 'FSDP'} needs GPUs"):
        check_supported(train_config(**{"distributed.strategy": strategy}).train)


def test_an_accelerate_config_that_chooses_fsdp_is_checked_too(monkeypatch, cpu_only):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch --config_file fsdp.yaml` sets
    with pytest.raises(TunelabError, match="FSDP needs GPUs"):
        check_supported(train_config().train)


@pytest.mark.parametrize("variable,chosen", [("ACCELERATE_USE_DEEPSPEED", "deepspeed"),
                                             ("ACCELERATE_USE_FSDP", "fsdp")])
def test_a_strategy_chosen_by_both_the_launcher_and_the_config_is_refused(monkeypatch, variable, chosen):
    monkeypatch.setenv(variable, "true")
    with pytest.raises(TunelabError, match=f"already chooses {chosen}.*strategy=auto"):
        check_supported(train_config(**{"distributed.strategy": "ddp"}).train)


@pytest.mark.parametrize("name,distributed_type", [("deepspeed_zero2.yaml", "DEEPSPEED"), ("fsdp.yaml", "FSDP")])
def test_shipped_accelerate_configs_load_and_leave_precision_to_tunelab(name, distributed_type):
    from accelerate.commands.config.config_args import load_config_from_file
    config = load_config_from_file(str(EXAMPLES / name))
    assert config.distributed_type.value == distributed_type
    assert config.mixed_precision == "no"  # train.bf16 decides
    launch = f"accelerate launch --config_file examples/accelerate/{name} -m tunelab.cli train"
    assert launch in (EXAMPLES / name).read_text()
    if distributed_type == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == 2
    else:
        assert config.fsdp_config["fsdp_version"] == 2
        assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"


def test_launcher_strategy_reads_accelerates_variables(monkeypatch):
    assert arguments.launcher_strategy() is None
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "True")
    assert arguments.launcher_strategy() == "deepspeed"
