"""The operator against the real control plane: examples are planned, run by kwok and succeed; bad input is
refused at apply time or reported in status; failures, suspension, Kueue admission, operator restarts and
deletion behave as a user expects. The operator runs as its real command, `kubetune run-operator`."""

import json
import time

import pytest

from kubetune.api.conditions import TRACKED
from kubetune.devcluster.cluster import LocalCluster
from tests.integration.ftj import (
    ROOT,
    Operator,
    apply,
    condition,
    events,
    example,
    failing,
    get,
    in_phase,
    trainer_pods,
)
from tests.integration.waiting import wait_until

pytestmark = pytest.mark.cluster

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_examples_exist() -> None:
    assert {p.stem for p in EXAMPLES} >= {"minimal", "llama-8b-lora", "llama-70b", "long-context", "cannot-fit"}


@pytest.mark.parametrize("name", ["minimal", "llama-8b-lora", "llama-70b", "long-context"])
def test_example_is_planned_scheduled_on_the_planned_gpus_and_succeeds(
    cluster: LocalCluster, operator: Operator, namespace: str, name: str
) -> None:
    assert apply(cluster, namespace, example(name)).returncode == 0
    ftj = wait_until("the job to succeed", in_phase(cluster, namespace, name, "Succeeded", "Failed", "Unschedulable"))
    assert ftj["status"]["phase"] == "Succeeded", ftj["status"]
    # Every condition is there and decided by the end; none is left Unknown.
    states = {c["type"]: c["status"] for c in ftj["status"]["conditions"]}
    assert set(TRACKED) <= states.keys() and "Unknown" not in states.values(), states
    plan = ftj["status"]["plan"]
    assert plan["memory"]["totalBytes"] == plan["predictedPeakBytes"] < plan["gpuMemoryBytes"]
    assert plan["explanation"] and plan["gpus"] == plan["nodes"] * plan["gpusPerNode"]

    job = get(cluster, namespace, "job", ftj["status"]["children"]["job"])
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == plan["nodes"]
    assert job["metadata"]["ownerReferences"][0]["name"] == name
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["nodeSelector"]["nvidia.com/gpu.product"] == plan["gpuProduct"]
    container = pod_spec["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == str(plan["gpusPerNode"])
    assert f"--nnodes={plan['nodes']}" in container["command"]
    assert f"--nproc_per_node={plan['gpusPerNode']}" in container["command"]

    config = get(cluster, namespace, "configmap", ftj["status"]["children"]["configMap"])
    ds_config = json.loads(config["data"]["ds_config.json"])
    assert ds_config["zero_optimization"]["stage"] == plan["zeroStage"]
    assert ds_config["train_micro_batch_size_per_gpu"] == plan["microBatch"]
    assert get(cluster, namespace, "service", ftj["status"]["children"]["service"])["spec"]["clusterIP"] == "None"

    pods = trainer_pods(cluster, namespace, name)
    assert len(pods) == plan["nodes"]
    for pod in pods:
        node = get(cluster, "default", "node", pod["spec"]["nodeName"])
        assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == plan["gpuProduct"]

    assert condition(ftj, "Planned")["status"] == "True"
    assert condition(ftj, "Succeeded")["status"] == "True"
    reasons = {e["reason"] for e in events(cluster, namespace, name)}
    assert {"Planned", "Created", "JobCompleted"} <= reasons
    # The example keeps nothing: status and a Warning say so, so nobody learns it after the run.
    lost = condition(ftj, "OutputDurable")
    assert (lost["status"], lost["reason"]) == ("False", "EphemeralOutput") and "claimName" in lost["message"]
    assert any(e["type"] == "Warning" and e["reason"] == "EphemeralOutput" for e in events(cluster, namespace, name))


def test_70b_on_one_80gb_node_is_planned_with_zero3_lora_and_checkpointing(
    cluster: LocalCluster, operator: Operator, namespace: str
) -> None:
    apply(cluster, namespace, example("llama-70b"))
    ftj = wait_until("a plan", lambda: (f := get(cluster, namespace, "ftj", "llama-70b")) and
                     f.get("status", {}).get("plan") and f)
    plan = ftj["status"]["plan"]
    assert (plan["zeroStage"], plan["method"], plan["gradientCheckpointing"], plan["nodes"]) == (3, "LoRA", True, 1)


def test_a_pinned_configuration_that_cannot_fit_fails_with_the_smallest_need(
    cluster: LocalCluster, operator: Operator, namespace: str
) -> None:
    apply(cluster, namespace, example("cannot-fit"))
    ftj = wait_until("the job to be unschedulable", in_phase(cluster, namespace, "cannot-fit", "Unschedulable"))
    failed = condition(ftj, "Failed")
    assert failed["reason"] == "Unschedulable"
    assert "smallest need" in failed["message"] and "GiB" in failed["message"]
    assert get(cluster, namespace, "job", "cannot-fit-train") is None
    assert any(e["type"] == "Warning" and e["reason"] == "Unschedulable" for e in events(cluster, namespace, "cannot-fit"))


@pytest.mark.parametrize(
    ("method", "training", "message"),
    [
        ({"offload": "All", "zeroStage": 2}, {}, "`offload` 'All' (parameters too) needs `zeroStage` 3"),
        ({"loraRank": 0}, {}, "spec.method.loraRank"),
        ({"type": "Full", "loraRank": 8}, {}, "LoRA settings may not be given with `type` 'Full'"),
        ({"attention": "Eager"}, {"seqLen": 32768}, "`training.seqLen` must be at most 8192"),
        ({}, {"epochs": 1, "maxSteps": 10}, "`epochs` and `maxSteps` may not both be set"),
        ({"resources": {"gpus": 3, "nodes": 2}}, {}, "`gpus` must be a multiple of `nodes`"),
        ({"resources": {"gpus": 16, "maxGPUs": 8}}, {}, "`gpus` may not exceed `maxGPUs`"),
        ({"resources": {"nodes": 4, "maxNodes": 2}}, {}, "`nodes` may not exceed `maxNodes`"),
    ],
)
def test_contradictory_specs_are_refused_at_apply_time(
    cluster: LocalCluster, operator: Operator, namespace: str, method: dict, training: dict, message: str
) -> None:
    manifest = example("minimal")
    if "resources" in method:
        manifest["spec"]["resources"] = method["resources"]
    else:
        manifest["spec"]["method"] = method
    manifest["spec"]["training"] = training
    result = apply(cluster, namespace, manifest)
    assert result.returncode != 0
    assert message in result.stderr


def test_immutable_fields_cannot_change(cluster: LocalCluster, operator: Operator, namespace: str) -> None:
    apply(cluster, namespace, example("minimal"))
    result = cluster.kubectl("patch", "ftj", "minimal", "-n", namespace, "--type=merge",
                             "-p", '{"spec":{"model":{"name":"meta-llama/Llama-3.1-8B"}}}')
    assert result.returncode != 0 and "`model` is immutable" in result.stderr
    # Moving the output would silently restart the run from step 0, away from its checkpoints.
    result = cluster.kubectl("patch", "ftj", "minimal", "-n", namespace, "--type=merge",
                             "-p", '{"spec":{"output":{"path":"/elsewhere"}}}')
    assert result.returncode != 0 and "`output` is immutable" in result.stderr


def test_a_failed_pod_surfaces_its_reason_and_message(cluster: LocalCluster, operator: Operator, namespace: str) -> None:
    manifest = failing("minimal", 3, "Error", "the trainer crashed")
    manifest["spec"]["recovery"] = {"maxRestarts": 0}
    apply(cluster, namespace, manifest)
    ftj = wait_until("the job to fail", in_phase(cluster, namespace, "minimal", "Failed"))
    failed = condition(ftj, "Failed")
    assert failed["reason"] == "WorkerFailed"
    assert "exited with code 3 (Error): the trainer crashed" in failed["message"]


def test_a_pod_killed_for_host_memory_without_offload_fails_at_once(cluster: LocalCluster, operator: Operator,
                                                                     namespace: str) -> None:
    """The runtime's OOMKilled, as kwok plays it here (the real node's own is in tests/node): the same plan
    would be killed again, so no restart is spent."""
    apply(cluster, namespace, failing("minimal", 137, "OOMKilled", "host memory exhausted"))
    ftj = wait_until("the job to fail", in_phase(cluster, namespace, "minimal", "Failed"))
    failed = condition(ftj, "Failed")
    assert failed["reason"] == "HostOutOfMemory"
    assert "exited with code 137 (OOMKilled): host memory exhausted" in failed["message"]
    assert "offloads nothing" in failed["message"] and len(ftj["status"]["attempts"]) == 1


def test_suspend_stops_the_job_and_resume_runs_it(cluster: LocalCluster, operator: Operator, namespace: str) -> None:
    manifest = example("minimal")
    manifest["spec"]["suspend"] = True
    apply(cluster, namespace, manifest)
    ftj = wait_until("the job to be suspended", in_phase(cluster, namespace, "minimal", "Suspended"))
    assert (condition(ftj, "Suspended")["status"], condition(ftj, "Suspended")["reason"]) == ("True", "SuspendedBySpec")
    assert condition(ftj, "Running")["status"] == "False"
    assert get(cluster, namespace, "job", "minimal-train")["spec"]["suspend"] is True
    cluster.kubectl_ok("patch", "ftj", "minimal", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    ftj = wait_until("the resumed job to succeed", in_phase(cluster, namespace, "minimal", "Succeeded"))
    assert condition(ftj, "Suspended")["status"] == "False"


def test_a_job_whose_children_status_does_not_name_keeps_its_own_config_map_or_is_made_again(
        cluster: LocalCluster, operator: Operator, namespace: str) -> None:
    """status.children names a job's children once all exist; a Job it does not name (its creation unfinished,
    or a view of the status behind) keeps the ConfigMap it mounts when that exists, and is made again when it
    does not (its pods could never start)."""
    manifest = example("minimal")
    manifest["spec"]["suspend"] = True  # the Job stays, unfinished
    apply(cluster, namespace, manifest)
    ftj = wait_until("the job to be suspended", in_phase(cluster, namespace, "minimal", "Suspended"))
    mounted, uid = ftj["status"]["children"]["configMap"], get(cluster, namespace, "job", "minimal-train")["metadata"]["uid"]

    def say_children(config_map: str) -> None:
        cluster.kubectl_ok("patch", "ftj", "minimal", "-n", namespace, "--subresource=status", "--type=merge", "-p",
                           json.dumps({"status": {"children": {"configMap": config_map}}}))

    say_children("minimal-config-other")
    wait_until("the status to name the mounted ConfigMap again", lambda: (get(cluster, namespace, "ftj", "minimal") or {})
               .get("status", {}).get("children", {}).get("configMap") == mounted)
    assert get(cluster, namespace, "job", "minimal-train")["metadata"]["uid"] == uid  # the same Job, kept

    # Its ConfigMap missing but of the current configuration: made again, the Job kept.
    cluster.kubectl_ok("delete", "configmap", mounted, "-n", namespace)
    say_children("minimal-config-other")
    wait_until("the ConfigMap to be made again", lambda: get(cluster, namespace, "configmap", mounted) is not None)
    assert get(cluster, namespace, "job", "minimal-train")["metadata"]["uid"] == uid

    # Missing, and the configuration changed since: the Job is made again, with the current configuration.
    cluster.kubectl_ok("patch", "ftj", "minimal", "-n", namespace, "--type=merge", "-p",
                       '{"spec":{"checkpointIntervalSteps":7}}')
    cluster.kubectl_ok("delete", "configmap", mounted, "-n", namespace)
    say_children("minimal-config-other")
    job = wait_until("the Job to be made again", lambda: (j := get(cluster, namespace, "job", "minimal-train"))
                     and j["metadata"]["uid"] != uid and j)
    assert any(e["reason"] == "JobReplaced" and e["type"] == "Warning" for e in events(cluster, namespace, "minimal"))
    now = next(v["configMap"]["name"] for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
    assert now != mounted
    config = json.loads(get(cluster, namespace, "configmap", now)["data"]["trainer.json"])
    assert config["checkpointIntervalSteps"] == 7


def test_a_queued_job_without_kueue_waits_and_says_kueue_made_no_workload(cluster: LocalCluster, operator: Operator,
                                                                          namespace: str) -> None:
    """Kueue, not kubetune, lifts a queued Job's suspension (tests/integration/test_kueue.py, with a real
    Kueue); where none runs, the job waits and says what it waits for."""
    manifest = example("minimal")
    manifest["spec"]["queueName"] = "team-a"
    apply(cluster, namespace, manifest)
    ftj = wait_until("the job to queue", in_phase(cluster, namespace, "minimal", "Queued"))
    job = get(cluster, namespace, "job", "minimal-train")
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    queued = condition(ftj, "Admitted")
    assert queued["reason"] == "WaitingForQueue" and "no Workload" in queued["message"], queued
    assert condition(ftj, "Failed")["status"] == "Unknown"


def test_killing_the_operator_mid_reconcile_creates_no_duplicates(
    cluster: LocalCluster, operator: Operator, namespace: str
) -> None:
    names = [f"restart-{i}" for i in range(3)]
    for name in names:
        manifest = example("minimal")
        manifest["metadata"]["name"] = name
        apply(cluster, namespace, manifest)
    for delay in (0.3, 0.8):
        time.sleep(delay)
        operator.kill()
        operator.start()
    for name in names:
        wait_until(f"{name} to succeed", in_phase(cluster, namespace, name, "Succeeded"))
    for kind in ("jobs", "configmaps", "services"):
        items = json.loads(cluster.kubectl_ok("get", kind, "-n", namespace, "-l", "kubetune.io/finetunejob",
                                              "-o", "json"))["items"]
        owners = sorted(i["metadata"]["labels"]["kubetune.io/finetunejob"] for i in items)
        assert owners == names, (kind, owners)


def test_deleting_the_job_removes_everything_it_created(cluster: LocalCluster, operator: Operator, namespace: str) -> None:
    apply(cluster, namespace, example("minimal"))
    ftj = wait_until("the job to succeed", in_phase(cluster, namespace, "minimal", "Succeeded"))
    children = ftj["status"]["children"]
    assert get(cluster, namespace, "configmap", children["configMap"]) is not None
    cluster.kubectl_ok("delete", "ftj", "minimal", "-n", namespace)

    def gone() -> bool:
        return all(get(cluster, namespace, kind, name) is None
                   for kind, name in (("job", children["job"]), ("configmap", children["configMap"]),
                                      ("service", children["service"])))

    wait_until("the garbage collector to remove the children", gone)


def test_kubectl_get_shows_the_plan(cluster: LocalCluster, operator: Operator, namespace: str) -> None:
    apply(cluster, namespace, example("minimal"))
    wait_until("the job to succeed", in_phase(cluster, namespace, "minimal", "Succeeded"))
    table = cluster.kubectl_ok("get", "ftj", "-n", namespace)
    header, row = table.splitlines()[:2]
    assert header.split()[:8] == ["NAME", "PHASE", "MODEL", "GPU", "GPUS", "ZERO", "METHOD", "PEAK"]
    assert "Succeeded" in row and "Qwen/Qwen2.5-0.5B" in row and "GiB/" in row
    assert "minimal" in cluster.kubectl_ok("get", "kubetune", "-n", namespace)
