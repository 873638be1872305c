"""The real node as the planner and the job builder see it: simulated GPUs used only when named, pinned GPU
and node counts packed onto nodes with GPUs free, pod requests within the node's share, the restricted pod
security profile; and the node's own configuration files."""

import ipaddress
import json
import tarfile
from pathlib import Path

import yaml

from kubetune.api import contract
from kubetune.api import v1alpha1 as api
from kubetune.catalog.cluster_gpus import node_groups
from kubetune.config import DEFAULT_TRAINER_IMAGE
from kubetune.devcluster import node_config, oci, profile, seed
from kubetune.devcluster.node import SIMULATED_LABEL
from kubetune.planner.decision import decide, waiting_for_capacity
from kubetune.resources.job import TRAINER_UID
from kubetune.resources.job import job as job_manifest

ROOT = Path(__file__).resolve().parents[2]


def real_node(gpus: int = 4, cpu: str = "2", memory: str = "24000000Ki") -> dict:
    spec = profile.load("default").real_node
    assert spec is not None
    labels = profile.gfd_labels(spec.instance_type, spec.gpu, "550.127.05", "12.4") | {SIMULATED_LABEL: "true"}
    return {"metadata": {"name": spec.name, "labels": labels}, "spec": {},
            "status": {"allocatable": {"nvidia.com/gpu": str(gpus), "cpu": cpu, "memory": memory}}}


def tiny_spec(**resources: object) -> api.FineTuneJobSpec:
    manifest = yaml.safe_load((ROOT / "examples" / "tiny-lora.yaml").read_text())
    manifest["spec"]["resources"] = {**manifest["spec"]["resources"], **resources}
    return api.FineTuneJobSpec.model_validate(manifest["spec"])


