"""The Indexed Job of the training pods: one pod per torchrun node, under the restricted Pod Security
profile, with the plan's GPUs, the pod's share of its node's CPU and memory, and the claims mounted."""

from typing import Any

from kubetune.api import contract
from kubetune.api import v1alpha1 as api
from kubetune.catalog.cluster_gpus import PRODUCT_LABEL, GpuNodeGroup
from kubetune.catalog.gpus import GPU_RESOURCE
from kubetune.resources.names import KUEUE_PASSED_LABELS, KUEUE_QUEUE_LABEL, LABEL_ATTEMPT, labels, names

# The trainer image's user (trainer_image/Dockerfile); also the pods' fsGroup, so a claim whose root is
# owned by root (as provisioners create them) is writable.
TRAINER_UID = 1000
# Per GPU, what a training pod asks for when its node has it to give: data loading and the launcher want a few
# cores, offload and checkpoint saving host memory.
CPU_MILLIS_PER_GPU = 4000
HOST_MEMORY_PER_GPU = 8 * 1024**3


def _tolerations(group: GpuNodeGroup) -> list[dict[str, Any]]:
    tolerations = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    for taint in group.taints:
        toleration = {"key": taint["key"], "operator": "Exists", "effect": taint.get("effect", "NoSchedule")}
        if toleration not in tolerations:
            tolerations.append(toleration)
    return tolerations


def _pod_metadata(name: str, spec: api.FineTuneJobSpec, attempt: int) -> dict[str, Any]:
    extra = spec.pod_metadata or api.PodMetadata()
    # Our own labels win: the Service and the operator select pods by them.
    metadata: dict[str, Any] = {"labels": {**(extra.labels or {}), **labels(name, "trainer"),
                                           LABEL_ATTEMPT: str(attempt)}}
    if extra.annotations:
        metadata["annotations"] = dict(extra.annotations)
    return metadata


def _requests(plan: api.Plan, group: GpuNodeGroup) -> tuple[int, int, int | None]:
    """CPU (millicores) and host memory (bytes) per pod: what the plan wants, but never more than the pod's share
    of its node (its GPUs' share), or a node with fewer cores than that per GPU could never run it; and the
    memory limit: that share, so a pod that outgrows it is killed (and recognised as such: recovery.py) instead
    of starving the pods of the node's other GPUs, which the kubelet would then evict."""
    share = plan.gpus_per_node / group.gpus_per_node
    cpu = CPU_MILLIS_PER_GPU * plan.gpus_per_node
    memory = plan.memory.host_bytes_per_node + HOST_MEMORY_PER_GPU * plan.gpus_per_node
    limit = None
    if group.cpu_millis is not None:
        cpu = min(cpu, int(group.cpu_millis * share))
    if group.host_memory_bytes is not None:
        limit = max(plan.memory.host_bytes_per_node, int(group.host_memory_bytes * share))
        memory = min(memory, limit)
    return max(cpu, 100), memory, limit


