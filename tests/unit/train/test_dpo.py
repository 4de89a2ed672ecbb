"""DPO (TRL's DPOTrainer) through `tunelab train`: on string and conversational prompts, from a base
model and from earlier SFT runs (full and LoRA), with the reference equal to the starting policy."""
from __future__ import annotations

import math

import pytest
import torch

from run_helpers import assert_same_weights, base_weights, chat, metrics_rows, train_config, weights_in, write_prepared
from tunelab.config import load_config
from tunelab.errors import TunelabError
from tunelab.train import run as run_module
from tunelab.train.data import load_training_data, to_dataset

LN2 = math.log(2)


def preference(i: int, conversational: bool) -> dict:
    """A learnable preference: always answer yes, never no."""
    prompt = f"is {i} fine?"
    return {"prompt": [{"role": "user", "content": prompt}] if conversational else prompt,
            "chosen": "yes", "rejected": "no"}


def preference_data(tmp_path, conversational: bool):
    return write_prepared(tmp_path / "pref", [preference(i, conversational) for i in range(8)],
                          [preference(i, conversational) for i in range(100, 104)])


def train_rows(run_dir) -> list[dict]:
    return [r for r in metrics_rows(run_dir) if "loss" in r and "rewards/margins" in r]


@pytest.mark.parametrize("conversational,method", [(False, "lora"), (True, "full")])
def test_dpo_from_base_learns_the_preference(tiny_llama, tmp_path, spy_stages, conversational, method):
    data = preference_data(tmp_path, conversational)
    cfg = train_config(tiny_llama, tmp_path / "run", data=str(data), method=method, epochs=3,
                       lr=1e-2 if method == "lora" else 5e-3)
    result = run_module.run(cfg)

    rows = train_rows(result.run_dir)
    assert len(rows) == 6  # 8 pairs, batch 4, 3 epochs
    # first step: the policy is its reference, so both rewards are 0 and the loss is ln 2
    assert rows[0]["loss"] == pytest.approx(LN2, abs=1e-5)
    assert rows[0]["rewards/chosen"] == pytest.approx(0, abs=1e-5)
    # the loss falls and the chosen answer's reward margin over the rejected one rises
    assert rows[-1]["loss"] < LN2 - 0.1 and rows[-1]["loss"] < min(r["loss"] for r in rows[:3])
    assert rows[-1]["rewards/margins"] > 0.25 and rows[-1]["rewards/margins"] > max(r["rewards/margins"] for r in rows[:3])
    assert rows[-1]["rewards/accuracies"] == 1.0
    # held-out pairs prefer the chosen answer too
    assert result.metrics["eval_rewards/margins"] > 0.25 and result.metrics["eval_loss"] < LN2 - 0.1
    # the reference is the starting policy, held in memory (full) or as TRL's adapter copy (LoRA)
    start = spy_stages[0]
    if method == "full":
        assert_same_weights(start["reference"], weights_in(tiny_llama))
    assert_same_weights(start["initial"], weights_in(tiny_llama))
    # TRL's reference adapter is not part of the run
    assert not (result.run_dir / "ref").exists()
    assert (result.run_dir / "adapter_config.json").is_file() == (method == "lora")
    assert result.task == "dpo" and (result.run_dir / "manifest.json").is_file()


@pytest.fixture(scope="module")
def sft_runs(tiny_llama, tmp_path_factory):
    """An SFT run of each kind (full weights, LoRA adapter) whose weights differ from the base."""
    root = tmp_path_factory.mktemp("sft")
    data = write_prepared(root / "chat", [chat(f"is {i} fine?", "yes it is") for i in range(8)])
    runs = {}
    for method, lr in (("full", 5e-3), ("lora", 5e-2)):
        runs[method] = run_module.run(train_config(tiny_llama, root / method, data=str(data), method=method,
                                                   lr=lr, epochs=2)).run_dir
    return runs


