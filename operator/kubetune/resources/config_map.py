"""The ConfigMap every training pod mounts: DeepSpeed's ds_config.json and the trainer's trainer.json (the
operator-trainer contract, api/trainer_config.py)."""

import json
from typing import Any

from kubetune.api import contract
from kubetune.api import v1alpha1 as api
from kubetune.api.trainer_config import LoraConfig, TrainerConfig
from kubetune.api.vocabulary import AdapterPrecision
from kubetune.planner.ds_config import ds_config
from kubetune.planner.settings import TrainingSettings
from kubetune.resources.names import config_map_name, labels


def config_map(name: str, spec: api.FineTuneJobSpec, plan: api.Plan, settings: TrainingSettings) -> dict[str, Any]:
    lora = settings.lora
    trainer = TrainerConfig(
        job=name, model=spec.model, tokenizer=spec.model.tokenizer, dataset=spec.dataset, training=spec.training,
        output=spec.output, checkpoint_interval_steps=spec.checkpoint_interval_steps, method=settings.method,
        # alpha = 2 x rank, the common choice; the API exposes rank only.
        lora=LoraConfig(rank=lora.rank, alpha=2 * lora.rank, targets=list(lora.target_modules), dropout=lora.dropout,
                        adapter_precision=AdapterPrecision.FP32 if lora.adapters_fp32 else AdapterPrecision.MODEL)
        if settings.method.trains_adapters else None,
        gradient_checkpointing=settings.gradient_checkpointing, attention=settings.attention,
        precision=settings.precision, loss_chunk_tokens=settings.loss_chunk_tokens, metrics_port=contract.METRICS_PORT,
        plan=plan,
    )
    lr = float(spec.training.learning_rate)
    data = {"ds_config.json": json.dumps(ds_config(settings, lr), indent=2),
            "trainer.json": trainer.model_dump_json(by_alias=True, exclude_none=True, indent=2)}
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": config_map_name(name, data), "labels": labels(name, "config")}, "data": data}
