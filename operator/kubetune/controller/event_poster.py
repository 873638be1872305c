"""Events about FineTuneJobs, posted in the background: a reconcile never waits for one, and a failed post is
logged, never a failed reconcile. kopf's own poster serves only its handlers' tasks; the periodic reconciles
(controller/ticks.py) run outside them."""

import asyncio
import datetime
import logging
from typing import Any

from kubetune.controller.kube import Kube

COMPONENT = "kubetune"
# The apiserver refuses longer messages.
MAX_MESSAGE_LENGTH = 1024
log = logging.getLogger("kubetune.events")


def event(body: dict[str, Any], type: str, reason: str, message: str, instance: str) -> dict[str, Any]:
    """A core/v1 Event about `body`; the message shortened in the middle when too long."""
    if len(message) > MAX_MESSAGE_LENGTH:
        half = (MAX_MESSAGE_LENGTH - 3) // 2
        message = f"{message[:half]}...{message[-half:]}"
    metadata = body["metadata"]
    now = datetime.datetime.now(datetime.UTC).isoformat()
    return {"apiVersion": "v1", "kind": "Event",
            "metadata": {"namespace": metadata["namespace"], "generateName": f"{metadata['name']}."},
            "involvedObject": {"apiVersion": body["apiVersion"], "kind": body["kind"], "name": metadata["name"],
                               "namespace": metadata["namespace"], "uid": metadata["uid"]},
            "type": type, "reason": reason, "message": message,
            "source": {"component": COMPONENT}, "reportingComponent": COMPONENT, "reportingInstance": instance,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1}


class EventPoster:
    def __init__(self, kube: Kube, instance: str) -> None:
        self.kube = kube
        self.instance = instance
        self._posting: set[asyncio.Task[None]] = set()

    def post(self, body: dict[str, Any], type: str, reason: str, message: str) -> None:
        task = asyncio.create_task(self._post(event(body, type, reason, message, self.instance)))
        self._posting.add(task)
        task.add_done_callback(self._posting.discard)

    async def close(self) -> None:
        """Waits for the Events still being posted."""
        await asyncio.gather(*self._posting, return_exceptions=True)

    async def _post(self, manifest: dict[str, Any]) -> None:
        try:
            await self.kube.post_event(manifest)
        except Exception as error:  # an Event is a courtesy: the status says the same
            log.warning("posting a %s Event about %s/%s failed: %s", manifest["reason"],
                        manifest["metadata"]["namespace"], manifest["involvedObject"]["name"], error)
