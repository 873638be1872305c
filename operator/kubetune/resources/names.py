"""The names and labels of a FineTuneJob's children: deterministic, so an operator restart finds, never
duplicates, what it created."""

import hashlib
import json
from typing import Any

LABEL_JOB = "kubetune.io/finetunejob"
LABEL_COMPONENT = "kubetune.io/component"
# Which attempt of the run a Job and its pods belong to: restarts replace the Job under the same name.
LABEL_ATTEMPT = "kubetune.io/attempt"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# Kueue's labels of a workload that a FineTuneJob passes on to its Job: the WorkloadPriorityClass it is
# admitted and preempted by, and the time after which Kueue stops it.
KUEUE_PASSED_LABELS = ("kueue.x-k8s.io/priority-class", "kueue.x-k8s.io/max-exec-time-seconds")
# Set by the Job controller on an Indexed Job's pods.
COMPLETION_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"


def names(job_name: str) -> dict[str, str]:
    return {"service": f"{job_name}-workers", "job": f"{job_name}-train"}


def config_map_name(job_name: str, data: dict[str, str]) -> str:
    """Named for its content, as kustomize's generated ConfigMaps are: a Job can then be created beside its
    ConfigMap, not after it, and its pods still mount exactly the configuration it was made for, never a
    ConfigMap of the same name that an earlier, unfinished creation left and a replan since changed."""
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return f"{job_name}-config-{digest[:10]}"


def labels(job_name: str, component: str) -> dict[str, str]:
    return {LABEL_JOB: job_name, LABEL_COMPONENT: component}


def trainer_selector(job_name: str, attempt: int | None = None) -> str:
    """The label selector of the run's training pods: of every attempt, or of the one named."""
    selected = labels(job_name, "trainer")
    if attempt is not None:
        selected[LABEL_ATTEMPT] = str(attempt)
    return ",".join(f"{key}={value}" for key, value in selected.items())


def attempt_of(job: dict[str, Any]) -> int:
    return int(job["metadata"].get("labels", {}).get(LABEL_ATTEMPT, "1"))
