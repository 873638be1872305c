"""Suspend, resize, resume, on the real node: a job suspended mid-run stops its pods (each rank saves where it
is), its resources change while it is suspended, and on resume it is replanned for them and goes on from that
checkpoint in the new layout (two pods of one GPU before, one pod after): every step trained once."""

import json

import pytest

from kubetune.devcluster.cluster import LocalCluster
from tests.integration.ftj import Operator, apply, condition, example, get, in_phase, trainer_pods
from tests.integration.waiting import wait_until
from tests.node.conftest import Claims, train_log_once

pytestmark = [pytest.mark.cluster, pytest.mark.node]


def patch(cluster: LocalCluster, claims: Claims, spec: dict) -> None:
    cluster.kubectl_ok("patch", "ftj", "resized", "-n", claims.namespace, "--type=merge", "-p",
                       json.dumps({"spec": spec}))


def test_a_job_suspended_mid_run_resized_and_resumed_goes_on_from_where_it_stopped_in_the_new_layout(
        cluster: LocalCluster, node_operator: Operator, claims: Claims) -> None:
    manifest = example("tiny-lora")
    manifest["metadata"]["name"] = "resized"
    manifest["spec"]["training"]["maxSteps"] = 200
    manifest["spec"]["checkpointIntervalSteps"] = 100
    assert apply(cluster, claims.namespace, manifest).returncode == 0
    log = train_log_once(cluster, claims, 15)

    patch(cluster, claims, {"suspend": True})
    wait_until("the workers to stop", lambda: (f := get(cluster, claims.namespace, "ftj", "resized")) and
               f["status"].get("phase") == "Suspended" and
               not [p for p in trainer_pods(cluster, claims.namespace, "resized")
                    if p["status"].get("phase") in ("Pending", "Running")], timeout=120)
    stopped_at = [json.loads(line)["step"] for line in log.read_text().splitlines()][-1]
    assert stopped_at < 100  # before the first interval's checkpoint: only the stop's save keeps these steps
    patch(cluster, claims, {"resources": {**manifest["spec"]["resources"], "gpus": 1, "nodes": 1}})
    patch(cluster, claims, {"suspend": False})

    done = wait_until("the resized job to succeed", in_phase(cluster, claims.namespace, "resized", "Succeeded",
                                                             "Failed"), timeout=600)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    [resized] = done["status"]["attempts"]
    assert resized["reason"] == "Resized" and "gpus 2 -> 1" in resized["message"], resized
    assert (done["status"]["plan"]["gpus"], done["status"]["plan"]["nodes"]) == (1, 1)
    assert condition(done, "Planned")["reason"] == "Replanned"
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == list(range(1, 201)), steps
    assert (log.parent / "final" / "adapter_model.safetensors").exists()
