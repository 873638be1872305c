"""The cluster's GPU capacity, read in the background and shared by every reconcile.

Planning needs all nodes and every pod that holds GPUs. Listing them per FineTuneJob made a burst of new jobs
cost one cluster-wide pod list each; now one read at a time refreshes a shared copy once it is older than
MAX_AGE_SECONDS, and reconciles never wait for it except the very first. Staleness is harmless for planning:
the scheduler still places every pod against live capacity, and a plan on capacity that went away waits in
Pending like any other pod."""

import asyncio
import logging
import time
from typing import Any

from kubetune.controller.cluster_gpus import GpuNodeGroup, node_groups
from kubetune.controller.kube import Kube

MAX_AGE_SECONDS = 5.0
log = logging.getLogger("kubetune.capacity")


class CapacitySnapshot:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._read_at = float("-inf")
        self._nodes: list[dict[str, Any]] = []
        self._pods: list[dict[str, Any]] = []
        self._first = asyncio.Lock()
        self._refreshing: asyncio.Task | None = None

    async def groups(self, count_pods: bool = True) -> list[GpuNodeGroup]:
        """GPU node groups, with the GPUs that running and pending pods hold taken out unless told not to."""
        if self._read_at == float("-inf"):
            async with self._first:
                if self._read_at == float("-inf"):
                    await self._refresh()
        elif time.monotonic() - self._read_at > MAX_AGE_SECONDS and (self._refreshing is None or self._refreshing.done()):
            self._refreshing = asyncio.create_task(self._refresh_logged())
        return node_groups(self._nodes, self._pods if count_pods else [])

    async def _refresh(self) -> None:
        nodes, pods = await asyncio.gather(self.kube.nodes(), self.kube.active_pods())
        self._nodes, self._pods, self._read_at = nodes, pods, time.monotonic()

    async def _refresh_logged(self) -> None:
        try:
            await self._refresh()
        except Exception as error:  # the next call tries again; planning goes on with the last read
            log.warning("reading nodes and pods failed: %s", error)
