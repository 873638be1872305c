"""The live copy of nodes or pods: a watch's events applied in order, and a new list when the apiserver no
longer has the resourceVersion the watch started from (or the watch fails)."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from kubetune.controller import mirror
from kubetune.controller.mirror import Mirror, slim_pod


def pod(uid: str, version: str, phase: str = "Running", gpus: int = 1) -> dict[str, Any]:
    return {"metadata": {"name": f"p-{uid}", "namespace": "ns", "uid": uid, "resourceVersion": version,
                         "labels": {"app": "x"}, "annotations": {"big": "x" * 1000}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i",
                                                        "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]},
            "status": {"phase": phase, "podIP": "10.0.0.1",
                       "containerStatuses": [{"name": "c", "state": {"running": {}}}]}}


class ScriptedKube:
    """Answers lists and watches from a script: each list returns the next listing, each watch streams the next
    batch of events (an exception in a batch is raised there)."""

    def __init__(self, listings: list[tuple[list[dict[str, Any]], str]], watches: list[list[Any]]) -> None:
        self.listings, self.watches = listings, watches
        self.lists: list[str] = []
        self.watched_from: list[str] = []
        self.done = asyncio.Event()

    async def listed(self, kind: str) -> tuple[list[dict[str, Any]], str]:
        items, version = self.listings.pop(0)
        self.lists.append(version)
        return items, version

    async def watch(self, kind: str, resource_version: str, seconds: int) -> AsyncIterator[dict[str, Any]]:
        self.watched_from.append(resource_version)
        if not self.watches:
            self.done.set()
            await asyncio.Event().wait()  # a quiet watch
        for event in self.watches.pop(0):
            if isinstance(event, Exception):
                raise event
            yield event


def test_events_are_applied_and_a_gone_version_or_a_broken_watch_lists_again(monkeypatch) -> None:
    monkeypatch.setattr(mirror, "RETRY_SECONDS", 0.0)
    kube = ScriptedKube(
        listings=[([pod("a", "1")], "10"), ([pod("b", "30")], "30"), ([pod("b", "40"), pod("c", "40")], "40")],
        watches=[[{"type": "ADDED", "object": pod("b", "11")},
                  {"type": "MODIFIED", "object": pod("a", "12", phase="Pending")},
                  {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "13"}}},
                  {"type": "DELETED", "object": pod("a", "14")}],
                 [{"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}}],
                 [ConnectionResetError("the apiserver went away")]])

    async def run() -> tuple[dict[str, Any], int]:
        copy = Mirror(kube, "Pod", slim_pod)  # type: ignore[arg-type]  # only listed/watch are called
        await copy.ready()
        assert set(copy.objects) == {"a"}
        await asyncio.wait_for(kube.done.wait(), 5)
        await copy.close()
        return copy.objects, copy.changes

    objects, changes = asyncio.run(run())
    # The first watch goes on from the list's version; after a bookmark and a delete, from the last event's;
    # 410 Gone lists again, and so does a broken connection.
    assert kube.watched_from == ["10", "14", "30", "40"]
    assert kube.lists == ["10", "30", "40"]
    assert set(objects) == {"b", "c"}
    assert changes == 1 + 3 + 1 + 1  # three lists, three object events (the bookmark is not a change)


def test_a_slim_pod_keeps_what_capacity_and_recovery_read_and_nothing_else() -> None:
    waiting = pod("a", "1")
    waiting["status"]["containerStatuses"] = [
        {"name": "c", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}}}]
    slim = slim_pod(waiting)
    assert slim == {"metadata": {"name": "p-a", "namespace": "ns", "labels": {"app": "x"}},
                    "spec": {"nodeName": "n1", "containers": [{"name": "c",
                                                               "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
                    "status": {"phase": "Running", "podIP": "10.0.0.1", "containerStatuses": [
                        {"name": "c", "state": {"waiting": {"reason": "ImagePullBackOff",
                                                            "message": "no such image"}}}]}}
