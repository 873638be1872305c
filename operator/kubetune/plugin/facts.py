"""What the plugin reads from the cluster, with the operator's own client and in the operator's terms: the GPU
groups and configuration the operator plans with, a FineTuneJob with its Events, and rank 0's measured peak."""

import asyncio
import math
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from kubetune.api import contract
from kubetune.catalog.cluster_gpus import GpuNodeGroup, node_groups, with_autoscaled
from kubetune.config import ConfigError, OperatorConfig, load
from kubetune.controller.kube import ApiError, Kube
from kubetune.resources import names

# The chart's operator Deployment (charts/kubetune/templates/_helpers.tpl, kubetune.selectorLabels).
OPERATOR_SELECTOR = "app.kubernetes.io/name=kubetune,app.kubernetes.io/component=operator"
OPERATOR_CONTAINER = "operator"
PEAK_SERIES = "kubetune_trainer_memory_peak_allocated_bytes"
# A pod that serves nothing (kwok plays it) may leave the API server's proxy dialling for long.
PAGE_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class OperatorSettings:
    config: OperatorConfig
    source: str  # where it came from, for the reader to judge the plan by


def settings_from_deployment(deployment: dict[str, Any]) -> OperatorSettings:
    """The configuration the operator in `deployment` runs with: the chart's values arrive as its container's
    environment (only literal values; the chart sets no others that change a plan) and the watched namespaces
    as its --namespace arguments."""
    meta = deployment["metadata"]
    containers = deployment["spec"]["template"]["spec"]["containers"]
    container = next((c for c in containers if c["name"] == OPERATOR_CONTAINER), containers[0])
    env = {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}
    watched = tuple(a.removeprefix("--namespace=") for a in container.get("args") or [] if a.startswith("--namespace="))
    try:
        config = load(env, namespaces=watched)
    except ConfigError as error:
        raise ConfigError(f"the operator Deployment {meta['namespace']}/{meta['name']}: {error}") from error
    return OperatorSettings(config, f"the operator's configuration from Deployment {meta['namespace']}/{meta['name']}")


async def operator_settings(kube: Kube) -> OperatorSettings:
    try:
        deployments = await kube.deployments(OPERATOR_SELECTOR)
    except ApiError as error:
        if error.status != 403:
            raise
        deployments = []
        missing = "the operator's Deployment is not readable with these credentials"
    else:
        missing = "no operator Deployment found"
    if not deployments:
        return OperatorSettings(OperatorConfig(), f"{missing}: planned with the catalog's GPU prices and no "
                                "autoscaled pools")
    return settings_from_deployment(sorted(deployments, key=lambda d: d["metadata"]["namespace"])[0])


async def gpu_groups(kube: Kube, settings: OperatorSettings) -> list[GpuNodeGroup]:
    """The groups the operator's capacity snapshot holds: nodes, less the GPUs unfinished pods hold, with
    the autoscaled pools."""
    nodes, pods = await asyncio.gather(kube.nodes(), kube.active_pods())
    return with_autoscaled(node_groups(nodes, pods), settings.config.autoscaled_pools)


def peak_from_metrics(text: str) -> int | None:
    """Rank 0's peak allocated memory from its metrics page; None without a finite value."""
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == PEAK_SERIES and math.isfinite(sample.value) and sample.value > 0:
                    return int(sample.value)
    except ValueError:  # not Prometheus text
        return None
    return None


async def live_peak(kube: Kube, ftj: dict[str, Any]) -> int | None:
    """The current attempt's rank 0 peak so far, read through the API server's pod proxy; None when no rank 0
    runs or it serves no metrics."""
    name, namespace = ftj["metadata"]["name"], ftj["metadata"]["namespace"]
    attempt = len((ftj.get("status") or {}).get("attempts", [])) + 1
    selector = f"{names.trainer_selector(name, attempt)},{names.COMPLETION_INDEX_LABEL}=0"
    running = [p for p in await kube.pods(namespace, selector) if p.get("status", {}).get("phase") == "Running"]
    if not running:
        return None
    try:
        page = await asyncio.wait_for(kube.pod_page(namespace, running[0]["metadata"]["name"],
                                                    contract.METRICS_PORT, "metrics"), PAGE_TIMEOUT_SECONDS)
    except (TimeoutError, ApiError):
        return None
    return peak_from_metrics(page) if page is not None else None
