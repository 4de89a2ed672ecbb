"""Joining a Ray cluster, or starting a head on this machine, for the stages that send work to
Ray (`data prepare --engine ray`, `jobs.executor: ray`): one set of init options and one error
sentence naming the setting to fix."""
from __future__ import annotations

import logging

from tunelab.errors import TunelabError


def connect(ray, address: str | None, *, setting: str, num_cpus: int | None = None) -> None:
    """Join the cluster at `address` (HOST:PORT, ray://HOST:PORT or auto), or start a head on
    127.0.0.1 (with num_cpus CPUs, or all of them) when there is none."""
    options = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
                   configure_logging=True)
    try:
        if address:
            ray.init(address=address, **options)
        else:
            head = {"num_cpus": num_cpus} if num_cpus else {}
            ray.init(_node_ip_address="127.0.0.1", **head, **options)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        where = f"Ray cluster at {address}" if address else "local Ray head"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TunelabError(f"could not start or reach the {where} ({reason})",
                           fix=f"check {setting} (auto, HOST:PORT or ray://HOST:10001), that the cluster is up, "
                               "and, for a cluster with token authentication (Ray's default for a new head), set "
                               "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN") from None
