"""What crosses the pod boundary when training fails, on the real node with the real torchrun and kubelet:
bad input found by the trainer fails the job once with the trainer's own reason and exit code, without
spending the restart budget."""

import json

import pytest

from kubetune.api import contract
from kubetune.devcluster.cluster import LocalCluster
from tests.integration.ftj import Operator, apply, condition, example, get, trainer_pods
from tests.integration.waiting import wait_until
from tests.node.conftest import Claims, claim_folder

pytestmark = [pytest.mark.cluster, pytest.mark.node]


def test_records_without_the_formats_fields_fail_the_job_once_with_the_trainers_reason(
        cluster: LocalCluster, node_operator: Operator, claims: Claims) -> None:
    manifest = example("tiny-lora")
    manifest["metadata"]["name"] = "bad-records"
    manifest["spec"]["dataset"]["format"] = "Chat"  # the file holds Instruction records: no `messages`
    assert apply(cluster, claims.namespace, manifest).returncode == 0
    ftj = wait_until("the job to fail", lambda: (f := get(cluster, claims.namespace, "ftj", "bad-records")) and
                     f.get("status", {}).get("phase") == "Failed" and f, timeout=300)
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
