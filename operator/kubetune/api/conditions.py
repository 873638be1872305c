"""The FineTuneJob's condition types and reasons: part of the API, as stable as the fields. A reason is one
CamelCase word that a user or a tool may match on; the message says the rest."""

from enum import StrEnum


class ConditionType(StrEnum):
    PLANNED = "Planned"
    # Whether the Job may run: False while Kueue holds it in its queue.
    ADMITTED = "Admitted"
    # spec.suspend: the training pods are stopped, the checkpoints kept.
    SUSPENDED = "Suspended"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    # Whether what the job trains outlives its pods: False (with a Warning Event) when output.claimName is unset.
    OUTPUT_DURABLE = "OutputDurable"


# The order of a job's life, which `kubectl describe` lists them in.
ORDER = tuple(ConditionType)
# Set to Unknown when a job is first seen, so that every condition is there to watch from the start.
TRACKED = (ConditionType.PLANNED, ConditionType.ADMITTED, ConditionType.SUSPENDED, ConditionType.RUNNING,
           ConditionType.SUCCEEDED, ConditionType.FAILED)


class Reason(StrEnum):
    NOT_YET_OBSERVED = "NotYetObserved"
    # Planning
    PLANNED = "Planned"
    REPLANNED = "Replanned"
    UNSCHEDULABLE = "Unschedulable"
    MODEL_UNKNOWN = "ModelUnknown"
    INVALID_MODEL_CONFIG = "InvalidModelConfig"
    INVALID_SPEC = "InvalidSpec"
    INVALID_NAME = "InvalidName"
    # Admission and suspension
    ADMITTED = "Admitted"
    QUEUED = "WaitingForQueue"
    SUSPENDED = "SuspendedBySpec"
    NOT_SUSPENDED = "NotSuspended"
    # The workers
    PODS_RUNNING = "PodsRunning"
    PODS_PENDING = "PodsPending"
    RESTARTING = "Restarting"
    COMPLETED = "JobCompleted"
    # The plan fits the cluster, and its GPUs are busy: the children are created when they free.
    WAITING_FOR_CAPACITY = "WaitingForCapacity"
    # What the job needs before its pods can start (controller/refusals.py)
    NAME_CONFLICT = "NameConflict"
    QUOTA_EXCEEDED = "QuotaExceeded"
    CHILD_FORBIDDEN = "ChildForbidden"
    CHILD_REFUSED = "ChildRefused"
    WAITING_FOR_REFERENCES = "WaitingForReferences"
    MISSING_REFERENCE = "MissingReference"
    # Why an attempt ended (controller/recovery.py)
    HOST_OUT_OF_MEMORY = "HostOutOfMemory"
    GPU_OUT_OF_MEMORY = "GPUOutOfMemory"
    INVALID_INPUT = "InvalidInput"
    WORKER_FAILED = "WorkerFailed"
    WORKER_LOST = "WorkerLost"
    # Its resources changed while it was suspended (controller/resize.py)
    RESIZED = "Resized"
    # Output
    OUTPUT_ON_CLAIM = "OutputOnClaim"
    EPHEMERAL_OUTPUT = "EphemeralOutput"


# Reasons of a job that waits on something other than its pods: worth a Warning Event when they begin.
WAITING = (Reason.QUOTA_EXCEEDED, Reason.CHILD_FORBIDDEN, Reason.WAITING_FOR_REFERENCES)
