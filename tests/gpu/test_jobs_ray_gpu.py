"""`jobs.executor: ray` with GPUs: a job that asks for one GPU (jobs.gpus_per_job=1) runs on a Ray
task that holds one, and the job's process sees exactly that GPU (CUDA_VISIBLE_DEVICES set by
Ray, not the server's). Skipped without a CUDA GPU; the CPU side is
tests/unit/jobs/test_jobs_ray_executor.py.

Run on a GPU machine with `pytest tests/gpu/test_jobs_ray_gpu.py -ra`."""
from __future__ import annotations

import os
import sys
import time

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SEES = ("import os, torch; print('visible', os.environ.get('CUDA_VISIBLE_DEVICES'), torch.cuda.device_count(), "
        "torch.cuda.get_device_name(0))")


def test_a_gpu_job_runs_on_a_task_holding_one_gpu(ray_head, tmp_path, monkeypatch):
    import ray

    from tunelab.jobs.ray_executor import RayExecutor
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", ",".join(str(i) for i in range(torch.cuda.device_count())))
    executor = RayExecutor(ray_head)
    try:
        execution = executor.start("job-gpu", [sys.executable, "-c", SEES], cwd=tmp_path, log_path=tmp_path / "job.log",
                                   env=dict(os.environ), resources={"CPU": 1.0, "GPU": 1.0})
        deadline = time.monotonic() + 300
        while (code := execution.poll()) is None:
            assert time.monotonic() < deadline, "the GPU job never finished"
            time.sleep(0.2)
        log = (tmp_path / "job.log").read_text()
        assert code == 0, log
        line = next(line for line in log.splitlines() if line.startswith("visible "))
        _, devices, count, _name = line.split(" ", 3)
        assert int(count) == 1 and len(devices.split(",")) == 1  # one GPU, the one Ray gave the task
    finally:
        ray.shutdown()
