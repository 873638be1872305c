"""Every combination of chart values the tests install or render, as helm arguments: each is linted
(tests/unit/test_chart_render.py) and validated by the real apiserver (tests/integration/test_chart.py)."""

VALUES: dict[str, tuple[str, ...]] = {
    "defaults": (),
    "no-crds": ("--set", "crds.enabled=false"),
    "namespaced": ("--set", "operator.watchNamespaces={team-a,team-b}"),
    "standbys": ("--set", "operator.replicas=2"),
    "dashboards": ("--set", "grafana.dashboards.enabled=true"),
    "monitoring": ("--set", "monitoring.serviceMonitor.enabled=true", "--set", "monitoring.podMonitor.enabled=true",
                   "--set", "monitoring.prometheusRule.enabled=true", "--set", "monitoring.labels.release=prom"),
    "namespaced-monitoring": ("--set", "monitoring.podMonitor.enabled=true",
                              "--set", "operator.watchNamespaces={team-a,team-b}"),
    "prices": ("--set-json", 'operator.gpuPrices={"L4-24GB": 0.45}'),
}

# The namespaces the combinations name, which must exist for the apiserver to take their Roles.
NAMESPACES = ("team-a", "team-b")
