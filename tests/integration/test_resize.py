"""A suspended job may be resized: its resources change while it is suspended (and only then: the CRD's
rule refuses the change at apply time otherwise), and on resume it is replanned for them and goes on."""

from kubetune.devcluster.cluster import LocalCluster
from tests.integration.ftj import Operator, apply, condition, events, example, get, in_phase
from tests.integration.waiting import wait_until


def test_resources_change_only_while_the_job_is_suspended(cluster: LocalCluster, operator: Operator,
                                                          namespace: str) -> None:
    manifest = example("minimal")
    manifest["spec"]["resources"] = {"gpuTypes": ["L4-24GB"]}
    assert apply(cluster, namespace, manifest).returncode == 0
    refused = cluster.kubectl("patch", "ftj", "minimal", "-n", namespace, "--type=merge", "-p",
                              '{"spec":{"resources":{"gpuTypes":["A100-SXM4-80GB"]}}}')
    assert refused.returncode != 0
    assert "`resources` may change only while the job is suspended" in refused.stderr, refused.stderr


def test_a_suspended_job_resized_is_replanned_for_its_new_resources_when_it_resumes(
        cluster: LocalCluster, operator: Operator, namespace: str) -> None:
    manifest = example("minimal")
    manifest["spec"]["resources"] = {"gpuTypes": ["L4-24GB"]}
    manifest["spec"]["suspend"] = True
    assert apply(cluster, namespace, manifest).returncode == 0
    ftj = wait_until("the suspended job to be planned", in_phase(cluster, namespace, "minimal", "Suspended"))
    wait_until("its Job, suspended", lambda: get(cluster, namespace, "job", "minimal-train"))
    assert ftj["status"]["plan"]["gpuType"] == "L4-24GB"

    cluster.kubectl_ok("patch", "ftj", "minimal", "-n", namespace, "--type=merge", "-p",
                       '{"spec":{"suspend":false,"resources":{"gpuTypes":["A100-SXM4-80GB"]}}}')
    ftj = wait_until("the resized job to succeed", in_phase(cluster, namespace, "minimal", "Succeeded", "Failed"))
    assert ftj["status"]["phase"] == "Succeeded", ftj["status"]
    assert ftj["status"]["plan"]["gpuType"] == "A100-SXM4-80GB"
    assert ftj["status"]["plan"]["plannedFor"]["gpuTypes"] == ["A100-SXM4-80GB"]
    [resized] = ftj["status"]["attempts"]
    assert resized["reason"] == "Resized" and "gpuTypes ['L4-24GB'] -> ['A100-SXM4-80GB']" in resized["message"]
    assert resized["action"].startswith("replanned for the new resources: A100-SXM4-80GB")
    assert condition(ftj, "Planned")["reason"] == "Replanned"
    job = get(cluster, namespace, "job", "minimal-train")
    assert job["metadata"]["labels"]["kubetune.io/attempt"] == "2"
    assert job["spec"]["template"]["spec"]["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
    assert any(e["reason"] == "Resized" and e["type"] == "Normal" for e in events(cluster, namespace, "minimal"))
