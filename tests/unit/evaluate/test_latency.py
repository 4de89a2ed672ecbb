"""Latency percentiles and throughput against hand-computed values, timed on a fake clock that
the fake model advances, so every figure is exact."""
import pytest
import torch

from tunelab.evaluate.latency import device_description, measure_latency


class FakeModel:
    """Each call takes `durations_ms[k]` on the fake clock (k counts calls, warm-up included) and
    generates 3 tokens per input; it records the batches it was given."""

    def __init__(self, durations_ms, tokens_per_input=3):
        self.now = 0.0
        self.durations_ms = list(durations_ms)
        self.tokens_per_input = tokens_per_input
        self.batches = []

    def clock(self) -> float:
        return self.now

    def __call__(self, batch):
        self.now += self.durations_ms[len(self.batches)] / 1000.0
        self.batches.append(list(batch))
        return None if self.tokens_per_input is None else self.tokens_per_input * len(batch)


def test_percentiles_and_throughput_match_hand_computation():
    model = FakeModel([100.0, 1.0, 2.0, 3.0, 4.0, 5.0])  # the 100 ms warm-up must not count
    report = measure_latency(model, ["a"], batch_sizes=(1,), requests=5, clock=model.clock, device="cpu")
    figures = report["by_batch_size"]["1"]
    assert figures["samples_ms"] == pytest.approx([1.0, 2.0, 3.0, 4.0, 5.0])
    assert figures["p50_ms"] == pytest.approx(3.0)
    assert figures["p95_ms"] == pytest.approx(4.8)   # linear interpolation between 4 and 5
    assert figures["p99_ms"] == pytest.approx(4.96)
    assert figures["requests_per_s"] == pytest.approx(5 / 0.015)
    assert figures["tokens_per_s"] == pytest.approx(15 / 0.015)


def test_every_request_in_a_batch_waits_for_the_whole_batch():
    model = FakeModel([50.0, 20.0, 40.0])
    report = measure_latency(model, list(range(10)), batch_sizes=(4,), requests=8, clock=model.clock)
    figures = report["by_batch_size"]["4"]
    assert figures["samples_ms"] == pytest.approx([20.0] * 4 + [40.0] * 4)
    assert figures["p50_ms"] == pytest.approx(30.0)
    assert figures["requests_per_s"] == pytest.approx(8 / 0.060)
    assert figures["tokens_per_s"] == pytest.approx(24 / 0.060)


def test_inputs_are_taken_in_turn_and_batches_are_always_full():
    model = FakeModel([1.0] * 10)
    report = measure_latency(model, ["a", "b", "c"], batch_sizes=(1, 2), requests=3, clock=model.clock)
    assert model.batches == [["a", "b"],                      # warm-up, at the largest batch size
                             ["c"], ["a"], ["b"],             # batch size 1: three requests
                             ["c", "a"], ["b", "c"]]          # batch size 2: rounded up to four
    assert list(report["by_batch_size"]) == ["1", "2"]
    assert len(report["by_batch_size"]["2"]["samples_ms"]) == 4


def test_tokens_per_second_is_none_when_the_model_counts_no_tokens():
    model = FakeModel([1.0] * 4, tokens_per_input=None)
    figures = measure_latency(model, ["a"], batch_sizes=(1,), requests=3, clock=model.clock)["by_batch_size"]["1"]
    assert figures["tokens_per_s"] is None
    assert figures["requests_per_s"] == pytest.approx(1000.0)


def test_rejects_no_inputs_and_empty_batches():
    with pytest.raises(ValueError):
        measure_latency(FakeModel([1.0]), [], batch_sizes=(1,))
    with pytest.raises(ValueError):
        measure_latency(FakeModel([1.0]), ["a"], batch_sizes=(0,))


def test_cpu_description_names_the_processor_and_threads():
    description = device_description("cpu")
    assert description.startswith("cpu: ")
    threads = torch.get_num_threads()
    suffix = f", {threads} torch thread" + ("" if threads == 1 else "s")
    assert description.endswith(suffix) and len(description) > len("cpu: " + suffix)
    assert measure_latency(FakeModel([1.0, 1.0]), ["a"], batch_sizes=(1,), requests=1,
                           device="cpu")["device"] == description
