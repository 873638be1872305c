"""Training progress for status, read from rank 0's Prometheus endpoint (kubetune_trainer_step and friends).

Only in-cluster: the endpoint is the rank-0 pod's DNS name under the headless Service, which resolves only
inside the cluster; out of cluster (the local demo, the tests) progress stays empty."""

import os

import aiohttp

from kubetune.api import v1alpha1 as api

TIMEOUT = aiohttp.ClientTimeout(total=3)


def in_cluster() -> bool:
    return "KUBERNETES_SERVICE_HOST" in os.environ


def parse(text: str) -> api.Progress | None:
    """Progress from a metrics page: the step, the total, and an ETA from the mean step time so far."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        key = name.split("{", 1)[0]
        if key in ("kubetune_trainer_step", "kubetune_trainer_total_steps", "kubetune_trainer_step_duration_seconds_sum",
                   "kubetune_trainer_step_duration_seconds_count"):
            values[key] = float(value)
    if "kubetune_trainer_step" not in values:
        return None
    step = int(values["kubetune_trainer_step"])
    total = int(values["kubetune_trainer_total_steps"]) if "kubetune_trainer_total_steps" in values else None
    count = values.get("kubetune_trainer_step_duration_seconds_count", 0)
    eta = None
    if total is not None and count:
        eta = int(values["kubetune_trainer_step_duration_seconds_sum"] / count * max(0, total - step))
    return api.Progress(step=step, total_steps=total, eta_seconds=eta,
                        summary=f"{step}/{total}" if total is not None else str(step))


async def scrape(url: str) -> api.Progress | None:
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.get(url) as response:
            return parse(await response.text()) if response.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None
