"""Reinforcement fine-tuning (train.task rft) on a tiny Llama: TRL's GRPOTrainer with a grader as
the reward. The run logs reward mean and spread, KL to the reference and completion length per
step; trains full weights or a LoRA adapter (TRL's frozen "ref" copy is not saved); resumes like
every run; keeps its grader beside its weights; and a python grader that raises or hangs gives
zero rewards with the reason recorded, or stops the run when configured to."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from run_helpers import assert_same_weights, chat, metrics_rows, train_config, weights_in, write_prepared
from tunelab.errors import TunelabError
from tunelab.train import run as run_module

SIMILAR = {"type": "text_similarity", "name": "similar", "input": "{{ sample.output_text }}",
           "reference": "{{ item.answer }}", "evaluation_metric": "fuzzy_match"}
GRPO = {"rft": {"num_generations": 4, "max_completion_length": 8, "beta": 0.04}}


@pytest.fixture(autouse=True)
def no_memory_preflight(monkeypatch):
    monkeypatch.setattr(run_module, "preflight_memory", lambda *args, **kwargs: None)


def prompts(n: int = 16, start: int = 0) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"what is {i} plus one"}], "answer": f"it is {i + 1}"}
            for i in range(start, start + n)]


def grader_file(directory: Path, spec: dict) -> str:
    path = Path(directory) / f"{spec['name']}.json"
    path.write_text(json.dumps(spec))
    return str(path)


def rft_config(model, output, data, grader, **train):
    settings = {"grader": grader, "batch_size": 8, "lr": 1e-3, "max_steps": 3, **GRPO, **train}
    if data is not None:
        settings["data"] = str(data)
    settings["rft"] = {**GRPO["rft"], **train.get("rft", {})}
    return train_config(model, output, **settings)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_rft_trains_and_logs_reward_kl_and_completion_length(tiny_llama, tmp_path, method, spy_stages):
    data = write_prepared(tmp_path / "data", prompts())
    grader = grader_file(tmp_path, SIMILAR)
    result = run_module.run(rft_config(tiny_llama, tmp_path / "run", data, grader, method=method))

    run_dir = result.run_dir
    assert result.task == "rft" and not result.interrupted
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert (manifest["task"], manifest["method"]) == ("rft", method)
    assert json.loads((run_dir / "grader.json").read_text()) == SIMILAR  # what `tunelab eval` grades with
    logged = [r for r in metrics_rows(run_dir) if "reward" in r]
    assert [r["step"] for r in logged] == [1, 2, 3]
    for row in logged:
        assert {"reward", "reward_std", "kl", "completions/mean_length", "rewards/similar/mean",
                "grader_failures"} <= row.keys()
        assert 0 <= row["reward"] <= 1 and row["grader_failures"] == 0
    assert logged[0]["kl"] == 0.0 and logged[-1]["kl"] > 0  # the reference is the starting policy
    initial = spy_stages[0]
    if method == "full":
        trained = weights_in(run_dir)
        assert any(not (trained[k] == v).all() for k, v in initial["initial"].items() if k in trained)
    else:
        adapter = json.loads((run_dir / "adapter_config.json").read_text())
        assert adapter["base_model_name_or_path"] == str(tiny_llama)
        assert not (run_dir / "ref").exists() and not (run_dir / "model.safetensors").exists()
        saved = weights_in(run_dir)
        assert saved and all(".ref." not in k for k in saved)  # TRL's frozen copy is not part of the run
        assert any(not (saved[k] == v).all() for k, v in initial["adapter"].items() if k in saved)


@pytest.mark.slow  # trains for seconds, or starts processes
def test_sft_then_rft_in_one_run_the_reference_is_the_sft_stage(tiny_llama, tmp_path, spy_stages):
    sft = write_prepared(tmp_path / "sft", [chat(f"what is {i} plus one", f"it is {i + 1}") for i in range(16)])
    rl = write_prepared(tmp_path / "rl", prompts())
    stages = [{"name": "sft", "data": str(sft), "lr": 3e-3}, {"name": "rft", "data": str(rl)}]
    cfg = rft_config(tiny_llama, tmp_path / "run", None, grader_file(tmp_path, SIMILAR), method="full",
                     stages=stages)
    result = run_module.run(cfg)

    assert [s["stage"] for s in result.stages] == ["sft", "rft"] and result.task == "rft"
    sft_snapshot = weights_in(tmp_path / "run" / "stages" / "1-sft")
    # TRL loads the full model's reference from disk: the weights the sft stage ended with
    assert_same_weights(spy_stages[1]["reference"], sft_snapshot)
    assert_same_weights(spy_stages[1]["initial"], sft_snapshot)
    rft_rows = [r for r in metrics_rows(result.run_dir) if r.get("stage") == "rft" and "kl" in r]
    assert rft_rows[0]["kl"] == 0.0
    assert [r["stage"] for r in metrics_rows(result.run_dir) if "loss" in r][:1] == ["sft"]


@pytest.mark.slow  # trains for seconds, or starts processes
def test_sft_then_rft_with_lora_keeps_one_adapter(tiny_llama, tmp_path, spy_stages):
    sft = write_prepared(tmp_path / "sft", [chat(f"what is {i} plus one", f"it is {i + 1}") for i in range(16)])
    rl = write_prepared(tmp_path / "rl", prompts())
    stages = [{"name": "sft", "data": str(sft)}, {"name": "rft", "data": str(rl)}]
    result = run_module.run(rft_config(tiny_llama, tmp_path / "run", None, grader_file(tmp_path, SIMILAR),
                                       method="lora", stages=stages))
    sft_adapter = weights_in(tmp_path / "run" / "stages" / "1-sft")
    assert_same_weights(spy_stages[1]["adapter"], sft_adapter)  # rft starts from the sft adapter
    for directory in (result.run_dir, tmp_path / "run" / "stages" / "2-rft"):
        assert all(".ref." not in k for k in weights_in(directory))


@pytest.mark.parametrize("kinds", [("prompt", "generative"), ("prompt", "classification")])
def test_stage_sequences_that_make_no_sense_are_refused(tiny_llama, tmp_path, kinds, monkeypatch):
    rows = {"prompt": prompts(), "generative": [chat("a", "b")], "classification": [{"text": "a", "label": "x"}]}
    stages = [{"name": f"s{i}", "data": str(write_prepared(tmp_path / kind, rows[kind]))}
              for i, kind in enumerate(kinds)]
    monkeypatch.setattr(run_module, "load_model", lambda *a, **k: pytest.fail("weights loaded"))
    with pytest.raises(TunelabError, match=f"stage s1 trains on {kinds[1]} records after stage s0's prompt"):
        run_module.run(rft_config(tiny_llama, tmp_path / "run", None, grader_file(tmp_path, SIMILAR), stages=stages))


RAISES = {"type": "python", "name": "fragile",
          "source": "def grade(sample, item):\n    raise ValueError('no answer field in ' + str(sorted(item)))\n"}
LOOPS = {"type": "python", "name": "stuck", "source": "def grade(sample, item):\n    while True:\n        pass\n"}


@pytest.mark.parametrize("spec,reason", [(RAISES, "ValueError: no answer field in ['answer', 'messages']"),
                                         (LOOPS, "did not answer within 0.3 s and was stopped")])
@pytest.mark.slow  # trains for seconds, or starts processes
def test_a_failing_python_grader_gives_zero_rewards_with_reasons_and_the_run_goes_on(tiny_llama, tmp_path, spec,
                                                                                    reason):
    data = write_prepared(tmp_path / "data", prompts(4))
    cfg = rft_config(tiny_llama, tmp_path / "run", data, grader_file(tmp_path, spec), max_steps=1, batch_size=4,
                     rft={"allow_python_graders": True, "python_grader_timeout_s": 0.3})
    result = run_module.run(cfg)
    assert (result.run_dir / "manifest.json").is_file()
    row = next(r for r in metrics_rows(result.run_dir) if "reward" in r)
    assert row["reward"] == 0.0 and row["grader_failures"] == 1.0
    errors = [json.loads(line) for line in (result.run_dir / "grader_errors.jsonl").read_text().splitlines()]
    assert len(errors) == 4 and all(reason in e["reason"] and e["step"] == 0 for e in errors)
    assert errors[0]["item"]["answer"].startswith("it is ")


def test_a_failing_grader_stops_the_run_when_configured_to(tiny_llama, tmp_path):
    data = write_prepared(tmp_path / "data", prompts(4))
    cfg = rft_config(tiny_llama, tmp_path / "run", data, grader_file(tmp_path, RAISES), max_steps=1, batch_size=4,
                     rft={"allow_python_graders": True, "on_grader_error": "fail"})
    with pytest.raises(TunelabError, match="grader 'fragile' failed at step 0 .*ValueError") as caught:
        run_module.run(cfg)
    assert "train.rft.on_grader_error=zero" in str(caught.value)
    assert not (tmp_path / "run" / "manifest.json").exists()


@pytest.mark.slow  # trains, interrupts and resumes, or starts processes (seconds)
def test_an_interrupted_rft_run_resumes_from_its_checkpoint(tiny_llama, tmp_path):
    data = write_prepared(tmp_path / "data", prompts())
    grader = grader_file(tmp_path, SIMILAR)
    straight = run_module.run(rft_config(tiny_llama, tmp_path / "straight", data, grader, max_steps=4, save_steps=2))

    first = run_module.run(rft_config(tiny_llama, tmp_path / "resumed", data, grader, max_steps=2, save_steps=2))
    assert first.stages[0]["steps"] == 2
    resumed = run_module.run(rft_config(tiny_llama, tmp_path / "resumed", data, grader, max_steps=4, save_steps=2,
                                        resume=True))
    assert resumed.stages[0]["steps"] == 4
    steps = [r["step"] for r in metrics_rows(tmp_path / "resumed") if "reward" in r]
    assert steps == [1, 2, 3, 4]
    assert_same_weights(weights_in(tmp_path / "resumed"), weights_in(straight.run_dir))


def test_rft_metrics_reach_mlflow(tiny_llama, tmp_path, monkeypatch):
    """transformers' MLflow callback logs what TRL logs: reward, its spread, KL and completion
    length per step, beside the validation reward."""
    import mlflow
    monkeypatch.chdir(tmp_path)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    data = write_prepared(tmp_path / "data", prompts(), prompts(4, start=40))
    run_module.run(rft_config(tiny_llama, tmp_path / "run", data, grader_file(tmp_path, SIMILAR), eval_steps=3,
                              eval_batch_size=4, tracking={"backend": "mlflow"}))
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    (run,) = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert {"reward", "reward_std", "kl", "completions/mean_length", "eval_reward"} <= run.data.metrics.keys()
    assert [m.step for m in client.get_metric_history(run.info.run_id, "reward")] == [1, 2, 3]
