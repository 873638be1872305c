"""The contract between the operator and the trainer: the trainer.json the operator mounts into every
training pod. One pydantic model, written by resources/config_map.py and read by kubetune.trainer (`parse`).

Versioning: a field added that an older trainer may safely ignore (a report, a hint) keeps VERSION, and a
trainer that meets a field it does not know ignores it and says so; a field added or changed that alters
what is trained (an older trainer ignoring it would train something else) bumps VERSION, and a trainer
refuses every version but its own with a message naming both, so the operator fails the job as bad input
instead of restarting it."""

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from kubetune.api import contract
from kubetune.api import v1alpha1 as api
from kubetune.api.vocabulary import AdapterPrecision, Attention, Method, Precision

# 2: the configuration's names are the API's (api/vocabulary.py: LoRA, FlashAttention2, BF16).
# 3: LoRA's adapter precision (an older trainer would train model-dtype adapters where fp32 ones were planned)
# and precision PureBF16.
# 4: lossChunkTokens (an older trainer would run the stock loss, whose logits the plan may not have room for).
VERSION: Literal[4] = 4


class LoraConfig(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    rank: int = Field(gt=0)
    alpha: int = Field(gt=0)
    targets: list[str]
    dropout: float = Field(ge=0, lt=1)
    adapter_precision: AdapterPrecision = AdapterPrecision.MODEL


class TrainerConfig(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    version: Literal[4] = VERSION
    job: str
    model: api.ModelSource
    tokenizer: str | None = None  # a path or hub id; the model's when empty
    dataset: api.Dataset
    training: api.Training
    output: api.Output
    checkpoint_interval_steps: int = Field(gt=0)
    method: Method
    lora: LoraConfig | None = None
    gradient_checkpointing: bool
    attention: Attention
    precision: Precision
    # The chunked cross-entropy's chunk in tokens (trainer/chunked_loss.py); absent: Hugging Face's own loss.
    loss_chunk_tokens: int | None = Field(default=None, gt=0)
    metrics_port: int = Field(default=contract.METRICS_PORT, gt=0, lt=65536)
    # The prediction travels with the run, so the trainer reports predicted against measured memory.
    plan: api.Plan | None = None


class ContractVersionError(ValueError):
    """trainer.json was written for another version of the contract than this trainer's."""


def parse(text: str) -> tuple[TrainerConfig, list[str]]:
    """trainer.json -> the config and the fields this trainer did not know and ignored."""
    raw = json.loads(text)
    version = raw.get("version") if isinstance(raw, dict) else None
    if version != VERSION:
        side = "a newer" if isinstance(version, int) and version > VERSION else "an older"
        raise ContractVersionError(
            f"trainer.json is contract version {version}, written by {side} operator; this trainer image speaks "
            f"version {VERSION}: run the trainer image of the operator's release (unset spec.images.trainer, or "
            "set it to that release's image)")
    try:
        return TrainerConfig.model_validate(raw), []
    except ValidationError as error:
        unknown = [e["loc"] for e in error.errors() if e["type"] == "extra_forbidden"]
        if len(unknown) < error.error_count():
            raise
    for loc in unknown:
        _drop(raw, loc)
    return TrainerConfig.model_validate(raw), [".".join(str(part) for part in loc) for loc in unknown]


def _drop(raw: Any, loc: tuple[str | int, ...]) -> None:
    for part in loc[:-1]:
        raw = raw[part]
    del raw[loc[-1]]
