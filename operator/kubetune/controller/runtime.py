"""Running the operator: kopf with kubetune's handlers and configuration, alone or as the elected leader of
several replicas."""

import asyncio
from typing import Any

import kopf

from kubetune.config import OperatorConfig
from kubetune.controller import handlers, metrics
from kubetune.controller.kube import Kube
from kubetune.controller.leader import Lease


def run(config: OperatorConfig) -> bool:
    """Until the operator stops; False when it lost the leader election Lease (the pod then restarts and waits
    as a standby)."""
    kopf.configure(verbose=False)  # kopf's log format and INFO level, as `kopf run` sets them
    if config.metrics_port is not None:
        metrics.serve(config.metrics_port)
    registry = kopf.OperatorRegistry()
    handlers.register(registry)
    options: dict[str, Any] = {"registry": registry, "memo": kopf.Memo(config=config), "standalone": True,
                               "clusterwide": not config.namespaces, "namespaces": list(config.namespaces),
                               "liveness_endpoint": config.liveness_endpoint}
    if config.leader_election_namespace is None:
        kopf.run(**options)
        return True
    return asyncio.run(_lead(config, config.leader_election_namespace, options))


async def _lead(config: OperatorConfig, namespace: str, options: dict[str, Any]) -> bool:
    """Run kopf while this replica holds the Lease; True after a clean shutdown, which hands the Lease over."""
    kube = await Kube.connect()
    lease = Lease(kube, namespace, config.lease_name, config.identity)
    try:
        await lease.acquire()
        lost = asyncio.Event()
        keeper = asyncio.create_task(lease.keep(lost))
        try:
            await kopf.operator(**options, stop_flag=lost)
        finally:
            keeper.cancel()
        if not lost.is_set():
            await lease.release()
        return not lost.is_set()
    finally:
        await kube.close()
