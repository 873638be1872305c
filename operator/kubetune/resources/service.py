"""The headless Service the workers rendezvous through and expose their metrics on."""

from typing import Any

from kubetune.api import contract
from kubetune.resources.names import labels, names


def service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": names(name)["service"], "labels": labels(name, "workers")},
        "spec": {
            "clusterIP": "None",
            # Rendezvous happens before pods are ready.
            "publishNotReadyAddresses": True,
            "selector": labels(name, "trainer"),
            "ports": [{"name": "rendezvous", "port": contract.RENDEZVOUS_PORT},
                      {"name": "metrics", "port": contract.METRICS_PORT}],
        },
    }
