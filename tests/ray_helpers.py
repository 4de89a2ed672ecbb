"""A local Ray head on 127.0.0.1 for the `jobs.executor: ray` tests: started in a process of its
own (as a cluster's head runs apart from the jobs server); the tests join it by address like a
server joining a cluster. Ray's token authentication (on by default for a new head) is turned off
for it: a process reads RAY_AUTH_MODE once, when it first imports Ray, so a test session that
imported Ray before the head started could not join it otherwise.

A fixture module: tests/conftest.py lists it in pytest_plugins, so `ray_head` reaches every test."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

# the head's own driver: start the head, say where it listens, keep it up until stdin closes
HEAD = """
import logging, sys, ray
ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False, logging_level=logging.ERROR,
         log_to_driver=False)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()
ray.shutdown()
"""


@pytest.fixture(scope="session")
def ray_head():
    """The head's address as 127.0.0.1:PORT."""
    pytest.importorskip("ray")
    head = subprocess.Popen([sys.executable, "-c", HEAD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    try:
        gcs = head.stdout.readline().strip()
        assert gcs, f"the Ray head did not start (exit {head.poll()})"
        yield f"127.0.0.1:{gcs.rpartition(':')[2]}"
    finally:
        head.stdin.close()  # its driver shuts the head down (ray.shutdown), nothing else is touched
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
