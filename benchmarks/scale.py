"""The operator at scale on the local control plane: 500 simulated GPU nodes and 1,000 FineTuneJobs created at
once, the operator running as its real command.

    .venv/bin/python benchmarks/scale.py [--jobs 1000] [--profile scale] [--kubeconfig PATH] [--smoke]

Reports the time until every job is planned and its Job exists, reconcile latency (the operator's own
histogram), operator CPU seconds and peak RSS, apiserver requests per job, and the correctness checks: no
duplicate children, no job without a status. Targets (2-core machine): all planned within 120 s, p99
reconcile under 1 s, RSS under 300 MB. docs/benchmarks.md records the figures.

By default it starts its own local control plane with the profile's nodes and stops it at the end;
`--kubeconfig` uses a cluster that is already up instead (the CRD applied, a namespace of its own, deleted
afterwards with its FineTuneJobs). `--smoke` creates a few jobs on the default profile's simulated nodes: it
checks the script and the operator end to end (CI, on the test session's cluster), not the figures.
"""

import argparse
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from kubetune.devcluster import binaries, profile
from kubetune.devcluster.cluster import ClusterError, LocalCluster

ROOT = Path(__file__).resolve().parents[1]
KUBETUNE = str(Path(sys.executable).parent / "kubetune")
NAMESPACE = "scale"
SMOKE_JOBS = 5
# Resources only the operator writes or lists cluster-wide, so their request counts are its own.
OPERATOR_RESOURCES = ("finetunejobs", "configmaps", "services", "jobs", "nodes", "pods", "events")


def finetunejob(index: int) -> dict:
    return {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": f"ft-{index:04d}"},
            "spec": {"model": {"name": "Qwen/Qwen2.5-0.5B"}, "dataset": {"source": "tatsu-lab/alpaca"},
                     "resources": {"maxGPUs": 1}}}


@dataclass(frozen=True)
class RunningCluster:
    """A cluster that is already up (--kubeconfig): the benchmark neither starts nor stops it."""

    kubeconfig: Path

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(binaries.kubectl()), "--kubeconfig", str(self.kubeconfig), *args],
                              input=stdin, capture_output=True, text=True, timeout=timeout, check=False)

    def kubectl_ok(self, *args: str, stdin: str | None = None, timeout: float = 60) -> str:
        result = self.kubectl(*args, stdin=stdin, timeout=timeout)
        if result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def apiserver_metrics(cluster: LocalCluster | RunningCluster) -> list[tuple[str, dict[str, str], float]]:
    """The apiserver's request samples: (metric, labels, value)."""
    text = cluster.kubectl_ok("get", "--raw", "/metrics", timeout=60)
    samples = []
    for line in text.splitlines():
        if line.startswith("apiserver_request_"):
            metric, rest = line.split("{", 1)
            samples.append((metric, dict(re.findall(r'(\w+)="([^"]*)"', rest)), float(line.rsplit(" ", 1)[1])))
    return samples


def apiserver_requests(samples: list[tuple[str, dict[str, str], float]]) -> Counter:
    counts: Counter = Counter()
    for metric, labels, value in samples:
        if metric == "apiserver_request_total" and labels.get("resource") in OPERATOR_RESOURCES:
            counts[(labels["resource"], labels["verb"])] += value
    return counts


def apiserver_write_latency(samples: list[tuple[str, dict[str, str], float]]) -> dict[str, tuple[float, float]]:
    """p50 and p99 seconds the apiserver took to create each child kind (the operator's writes wait on these)."""
    buckets: dict[str, Counter] = {resource: Counter() for resource in ("configmaps", "services", "jobs")}
    for metric, labels, value in samples:
        if metric == "apiserver_request_duration_seconds_bucket" and labels.get("verb") == "POST" \
                and labels.get("resource") in buckets:
            buckets[labels["resource"]][_bound(labels["le"])] += value
    return {resource: (quantile(counts, 0.5), quantile(counts, 0.99)) for resource, counts in buckets.items()}