def job(name: str, spec: api.FineTuneJobSpec, plan: api.Plan, group: GpuNodeGroup, trainer_image: str,
        config_map: str, attempt: int = 1, annotations: dict[str, str] | None = None,
        labels_of_job: dict[str, str] | None = None) -> dict[str, Any]:
    """`trainer_image` is the operator's (its configuration), used unless the spec names one; `config_map` is
    the name of the ConfigMap its pods mount; `annotations` and `labels_of_job` are the FineTuneJob's."""
    child = names(name)
    master = f"{child['job']}-0.{child['service']}"
    command = [
        # The launcher runs torchrun and exits with the failing rank's own code (api/contract.py).
        "python", "-m", "kubetune.trainer.launch", f"--nnodes={plan.nodes}", f"--nproc_per_node={plan.gpus_per_node}",
        "--node_rank=$(JOB_COMPLETION_INDEX)", f"--master_addr={master}", f"--master_port={contract.RENDEZVOUS_PORT}",
        "-m", "kubetune.trainer", f"--config={contract.CONFIG_DIR}/trainer.json",
        f"--deepspeed={contract.CONFIG_DIR}/ds_config.json",
    ]
    # What a pod writes when it saves: each GPU's model states, and what offload keeps on the host.
    grace = contract.grace_seconds((plan.memory.weights_bytes + plan.memory.optimizer_states_bytes) *
                                   plan.gpus_per_node + plan.memory.host_bytes_per_node)
    env: list[dict[str, Any]] = [{"name": contract.SAVE_SECONDS_ENV, "value": str(grace - contract.SHUTDOWN_SECONDS)},
                                 {"name": contract.ALLOCATOR_CONF_ENV, "value": contract.ALLOCATOR_CONF}]
    if group.simulated:
        env.append({"name": contract.SIMULATED_GPUS_ENV, "value": "1"})
    inject = (annotations or {}).get(contract.INJECT_FAULT_ANNOTATION)
    if inject and attempt == 1:
        env.append({"name": contract.INJECT_FAULT_ENV, "value": inject})
    if spec.hub_token_secret_ref is not None:
        ref = spec.hub_token_secret_ref
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": config_map}},
        # NCCL and the data loaders need more shared memory than a container's default 64 MiB.
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{8 * plan.gpus_per_node}Gi"}},
        {"name": "output", "persistentVolumeClaim": {"claimName": spec.output.claim_name}}
        if spec.output.claim_name else {"name": "output", "emptyDir": {}},
    ]
    mounts = [{"name": "config", "mountPath": contract.CONFIG_DIR, "readOnly": True},
              {"name": "dshm", "mountPath": "/dev/shm"},
              {"name": "output", "mountPath": spec.output.path}]
    if spec.dataset.claim_name:
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": spec.dataset.claim_name, "readOnly": True}})
        mounts.append({"name": "data", "mountPath": str(contract.DATA_MOUNT), "readOnly": True})
    cpu_millis, host_memory, memory_limit = _requests(plan, group)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # Time for the trainer to save a checkpoint when the pod is stopped (suspended, preempted, evicted).
        "terminationGracePeriodSeconds": grace,
        "subdomain": child["service"],
        # The Pod Security Standards' restricted profile; fsGroup makes the claims writable for the trainer's
        # user (OnRootMismatch: a big claim is not walked again at every start).
        "securityContext": {"runAsNonRoot": True, "runAsUser": TRAINER_UID, "runAsGroup": TRAINER_UID,
                            "fsGroup": TRAINER_UID, "fsGroupChangePolicy": "OnRootMismatch",
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "nodeSelector": {PRODUCT_LABEL: plan.gpu_product},
        "tolerations": _tolerations(group),
        "containers": [{
            "name": "trainer",
            "image": spec.images.trainer or trainer_image,
            "command": command,
            "env": env,
            # One metrics port per local rank; the chart's PodMonitor scrapes every port named metrics*.
            "ports": [{"name": "rendezvous", "containerPort": contract.RENDEZVOUS_PORT},
                      *({"name": "metrics" if i == 0 else f"metrics-{i}", "containerPort": contract.METRICS_PORT + i}
                        for i in range(plan.gpus_per_node))],
            "resources": {
                "limits": {GPU_RESOURCE: str(plan.gpus_per_node),
                           **({"memory": f"{memory_limit // 1024**2}Mi"} if memory_limit is not None else {})},
                "requests": {GPU_RESOURCE: str(plan.gpus_per_node), "cpu": f"{cpu_millis}m",
                             "memory": f"{host_memory // 1024**2}Mi"},
            },
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": mounts,
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }],
        "volumes": volumes,
    }
    if spec.priority_class_name:
        pod_spec["priorityClassName"] = spec.priority_class_name
    job_labels = {**labels(name, "trainer"), LABEL_ATTEMPT: str(attempt)}
    if spec.queue_name:
        job_labels[KUEUE_QUEUE_LABEL] = spec.queue_name
        # What Kueue reads from a Job it manages, given where users of Kueue write it: on their workload.
        job_labels.update({k: v for k, v in (labels_of_job or {}).items() if k in KUEUE_PASSED_LABELS})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": child["job"], "labels": job_labels},
        "spec": {
            "completionMode": "Indexed",
            "completions": plan.nodes,
            "parallelism": plan.nodes,
            # A failed worker fails the attempt; the operator restarts the whole gang (controller/recovery.py).
            "backoffLimit": 0,
            # Kueue unsuspends the Job when it admits it.
            "suspend": spec.suspend or spec.queue_name is not None,
            "template": {"metadata": _pod_metadata(name, spec, attempt), "spec": pod_spec},
        },
    }
