"""The operator's reading of failed training pods, on what the real kubelet and torchrun reported on the
local cluster's real node (captured by tests/node into tests/unit/reports/, not written by hand): each failure
is recognised for what it was and gets the action a user expects."""

import json
from pathlib import Path

import pytest

from kubetune.api import contract
from kubetune.api import v1alpha1 as api
from kubetune.controller import recovery
from kubetune.controller.recovery import Action, Kind
from tests.unit.test_real_node import tiny_spec
from tests.unit.test_recovery_policy import first_plan

REPORTS = Path(__file__).parent / "reports"


def pods(name: str) -> list[dict]:
    return json.loads((REPORTS / f"{name}.json").read_text())["pods"]


@pytest.mark.parametrize(("report", "kind", "action", "says"), [
    ("gpu-oom", Kind.OUT_OF_MEMORY, Action.REPLAN, "kubetune-oom peak_allocated_bytes="),
    # The same failure, where the Job's end stopped the peer before it saw its collective break.
    ("gpu-oom-peer-stopped", Kind.OUT_OF_MEMORY, Action.REPLAN, "kubetune-oom peak_allocated_bytes="),
    ("host-oom", Kind.HOST_OUT_OF_MEMORY, Action.GIVE_UP, "kubetune-host-oom limit_bytes="),
    # The same kill, where the Job's end stopped the peer before it saw its collective break.
    ("host-oom-peer-stopped", Kind.HOST_OUT_OF_MEMORY, Action.GIVE_UP, "kubetune-host-oom limit_bytes="),
    ("invalid-input", Kind.INVALID_INPUT, Action.GIVE_UP, "messages"),
])
def test_a_failed_attempt_is_read_for_what_it_was(report: str, kind: Kind, action: Action, says: str) -> None:
    failure = recovery.classify(pods(report), job_message="")
    assert failure.kind is kind, failure
    assert says in failure.message
    plan, _ = first_plan(tiny_spec())
    assert recovery.action(failure, [], api.Recovery(), plan) is action


def test_the_gpu_oom_report_carries_what_the_replan_scales_by() -> None:
    failure = recovery.classify(pods("gpu-oom"), job_message="")
    # On simulated GPUs torch measured nothing: the replan scales by the whole device, as for a real one.
    assert (failure.measured_peak_bytes, failure.device_total_bytes) == (0, 0)


def test_the_host_oom_report_names_the_limit_the_pod_had() -> None:
    killed = [s["state"]["terminated"] for p in pods("host-oom") for s in p["status"]["containerStatuses"]
              if s["state"].get("terminated", {}).get("exitCode") == contract.HOST_OOM_EXIT_CODE]
    assert killed and contract.parse_host_oom(killed[0]["message"]) > 0


def test_a_deleted_pod_is_a_lost_worker_not_its_peers_broken_collectives() -> None:
    failure = recovery.classify(pods("deleted-pod"), job_message="")
    plan, _ = first_plan(tiny_spec())
    assert failure.kind is Kind.WORKER_LOST and "kubetune-stopped" in failure.message, failure
    assert recovery.action(failure, [], api.Recovery(), plan) is Action.RESTART


@pytest.mark.parametrize(("report", "reason", "says"), [
    ("missing-secret", "CreateContainerConfigError", "no-such-secret"),
    ("missing-secret-key", "CreateContainerConfigError", "no-such-key"),
    ("unpullable-image", "ImagePullBackOff", "no-such-tag"),
    ("malformed-image", "InvalidImageName", "Kubetune/Trainer"),
])
def test_workers_that_cannot_start_are_bad_input_named_by_the_kubelet(report: str, reason: str, says: str) -> None:
    blocked = recovery.blocked(pods(f"cannot-start-{report}"))
    assert blocked is not None and blocked.kind is Kind.INVALID_INPUT
    assert reason in blocked.message and says in blocked.message, blocked.message
