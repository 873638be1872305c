"""Leader election on a coordination.k8s.io Lease, so that of several operator replicas exactly one reconciles.

The rules are client-go's: a replica takes the Lease when it is free or its holder has not renewed it within
its duration, renews it while leading, and gives up leading (the process exits, its pod restarts as a standby)
the moment a renewal has not succeeded for a whole lease duration, before anyone else may take it over. Writes
carry the resourceVersion they read, so two replicas racing for a free Lease cannot both win."""

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from kubetune.controller import clock
from kubetune.controller.kube import Kube

log = logging.getLogger("kubetune.leader")
LEASE_SECONDS = 15
RENEW_SECONDS = 5


class Lease:
    def __init__(self, kube: Kube, namespace: str, name: str, identity: str) -> None:
        self.kube, self.namespace, self.name, self.identity = kube, namespace, name, identity

    async def try_hold(self) -> bool:
        """Take or renew the Lease; True when this replica holds it afterwards."""
        current = await self.kube.read(self.namespace, "Lease", self.name)
        now = datetime.now(UTC)
        spec: dict[str, Any] = (current or {}).get("spec", {})
        holder = spec.get("holderIdentity")
        if current is not None and holder and holder != self.identity:
            renewed = clock.parse(spec["renewTime"]) if spec.get("renewTime") else None
            duration = timedelta(seconds=spec.get("leaseDurationSeconds", LEASE_SECONDS))
            if renewed is not None and renewed + duration > now:
                return False
        taking_over = holder != self.identity
        lease = current or {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                            "metadata": {"name": self.name, "namespace": self.namespace}}
        lease["spec"] = {
            "holderIdentity": self.identity, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": clock.micro_time(now),
            "acquireTime": clock.micro_time(now) if taking_over else spec.get("acquireTime", clock.micro_time(now)),
            "leaseTransitions": spec.get("leaseTransitions", 0) + (1 if taking_over and current else 0),
        }
        if not await self.kube.write_lease(self.namespace, lease):
            return False
        if taking_over:
            log.info("%s now leads (Lease %s/%s)", self.identity, self.namespace, self.name)
        return True

    async def acquire(self) -> None:
        """Wait as a standby until this replica leads."""
        waiting_logged = False
        while not await self.try_hold():
            if not waiting_logged:
                log.info("%s is a standby: another replica holds Lease %s/%s", self.identity, self.namespace, self.name)
                waiting_logged = True
            await asyncio.sleep(RENEW_SECONDS)

    async def keep(self, lost: asyncio.Event) -> None:
        """Renew until cancelled; set `lost` once no renewal has succeeded for a lease duration."""
        last = datetime.now(UTC)
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            try:
                if not await self.try_hold():
                    log.error("%s lost Lease %s/%s to another replica; stopping", self.identity, self.namespace,
                              self.name)
                    lost.set()
                    return
                last = datetime.now(UTC)
            except Exception as error:  # the apiserver away: keep trying while the lease is still ours
                log.warning("renewing Lease %s/%s failed: %s", self.namespace, self.name, error)
                if datetime.now(UTC) - last >= timedelta(seconds=LEASE_SECONDS - RENEW_SECONDS):
                    log.error("%s could not renew Lease %s/%s in time; stopping", self.identity, self.namespace,
                              self.name)
                    lost.set()
                    return

    async def release(self) -> None:
        """Hand the Lease over at once on a clean shutdown, instead of making the standby wait it out."""
        current = await self.kube.read(self.namespace, "Lease", self.name)
        if current is not None and current.get("spec", {}).get("holderIdentity") == self.identity:
            current["spec"]["holderIdentity"] = None
            current["spec"]["renewTime"] = None
            await self.kube.write_lease(self.namespace, current)
            log.info("%s released Lease %s/%s", self.identity, self.namespace, self.name)
