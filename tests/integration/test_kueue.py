"""With Kueue, Kueue decides: FineTuneJobs that name a queue against a real Kueue (built from its Go module),
with a ClusterQueue holding `nvidia.com/gpu` quotas per GPU flavor. kubetune plans and creates the Job
suspended; Kueue admits it, holds it while the quota is used, preempts it for a higher priority and admits
it again; a user's suspension goes through Kueue. Holders run in the namespace whose kwok pods run until
deleted, so their quota stays used."""

import json
from collections.abc import Iterator
from typing import Any

import pytest

from kubetune.devcluster.cluster import LONG_RUNNING_NAMESPACE, LocalCluster
from tests.integration import queues
from tests.integration.ftj import Operator, apply, condition, events, example, get, in_phase
from tests.integration.queues import Queue
from tests.integration.waiting import wait_until

L4 = "NVIDIA-L4"
pytestmark = pytest.mark.usefixtures("kueue")


@pytest.fixture
def holders(cluster: LocalCluster) -> Iterator[list[str]]:
    """FineTuneJobs in the long-running namespace (their pods run until deleted), deleted afterwards."""
    cluster.kubectl("create", "namespace", LONG_RUNNING_NAMESPACE)
    names: list[str] = []
    try:
        yield names
    finally:
        for name in names:
            cluster.kubectl("delete", "ftj", name, "-n", LONG_RUNNING_NAMESPACE, "--ignore-not-found", "--wait=false")


def l4_job(name: str, **labels: str) -> dict[str, Any]:
    manifest = example("minimal")
    manifest["metadata"] = {"name": name, "labels": labels}
    manifest["spec"]["resources"] = {"gpuTypes": ["L4-24GB"]}
    manifest["spec"]["queueName"] = "team-a"
    return manifest


def gpus_of(ftj: dict[str, Any]) -> int:
    plan = ftj["status"]["plan"]
    return int(plan["nodes"]) * int(plan["gpusPerNode"])


def admitted(cluster: LocalCluster, namespace: str, name: str) -> Any:
    def check() -> Any:
        ftj = get(cluster, namespace, "ftj", name)
        conditions = {c["type"]: c for c in (ftj or {}).get("status", {}).get("conditions", [])}
        return ftj if conditions.get("Admitted", {}).get("status") == "True" else None
    return check


def queued_saying(cluster: LocalCluster, namespace: str, name: str, text: str) -> Any:
    def check() -> Any:
        ftj = get(cluster, namespace, "ftj", name)
        conditions = {c["type"]: c for c in (ftj or {}).get("status", {}).get("conditions", [])}
        waiting = conditions.get("Admitted", {})
        return ftj if waiting.get("status") == "False" and text in waiting.get("message", "") else None
    return check


def test_kueue_admits_a_job_while_quota_is_free_and_holds_the_next_until_the_first_ends(
        cluster: LocalCluster, operator: Operator, namespace: str, queue: Queue, holders: list[str]) -> None:
    # The quota is one job's GPUs: planned first, so the test does not assume the planner's choice.
    holders.append(f"first-{queue.suffix}")
    assert apply(cluster, LONG_RUNNING_NAMESPACE, l4_job(holders[0])).returncode == 0
    first = wait_until("the first job to be planned and queued", in_phase(cluster, LONG_RUNNING_NAMESPACE, holders[0],
                                                                         "Queued"))
    job = get(cluster, LONG_RUNNING_NAMESPACE, "job", f"{holders[0]}-train")
    assert job["spec"]["suspend"] is True and job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    queue.setup({"l4": (L4, gpus_of(first))}, [LONG_RUNNING_NAMESPACE, namespace])

    first = wait_until("Kueue to admit the first job and its workers to run",
                       in_phase(cluster, LONG_RUNNING_NAMESPACE, holders[0], "Running"), timeout=90)
    assert "admitted by Kueue from 'team-a'" in condition(first, "Admitted")["message"]
    job = get(cluster, LONG_RUNNING_NAMESPACE, "job", f"{holders[0]}-train")
    # Kueue's flavor placed the pods: its node labels are in the template, beside kubetune's own selector.
    assert job["spec"]["template"]["spec"]["nodeSelector"]["nvidia.com/gpu.product"] == L4

    assert apply(cluster, namespace, l4_job("second")).returncode == 0
    second = wait_until("the second job to wait for quota, in Kueue's words",
                        queued_saying(cluster, namespace, "second", "insufficient"), timeout=90)
    assert second["status"]["phase"] == "Queued" and condition(second, "Failed")["status"] == "Unknown"
    assert get(cluster, namespace, "job", "second-train")["spec"]["suspend"] is True

    cluster.kubectl_ok("delete", "ftj", holders[0], "-n", LONG_RUNNING_NAMESPACE)
    second = wait_until("the second job to be admitted and succeed when the first ends",
                        in_phase(cluster, namespace, "second", "Succeeded", "Failed"), timeout=120)
    assert second["status"]["phase"] == "Succeeded", second["status"]
    assert any(e["reason"] == "Admitted" for e in events(cluster, namespace, "second")) or \
        condition(second, "Admitted")["status"] == "True"