def held_by(node: str, gpus: int) -> dict:
    return {"spec": {"nodeName": node, "containers": [{"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]},
            "status": {"phase": "Running"}}


def test_simulated_gpus_are_planned_only_for_jobs_that_name_their_type() -> None:
    nodes = [*profile.load("default").node_manifests(), real_node()]
    anywhere = api.FineTuneJobSpec.model_validate({"model": {"name": "Qwen/Qwen2.5-0.5B"}, "dataset": {"source": "d"}})
    assert decide(anywhere, node_groups(nodes, [])).plan.gpu_type != "A10G-24GB"
    only = decide(tiny_spec(gpus=None, nodes=None), node_groups([real_node()], []))
    assert only.plan is not None and only.plan.gpu_type == "A10G-24GB"
    unnamed = decide(tiny_spec(gpuTypes=None, gpus=None, nodes=None), node_groups([real_node()], []))
    assert unnamed.plan is None and "simulated, only for jobs that name it" in unnamed.message


def test_pinned_gpus_and_nodes_give_that_many_pods_which_may_share_a_node() -> None:
    decision = decide(tiny_spec(), node_groups([real_node()], []))
    plan = decision.plan
    assert plan is not None and (plan.gpus, plan.nodes, plan.gpus_per_node) == (2, 2, 1)
    job = job_manifest("tiny", tiny_spec(), plan, decision.group, DEFAULT_TRAINER_IMAGE, "tiny-config-0")
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--nnodes=2" in command and "--nproc_per_node=1" in command and job["spec"]["completions"] == 2


def test_pinned_pods_that_fit_the_node_but_not_its_free_gpus_wait_for_them() -> None:
    busy_groups = node_groups([real_node()], [held_by("real-0", 3)])
    busy = decide(tiny_spec(), busy_groups)
    assert busy.plan is not None and busy.plan.nodes == 2  # planned on the cluster as it is, busy or not
    assert waiting_for_capacity(busy.plan, busy_groups) == (
        "waiting for capacity: the plan needs 2 pod(s) of 1 A10G-24GB GPUs; the cluster's NVIDIA-A10G nodes hold 1 "
        "such pod(s) now and 4 when free")
    half_groups = node_groups([real_node()], [held_by("real-0", 2)])
    half = decide(tiny_spec(), half_groups)
    assert half.plan is not None and half.plan.nodes == 2 and waiting_for_capacity(half.plan, half_groups) is None


def test_pod_requests_stay_within_the_pods_share_of_its_node() -> None:
    decision = decide(tiny_spec(), node_groups([real_node(cpu="2", memory="8Gi")], []))
    resources = job_manifest("tiny", tiny_spec(), decision.plan, decision.group, DEFAULT_TRAINER_IMAGE, "tiny-config-0")[
        "spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"]["cpu"] == "500m"  # a quarter of the node's 2 cores: one of its 4 GPUs
    assert resources["requests"]["memory"] == f"{8 * 1024 // 4}Mi"
    # The share is also the limit: a pod that outgrows it is killed instead of starving its neighbours.
    assert resources["limits"]["memory"] == f"{8 * 1024 // 4}Mi"


def test_training_pods_meet_the_restricted_pod_security_profile_and_can_write_root_owned_claims() -> None:
    decision = decide(tiny_spec(), node_groups([real_node()], []))
    pod = job_manifest("tiny", tiny_spec(), decision.plan, decision.group, DEFAULT_TRAINER_IMAGE, "tiny-config-0")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"] == TRAINER_UID
    container = pod["containers"][0]["securityContext"]
    assert container == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def test_node_files_keep_everything_under_the_nodes_folder(tmp_path: Path) -> None:
    paths = node_config.NodePaths(state=tmp_path / "node", images=tmp_path / "images")
    network = node_config.NodeNetwork("kt-test", ipaddress.ip_network("10.244.3.0/24"))
    assert network.node_ip == "10.244.3.1" and network.pod_range == ("10.244.3.10", "10.244.3.254")
    toml = node_config.containerd_toml(paths, "localhost/pause:1", tmp_path / "bin")
    assert f'root = "{paths.images}"' in toml and "restrict_oom_score_adj = true" in toml
    assert "netns_mounts_under_state_dir = true" in toml and "SystemdCgroup = false" in toml
    kubelet = yaml.safe_load(node_config.kubelet_config(network, paths, tmp_path / "ca.crt", "/kt", tmp_path / "r"))
    assert kubelet["address"] == "10.244.3.1" and kubelet["clusterDNS"] == ["10.244.3.1"]
    assert kubelet["authentication"]["anonymous"]["enabled"] is False
    assert kubelet["authorization"]["mode"] == "Webhook"
    assert kubelet["failCgroupV1"] is False and kubelet["cgroupDriver"] == "cgroupfs"
    # Another cluster's kubelet on the host would remove the container logs of pods it does not know.
    assert kubelet["podLogsDir"].startswith(str(paths.state))
    bridge = node_config.cni_conflist(network, paths)["plugins"][0]
    assert bridge["bridge"] == "kt-test" and bridge["isGateway"] is False and bridge["ipMasq"] is False
    assert bridge["ipam"]["dataDir"].startswith(str(paths.state))
    assert "bind 10.244.3.1" in node_config.corefile(network, tmp_path / "kubeconfig")


def test_the_pause_image_archive_names_its_image(tmp_path: Path) -> None:
    binary = tmp_path / "pause"
    binary.write_bytes(b"\x7fELF not really")
    oci.single_binary_image(binary, "/pause", "localhost/kubetune/pause:1", tmp_path / "pause.tar")
    with tarfile.open(tmp_path / "pause.tar") as archive:
        index = json.load(archive.extractfile("index.json"))
        manifest_digest = index["manifests"][0]["digest"].split(":")[1]
        manifest = json.load(archive.extractfile(f"blobs/sha256/{manifest_digest}"))
        config = json.load(archive.extractfile(f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}"))
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == "localhost/kubetune/pause:1"
    assert config["config"]["Entrypoint"] == ["/pause"] and len(manifest["layers"]) == 1


def test_the_demo_world_matches_the_tiny_example() -> None:
    spec = tiny_spec()
    assert spec.model.config == seed.model_config()
    assert spec.dataset.source == seed.DATASET_FILE and spec.model.tokenizer == seed.TOKENIZER_FOLDER


def test_more_gpus_per_pod_than_any_node_has_says_so() -> None:
    decision = decide(tiny_spec(gpus=8, nodes=1), node_groups([real_node()], []))
    assert decision.plan is None and "8 GPUs per node asked (gpus / nodes)" in decision.message
    assert "at most 4" in decision.message


def test_pinned_nodes_alone_take_whole_nodes() -> None:
    decision = decide(tiny_spec(gpus=None, nodes=1), node_groups([real_node()], []))
    assert decision.plan is not None and (decision.plan.nodes, decision.plan.gpus_per_node) == (1, 4)


def test_only_pods_of_simulated_gpus_may_run_on_the_cpu() -> None:
    simulated = decide(tiny_spec(), node_groups([real_node()], []))
    env = simulated.group and job_manifest("t", tiny_spec(), simulated.plan, simulated.group, DEFAULT_TRAINER_IMAGE, "tiny-config-0")[
        "spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "KUBETUNE_SIMULATED_GPUS", "value": "1"} in env
    anywhere = api.FineTuneJobSpec.model_validate({"model": {"name": "Qwen/Qwen2.5-0.5B"}, "dataset": {"source": "d"}})
    real = decide(anywhere, node_groups(profile.load("default").node_manifests(), []))
    env = job_manifest("q", anywhere, real.plan, real.group, DEFAULT_TRAINER_IMAGE, "tiny-config-0")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert all(e["name"] != "KUBETUNE_SIMULATED_GPUS" for e in env)


def test_the_fault_injection_annotation_reaches_the_first_attempt_only() -> None:
    decision = decide(tiny_spec(), node_groups([real_node()], []))
    annotations = {"testing.kubetune.io/inject-fault": "gpu-oom:5:1"}

    def env(attempt: int) -> list[dict]:
        return job_manifest("t", tiny_spec(), decision.plan, decision.group, DEFAULT_TRAINER_IMAGE, "tiny-config-0", attempt, annotations)[
            "spec"]["template"]["spec"]["containers"][0]["env"]

    assert {"name": "KUBETUNE_TESTING_INJECT_FAULT", "value": "gpu-oom:5:1"} in env(1)
    assert all(e["name"] != "KUBETUNE_TESTING_INJECT_FAULT" for e in env(2))


def test_training_pods_get_the_time_to_save_a_checkpoint_when_stopped() -> None:
    decision = decide(tiny_spec(), node_groups([real_node()], []))
    plan = decision.plan
    pod = job_manifest("tiny", tiny_spec(), plan, decision.group, DEFAULT_TRAINER_IMAGE, "tiny-config-0")["spec"]["template"]["spec"]
    grace = pod["terminationGracePeriodSeconds"]
    written = (plan.memory.weights_bytes + plan.memory.optimizer_states_bytes) * plan.gpus_per_node
    assert grace == contract.grace_seconds(written + plan.memory.host_bytes_per_node) > contract.SAVE_MARGIN_SECONDS
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env[contract.SAVE_SECONDS_ENV] == str(grace - contract.SHUTDOWN_SECONDS)
