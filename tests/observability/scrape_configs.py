"""Scrape jobs as Prometheus Operator writes them, for the real Prometheus the tests start.

The chart's PodMonitor is rendered by Helm and turned into the scrape job Prometheus Operator generates for it
(prometheus-operator's pkg/prometheus/promcfg.go, generatePodMonitorConfig): drop pods that ended, keep the pods
its selector matches, label each target with its pod's namespace, container and pod, name the job
`<namespace>/<name>`, then the monitor's own relabelings, scraped with its honorLabels (at the tests' interval,
not the monitor's). A PodMonitor field this does not translate fails here rather than being dropped. Only discovery is stood in for: each target carries
the `__meta_kubernetes_*` labels Prometheus' Kubernetes discovery (role pod) gives a container port, taken from
a pod object as the apiserver returns it, so the relabelings and honor_labels run in the real Prometheus as in
a cluster.

DCGM exporter is scraped as the GPU Operator's ServiceMonitor has it (assets/state-dcgm-exporter: port
gpu-metrics of Service nvidia-dcgm-exporter, jobLabel app; `dcgmExporter.serviceMonitor.honorLabels` false by
default): its targets carry the labels Prometheus Operator gives a ServiceMonitor's endpoint, the exporter's
own namespace, service, pod, container and endpoint."""

import re
import subprocess
from collections.abc import Callable
from typing import Any

import yaml

from kubetune.devcluster import binaries
from tests.observability.rendering import CHART, RELEASE

RELEASE_NAMESPACE = "kubetune-system"
# What the GPU Operator's dcgm-exporter pods are, as Prometheus Operator labels their targets.
DCGM_EXPORTER_TARGET = {"namespace": "gpu-operator", "service": "nvidia-dcgm-exporter", "job": "nvidia-dcgm-exporter",
                        "pod": "nvidia-dcgm-exporter-x7k2p", "container": "nvidia-dcgm-exporter",
                        "endpoint": "gpu-metrics"}
_ENDPOINT_FIELDS = {"interval", "honorLabels", "relabelings"}
_RELABEL_KEYS = {"sourceLabels": "source_labels", "targetLabel": "target_label", "regex": "regex", "action": "action",
                 "replacement": "replacement", "separator": "separator", "modulus": "modulus"}


def chart_pod_monitor(*sets: str) -> dict[str, Any]:
    rendered = subprocess.run(
        [str(binaries.built("helm")), "template", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE,
         "--set", "monitoring.podMonitor.enabled=true", *[f"--set={s}" for s in sets],
         "--show-only", "templates/podmonitor.yaml"], capture_output=True, text=True, check=True).stdout
    return yaml.safe_load(rendered)


def _label_name(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


Address = Callable[[str, int], str]


def pod_targets(pod: dict[str, Any], address: Address | None = None) -> list[dict[str, Any]]:
    """One target per container port of `pod`, labelled as Kubernetes discovery labels it. `address` maps a
    pod's name and port number to where that port is really served, for a trainer run beside the cluster
    rather than in the pod; without it the target is the pod's IP and port, as discovery has it."""
    meta = pod["metadata"]
    common = {"__meta_kubernetes_namespace": meta["namespace"], "__meta_kubernetes_pod_name": meta["name"],
              "__meta_kubernetes_pod_phase": pod.get("status", {}).get("phase", "Pending")}
    for key, value in meta.get("labels", {}).items():
        common[f"__meta_kubernetes_pod_label_{_label_name(key)}"] = value
        common[f"__meta_kubernetes_pod_labelpresent_{_label_name(key)}"] = "true"
    targets = []
    for container in pod["spec"]["containers"]:
        for port in container.get("ports", []):
            number = port["containerPort"]
            labels = common | {"__meta_kubernetes_pod_container_name": container["name"],
                               "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                               "__meta_kubernetes_pod_container_port_number": str(number)}
            where = address(meta["name"], number) if address else f"{pod['status']['podIP']}:{number}"
            targets.append({"targets": [where], "labels": labels})
    return targets


def _namespaces_kept(selector: dict[str, Any]) -> Callable[[str], bool]:
    if selector.get("any"):
        return lambda _: True
    names = set(selector["matchNames"])
    return lambda namespace: namespace in names


def pod_monitor_job(monitor: dict[str, Any], pods: list[dict[str, Any]], address: Address | None = None
                    ) -> dict[str, Any]:
    """The scrape job Prometheus Operator generates for the PodMonitor's one endpoint, over these pods (those
    in namespaces its namespaceSelector leaves out are not discovered)."""
    spec = monitor["spec"]
    assert set(spec) == {"selector", "namespaceSelector", "podMetricsEndpoints"}, set(spec)
    assert set(spec["selector"]) == {"matchLabels"}, spec["selector"]
    [endpoint] = spec["podMetricsEndpoints"]
    assert set(endpoint) <= _ENDPOINT_FIELDS, set(endpoint) - _ENDPOINT_FIELDS
    relabel: list[dict[str, Any]] = [
        {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"},
        {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"},
    ]
    for key, value in sorted(spec["selector"]["matchLabels"].items()):
        relabel.append({"action": "keep", "regex": f"({value});true",
                        "source_labels": [f"__meta_kubernetes_pod_label_{_label_name(key)}",
                                          f"__meta_kubernetes_pod_labelpresent_{_label_name(key)}"]})
    relabel += [{"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                {"target_label": "job", "replacement": f"{monitor['metadata']['namespace']}/{monitor['metadata']['name']}"}]
    for rule in endpoint.get("relabelings", []):
        assert set(rule) <= set(_RELABEL_KEYS), rule
        relabel.append({_RELABEL_KEYS[key]: value for key, value in rule.items()})
    discovered = _namespaces_kept(spec["namespaceSelector"])
    targets = [t for pod in pods if discovered(pod["metadata"]["namespace"]) for t in pod_targets(pod, address)]
    return {"job_name": f"podMonitor/{monitor['metadata']['namespace']}/{monitor['metadata']['name']}/0",
            "honor_labels": endpoint.get("honorLabels", False), "static_configs": targets, "relabel_configs": relabel}


def dcgm_exporter_job(address: str, honor_labels: bool) -> dict[str, Any]:
    """The GPU Operator's dcgm-exporter ServiceMonitor's scrape job, with honorLabels as given."""
    return {"job_name": f"serviceMonitor/gpu-operator/nvidia-dcgm-exporter/0/{'honor' if honor_labels else 'default'}",
            "honor_labels": honor_labels, "static_configs": [{"targets": [address], "labels": DCGM_EXPORTER_TARGET}]}


def static_job(name: str, targets: list[str]) -> dict[str, Any]:
    """A job scraped as the chart's ServiceMonitor scrapes the operator: its exposed labels honoured."""
    return {"job_name": name, "honor_labels": True, "static_configs": [{"targets": targets}]}
