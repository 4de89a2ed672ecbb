"""The dynamic batcher with a recording stand-in for the model: batch sizes, the wait, keys,
the bounded queue, draining on stop."""
import asyncio
import time

import pytest

from tunelab.serve.batching import DynamicBatcher, QueueFull


class Recorder:
    def __init__(self, delay: float = 0.0):
        self.calls: list[tuple[object, list]] = []
        self.delay = delay

    def __call__(self, key, payloads):
        time.sleep(self.delay)
        self.calls.append((key, list(payloads)))
        return [f"{key}:{p}" for p in payloads]


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_share_batches_up_to_the_maximum_and_keep_their_results():
    async def scenario():
        model = Recorder()
        batcher = DynamicBatcher(model, max_batch_size=4, max_wait_ms=200, max_queue=100)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit("k", i) for i in range(10)))
        await batcher.stop()
        return model, results

    model, results = run(scenario())
    assert results == [f"k:{i}" for i in range(10)]
    assert [len(p) for _, p in model.calls] == [4, 4, 2]


def test_a_lone_request_waits_for_companions_then_runs_alone():
    """It waits up to max_wait for companions (a sleep never ends early, so the lower bound is
    safe under any load), then runs as a batch of one rather than waiting for a full batch; a
    companion arriving within the window shares its batch."""
    async def scenario():
        model = Recorder()
        batcher = DynamicBatcher(model, max_batch_size=8, max_wait_ms=50, max_queue=10)
        batcher.start()
        started = time.perf_counter()
        await asyncio.wait_for(batcher.submit("k", 1), timeout=60)
        waited = time.perf_counter() - started
        pair = await asyncio.gather(batcher.submit("k", 2), batcher.submit("k", 3))
        await batcher.stop()
        return model, waited, pair

    model, waited, pair = run(scenario())
    assert waited >= 0.04
    assert pair == ["k:2", "k:3"] and [list(p) for _, p in model.calls] == [[1], [2, 3]]


def test_only_jobs_with_the_same_key_share_a_batch_and_unbatchable_jobs_run_alone():
    async def scenario():
        model = Recorder()
        batcher = DynamicBatcher(model, max_batch_size=8, max_wait_ms=30, max_queue=100)
        batcher.start()
        jobs = [batcher.submit("a", 1), batcher.submit("b", 2), batcher.submit("a", 3),
                batcher.submit("a", 4, batchable=False), batcher.submit("b", 5)]
        results = await asyncio.gather(*jobs)
        await batcher.stop()
        return model, results

    model, results = run(scenario())
    assert results == ["a:1", "b:2", "a:3", "a:4", "b:5"]
    assert sorted((key, tuple(p)) for key, p in model.calls) == [("a", (1, 3)), ("a", (4,)), ("b", (2, 5))]


def test_a_full_queue_refuses_new_jobs_and_a_failure_reaches_only_its_batch():
    async def scenario():
        def flaky(key, payloads):
            time.sleep(0.05)
            if key == "bad":
                raise ValueError("model failed")
            return payloads

        batcher = DynamicBatcher(flaky, max_batch_size=1, max_wait_ms=0, max_queue=2)
        batcher.start()
        first = batcher.enqueue("bad", 0)
        await asyncio.sleep(0.01)  # the worker takes it: the queue is empty again
        queued = [batcher.enqueue("ok", 1), batcher.enqueue("ok", 2)]
        with pytest.raises(QueueFull):
            batcher.enqueue("ok", 3)
        assert batcher.depth == 2
        with pytest.raises(ValueError, match="model failed"):
            await first
        results = await asyncio.gather(*queued)
        await batcher.stop()
        return results

    assert run(scenario()) == [1, 2]


def test_stop_finishes_queued_jobs_and_skips_abandoned_ones():
    async def scenario():
        model = Recorder(delay=0.02)
        batcher = DynamicBatcher(model, max_batch_size=2, max_wait_ms=1, max_queue=100)
        batcher.start()
        futures = [batcher.enqueue("k", i) for i in range(5)]
        futures[4].cancel()  # its client went away before the model got to it
        await batcher.stop()
        return model, futures

    model, futures = run(scenario())
    assert [f.result() for f in futures[:4]] == [f"k:{i}" for i in range(4)]
    assert sorted(p for _, payloads in model.calls for p in payloads) == [0, 1, 2, 3]
