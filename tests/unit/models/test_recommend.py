"""The base-model recommender: real architecture numbers, the same estimator as pre-flight,
and a ranking that is deterministic and honours privacy and budget."""
import json

import pytest

from tunelab.errors import TunelabError
from tunelab.models.memory import count_parameters
from tunelab.models.recommend import (API, CATALOGUE, format_table, recommend, size_mismatch,
                                      suited_params, to_json)

GPU = dict(device_memory_gb=24, device_tflops=165, price_per_gpu_hour=0.8)
SMALL_GENERATORS = ["HuggingFaceTB/SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-360M-Instruct",
                    "Qwen/Qwen2.5-0.5B-Instruct", "meta-llama/Llama-3.1-8B-Instruct", API]


def sft(**overrides):
    values = dict(task="sft", examples=2000, avg_tokens=300, epochs=3, privacy="any",
                  candidates=SMALL_GENERATORS, **GPU)
    return recommend(**{**values, **overrides})


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_catalogue_architectures_match_published_sizes(name):
    entry = CATALOGUE[name]
    task = "classification" if entry.kind == "classification" else "sft"
    counted = count_parameters(entry.config(), task=task).total
    assert counted == pytest.approx(entry.published_params, rel=0.01)


def test_default_is_the_embedded_encoder():
    assert CATALOGUE["default"].hub_id == "sentence-transformers/all-MiniLM-L6-v2"
    recs = recommend(task="classification", examples=500, avg_tokens=40, epochs=2,
                     privacy="local", device="cpu", device_memory_gb=16, device_tflops=0.2,
                     price_per_gpu_hour=0.0)
    assert {r.name for r in recs} == {"default", "microsoft/deberta-v3-base", "answerdotai/ModernBERT-base"}
    assert recs[0].name == "default"  # the small encoder suits 500 examples best


def test_privacy_local_leaves_out_the_hosted_option():
    assert API in {r.name for r in sft(privacy="any")}
    assert API not in {r.name for r in sft(privacy="local")}


def test_options_that_do_not_fit_are_marked_and_ranked_last():
    recs = sft(device_memory_gb=4, privacy="local")
    big = next(r for r in recs if r.name == "meta-llama/Llama-3.1-8B-Instruct")
    assert not big.feasible and big.reason.startswith("does not fit")
    assert big.method == "qlora"  # the lightest method was tried before giving up
    feasible = [r.feasible for r in recs]
    assert feasible == sorted(feasible, reverse=True) and any(feasible)


def test_cpu_never_gets_qlora():
    recs = sft(device="cpu", device_memory_gb=8, device_tflops=0.2, privacy="local")
    assert all(r.method in ("full", "lora") for r in recs)


def test_budget_marks_options_that_cost_more():
    unlimited = {r.name: r for r in sft()}
    budget = sorted(r.cost_usd for r in unlimited.values())[2]
    limited = sft(budget_usd=budget)
    for rec in limited:
        assert rec.feasible == (unlimited[rec.name].feasible and rec.cost_usd <= budget)
    over = [r for r in limited if r.cost_usd > budget]
    assert over and all("over the $" in r.reason and not r.feasible for r in over)


def test_api_cost_is_tokens_times_price():
    api = next(r for r in sft(examples=1000, avg_tokens=500, epochs=2) if r.name == API)
    assert api.cost_usd == pytest.approx(1000 * 500 * 2 / 1000 * 0.003)
    assert api.method is None and api.hours is None


def test_more_data_prefers_bigger_models():
    assert suited_params("sft", 100_000) > suited_params("sft", 1_000)
    few = sft(examples=200, privacy="local")
    many = sft(examples=200_000, privacy="local", device_memory_gb=80)
    assert few[0].params < many[0].params


def test_size_mismatch_penalises_oversize_more_than_undersize():
    assert size_mismatch(1e9, 1e9) == 0
    assert size_mismatch(4e9, 1e9) == 2 and size_mismatch(0.25e9, 1e9) == 1


def test_ranking_is_deterministic_and_time_and_cost_agree():
    first, second = sft(), sft()
    assert [r.name for r in first] == [r.name for r in second]
    local = [r for r in first if r.name != API]
    assert all(r.cost_usd == pytest.approx(r.hours * GPU["price_per_gpu_hour"]) for r in local)
    # Same method, more parameters: more hours.
    by_size = sorted((r for r in local if r.method == "full"), key=lambda r: r.params)
    assert [r.hours for r in by_size] == sorted(r.hours for r in by_size)


def test_unknown_candidate_is_a_user_error_with_a_suggestion():
    with pytest.raises(TunelabError, match="did you mean 'Qwen/Qwen2.5-0.5B-Instruct'"):
        sft(candidates=["Qwen/Qwen2.5-0.5B-Instruc"])


def test_table_and_json_list_every_option_in_order():
    from rich.console import Console
    recs = sft()
    console = Console(width=200, record=True)
    console.print(format_table(recs))
    text = console.export_text()
    assert all(r.name in text for r in recs)
    rows = json.loads(to_json(recs))
    assert [row["name"] for row in rows] == [r.name for r in recs]
    assert rows[0]["rank"] == 1 and "memory_gb" in rows[0]
