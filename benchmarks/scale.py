"""The operator at scale on the local control plane: 500 simulated GPU nodes and 1,000 FineTuneJobs created at
once, the operator running as its real command.

    .venv/bin/python benchmarks/scale.py [--jobs 1000] [--specs varied|identical] [--seed 0] [--profile scale]
                                         [--kubeconfig PATH] [--out PATH] [--smoke]

The specs are a seeded mix of catalog models, sequence lengths, methods, GPU-type limits and pins (`varied`,
what a fleet submits), or one spec repeated (`identical`: the plan cache then plans about once per capacity
read). Reports the time until every job is settled (planned with its Job created, planned and waiting for
free GPUs, or refused; each job's settling change stamped as a watch delivers it) and each job's own time from
its create to settled, exact wall times of the reconciles that changed something (planned, created children,
observed a change) apart from the no-op periodic ones (from the operator's `--log-reconcile-timings` lines),
operator CPU seconds and peak RSS, apiserver requests per job, and the correctness checks: no duplicate
children, no job without a status. Targets (2-core machine): all settled within 10 s after the last create,
p99 of working reconciles under 1 s, RSS under 300 MB. The raw output (each job's outcome, every reconcile's
time) is saved as JSON (`--out`, default benchmarks/results/scale-<specs>-<jobs>.json) next to the table in
docs/benchmarks.md.

By default it starts its own local control plane with the profile's nodes and stops it at the end;
`--kubeconfig` uses a cluster that is already up instead (the CRD applied, a namespace of its own, deleted
afterwards with its FineTuneJobs). `--smoke` creates a few jobs on the default profile's simulated nodes, raw
output in a temporary folder: it checks the script and the operator end to end (CI, on the test session's
cluster), not the figures.
"""

import argparse
import json
import math
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from kubetune.devcluster import binaries, profile
from kubetune.devcluster.cluster import ClusterError, LocalCluster

ROOT = Path(__file__).resolve().parents[1]
KUBETUNE = str(Path(sys.executable).parent / "kubetune")
NAMESPACE = "scale"
SMOKE_JOBS = 5
# Resources the operator reads or writes; the requests counted on them are everyone's (the Job controller,
# the scheduler and kwok write pods and Jobs).
OPERATOR_RESOURCES = ("finetunejobs", "configmaps", "services", "jobs", "nodes", "pods", "events")
# Requests only the operator makes (besides its Events): kubectl creates the FineTuneJobs, and nothing else
# writes them or creates the children.
OPERATOR_WRITES = (("finetunejobs", "PATCH"), ("finetunejobs/status", "PATCH"), ("configmaps", "POST"),
                   ("configmaps", "DELETE"), ("services", "POST"), ("jobs", "POST"), ("jobs", "PATCH"),
                   ("jobs", "DELETE"))


# What a fleet submits, weighted towards the small and mid-sized models most fine-tuning runs use.
MODELS = {"Qwen/Qwen2.5-0.5B": 4, "Qwen/Qwen2.5-1.5B": 3, "Qwen/Qwen2.5-3B": 3, "Qwen/Qwen2.5-7B": 3,
          "Qwen/Qwen2.5-14B": 2, "Qwen/Qwen2.5-32B": 1, "meta-llama/Llama-3.2-1B": 3, "meta-llama/Llama-3.2-3B": 3,
          "meta-llama/Llama-3.1-8B": 4, "meta-llama/Llama-3.1-70B": 1, "mistralai/Mistral-7B-v0.1": 2,
          "Qwen/Qwen3-8B": 2, "google/gemma-7b": 1, "microsoft/Phi-3-mini-4k-instruct": 2}
SEQ_LENS = (512, 1024, 2048, 4096, 8192)
METHODS = ("Auto", "Auto", "LoRA", "Full")
GPU_LIMITS = (None, None, ["H100-SXM-80GB"], ["A100-SXM4-80GB"])
MAX_GPUS = (1, 1, 2, 4, 8)
REFUSED_PHASES = ("Failed", "Unschedulable")