def sft_weights(run_dir) -> dict[str, torch.Tensor]:
    """The SFT run's weights as plain transformers / PEFT load them (an adapter merged onto its base)."""
    if (run_dir / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM
        return base_weights(AutoPeftModelForCausalLM.from_pretrained(run_dir).merge_and_unload())
    return weights_in(run_dir)


@pytest.mark.parametrize("sft_method,dpo_method", [("full", "lora"), ("lora", "full"), ("lora", "lora")])
def test_dpo_after_sft_starts_from_and_refers_to_the_sft_model(sft_runs, tiny_llama, tmp_path, spy_stages,
                                                                sft_method, dpo_method):
    sft_dir = sft_runs[sft_method]
    expected = sft_weights(sft_dir)
    assert not torch.equal(expected["model.layers.0.self_attn.q_proj.weight"],
                           weights_in(tiny_llama)["model.layers.0.self_attn.q_proj.weight"])
    cfg = train_config(sft_dir, tmp_path / "dpo", data=str(preference_data(tmp_path, True)), method=dpo_method,
                       lr=1e-2 if dpo_method == "lora" else 5e-3, epochs=2)
    result = run_module.run(cfg)

    start = spy_stages[0]
    assert_same_weights(start["initial"], expected)
    if dpo_method == "full":  # not the base model TRL would reload from config._name_or_path
        assert_same_weights(start["reference"], expected)
    rows = train_rows(result.run_dir)
    assert rows[0]["loss"] == pytest.approx(LN2, abs=1e-5) and rows[0]["rewards/chosen"] == pytest.approx(0, abs=1e-5)
    assert rows[-1]["rewards/margins"] > rows[0]["rewards/margins"]

    # what is saved loads with plain transformers / PEFT onto the right weights
    from transformers import AutoModelForCausalLM
    if dpo_method == "lora" and sft_method == "lora":
        # an adapter on merged weights that exist nowhere on disk: saved merged
        assert not (result.run_dir / "adapter_config.json").exists()
        tuned = AutoModelForCausalLM.from_pretrained(result.run_dir)
    elif dpo_method == "lora":
        from peft import AutoPeftModelForCausalLM
        tuned = AutoPeftModelForCausalLM.from_pretrained(result.run_dir).merge_and_unload()
    else:
        tuned = AutoModelForCausalLM.from_pretrained(result.run_dir)
    trained = base_weights(tuned)
    assert trained.keys() >= expected.keys() - {"lm_head.weight"}
    changed = [k for k in expected if k in trained and not torch.equal(trained[k], expected[k])]
    assert changed  # DPO moved the SFT weights
    assert not (result.run_dir / "ref").exists()


def test_unknown_dpo_loss_is_refused_when_the_config_loads():
    with pytest.raises(TunelabError, match="train.dpo.loss_type"):
        load_config(None, ["train.dpo.loss_type=sigmiod"])
    assert load_config(None, ["train.dpo.loss_type=ipo"]).train.dpo.loss_type == "ipo"


def test_preference_prompts_of_both_forms_in_one_set_are_refused_as_it_loads(tmp_path):
    data = write_prepared(tmp_path / "both", [preference(0, False)], [preference(1, True)])
    with pytest.raises(TunelabError, match="string prompts and conversational"):
        load_training_data(str(data))


def test_conversational_prompts_become_messages_for_trl():
    rows = to_dataset([preference(0, True)], "preference").to_list()
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "yes"}]
    assert to_dataset([preference(0, False)], "preference").to_list()[0] == preference(0, False)


def test_string_prompts_need_no_chat_template(tiny_llama):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    tokenizer.chat_template = None
    assert run_module.prepare_tokenizer(tokenizer, "dpo", True, chat=False) == (tokenizer, None)
    with pytest.raises(TunelabError, match="no chat template"):
        run_module.prepare_tokenizer(tokenizer, "dpo", True, chat=True)


@pytest.mark.slow  # trains for seconds, or starts processes
def test_dpo_in_stages_refers_each_stage_to_where_it_started(tiny_llama, tmp_path, spy_stages):
    """With LoRA, TRL's reference is a frozen copy of the adapter: each stage gets a fresh copy of the
    adapter as that stage begins, and neither copy is saved."""
    first = preference_data(tmp_path / "one", True)
    second = write_prepared(tmp_path / "two", [preference(i, False) for i in range(20, 28)])
    cfg = train_config(tiny_llama, tmp_path / "run", method="lora", lr=1e-2,
                       stages=[{"name": "one", "data": str(first)}, {"name": "two", "data": str(second)}])
    result = run_module.run(cfg)  # conversational prompts in one stage, strings in the other
    rows = train_rows(result.run_dir)
    for stage in ("one", "two"):
        first_step = next(r for r in rows if r["stage"] == stage)
        assert first_step["loss"] == pytest.approx(LN2, abs=1e-5)  # the policy is its reference again
    assert any(v.abs().sum() > 0 for k, v in spy_stages[1]["adapter"].items() if "lora_B" in k)
    for directory in (result.run_dir, result.run_dir / "stages" / "1-one", result.run_dir / "stages" / "2-two"):
        assert (directory / "adapter_config.json").is_file() and not (directory / "ref").exists()


