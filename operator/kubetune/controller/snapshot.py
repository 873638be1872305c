"""The cluster's GPU capacity, read once and shared by every reconcile for a moment.

Planning needs all nodes and every pod that holds GPUs. Listing them per FineTuneJob made a burst of new jobs
cost one cluster-wide pod list each; now concurrent and back-to-back reconciles share one read, at most
MAX_AGE_SECONDS old. Staleness is harmless for planning: the scheduler still places every pod against live
capacity, and a plan on capacity that went away waits in Pending like any other pod."""

import asyncio
import time
from typing import Any

from kubetune.controller.cluster_gpus import GpuNodeGroup, node_groups
from kubetune.controller.kube import Kube

MAX_AGE_SECONDS = 2.0


class CapacitySnapshot:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._lock = asyncio.Lock()
        self._read_at = float("-inf")
        self._nodes: list[dict[str, Any]] = []
        self._pods: list[dict[str, Any]] = []

    async def groups(self, count_pods: bool = True) -> list[GpuNodeGroup]:
        """GPU node groups, with the GPUs that running and pending pods hold taken out unless told not to."""
        async with self._lock:
            if time.monotonic() - self._read_at > MAX_AGE_SECONDS:
                self._nodes = await self.kube.nodes()
                self._pods = await self.kube.active_pods()
                self._read_at = time.monotonic()
            return node_groups(self._nodes, self._pods if count_pods else [])
