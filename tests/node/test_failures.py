"""What crosses the pod boundary when training fails, on the real node with the real torchrun and kubelet:
bad input found by the trainer fails the job once with the trainer's own reason and exit code, without
spending the restart budget; a GPU out-of-memory error replans and the new plan resumes from the checkpoint;
a pod the kernel kills for its memory limit is recognised as such; a deleted pod restarts the gang; workers
that cannot start fail the job. Each test keeps what the kubelet reported (tests/node/reports.py)."""

import json

import pytest

from kubetune.api import contract
from kubetune.devcluster.cluster import LocalCluster
from tests.integration.ftj import Operator, apply, condition, example, get, trainer_pods
from tests.integration.waiting import wait_until
from tests.node import reports
from tests.node.conftest import Claims, claim_folder, train_log_once

pytestmark = [pytest.mark.cluster, pytest.mark.node]


def test_records_without_the_formats_fields_fail_the_job_once_with_the_trainers_reason(
        cluster: LocalCluster, node_operator: Operator, claims: Claims) -> None:
    manifest = example("tiny-lora")
    manifest["metadata"]["name"] = "bad-records"
    manifest["spec"]["dataset"]["format"] = "Chat"  # the file holds Instruction records: no `messages`
    watch = reports.PodWatch(cluster, claims.namespace, "bad-records")
    assert apply(cluster, claims.namespace, manifest).returncode == 0
    ftj = wait_until("the job to fail", lambda: (f := get(cluster, claims.namespace, "ftj", "bad-records")) and
                     f.get("status", {}).get("phase") == "Failed" and f, timeout=300)
    reports.check("invalid-input", watch.stop())
    failed = condition(ftj, "Failed")
    assert failed["reason"] == "InvalidInput", failed
    assert "kubetune-invalid-input" in failed["message"] and "messages" in failed["message"], failed
    assert [a["reason"] for a in ftj["status"]["attempts"]] == ["InvalidInput"]  # no restart spent
    # What the real kubelet reported: the launcher's exit code and the failing rank's line.
    terminated = [s["state"]["terminated"] for pod in trainer_pods(cluster, claims.namespace, "bad-records")
                  for s in pod["status"]["containerStatuses"] if "terminated" in s["state"]]
    assert any(t["exitCode"] == contract.INVALID_INPUT_EXIT_CODE for t in terminated), json.dumps(terminated)
    assert all(t["message"].startswith("kubetune-") and "\n" not in t["message"].strip() for t in terminated)
    assert not (claim_folder(cluster, claims.namespace, claims.output) / "final").exists()


def test_a_deleted_pod_restarts_the_gang_which_resumes_after_the_newest_checkpoint(
        cluster: LocalCluster, node_operator: Operator, claims: Claims) -> None:
    manifest = example("tiny-lora")
    manifest["metadata"]["name"] = "deleted-pod"
    manifest["spec"]["training"]["maxSteps"] = 200
    manifest["spec"]["checkpointIntervalSteps"] = 10
    watch = reports.PodWatch(cluster, claims.namespace, "deleted-pod")
    assert apply(cluster, claims.namespace, manifest).returncode == 0
    log = train_log_once(cluster, claims, 25)  # a checkpoint and a few more steps
    victim = next(p for p in trainer_pods(cluster, claims.namespace, "deleted-pod")
                  if p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] == "1")
    cluster.kubectl_ok("delete", "pod", "-n", claims.namespace, victim["metadata"]["name"], "--wait=false")
    ftj = wait_until("the job to succeed", lambda: (f := get(cluster, claims.namespace, "ftj", "deleted-pod")) and
                     f.get("status", {}).get("phase") in ("Succeeded", "Failed") and f, timeout=600)
    reports.check("deleted-pod", watch.stop())
    assert ftj["status"]["phase"] == "Succeeded", ftj["status"]
    assert [a["reason"] for a in ftj["status"]["attempts"]] == ["WorkerLost"], ftj["status"]
    assert ftj["status"]["attempts"][0]["action"] == "restarted from the newest checkpoint"
    # The deleted pod's launcher asked the ranks to stop: both pods saved a checkpoint at the step they were at
    # (not at the interval's) and stopped, so the second attempt starts right after the first's last step:
    # every step trained once, none lost and none again.
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == list(range(1, 201)), steps