@pytest.mark.slow  # trains, then scores every pair with two models
@pytest.mark.parametrize("conversational,method", [(True, "full"), (False, "lora")])
def test_eval_of_a_dpo_run_scores_held_out_pairs_against_the_base(tiny_llama, tmp_path, conversational, method):
    """`tunelab eval` of a DPO run on held-out pairs: each model's chosen-over-rejected accuracy and
    margin (summed reply log-likelihoods, scored as training formats the pair), tuned against base
    with a paired interval, and DPO's implicit reward with the base as the reference."""
    import json

    from tunelab.evaluate import run as eval_run
    from tunelab.evaluate.generate import load_generator, reply_log_likelihood
    data = preference_data(tmp_path, conversational)
    run = run_module.run(train_config(tiny_llama, tmp_path / "run", data=str(data), method=method, epochs=3,
                                      lr=1e-2 if method == "lora" else 5e-3)).run_dir
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(preference(i, conversational)) + "\n" for i in range(200, 230)))
    settings = load_config(None, [f"eval.model={run}", f"eval.data={test}", "eval.baselines=[base]",
                                  "eval.resamples=200", "eval.latency.batch_sizes=[1]", "eval.latency.requests=2",
                                  "eval.generation.max_new_tokens=4", f"eval.out_dir={tmp_path / 'eval'}"]).eval
    report = eval_run.run(settings).report
    tuned, base = report["metrics"], report["baselines"]["base"]
    print(f"\n{'conversational' if conversational else 'string'} prompts, {method}: preference accuracy "
          f"{tuned['preference_accuracy']:.2f} (base {base['preference_accuracy']:.2f}), margin "
          f"{tuned['margin']:+.3f} nats (base {base['margin']:+.3f}); reward accuracy "
          f"{report['preference']['reward_accuracy']:.2f}, reward margin {report['preference']['reward_margin']:+.3f}")
    assert report["task"] == "preference" and tuned["examples"] == 30
    # DPO raised every held-out "yes" over its "no", relative to where the base had them
    assert report["preference"]["reward_accuracy"] == 1.0 and report["preference"]["reward_margin"] > 0.25
    assert tuned["margin"] > base["margin"] + 0.25 and report["comparisons"]["base"]["margin"]["verdict"] == "better"
    assert tuned["preference_accuracy"] >= base["preference_accuracy"]
    if method == "full":  # the full fine-tune moved far enough to prefer "yes" outright (base: "no" on all 30);
        # the LoRA run narrowed the gap without closing it: accuracy is the stricter figure
        assert tuned["preference_accuracy"] == 1.0 and report["verdict"].startswith("tuned preference accuracy 1.000")
    assert (report["latency"] is not None) == conversational  # generating needs the chat template's prompts
    # a pair's score is the reply's summed log-probability after the prompt, as a forward pass gives it
    model, tokenizer = load_generator(str(run))
    means, counts = reply_log_likelihood(model, tokenizer, [preference(200, conversational)["prompt"]], ["yes"])
    row = json.loads((tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()[0])
    assert row["chosen_score"] == pytest.approx(means[0] * counts[0], abs=1e-3)
    assert row["prefers"] == ("chosen" if row["chosen_score"] > row["rejected_score"] else "rejected")
    if not conversational:
        ids = tokenizer("is 200 fine?")["input_ids"]
        reply = tokenizer("yes", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids + reply])).logits[0].log_softmax(-1)
        expected = sum(float(logits[len(ids) - 1 + k, token]) for k, token in enumerate(reply))
        assert means[0] * counts[0] == pytest.approx(expected, abs=1e-4) and counts[0] == len(reply)
    html = (tmp_path / "eval" / "report.html").read_text()
    assert "Implicit reward" in html and "preference accuracy" in html


def test_eval_of_preference_pairs_refuses_a_model_behind_an_endpoint_in_one_sentence(tiny_llama, tmp_path):
    import json

    from tunelab.evaluate import run as eval_run
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(preference(i, True)) + "\n" for i in range(3)))
    settings = load_config(None, [f"eval.model={tiny_llama}", f"eval.data={test}", f"eval.out_dir={tmp_path / 'eval'}",
                                  "eval.baselines=[endpoint:http://127.0.0.1:9/v1#other]"]).eval
    with pytest.raises(TunelabError, match=r"model behind an endpoint, which gives no log-likelihoods .*; compare "
                                           r"preference runs with local models"):
        eval_run.run(settings)
    assert not (tmp_path / "eval").exists()


def test_pairs_whose_prompt_is_neither_text_nor_messages_are_refused_in_one_sentence(tiny_llama, tmp_path):
    import json

    from tunelab.evaluate import run as eval_run
    test = tmp_path / "test.jsonl"
    test.write_text(json.dumps({"prompt": {"text": "is 1 fine?"}, "chosen": "yes", "rejected": "no"}) + "\n")
    settings = load_config(None, [f"eval.model={tiny_llama}", f"eval.data={test}",
                                  f"eval.out_dir={tmp_path / 'eval'}"]).eval
    with pytest.raises(TunelabError, match=r"test.jsonl: test data must hold .* or preference pairs \(prompt, "
                                           r"chosen, rejected\), one kind per file"):
        eval_run.run(settings)
    assert not (tmp_path / "eval").exists()
