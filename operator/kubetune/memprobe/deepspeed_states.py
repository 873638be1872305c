"""What DeepSpeed keeps per rank between steps, for each ZeRO stage: run under torchrun on the CPU (gloo).

    DS_ACCELERATOR=cpu torchrun --standalone --nproc_per_node 2 -m kubetune.memprobe.deepspeed_states

Builds a tiny random-weight Llama as the trainer builds it (trainer/model_setup.py), trains a few steps under
each ZeRO stage, full and LoRA, in mixed bf16, pure bf16 and (LoRA) with fp32 adapters, with the DeepSpeed config kubetune generates (planner/ds_config.py) as the trainer
adapts it to the machine, and prints one JSON line per configuration from rank 0: the bytes of all live tensors
on this rank (unique storages, found through the garbage collector) once the step has finished, the optimizer
class DeepSpeed chose, the dtype DeepSpeed left each parameter and buffer of the module in, the dtypes of the
optimizer's states, and the losses.
"""

import gc
import json
import logging
import os

import deepspeed
import torch

from kubetune.api.vocabulary import Method, Precision, ZeroStage
from kubetune.memprobe import tiny_models
from kubetune.planner import architecture
from kubetune.planner.ds_config import ds_config
from kubetune.planner.settings import Buckets, Lora, TrainingSettings
from kubetune.trainer.run import for_this_machine

BUCKETS = Buckets(reduce_bucket_elements=1_000_000, overlap_comm=False)
# Steps on one repeated batch, at the generated config's learning rate: enough for the loss to fall in every
# precision (pure bf16 included), few enough to keep the probe in seconds.
STEPS = 3
SHAPE = {"hidden_size": 512, "intermediate_size": 1376, "vocab_size": 2000}


def live_tensor_bytes() -> int:
    storages: dict[int, int] = {}
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and not obj.is_meta:
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


# The precisions measured besides mixed bf16, each at every stage: (precision, method, fp32 LoRA adapters); QLoRA at
# the stages it runs at (settings.QLORA_ZERO3: not ZeRO-3).
VARIANTS = ((Precision.BF16, Method.FULL, False), (Precision.BF16, Method.LORA, False),
            (Precision.PURE_BF16, Method.FULL, False), (Precision.PURE_BF16, Method.LORA, False),
            (Precision.BF16, Method.LORA, True), (Precision.BF16, Method.QLORA, False))


def refused(stage: int, method: Method) -> bool:
    return method is Method.QLORA and stage == ZeroStage.PARAMETERS


def settings_for(stage: int, method: Method, ranks: int, precision: Precision = Precision.BF16,
                 adapters_fp32: bool = False) -> TrainingSettings:
    return TrainingSettings(seq_len=32, method=method, zero_stage=ZeroStage(stage), num_gpus=ranks, gpus_per_node=ranks,
                            buckets=BUCKETS, precision=precision, lora=Lora(adapters_fp32=adapters_fp32))


def dtypes(model: torch.nn.Module) -> dict[str, str]:
    """Each parameter's and buffer's dtype by name."""
    return {name: str(t.dtype) for name, t in [*model.named_parameters(), *model.named_buffers()]}


def optimizer_state_dtypes(optimizer: torch.optim.Optimizer) -> list[str]:
    """The dtypes of the optimizer's state tensors (not its step counters), through DeepSpeed's wrappers."""
    inner = getattr(optimizer, "optimizer", optimizer)
    return sorted({str(t.dtype) for state in inner.state.values() for t in state.values()
                   if isinstance(t, torch.Tensor) and t.dim() > 0})


def measure(stage: int, method: Method, precision: Precision = Precision.BF16, adapters_fp32: bool = False) -> dict:
    gc.collect()
    before = live_tensor_bytes()
    model_config = tiny_models.tiny_config("llama", 4, **SHAPE)
    settings = settings_for(stage, method, int(os.environ["WORLD_SIZE"]), precision, adapters_fp32)
    arch = architecture.from_hf_config(model_config)
    model = tiny_models.trainer_model(model_config, settings)
    # No fused CUDA Adam on the CPU: the trainer runs torch's AdamW, which holds the same states.
    config = for_this_machine(ds_config(settings))
    engine, optimizer, _, _ = deepspeed.initialize(
        model=model, model_parameters=[p for p in model.parameters() if p.requires_grad], config=config)
    del model
    ids = torch.randint(0, arch.vocab_size, (1, 32))
    losses = []
    for _ in range(STEPS):
        loss = engine(input_ids=ids, labels=ids).loss
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    gc.collect()
    result = {"stage": stage, "method": method, "precision": precision, "adapters_fp32": adapters_fp32,
              "optimizer": type(optimizer).__name__,
              "at_rest_bytes": live_tensor_bytes() - before - ids.numel() * ids.element_size(),
              "dtypes": dtypes(engine.module), "optimizer_state_dtypes": optimizer_state_dtypes(optimizer),
              "losses": losses}
    engine.destroy()
    return result


def main() -> None:
    deepspeed.utils.logger.setLevel(logging.ERROR)
    deepspeed.init_distributed(dist_backend="gloo")
    for stage in (0, 1, 2, 3):
        for precision, method, adapters_fp32 in VARIANTS:
            if refused(stage, method):
                continue
            result = measure(stage, method, precision, adapters_fp32)
            if int(os.environ.get("RANK", "0")) == 0:
                print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
