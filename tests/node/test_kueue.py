"""Preemption keeps the work, on the real node with a real Kueue: a higher-priority FineTuneJob takes the low
one's GPU quota, Kueue evicts the low one (its pods are stopped, the trainer saves where it is), and when the
high one ends, Kueue admits the low one again and it resumes right after the step it stopped at."""

import json

import pytest

from kubetune.devcluster.cluster import LocalCluster
from tests.integration import queues
from tests.integration.ftj import Operator, apply, condition, example, get, in_phase
from tests.integration.queues import Queue
from tests.integration.waiting import wait_until
from tests.node.conftest import Claims, train_log_once

pytestmark = [pytest.mark.cluster, pytest.mark.node]


def queued_job(name: str, priority: str, steps: int) -> dict:
    manifest = example("tiny-lora")
    manifest["metadata"] = {"name": name, "labels": {"kueue.x-k8s.io/priority-class": priority}}
    manifest["spec"]["queueName"] = "team-a"
    manifest["spec"]["training"]["maxSteps"] = steps
    return manifest


def test_a_preempted_job_saves_and_resumes_after_the_step_it_stopped_at_when_kueue_admits_it_again(
        cluster: LocalCluster, node_operator: Operator, claims: Claims, queue: Queue) -> None:
    low, high = f"low-{queue.suffix}", f"high-{queue.suffix}"
    queue.create(queues.priority_class(low, 100), queues.priority_class(high, 1000))
    # The real node's GPUs, as one flavor with room for one tiny job (2 pods of 1 simulated GPU) at a time.
    queue.setup({"a10g": ("NVIDIA-A10G", 2)}, [claims.namespace], preemption={"withinClusterQueue": "LowerPriority"})

    first = queued_job("low", low, 200)
    first["spec"]["checkpointIntervalSteps"] = 50
    assert apply(cluster, claims.namespace, first).returncode == 0
    log = train_log_once(cluster, claims, 15)

    second = queued_job("high", high, 10)
    second["spec"]["output"] = {}  # its own, ephemeral: the low job's claim holds the low job's run
    assert apply(cluster, claims.namespace, second).returncode == 0
    preempted = wait_until("Kueue to preempt the low job", lambda: (f := get(cluster, claims.namespace, "ftj", "low"))
                           and "evicted (Preempted)" in condition(f, "Admitted")["message"] and f, timeout=120)
    assert preempted["status"]["phase"] in ("Queued", "Running"), preempted["status"]
    high_done = wait_until("the high job to run and succeed", in_phase(cluster, claims.namespace, "high", "Succeeded",
                                                                        "Failed"), timeout=300)
    assert high_done["status"]["phase"] == "Succeeded", high_done["status"]

    done = wait_until("the low job to be admitted again and succeed", in_phase(cluster, claims.namespace, "low",
                                                                               "Succeeded", "Failed"), timeout=600)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    # Preemption is not a failure: no attempt recorded, no restart spent.
    assert done["status"].get("attempts", []) == [], done["status"]
    # The trainer saved a checkpoint at the step it was stopped at (not at the 50-step interval's), so the
    # readmitted run goes on right after it: every step trained once, none lost and none again.
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == list(range(1, 201)), steps
    assert (log.parent / "final" / "adapter_model.safetensors").exists()
