"""The contract between the operator and the trainer: the trainer.json the operator mounts into every
training pod. One pydantic model, written by controller/children.py and read by kubetune.trainer; `version`
changes whenever a field changes meaning, and the trainer refuses versions it does not know."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from kubetune.api import v1alpha1 as api

VERSION = 1


class LoraConfig(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    rank: int = Field(gt=0)
    alpha: int = Field(gt=0)
    targets: list[str]
    dropout: float = Field(ge=0, lt=1)


class TrainerConfig(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    version: Literal[1] = VERSION
    job: str
    model: api.ModelSource
    tokenizer: str | None = None  # a path or hub id; the model's when empty
    dataset: api.Dataset
    training: api.Training
    output: api.Output
    checkpoint_interval_steps: int = Field(gt=0)
    method: Literal["full", "lora"]
    lora: LoraConfig | None = None
    gradient_checkpointing: bool
    attention: Literal["eager", "sdpa", "flash_attention_2"]
    precision: Literal["bf16", "fp16", "fp32"]
    metrics_port: int = Field(default=9400, gt=0, lt=65536)
    # The prediction travels with the run, so the trainer reports predicted against measured memory.
    plan: api.Plan | None = None
