"""A live copy of the cluster's nodes, or of every namespace's active pods: listed once, then kept by a watch,
each object slimmed to the fields the operator reads.

Planning a job's pods must count the GPUs that other pods took a moment ago. A fresh list of every pod per
placement was most of what a job's creating reconcile waited for at 1,000 jobs, and most of the operator's
requests; the watch delivers each change once, as it happens."""

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from kubetune.controller.kube import Kube

# A watch is reopened from its last resourceVersion this often, so a silently dropped connection is noticed.
WATCH_SECONDS = 300
# After a failed list or watch, before listing again.
RETRY_SECONDS = 1.0
# The apiserver's answer when the resourceVersion a watch starts from was compacted away: list again.
GONE = 410
log = logging.getLogger("kubetune.mirror")

Slim = Callable[[dict[str, Any]], dict[str, Any]]


class Mirror:
    def __init__(self, kube: Kube, kind: str, slim: Slim) -> None:
        self.kube = kube
        self.kind = kind
        self.slim = slim
        self.objects: dict[str, dict[str, Any]] = {}  # by uid
        # Counts changes, so a reader derives what it needs once per change.
        self.changes = 0
        self._resource_version: str | None = None
        self._first = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def ready(self) -> None:
        """Returns once the first list is in; a failure of that list is raised to the caller, who retries."""
        if self._task is not None:
            return
        async with self._first:
            if self._task is None:
                await self._list()
                self._task = asyncio.create_task(self._follow(), name=f"watch {self.kind}s")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _list(self) -> None:
        items, self._resource_version = await self.kube.listed(self.kind)
        self.objects = {item["metadata"]["uid"]: self.slim(item) for item in items}
        self.changes += 1

    async def _follow(self) -> None:
        while True:
            try:
                if self._resource_version is None:
                    await self._list()
                await self._watch()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # planning goes on with the last copy meanwhile
                log.warning("watching %ss failed, listing them again: %s", self.kind, error)
                self._resource_version = None
                await asyncio.sleep(RETRY_SECONDS)

    async def _watch(self) -> None:
        assert self._resource_version is not None
        async for event in self.kube.watch(self.kind, self._resource_version, WATCH_SECONDS):
            kind, body = event["type"], event["object"]
            if kind == "ERROR":
                if body.get("code") == GONE:
                    self._resource_version = None
                    return
                raise RuntimeError(body.get("message", body))
            self._resource_version = body["metadata"]["resourceVersion"]
            if kind == "BOOKMARK":
                continue
            uid = body["metadata"]["uid"]
            if kind == "DELETED":
                self.objects.pop(uid, None)
            else:
                self.objects[uid] = self.slim(body)
            self.changes += 1


def slim_node(node: dict[str, Any]) -> dict[str, Any]:
    """What catalog.cluster_gpus reads of a node."""
    spec = node.get("spec", {})
    return {"metadata": {"name": node["metadata"]["name"], "labels": node["metadata"].get("labels", {})},
            "spec": {"unschedulable": spec.get("unschedulable"), "taints": spec.get("taints")},
            "status": {"allocatable": node.get("status", {}).get("allocatable", {})}}


def slim_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """What catalog.cluster_gpus (the GPUs a pod holds) and the snapshot (blocked workers, rank 0's IP) read."""
    spec, status = pod.get("spec", {}), pod.get("status", {})
    containers = [{"name": c["name"], "resources": {"limits": c.get("resources", {}).get("limits", {})}}
                  for c in spec.get("containers", [])]
    waiting = [{"name": c["name"], "state": {"waiting": c["state"]["waiting"]}}
               for c in status.get("containerStatuses", []) if c.get("state", {}).get("waiting")]
    return {"metadata": {"name": pod["metadata"]["name"], "namespace": pod["metadata"]["namespace"],
                         "labels": pod["metadata"].get("labels", {})},
            "spec": {"nodeName": spec.get("nodeName"), "containers": containers},
            "status": {"phase": status.get("phase"), "podIP": status.get("podIP"), "containerStatuses": waiting}}
