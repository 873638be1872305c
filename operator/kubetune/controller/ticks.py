"""The periodic reconcile of every unfinished FineTuneJob: one loop for the operator, not a kopf timer per object.

A kopf timer keeps its object's whole latest body (managedFields, kopf's copy of the last handled spec and all)
for as long as it runs, and needs a finalizer on the object. At 5,000 waiting jobs those bodies were most of the
operator's memory, and adding and removing the finalizer two of its writes per job. The loop reads each job from
a kopf index that holds only what reconciling reads."""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

# Reconciles of one pass run side by side, this many at a time: most are no-ops of a millisecond; the few that
# wait on the apiserver do not hold up the rest.
CONCURRENCY = 16
log = logging.getLogger("kubetune.ticks")

Body = dict[str, Any]


class Ticks:
    def __init__(self, interval: float, jobs: Callable[[], Iterable[Body]],
                 reconcile: Callable[[Body], Awaitable[None]]) -> None:
        self.interval = interval
        self.jobs = jobs
        self.reconcile = reconcile
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="periodic reconciles")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.once()

    async def once(self) -> None:
        """One reconcile of each job, from the bodies as they are at the pass's start."""
        slots = asyncio.Semaphore(CONCURRENCY)

        async def one(body: Body) -> None:
            async with slots:
                try:
                    await self.reconcile(body)
                except Exception:  # the next pass tries again; the reconcile counted the error
                    log.exception("reconciling %s/%s failed", body["metadata"]["namespace"], body["metadata"]["name"])

        await asyncio.gather(*(one(body) for body in list(self.jobs())))