def test_a_gpu_out_of_memory_replans_and_the_new_plan_resumes_from_the_checkpoint(
        cluster: LocalCluster, node_operator: Operator, claims: Claims) -> None:
    """Rank 1 raises torch's real OutOfMemoryError after step 50 (contract.INJECT_FAULT_ANNOTATION); the
    launcher makes it the pod's exit code, the operator replans to a plan predicted to need less memory, and
    that plan's run resumes from the newest checkpoint on the claim, its loss going on where the first left."""
    manifest = example("tiny-lora")
    manifest["metadata"]["name"] = "gpu-oom"
    manifest["metadata"]["annotations"] = {contract.INJECT_FAULT_ANNOTATION: "gpu-oom:50:1"}
    manifest["spec"]["checkpointIntervalSteps"] = 20
    watch = reports.PodWatch(cluster, claims.namespace, "gpu-oom")
    assert apply(cluster, claims.namespace, manifest).returncode == 0
    ftj = wait_until("the job to end", lambda: (f := get(cluster, claims.namespace, "ftj", "gpu-oom")) and
                     f.get("status", {}).get("phase") in ("Succeeded", "Failed") and f, timeout=540)
    reports.check("gpu-oom", watch.stop(), or_=("gpu-oom-peer-stopped",))
    status = ftj["status"]
    assert status["phase"] == "Succeeded", status
    [first_attempt] = status["attempts"]
    assert first_attempt["reason"] == "GPUOutOfMemory" and "kubetune-oom" in first_attempt["message"], first_attempt
    assert first_attempt["action"].startswith("replanned for"), first_attempt
    assert condition(ftj, "Planned")["reason"] == "Replanned"
    assert status["plan"]["predictedPeakBytes"] < first_attempt["predictedPeakBytes"]
    assert status["plan"]["microBatch"] < 4 and (status["plan"]["gpus"], status["plan"]["nodes"]) == (2, 2)

    output = claim_folder(cluster, claims.namespace, claims.output)
    entries = [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]
    steps = [e["step"] for e in entries]
    restart = next(i for i in range(1, len(steps)) if steps[i] <= steps[i - 1])
    first, second = entries[:restart], entries[restart:]
    assert [e["step"] for e in first][-1] in (49, 50)  # rank 0 may log step 50 before its peer's loss stops it
    assert [e["step"] for e in second] == list(range(41, 121))  # after the newest checkpoint, step 40
    loss = {e["step"]: e["loss"] for e in first}
    # The same weights and examples, split into other micro-batches: the curve goes on, not from the start.
    assert abs(second[0]["loss"] - loss[41]) < 0.05 * loss[41], (second[0], loss[41])
    assert second[0]["loss"] < 0.8 * loss[1]
    assert (output / "final" / "adapter_model.safetensors").exists()


def test_a_pod_the_kernel_kills_for_its_memory_limit_fails_the_job_once_naming_the_limit(
        cluster: LocalCluster, node_operator: Operator, claims: Claims) -> None:
    """Rank 1 allocates host memory after step 5 until the kernel kills it under the pod's limit (its GPUs'
    share of the node). The plan offloads nothing, so no plan needs less host memory: a clear failure, not a
    restart of the same plan."""
    manifest = example("tiny-lora")
    manifest["metadata"]["name"] = "host-oom"
    manifest["metadata"]["annotations"] = {contract.INJECT_FAULT_ANNOTATION: "host-oom:5:1"}
    watch = reports.PodWatch(cluster, claims.namespace, "host-oom")
    assert apply(cluster, claims.namespace, manifest).returncode == 0
    ftj = wait_until("the job to end", lambda: (f := get(cluster, claims.namespace, "ftj", "host-oom")) and
                     f.get("status", {}).get("phase") in ("Succeeded", "Failed") and f, timeout=300)
    pods = reports.check("host-oom", watch.stop(), or_=("host-oom-peer-stopped",))
    assert ftj["status"]["phase"] == "Failed", ftj["status"]
    failed = condition(ftj, "Failed")
    assert failed["reason"] == "HostOutOfMemory", failed
    assert "offloads nothing" in failed["message"] and "GiB" in failed["message"], failed
    assert [a["reason"] for a in ftj["status"]["attempts"]] == ["HostOutOfMemory"]
    killed = [s["state"]["terminated"] for p in pods for s in p["status"]["containerStatuses"]
              if s["state"].get("terminated", {}).get("exitCode") == contract.HOST_OOM_EXIT_CODE]
    assert killed and killed[0]["message"].startswith("kubetune-host-oom limit_bytes="), pods


@pytest.mark.parametrize(("change", "reason"), [
    ({"hubTokenSecretRef": {"name": "no-such-secret"}}, "CreateContainerConfigError"),
    ({"hubTokenSecretRef": {"name": "hub-token", "key": "no-such-key"}}, "CreateContainerConfigError"),
    ({"images": {"trainer": "localhost/kubetune/trainer:no-such-tag"}}, "ImagePullBackOff"),
    ({"images": {"trainer": "localhost/Kubetune/Trainer:x"}}, "InvalidImageName"),
], ids=["missing-secret", "missing-secret-key", "unpullable-image", "malformed-image"])
def test_workers_the_real_kubelet_cannot_start_fail_the_job_with_its_reason(
        cluster: LocalCluster, node_operator: Operator, claims: Claims, change: dict, reason: str,
        request: pytest.FixtureRequest) -> None:
    cluster.kubectl_ok("create", "secret", "generic", "hub-token", "--from-literal=token=hf_x", "-n", claims.namespace)
    manifest = example("tiny-lora")
    manifest["metadata"]["name"] = "cannot-start"
    manifest["spec"] |= change
    watch = reports.PodWatch(cluster, claims.namespace, "cannot-start")
    assert apply(cluster, claims.namespace, manifest).returncode == 0
    ftj = wait_until("the job to fail", lambda: (f := get(cluster, claims.namespace, "ftj", "cannot-start")) and
                     f.get("status", {}).get("phase") == "Failed" and f, timeout=240)
    reports.check(f"cannot-start-{request.node.callspec.id}", watch.stop(waiting=reason))
    failed = condition(ftj, "Failed")
    assert failed["reason"] == "InvalidInput" and reason in failed["message"], failed
    # Its Job is suspended, so the kubelet stops retrying what only the user can fix.
    job = get(cluster, claims.namespace, "job", ftj["status"]["children"]["job"])
    assert job["spec"]["suspend"] is True