def identical(index: int, rng: random.Random) -> dict:
    return {"model": {"name": "Qwen/Qwen2.5-0.5B"}, "dataset": {"source": "tatsu-lab/alpaca"},
            "resources": {"maxGPUs": 1}}


def varied(index: int, rng: random.Random) -> dict:
    """One spec of the seeded mix: a model, a length, a method hint, a GPU-type limit, and one job in five pins
    a ZeRO stage or its GPU count."""
    spec: dict = {"model": {"name": rng.choices(list(MODELS), weights=list(MODELS.values()))[0]},
                  "dataset": {"source": "tatsu-lab/alpaca"}, "training": {"seqLen": rng.choice(SEQ_LENS)},
                  "resources": {"maxGPUs": rng.choice(MAX_GPUS)}}
    method: dict = {} if (kind := rng.choice(METHODS)) == "Auto" else {"type": kind}
    if (types := rng.choice(GPU_LIMITS)) is not None:
        spec["resources"]["gpuTypes"] = types
    pin = rng.random()
    if pin < 0.1:
        method["zeroStage"] = rng.choice((2, 3))
    elif pin < 0.2:
        spec["resources"]["gpus"] = spec["resources"]["maxGPUs"]
    if method:
        spec["method"] = method
    return spec


SPECS = {"varied": varied, "identical": identical}


def finetunejob(index: int, spec: dict) -> dict:
    return {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": f"ft-{index:04d}"},
            "spec": spec}


# One line per watch event, what `settled` reads: kubectl keeps up with a thousand jobs' events printing these,
# where printing whole objects fell behind until the apiserver closed the watch.
WATCHED_FIELDS = {
    "finetunejobs": '{.metadata.name} {.status.phase} {.status.plan.gpuType} '
                    '{.status.conditions[?(@.type=="Running")].reason}{"\\n"}',
    "jobs": '{.metadata.ownerReferences[0].name}{"\\n"}',
}


class Settling:
    """When each FineTuneJob settled, from watches of the namespace's FineTuneJobs and Jobs: a job settles when
    the change that settles it arrives (its plan in status with its Job created, waiting for free GPUs, or a
    refusal), stamped on arrival. Polling instead counted up to one poll late, and each poll LISTed 1,000
    FineTuneJobs and Jobs from the apiserver it was measuring. A watch that ends is started again (it lists
    what exists, stamped when that arrives: later, never earlier, than the change); `restarts` counts them."""

    def __init__(self, cluster: "LocalCluster | RunningCluster", namespace: str, t0: float) -> None:
        self.t0 = t0
        self.settled: dict[str, tuple[float, str]] = {}  # name -> (seconds after t0, outcome)
        self.added: dict[str, float] = {}  # name -> seconds after t0 when its creation arrived
        self.restarts = 0
        self._latest: dict[str, tuple[str, str, str]] = {}  # name -> (phase, plan's GPU type, Running's reason)
        self._with_job: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = False
        self._kubectl = [str(binaries.kubectl()), "--kubeconfig", str(cluster.kubeconfig), "get", "-n", namespace,
                         "--watch"]
        self._watches: dict[str, subprocess.Popen] = {}
        for kind, handle in (("finetunejobs", self._finetunejob), ("jobs", self._job)):
            threading.Thread(target=self._follow, args=(kind, handle), daemon=True).start()

    def _follow(self, kind: str, handle) -> None:
        while True:
            with self._lock:  # so that stop() cannot miss a watch started as it runs
                if self._stopping:
                    return
                # Its errors go to the benchmark's: why a watch ended shows there.
                watch = subprocess.Popen([*self._kubectl, kind, "-o", f"jsonpath={WATCHED_FIELDS[kind]}"],
                                         stdout=subprocess.PIPE, text=True)
                self._watches[kind] = watch
            assert watch.stdout is not None
            for line in watch.stdout:
                arrived = time.monotonic() - self.t0
                with self._lock:
                    handle(line.rstrip("\n").split(" "), arrived)
            watch.wait()
            self.restarts += not self._stopping

    def _settle(self, name: str, arrived: float) -> None:
        if name in self.settled or name not in self._latest:
            return
        phase, gpu_type, running = self._latest[name]
        if phase in REFUSED_PHASES:
            self.settled[name] = (arrived, "refused")
        elif gpu_type and name in self._with_job:
            self.settled[name] = (arrived, "created")
        elif gpu_type and running == "WaitingForCapacity":
            self.settled[name] = (arrived, "waiting for GPUs")

    def _finetunejob(self, fields: list[str], arrived: float) -> None:
        name, phase, gpu_type, running = (fields + ["", "", ""])[:4]
        if not name:  # kubectl prints an empty line for the empty list a watch starts from
            return
        self.added.setdefault(name, arrived)
        self._latest[name] = (phase, gpu_type, running)
        self._settle(name, arrived)

    def _job(self, fields: list[str], arrived: float) -> None:
        if fields[0]:
            self._with_job.add(fields[0])
            self._settle(fields[0], arrived)

    def count(self) -> int:
        with self._lock:
            return len(self.settled)

    def unsettled(self) -> list[str]:
        """The jobs not settled, each with its phase, plan, Running reason and whether its Job was seen."""
        with self._lock:
            return [f"{name}: {latest}, Job {'seen' if name in self._with_job else 'not seen'}"
                    for name, latest in sorted(self._latest.items()) if name not in self.settled]

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
        for watch in self._watches.values():
            watch.terminate()
            watch.wait(timeout=30)