def process_usage(pid: int) -> tuple[float, int]:
    """CPU seconds (user + system) and peak resident set in bytes of a running process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    peak = next(int(line.split()[1]) * 1024 for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("VmHWM:"))
    return cpu, peak


def _bound(le: str) -> float:
    return float("inf") if le == "+Inf" else float(le)


def histogram_quantile(page: str, metric: str, q: float) -> float:
    return quantile({_bound(le): float(value)
                     for le, value in re.findall(rf'{metric}_bucket{{le="([^"]+)"}} (\S+)', page)}, q)


def quantile(cumulative: dict[float, float], q: float) -> float:
    """The q-quantile of a histogram's cumulative bucket counts by upper bound, as Prometheus interpolates it."""
    buckets = sorted(cumulative.items())
    total = buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= q * total:
            if bound == float("inf"):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (q * total - lower_count) / max(count - lower_count, 1e-9)
        lower_bound, lower_count = bound, count
    return lower_bound


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--profile", default=None, help="the cluster profile to start (default: scale; default "
                        "with --smoke)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for all jobs to be planned")
    parser.add_argument("--kubeconfig", type=Path, default=None, help="use this running cluster instead of "
                        "starting one (it is left running)")
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_JOBS} jobs, the default profile: checks the "
                        "script, not the figures")
    args = parser.parse_args()
    if args.smoke:
        args.jobs, args.timeout = SMOKE_JOBS, min(args.timeout, 300)
    if args.kubeconfig is not None and args.profile is not None:
        parser.error("--profile names the cluster to start; --kubeconfig uses one that is up")
    args.profile = args.profile or ("default" if args.smoke else "scale")
    state = Path(tempfile.mkdtemp(prefix="kubetune-scale-"))
    cluster: LocalCluster | RunningCluster
    if args.kubeconfig is None:
        cluster = LocalCluster("kubetune-scale", state)
        cluster_profile = profile.load(args.profile)
        if args.smoke:
            # The simulated nodes only: the jobs here never go to the real node, which needs root and minutes.
            cluster_profile = cluster_profile.model_copy(update={"real_node": None})
        started = time.monotonic()
        cluster.up(cluster_profile)
        print(f"cluster up in {time.monotonic() - started:.0f} s", file=sys.stderr)
        namespace = NAMESPACE
    else:
        cluster = RunningCluster(args.kubeconfig)
        namespace = f"{NAMESPACE}-{uuid.uuid4().hex[:8]}"
    operator = None
    try:
        nodes = len(json.loads(cluster.kubectl_ok("get", "nodes", "-o", "json", timeout=120))["items"])
        cluster.kubectl_ok("apply", "-f", str(ROOT / "crds"))
        cluster.kubectl_ok("wait", "--for=condition=Established", "crd/finetunejobs.kubetune.io", "--timeout=60s")
        cluster.kubectl_ok("create", "namespace", namespace)
        port = free_port()
        env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig))
        operator = subprocess.Popen([KUBETUNE, "run-operator", f"--metrics-port={port}"], env=env,
                                    stdout=(state / "operator.log").open("w"), stderr=subprocess.STDOUT)
        time.sleep(5)
        cpu_before, rss_at_start = process_usage(operator.pid)
        requests_before = apiserver_requests(apiserver_metrics(cluster))

        manifests = {"apiVersion": "v1", "kind": "List", "items": [finetunejob(i) for i in range(args.jobs)]}
        t0 = time.monotonic()
        cluster.kubectl_ok("create", "-n", namespace, "-f", "-", stdin=json.dumps(manifests), timeout=600)
        created = time.monotonic() - t0
        planned_at = jobs_at = None
        while time.monotonic() - t0 < args.timeout:
            ftjs = json.loads(cluster.kubectl_ok("get", "ftj", "-n", namespace, "-o", "json", timeout=120))["items"]
            planned = sum(1 for f in ftjs if f.get("status", {}).get("plan"))
            jobs = json.loads(cluster.kubectl_ok("get", "jobs", "-n", namespace, "-o", "json", timeout=120))["items"]
            if planned_at is None and planned == args.jobs:
                planned_at = time.monotonic() - t0
            if planned_at is not None and len(jobs) >= args.jobs:
                jobs_at = time.monotonic() - t0
                break
            print(f"  {time.monotonic() - t0:5.0f} s: {planned} planned, {len(jobs)} Jobs", file=sys.stderr)
            time.sleep(2)
        time.sleep(3 if args.smoke else 15)  # let the reconcile timers run over the settled jobs too
        cpu_after, peak_rss = process_usage(operator.pid)
        samples = apiserver_metrics(cluster)
        requests = apiserver_requests(samples) - requests_before
        write_latency = apiserver_write_latency(samples)
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
        reconciles = float(re.search(r"kubetune_reconcile_duration_seconds_count (\S+)", page)[1])

        ftjs = json.loads(cluster.kubectl_ok("get", "ftj", "-n", namespace, "-o", "json", timeout=120))["items"]
        jobs = json.loads(cluster.kubectl_ok("get", "jobs", "-n", namespace, "-o", "json", timeout=120))["items"]
        maps = json.loads(cluster.kubectl_ok("get", "configmaps", "-n", namespace, "-o", "json", timeout=120))["items"]
        owners = Counter(ref["name"] for obj in jobs for ref in obj["metadata"].get("ownerReferences", []))
        map_owners = Counter(ref["name"] for obj in maps for ref in obj["metadata"].get("ownerReferences", []))
        without_status = sum(1 for f in ftjs if not f.get("status", {}).get("phase"))

        where = f"profile '{args.profile}'" if args.kubeconfig is None else f"the cluster of {args.kubeconfig}"
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {where} ({nodes} nodes); "
              f"{args.jobs} FineTuneJobs created in {created:.1f} s\n")
        print("| measure | value | target |")
        print("|---|---:|---|")
        print(f"| all planned | {planned_at:.1f} s | within 120 s |" if planned_at else "| all planned | not reached | |")
        print(f"| all Jobs exist | {jobs_at:.1f} s | |" if jobs_at else "| all Jobs exist | not reached | |")
        for q in (0.5, 0.99):
            print(f"| reconcile p{int(q * 100)} | {histogram_quantile(page, 'kubetune_reconcile_duration_seconds', q) * 1000:.0f} ms"
                  f" | {'under 1 s' if q == 0.99 else ''} |")
        within = float(re.search(r'kubetune_reconcile_duration_seconds_bucket{le="1.0"} (\S+)', page)[1])
        print(f"| reconciles | {reconciles:.0f} ({reconciles - within:.0f} over 1 s) | |")
        for resource, (p50, p99) in write_latency.items():
            print(f"| apiserver POST {resource} p50 / p99 | {p50 * 1000:.0f} / {p99 * 1000:.0f} ms | |")
        print(f"| operator CPU | {cpu_after - cpu_before:.1f} s | |")
        print(f"| operator peak RSS | {peak_rss / 2**20:.0f} MiB ({rss_at_start / 2**20:.0f} MiB idle at start) | "
              "under 300 MB |")
        total = sum(requests.values())
        print(f"| apiserver requests on the operator's resources | {total:.0f} ({total / args.jobs:.1f} per job) | |")
        for (resource, verb), count in sorted(requests.items(), key=lambda item: -item[1])[:8]:
            print(f"|   {verb} {resource} | {count:.0f} ({count / args.jobs:.2f} per job) | |")
        print(f"| FineTuneJobs with more than one Job / ConfigMap | {sum(1 for c in owners.values() if c > 1)} / "
              f"{sum(1 for c in map_owners.values() if c > 1)} | 0 |")
        print(f"| FineTuneJobs without a status | {without_status} | 0 |")
    finally:
        if args.kubeconfig is not None and operator is not None:
            # While the operator runs, so that it removes its finalizers and the namespace can go.
            cluster.kubectl("delete", "ftj", "--all", "-n", namespace, "--timeout=120s", timeout=180)
        if operator is not None:
            operator.terminate()
            operator.wait(timeout=60)
        if args.kubeconfig is None:
            cluster.down()
        else:
            cluster.kubectl("delete", "namespace", namespace, "--wait=false")
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