def test_a_job_whose_gpu_type_has_no_flavor_waits_with_kueues_reason(
        cluster: LocalCluster, operator: Operator, namespace: str, queue: Queue) -> None:
    queue.setup({"h100": ("NVIDIA-H100-80GB-HBM3", 64)}, [namespace])
    assert apply(cluster, namespace, l4_job("no-flavor")).returncode == 0
    ftj = wait_until("Kueue's reason in the Admitted condition",
                     queued_saying(cluster, namespace, "no-flavor", "couldn't assign flavors"), timeout=90)
    message = condition(ftj, "Admitted")["message"]
    assert "queue 'team-a'" in message and "node affinity" in message, message
    assert ftj["status"]["phase"] == "Queued" and condition(ftj, "Failed")["status"] == "Unknown"


def test_a_higher_priority_job_preempts_a_lower_one_which_is_admitted_again_when_it_ends(
        cluster: LocalCluster, operator: Operator, namespace: str, queue: Queue, holders: list[str]) -> None:
    low, high = f"low-{queue.suffix}", f"high-{queue.suffix}"
    queue.create(queues.priority_class(low, 100), queues.priority_class(high, 1000))
    holders.extend([low, high])
    assert apply(cluster, LONG_RUNNING_NAMESPACE,
                 l4_job(low, **{"kueue.x-k8s.io/priority-class": low})).returncode == 0
    planned = wait_until("the low-priority job to queue", in_phase(cluster, LONG_RUNNING_NAMESPACE, low, "Queued"))
    queue.setup({"l4": (L4, gpus_of(planned))}, [LONG_RUNNING_NAMESPACE],
                preemption={"withinClusterQueue": "LowerPriority"})
    wait_until("the low-priority job to run", in_phase(cluster, LONG_RUNNING_NAMESPACE, low, "Running"), timeout=90)
    # The FineTuneJob's Kueue labels reached the Job, where Kueue reads them.
    assert get(cluster, LONG_RUNNING_NAMESPACE, "job", f"{low}-train")["metadata"]["labels"][
        "kueue.x-k8s.io/priority-class"] == low

    assert apply(cluster, LONG_RUNNING_NAMESPACE,
                 l4_job(high, **{"kueue.x-k8s.io/priority-class": high})).returncode == 0
    wait_until("the high-priority job to run", in_phase(cluster, LONG_RUNNING_NAMESPACE, high, "Running"), timeout=90)
    preempted = wait_until("the low-priority job to be preempted, saying so",
                           queued_saying(cluster, LONG_RUNNING_NAMESPACE, low, "evicted (Preempted)"), timeout=60)
    assert preempted["status"]["phase"] == "Queued", preempted["status"]
    assert condition(preempted, "Failed")["status"] == "Unknown"  # preemption is not a failure
    assert get(cluster, LONG_RUNNING_NAMESPACE, "job", f"{low}-train")["spec"]["suspend"] is True

    cluster.kubectl_ok("delete", "ftj", high, "-n", LONG_RUNNING_NAMESPACE)
    again = wait_until("the low-priority job to be admitted again and run",
                       in_phase(cluster, LONG_RUNNING_NAMESPACE, low, "Running"), timeout=120)
    assert [a.get("reason") for a in again["status"].get("attempts", [])] == []  # the same attempt, resumed


def test_suspending_a_queued_job_goes_through_kueue_and_resuming_it_queues_it_again(
        cluster: LocalCluster, operator: Operator, namespace: str, queue: Queue, holders: list[str]) -> None:
    name = f"held-{queue.suffix}"
    holders.append(name)
    assert apply(cluster, LONG_RUNNING_NAMESPACE, l4_job(name)).returncode == 0
    planned = wait_until("the job to queue", in_phase(cluster, LONG_RUNNING_NAMESPACE, name, "Queued"))
    queue.setup({"l4": (L4, gpus_of(planned))}, [LONG_RUNNING_NAMESPACE])
    wait_until("the job to run", in_phase(cluster, LONG_RUNNING_NAMESPACE, name, "Running"), timeout=90)

    cluster.kubectl_ok("patch", "ftj", name, "-n", LONG_RUNNING_NAMESPACE, "--type=merge", "-p",
                       '{"spec":{"suspend":true}}')
    ftj = wait_until("the job to be suspended", in_phase(cluster, LONG_RUNNING_NAMESPACE, name, "Suspended"),
                     timeout=60)
    assert condition(ftj, "Suspended")["status"] == "True"
    job = get(cluster, LONG_RUNNING_NAMESPACE, "job", f"{name}-train")
    assert job["spec"]["suspend"] is True  # Kueue suspended it, and did not unsuspend it again
    workloads = json.loads(cluster.kubectl_ok("get", "workloads", "-n", LONG_RUNNING_NAMESPACE, "-l",
                                              f"kueue.x-k8s.io/job-uid={job['metadata']['uid']}", "-o", "json"))
    assert [w["spec"]["active"] for w in workloads["items"]] == [False]

    cluster.kubectl_ok("patch", "ftj", name, "-n", LONG_RUNNING_NAMESPACE, "--type=merge", "-p",
                       '{"spec":{"suspend":false}}')
    wait_until("the resumed job to be admitted again and run", in_phase(cluster, LONG_RUNNING_NAMESPACE, name,
                                                                        "Running"), timeout=90)