def _seconds(settling: Settling, name: str) -> list[float]:
    """When the job's creation and its settling change arrived, seconds after the first create was sent."""
    return [round(settling.added[name], 2) if name in settling.added else None,
            round(settling.settled[name][0], 2) if name in settling.settled else None]


RECONCILE_LINE = re.compile(r"reconciled (\S+) in ([\d.]+) ms: (changed|unchanged)")


def reconcile_timings(log: str) -> list[tuple[str, float, bool]]:
    """(namespace/name, milliseconds, changed) of every reconcile the operator logged."""
    return [(found[1], float(found[2]), found[3] == "changed") for found in RECONCILE_LINE.finditer(log)]


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank q-quantile: a value that was measured, not interpolated."""
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)] if ordered else float("nan")


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
            subresource = f"/{labels['subresource']}" if labels.get("subresource") else ""
            counts[(labels["resource"] + subresource, labels["verb"])] += value
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
    parser.add_argument("--specs", choices=tuple(SPECS), default="varied")
    parser.add_argument("--seed", type=int, default=0, help="of the varied mix")
    parser.add_argument("--profile", default=None, help="the cluster profile to start (default: scale; default "
                        "with --smoke)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for all jobs to settle")
    parser.add_argument("--kubeconfig", type=Path, default=None, help="use this running cluster instead of "
                        "starting one (it is left running)")
    parser.add_argument("--out", type=Path, default=None, help="the raw output's JSON (default: "
                        "benchmarks/results/scale-<specs>-<jobs>.json)")
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_JOBS} jobs, the default profile: checks the "
                        "script, not the figures")
    args = parser.parse_args()
    if args.smoke:
        args.jobs, args.timeout = SMOKE_JOBS, min(args.timeout, 300)
    if args.kubeconfig is not None and args.profile is not None:
        parser.error("--profile names the cluster to start; --kubeconfig uses one that is up")
    args.profile = args.profile or ("default" if args.smoke else "scale")
    state = Path(tempfile.mkdtemp(prefix="kubetune-scale-"))
    out = args.out or (Path(tempfile.mkdtemp(prefix="kubetune-scale-raw-")) / "scale.json" if args.smoke else
                       ROOT / "benchmarks" / "results" / f"scale-{args.specs}-{args.jobs}.json")
    rng = random.Random(args.seed)
    specs = [SPECS[args.specs](index, rng) for index in range(args.jobs)]
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
        env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig))
        operator_log = state / "operator.log"
        operator = subprocess.Popen([KUBETUNE, "run-operator", "--log-reconcile-timings"],
                                    env=env, stdout=operator_log.open("w"), stderr=subprocess.STDOUT)
        time.sleep(5)
        cpu_before, rss_at_start = process_usage(operator.pid)
        requests_before = apiserver_requests(apiserver_metrics(cluster))

        manifests = {"apiVersion": "v1", "kind": "List",
                     "items": [finetunejob(i, spec) for i, spec in enumerate(specs)]}
        t0 = time.monotonic()
        settling = Settling(cluster, namespace, t0)
        cluster.kubectl_ok("create", "-n", namespace, "-f", "-", stdin=json.dumps(manifests), timeout=1800)
        created = time.monotonic() - t0
        shown = 0.0
        while time.monotonic() - t0 < args.timeout and settling.count() < args.jobs:
            if time.monotonic() - shown > 15:
                print(f"  {time.monotonic() - t0:5.0f} s: {settling.count()} settled", file=sys.stderr)
                shown = time.monotonic()
            time.sleep(0.2)
        settling.stop()
        for name in settling.unsettled()[:5]:
            print(f"  not settled: {name}", file=sys.stderr)
        settled_at = max(at for at, _ in settling.settled.values()) if settling.count() == args.jobs else None
        outcomes: dict[str, str | None] = {name: where for name, (_, where) in settling.settled.items()}
        # Each job's own wait: from its creation's arrival to its settling change's.
        waits = [at - settling.added[name] for name, (at, _) in settling.settled.items() if name in settling.added]
        time.sleep(3 if args.smoke else 15)  # let the periodic reconciles pass over the settled jobs too
        cpu_after, peak_rss = process_usage(operator.pid)
        samples = apiserver_metrics(cluster)
        requests = apiserver_requests(samples) - requests_before
        write_latency = apiserver_write_latency(samples)
        timings = [t for t in reconcile_timings(operator_log.read_text()) if t[0].startswith(f"{namespace}/")]

        ftjs = json.loads(cluster.kubectl_ok("get", "ftj", "-n", namespace, "-o", "json", timeout=120))["items"]
        jobs = json.loads(cluster.kubectl_ok("get", "jobs", "-n", namespace, "-o", "json", timeout=120))["items"]
        maps = json.loads(cluster.kubectl_ok("get", "configmaps", "-n", namespace, "-o", "json", timeout=120))["items"]
        owners = Counter(ref["name"] for obj in jobs for ref in obj["metadata"].get("ownerReferences", []))
        map_owners = Counter(ref["name"] for obj in maps for ref in obj["metadata"].get("ownerReferences", []))
        without_status = sum(1 for f in ftjs if not f.get("status", {}).get("phase"))

        where = f"profile '{args.profile}'" if args.kubeconfig is None else f"the cluster of {args.kubeconfig}"
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {where} ({nodes} nodes); "
              f"{args.jobs} FineTuneJobs ({args.specs} specs, seed {args.seed}) created in {created:.1f} s\n")
        rows: list[tuple[str, str, str]] = []
        if settled_at is not None:
            rows.append(("all settled", f"{settled_at:.1f} s", ""))
            rows.append(("after the last create", f"{settled_at - created:.1f} s", "within 10 s"))
        else:
            rows.append(("all settled", "not reached", ""))
        rows.append(("each job from its create to settled p50 / p99 / max",
                     f"{percentile(waits, 0.5):.1f} / {percentile(waits, 0.99):.1f} / "
                     f"{max(waits, default=float('nan')):.1f} s", ""))
        rows.append(("watches started again", str(settling.restarts), "0"))
        kinds = Counter(where for where in outcomes.values())
        rows.append(("outcomes", ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items(), key=str)), ""))
        for changed, label, target in ((True, "working", "p99 under 1 s"), (False, "no-op", "")):
            chosen = [ms for _, ms, c in timings if c == changed]
            rows.append((f"{label} reconciles p50 / p99 / max",
                         f"{percentile(chosen, 0.5):.0f} / {percentile(chosen, 0.99):.0f} / "
                         f"{max(chosen, default=float('nan')):.0f} ms ({len(chosen)})", target))
        for resource, (p50, p99) in write_latency.items():
            rows.append((f"apiserver POST {resource} p50 / p99", f"{p50 * 1000:.0f} / {p99 * 1000:.0f} ms", ""))
        rows.append(("operator CPU", f"{cpu_after - cpu_before:.1f} s", ""))
        rows.append(("operator peak RSS", f"{peak_rss / 2**20:.0f} MiB ({rss_at_start / 2**20:.0f} MiB idle at start)",
                     "under 300 MB"))
        total = sum(requests.values())
        rows.append(("apiserver requests on the operator's resources", f"{total:.0f} ({total / args.jobs:.1f} per job)",
                     ""))
        for (resource, verb), count in sorted(requests.items(), key=lambda item: -item[1])[:10]:
            rows.append((f"  {verb} {resource}", f"{count:.0f} ({count / args.jobs:.2f} per job)", ""))
        events: Counter = Counter()
        for event in json.loads(cluster.kubectl_ok("get", "events", "-n", namespace, "-o", "json",
                                                   timeout=120))["items"]:
            if event["involvedObject"]["kind"] == "FineTuneJob":
                events[event["reason"]] += event.get("count") or 1
        rows.append(("FineTuneJob Events by reason", ", ".join(f"{reason} {count / args.jobs:.2f}"
                                                               for reason, count in events.most_common()), ""))
        # The requests above are everyone's (the Job controller, the scheduler and kwok write pods and Jobs too);
        # these writes only the operator makes.
        writes = sum(requests[key] for key in OPERATOR_WRITES) + sum(events.values())
        rows.append(("the operator's writes", f"{writes:.0f} ({writes / args.jobs:.2f} per job)", ""))
        rows.append(("FineTuneJobs with more than one Job / ConfigMap",
                     f"{sum(1 for c in owners.values() if c > 1)} / {sum(1 for c in map_owners.values() if c > 1)}",
                     "0"))
        rows.append(("FineTuneJobs without a status", str(without_status), "0"))
        print("| measure | value | target |")
        print("|---|---:|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "cluster": where, "nodes": nodes, "jobs": args.jobs, "specs": args.specs, "seed": args.seed,
            "created_seconds": round(created, 2), "settled_seconds": settled_at and round(settled_at, 2),
            "table": [list(row) for row in rows],
            # One line per job and per reconcile, short enough to keep beside the docs' table.
            "outcomes": {f["metadata"]["name"]: [outcomes.get(f["metadata"]["name"]), spec_summary(f["spec"]),
                                                 _plan_summary(f), *_seconds(settling, f["metadata"]["name"])]
                         for f in ftjs},
            "reconciles": [[name.split("/", 1)[1], round(ms, 2), int(changed)] for name, ms, changed in timings],
        }, separators=(",", ":")) + "\n")
        print(f"\nraw output: {out}")
    finally:
        if args.kubeconfig is not None and operator is not None:
            # While the operator runs, so that its deletion handler sees them go.
            cluster.kubectl("delete", "ftj", "--all", "-n", namespace, "--timeout=120s", timeout=180)
        if operator is not None:
            operator.terminate()
            operator.wait(timeout=60)
        if args.kubeconfig is None:
            cluster.down()
        else:
            cluster.kubectl("delete", "namespace", namespace, "--wait=false")
        shutil.rmtree(state, ignore_errors=True)


def spec_summary(spec: dict) -> str:
    """What the mix varies, in a few words: the model, the length, the method hint and the resource limits."""
    method, resources = spec.get("method", {}), spec["resources"]
    words = [spec["model"]["name"], f"seq {spec.get('training', {}).get('seqLen', 2048)}", method.get("type", "Auto")]
    if "zeroStage" in method:
        words.append(f"ZeRO-{method['zeroStage']} pinned")
    words.append(f"gpus={resources['gpus']}" if "gpus" in resources else f"maxGPUs {resources['maxGPUs']}")
    words.extend(resources.get("gpuTypes", []))
    return ", ".join(words)


def _plan_summary(ftj: dict) -> str | None:
    plan = ftj.get("status", {}).get("plan")
    if not plan:
        return None
    return (f"{plan['gpuType']} x{plan['gpus']} {plan['method']} ZeRO-{plan['zeroStage']} "
            f"mb{plan['microBatch']} ga{plan['gradientAccumulation']}")


if __name__ == "__main__":
    main()
