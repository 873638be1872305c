"""Training progress for status, read from rank 0's Prometheus endpoint (kubetune_trainer_step and friends) at
the rank-0 pod's IP: the operator reaches pod IPs in-cluster as the local cluster's host does, where the
Service's DNS names would need the cluster's DNS.

Reads run in the background and never hold up a reconcile: each reconcile asks for a fresh read and writes
the last one that arrived. A pod that does not answer (a simulated pod has no server) is asked again after a
growing pause, so a thousand simulated jobs cost a few failed connections a second.
"""

import asyncio
import math
import time
from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from kubetune.api import v1alpha1 as api

TIMEOUT = aiohttp.ClientTimeout(total=3, connect=1)
EVERY_SECONDS = 2.0
MAX_PAUSE_SECONDS = 300.0
# The trainer's series (kubetune.trainer.metrics) that progress is read from, by sample name.
SERIES = ("kubetune_trainer_step", "kubetune_trainer_total_steps", "kubetune_trainer_step_duration_seconds_sum",
          "kubetune_trainer_step_duration_seconds_count")


def parse(text: str) -> api.Progress | None:
    """Progress from a metrics page: the step, the total, and an ETA from the mean step time so far. None for a
    page without the step or one that is not Prometheus text. A value that is not a finite number (NaN, +Inf)
    counts as absent; of several series of one name, the last on the page counts."""
    values: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in SERIES and math.isfinite(sample.value):
                    values[sample.name] = sample.value
    except ValueError:  # the parser's answer to a line that is not Prometheus text
        return None
    if "kubetune_trainer_step" not in values:
        return None
    step = int(values["kubetune_trainer_step"])
    total = int(values["kubetune_trainer_total_steps"]) if "kubetune_trainer_total_steps" in values else None
    count = values.get("kubetune_trainer_step_duration_seconds_count", 0)
    eta = None
    if total is not None and count and "kubetune_trainer_step_duration_seconds_sum" in values:
        eta = int(values["kubetune_trainer_step_duration_seconds_sum"] / count * max(0, total - step))
    return api.Progress(step=step, total_steps=total, eta_seconds=eta,
                        summary=f"{step}/{total}" if total is not None else str(step))


async def scrape(url: str) -> api.Progress | None:
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.get(url) as response:
            return parse(await response.text()) if response.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None


@dataclass
class _Target:
    url: str
    latest: api.Progress | None = None
    next_read: float = 0.0
    failures: int = 0
    reading: asyncio.Task | None = None


class ProgressReader:
    """The newest progress of each running job's attempt, by (namespace, name, attempt)."""

    def __init__(self) -> None:
        self._targets: dict[tuple[str, str, int], _Target] = {}

    def latest(self, key: tuple[str, str, int], url: str) -> api.Progress | None:
        """The last progress read from `url` (None before the first), starting a new read when one is due."""
        target = self._targets.get(key)
        if target is None or target.url != url:
            target = self._targets[key] = _Target(url)
        now = time.monotonic()
        if now >= target.next_read and (target.reading is None or target.reading.done()):
            target.next_read = now + EVERY_SECONDS
            target.reading = asyncio.create_task(self._read(target))
        return target.latest

    def forget(self, key: tuple[str, str, int]) -> None:
        target = self._targets.pop(key, None)
        if target is not None and target.reading is not None:
            target.reading.cancel()

    @staticmethod
    async def _read(target: _Target) -> None:
        try:
            current = await scrape(target.url)
        except Exception:  # a page that does not parse is as good as no answer
            current = None
        if current is None:
            target.failures += 1
            target.next_read = time.monotonic() + min(MAX_PAUSE_SECONDS, EVERY_SECONDS * 2 ** min(target.failures, 8))
            return
        target.failures = 0
        target.latest = current
