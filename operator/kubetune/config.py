"""The operator's configuration: one typed object, built once by `kubetune run-operator` from its flags and
the environment the chart's values set, kept in kopf's memo and passed down. Nothing else reads the
environment."""

import json
import os
import socket
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_TRAINER_IMAGE = "kubetune/trainer:0.1.0"
# The chart's values reach the operator as these variables (charts/kubetune/templates/deployment.yaml).
ENVIRONMENT = {"reconcile_seconds": "KUBETUNE_RECONCILE_SECONDS", "gpu_prices": "KUBETUNE_GPU_PRICES",
               "trainer_image": "KUBETUNE_TRAINER_IMAGE", "identity": "POD_NAME",
               "autoscaled_pools": "KUBETUNE_AUTOSCALED_GPU_POOLS"}
JSON_FIELDS = ("gpu_prices", "autoscaled_pools")


class ConfigError(ValueError):
    """A flag or variable the operator cannot start with; the message names it."""


class AutoscaledPool(BaseModel):
    """A GPU node pool a cluster autoscaler grows (from zero, or beyond the nodes it has now): its nodes' shape,
    which the planner cannot read from nodes that do not exist yet."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    gpu_type: str = Field(alias="gpuType", min_length=1, description="The kubetune GPU id of its nodes.")
    gpus_per_node: int = Field(alias="gpusPerNode", ge=1, le=16)
    max_nodes: int = Field(alias="maxNodes", ge=1, le=10000, description="The most nodes the autoscaler makes.")
    cpu: str = Field(min_length=1, description="A node's allocatable CPU, a Quantity.")
    memory: str = Field(min_length=1, description="A node's allocatable memory, a Quantity.")


class OperatorConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    namespaces: tuple[str, ...] = Field(default=(), description="Namespaces watched; empty: all.")
    liveness_endpoint: str | None = None
    metrics_port: int | None = Field(default=None, gt=0, lt=65536)
    leader_election_namespace: str | None = None
    lease_name: str = "kubetune-operator"
    identity: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
                          description="This replica's name in the leader election Lease (the chart: the pod's).")
    reconcile_seconds: float = Field(default=10.0, gt=0, description="How often an unfinished job is looked at.")
    gpu_prices: dict[str, float] = Field(default_factory=dict, description="USD per GPU-hour by kubetune GPU id, "
                                         "overriding the catalog's list prices.")
    trainer_image: str = Field(default=DEFAULT_TRAINER_IMAGE, min_length=1,
                               description="The trainer image of jobs that do not name one.")
    autoscaled_pools: tuple[AutoscaledPool, ...] = Field(default=(), description="GPU pools a cluster "
                                                         "autoscaler grows: planned on up to their size.")


def load(environ: Mapping[str, str], **flags: object) -> OperatorConfig:
    """Flags as given, then the environment for what they leave unset."""
    values: dict[str, object] = {key: value for key, value in flags.items() if value is not None}
    for field, variable in ENVIRONMENT.items():
        if field not in values and environ.get(variable):
            raw = environ[variable]
            try:
                values[field] = json.loads(raw) if field in JSON_FIELDS else raw
            except json.JSONDecodeError as error:
                raise ConfigError(f"{variable} is not JSON ({error}): {raw!r}") from error
    try:
        return OperatorConfig.model_validate(values)
    except ValidationError as error:
        problems = "; ".join(f"{ENVIRONMENT.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}"
                             for e in error.errors())
        raise ConfigError(f"the operator cannot start: {problems}") from error
