"""The cluster's GPU capacity, derived from live copies of the nodes and the active pods (controller/mirror.py)
and shared by every reconcile.

Planning needs all nodes and every pod that holds GPUs. The copies are kept by watches, so no reconcile waits for
a read but the very first. What is derived from them (GPU node groups, blocked workers, rank 0's IPs) is derived
again when they changed and the last derivation is PLACE_MAX_AGE_SECONDS old for a reconcile about to create a
job's pods, which must count the GPUs other pods took a moment ago (else its pods would hold GPUs while their
peers could not start), and MAX_AGE_SECONDS old otherwise: at 1,000 new jobs, deriving again for each placement
(each one's pods change the copy) took the operator's whole time, 200 s per creating reconcile. Staleness is harmless for planning: the scheduler still places every pod against
live capacity, and a plan on capacity that went away waits in Pending like any other pod."""

import asyncio
import contextlib
import time
from typing import Any

from kubetune.catalog.cluster_gpus import GpuNodeGroup, node_groups, with_autoscaled
from kubetune.config import AutoscaledPool
from kubetune.controller import recovery
from kubetune.controller.kube import Kube
from kubetune.controller.mirror import Mirror, slim_node, slim_pod
from kubetune.resources import names

MAX_AGE_SECONDS = 5.0
PLACE_MAX_AGE_SECONDS = 1.0


class CapacitySnapshot:
    def __init__(self, kube: Kube, autoscaled: tuple[AutoscaledPool, ...] = ()) -> None:
        self.nodes = Mirror(kube, "Node", slim_node)
        self.pods = Mirror(kube, "Pod", slim_pod)
        self.autoscaled = autoscaled
        self._derived_from = (-1, -1)
        self._derived_at = float("-inf")
        self._all: list[GpuNodeGroup] = []
        self._free: list[GpuNodeGroup] = []
        # Changes when the groups do, so callers may cache what they derive from them (plans).
        self.version = 0
        # Only what recovery.blocked reads, of training pods it finds blocked, by (namespace, FineTuneJob, attempt).
        self._blocked: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        # The running rank-0 pod's IP, where progress is read, by (namespace, FineTuneJob, attempt).
        self._rank0: dict[tuple[str, str, str], str] = {}
        self._listing: asyncio.Task[None] | None = None

    def start(self) -> None:
        """List nodes and pods now, not on the first reconcile: at 1,000 new jobs the first ones each waited
        about 0.35 s for those lists. A failure here is the first reconcile's to retry."""
        async def listed() -> None:
            with contextlib.suppress(Exception):
                await self._current()
        self._listing = asyncio.create_task(listed(), name="list nodes and pods")

    async def groups(self, count_pods: bool = True, fresh: bool = False) -> list[GpuNodeGroup]:
        """GPU node groups, with the GPUs that running and pending pods hold taken out unless told not to.
        `fresh`: derived from the copies at most PLACE_MAX_AGE_SECONDS ago."""
        await self._current(fresh)
        return self._free if count_pods else self._all

    async def blocked_workers(self, namespace: str, name: str, attempt: int) -> list[dict[str, Any]]:
        """The attempt's training pods whose containers wait on what will not resolve by itself."""
        await self._current()
        return self._blocked.get((namespace, name, str(attempt)), [])

    async def rank0_ip(self, namespace: str, name: str, attempt: int) -> str | None:
        await self._current()
        return self._rank0.get((namespace, name, str(attempt)))

    async def workers_left(self, namespace: str, name: str) -> bool:
        """Whether a training pod of the FineTuneJob, of any attempt, has not finished yet."""
        await self.pods.ready()
        wanted = names.labels(name, "trainer")
        return any(pod["metadata"]["namespace"] == namespace
                   and all(pod["metadata"]["labels"].get(key) == value for key, value in wanted.items())
                   for pod in self.pods.objects.values())

    async def close(self) -> None:
        if self._listing is not None:
            self._listing.cancel()
            await asyncio.gather(self._listing, return_exceptions=True)
        await self.nodes.close()
        await self.pods.close()

    async def _current(self, fresh: bool = False) -> None:
        await self.nodes.ready()
        await self.pods.ready()
        changes = (self.nodes.changes, self.pods.changes)
        max_age = PLACE_MAX_AGE_SECONDS if fresh else MAX_AGE_SECONDS
        if changes == self._derived_from or time.monotonic() - self._derived_at < max_age:
            return
        nodes, pods = list(self.nodes.objects.values()), list(self.pods.objects.values())
        all_groups = with_autoscaled(node_groups(nodes, []), self.autoscaled)
        free = with_autoscaled(node_groups(nodes, pods), self.autoscaled)
        if (all_groups, free) != (self._all, self._free):
            self._all, self._free = all_groups, free
            self.version += 1
        self._blocked = _blocked_workers(pods)
        self._rank0 = _rank0_ips(pods)
        self._derived_from, self._derived_at = changes, time.monotonic()


def _blocked_workers(pods: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    found: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for pod in pods:
        labels = pod["metadata"].get("labels") or {}
        if labels.get(names.LABEL_COMPONENT) != "trainer" or recovery.blocked([pod]) is None:
            continue
        key = (pod["metadata"]["namespace"], labels.get(names.LABEL_JOB, ""), labels.get(names.LABEL_ATTEMPT, ""))
        found.setdefault(key, []).append({"metadata": {"name": pod["metadata"]["name"]},
                                          "status": {"containerStatuses": pod["status"]["containerStatuses"]}})
    return found


def _rank0_ips(pods: list[dict[str, Any]]) -> dict[tuple[str, str, str], str]:
    found = {}
    for pod in pods:
        labels = pod["metadata"].get("labels") or {}
        ip = pod.get("status", {}).get("podIP")
        if (labels.get(names.LABEL_COMPONENT) == "trainer" and labels.get(names.COMPLETION_INDEX_LABEL) == "0"
                and ip and pod["status"].get("phase") == "Running"):
            found[(pod["metadata"]["namespace"], labels.get(names.LABEL_JOB, ""),
                   labels.get(names.LABEL_ATTEMPT, ""))] = ip
    return found
