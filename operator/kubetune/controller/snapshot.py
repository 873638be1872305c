"""The cluster's GPU capacity, read in the background and shared by every reconcile.

Planning needs all nodes and every pod that holds GPUs. Listing them per FineTuneJob made a burst of new jobs
cost one cluster-wide pod list each; now one read at a time refreshes a shared copy once it is older than
MAX_AGE_SECONDS, and reconciles never wait for it except the very first, and those about to create a job's
pods, which wait for a read no older than PLACE_MAX_AGE_SECONDS (one read serves all that wait): an older one
may count GPUs other pods took since, and the job's pods would hold GPUs while their peers could not start.
Staleness is harmless for planning:
the scheduler still places every pod against live capacity, and a plan on capacity that went away waits in
Pending like any other pod. The same read finds the training pods that cannot start (recovery.blocked), for
which reconciles of workers slow to become ready used to list pods per job."""

import asyncio
import logging
import time
from typing import Any

from kubetune.catalog.cluster_gpus import GpuNodeGroup, node_groups, with_autoscaled
from kubetune.config import AutoscaledPool
from kubetune.controller import recovery
from kubetune.controller.kube import Kube
from kubetune.resources import names

MAX_AGE_SECONDS = 5.0
PLACE_MAX_AGE_SECONDS = 1.0
# Nodes come and go far more slowly than pods, and a list of 500 is the largest read the operator makes.
NODES_MAX_AGE_SECONDS = 30.0
log = logging.getLogger("kubetune.capacity")


class CapacitySnapshot:
    def __init__(self, kube: Kube, autoscaled: tuple[AutoscaledPool, ...] = ()) -> None:
        self.kube = kube
        self.autoscaled = autoscaled
        self._read_at = float("-inf")
        self._all: list[GpuNodeGroup] = []
        self._free: list[GpuNodeGroup] = []
        self.version = 0  # changes with every read, so callers may cache what they derive from it
        self._nodes: list[dict[str, Any]] = []
        self._nodes_read_at = float("-inf")
        # Only what recovery.blocked reads, of training pods it finds blocked, by (namespace, FineTuneJob, attempt).
        self._blocked: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        # The running rank-0 pod's IP, where progress is read, by (namespace, FineTuneJob, attempt).
        self._rank0: dict[tuple[str, str, str], str] = {}
        self._first = asyncio.Lock()
        self._refreshing: asyncio.Task | None = None

    async def groups(self, count_pods: bool = True, fresh: bool = False) -> list[GpuNodeGroup]:
        """GPU node groups, with the GPUs that running and pending pods hold taken out unless told not to.
        `fresh`: from a read no older than PLACE_MAX_AGE_SECONDS, waited for."""
        await self._fresh_enough()
        if fresh and time.monotonic() - self._read_at > PLACE_MAX_AGE_SECONDS:
            await asyncio.shield(self._refresh_in_background())
        return self._free if count_pods else self._all

    async def blocked_workers(self, namespace: str, name: str, attempt: int) -> list[dict[str, Any]]:
        """The attempt's training pods whose containers wait on what will not resolve by itself."""
        await self._fresh_enough()
        return self._blocked.get((namespace, name, str(attempt)), [])

    async def rank0_ip(self, namespace: str, name: str, attempt: int) -> str | None:
        await self._fresh_enough()
        return self._rank0.get((namespace, name, str(attempt)))

    async def _fresh_enough(self) -> None:
        if self._read_at == float("-inf"):
            async with self._first:
                if self._read_at == float("-inf"):
                    await self._refresh()
        elif time.monotonic() - self._read_at > MAX_AGE_SECONDS:
            self._refresh_in_background()

    def _refresh_in_background(self) -> asyncio.Task:
        """The read in flight, or a new one: one read at a time, shared by whoever waits for it."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._refresh_logged())
        return self._refreshing

    async def _refresh(self) -> None:
        if time.monotonic() - self._nodes_read_at > NODES_MAX_AGE_SECONDS:
            self._nodes, self._nodes_read_at = await self.kube.nodes(), time.monotonic()
        nodes, pods = self._nodes, await self.kube.active_pods()
        # Grouped once per read, not per plan: at 500 nodes grouping was 8% of the operator's time.
        self._all = with_autoscaled(node_groups(nodes, []), self.autoscaled)
        self._free = with_autoscaled(node_groups(nodes, pods), self.autoscaled)
        self._blocked = _blocked_workers(pods)
        self._rank0 = _rank0_ips(pods)
        self._read_at = time.monotonic()
        self.version += 1

    async def _refresh_logged(self) -> None:
        try:
            await self._refresh()
        except Exception as error:  # the next call tries again; planning goes on with the last read
            log.warning("reading nodes and pods failed: %s", error)


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
