"""Where the per-record work runs: this machine's cores (worker processes) or a Ray cluster.
Both map `process_shard` over the shards and hand the results back in input order, with a
bounded number in flight so that memory does not grow with the input. What comes back does not
depend on where it ran, so the outputs are the same byte for byte.
"""
from __future__ import annotations

import ctypes
import itertools
import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from tunelab.data.work import RecordWork, Shard, ShardResult, process_shard
from tunelab.errors import TunelabError
from tunelab.ray_cluster import connect

IN_FLIGHT_PER_WORKER = 2
MIN_SHARDS_FOR_WORKERS = 4  # below this, starting workers costs more than they save
WORKER_NAME = b"tunelab-worker"  # what `top` and `ps -o comm` show for a worker process

_WORK: RecordWork | None = None  # the RecordWork of this worker process, set once when it starts


def default_num_proc() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def map_shards(shards: Iterable[Shard], work: RecordWork, *, engine: str = "local", num_proc: int | None = None,
               ray_address: str | None = None) -> Iterator[ShardResult]:
    num_proc = num_proc or default_num_proc()
    if engine == "ray":
        return _on_ray(shards, work, num_proc, ray_address)
    return _on_this_machine(shards, work, num_proc)


def _on_this_machine(shards: Iterable[Shard], work: RecordWork, num_proc: int) -> Iterator[ShardResult]:
    shards = iter(shards)
    opening = list(itertools.islice(shards, MIN_SHARDS_FOR_WORKERS))
    if num_proc == 1 or len(opening) < MIN_SHARDS_FOR_WORKERS:
        for shard in itertools.chain(opening, shards):
            yield process_shard(shard, work)
        return
    # forkserver: workers fork from a clean server process (not from this one, with its threads)
    # that has imported what they need once
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tunelab.data.work", *(["tunelab.models.load"] if work.tokenizer else [])])
    pool = ProcessPoolExecutor(num_proc, mp_context=context, initializer=_start_worker, initargs=(work,))
    window: deque = deque()
    try:
        for shard in itertools.chain(opening, shards):
            window.append(pool.submit(_process, shard))
            if len(window) >= IN_FLIGHT_PER_WORKER * num_proc:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
    except BrokenProcessPool:
        raise TunelabError("a worker process died before the data was prepared (killed, or out of memory); "
                           "no output was written", fix="run it again, with fewer workers (data.num_proc) "
                           "if memory is short") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _start_worker(work: RecordWork) -> None:
    global _WORK
    _WORK = work
    _one_thread_each()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(15, WORKER_NAME, 0, 0, 0)  # PR_SET_NAME
        except (OSError, AttributeError):
            pass


def _one_thread_each() -> None:
    """Workers are the parallelism: rensa's Rust thread pool (read when first used) would only
    oversubscribe the cores and reserve a malloc arena per thread."""
    os.environ.setdefault("RAYON_NUM_THREADS", "1")


def _process(shard: Shard) -> ShardResult:
    return process_shard(shard, _WORK)


def _process_on_ray(shard: Shard, work: RecordWork) -> ShardResult:
    _one_thread_each()
    return process_shard(shard, work)


def _on_ray(shards: Iterable[Shard], work: RecordWork, num_proc: int, address: str | None) -> Iterator[ShardResult]:
    try:
        import ray
    except ImportError:
        raise TunelabError("data.engine is ray but Ray is not installed",
                           fix="pip install 'tunelab[ray]', or set data.engine=local") from None
    started = not ray.is_initialized()
    if started:
        _connect(ray, address, num_proc)
    try:
        task = ray.remote(num_cpus=1)(_process_on_ray)
        work_ref = ray.put(work)
        in_flight = IN_FLIGHT_PER_WORKER * max(1, int(ray.cluster_resources().get("CPU", num_proc)))
        window: deque = deque()
        for shard in shards:
            window.append(task.remote(shard, work_ref))
            if len(window) >= in_flight:
                yield _ray_result(ray, window.popleft())
        while window:
            yield _ray_result(ray, window.popleft())
    finally:
        if started:
            ray.shutdown()


def _connect(ray, address: str | None, num_proc: int) -> None:
    """Join the cluster at `address`, or start a local head on 127.0.0.1 with num_proc CPUs."""
    connect(ray, address, setting="data.ray_address", num_cpus=num_proc)


def _ray_result(ray, ref) -> ShardResult:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:  # the task's own exception: raise it as it is
        raise exc.cause if isinstance(exc.cause, Exception) else exc
    except ray.exceptions.RayError as exc:
        raise TunelabError(f"a Ray task failed before the data was prepared ({type(exc).__name__}); "
                           "no output was written", fix="see the Ray logs of the cluster, then run it again") from None
