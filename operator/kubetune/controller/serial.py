"""One reconcile of a FineTuneJob at a time, each on a view that holds the previous one's writes.

The periodic pass (controller/ticks.py) runs beside kopf's change handlers, and the one reconcile is both:
unguarded, two could plan, post Events or record an attempt twice. A lock per object orders them; but a
reconcile's status patch is applied only after it returns, so the next in line may still hold the object as it
was before that patch. Such a stale view is skipped (the patch's own watch event brings the fresh one, and the
next pass reconciles it), for a short while at most: a write that never shows must not stop the job."""

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from kubetune.controller import metrics as m

Key = tuple[str, str]
# Longer than a status patch takes to come back through the watch, even on a loaded apiserver.
STALE_FOR_AT_MOST_SECONDS = 30.0


class Serial:
    def __init__(self) -> None:
        self._locks: dict[Key, asyncio.Lock] = {}
        self._written: dict[Key, tuple[float, dict[str, Any]]] = {}  # when, and the status fields written

    @asynccontextmanager
    async def turn(self, key: Key) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        if lock.locked():
            m.reconcile_waits.inc()
        async with lock:
            yield

    def stale(self, key: Key, status: dict[str, Any]) -> bool:
        """Whether this view of the status lacks what the previous reconcile wrote."""
        written = self._written.get(key)
        if written is None:
            return False
        at, fields = written
        if time.monotonic() - at > STALE_FOR_AT_MOST_SECONDS or all(status.get(k) == v for k, v in fields.items()):
            del self._written[key]
            return False
        return True

    def wrote(self, key: Key, fields: dict[str, Any]) -> None:
        if fields:
            self._written[key] = (time.monotonic(), fields)

    def forget(self, key: Key) -> None:
        self._locks.pop(key, None)
        self._written.pop(key, None)
