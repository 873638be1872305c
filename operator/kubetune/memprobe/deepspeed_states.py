"""What DeepSpeed keeps per rank between steps, for each ZeRO stage: run under torchrun on the CPU (gloo).

    DS_ACCELERATOR=cpu torchrun --standalone --nproc_per_node 2 -m kubetune.memprobe.deepspeed_states

Builds a tiny random-weight Llama, trains two steps under each ZeRO stage, full and LoRA, with the DeepSpeed
config kubetune generates (planner/ds_config.py), and prints one
JSON line per configuration from rank 0: the bytes of all live tensors on this rank (unique storages,
found through the garbage collector) once the step has finished, and the optimizer class DeepSpeed chose.
"""

import gc
import json
import logging
import os

import deepspeed
import peft
import torch

from kubetune.memprobe import tiny_models
from kubetune.planner.ds_config import ds_config
from kubetune.planner.settings import ALL_LINEAR, Buckets, TrainingSettings

BUCKETS = Buckets(reduce_bucket_elements=1_000_000, overlap_comm=False)
SHAPE = {"hidden_size": 512, "intermediate_size": 1376, "vocab_size": 2000}


def live_tensor_bytes() -> int:
    storages: dict[int, int] = {}
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and not obj.is_meta:
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def measure(stage: int, method: str) -> dict:
    gc.collect()
    before = live_tensor_bytes()
    model, arch = tiny_models.build(tiny_models.tiny_config("llama", 4, **SHAPE), "sdpa", torch.float32)
    if method == "lora":
        model = peft.get_peft_model(model, peft.LoraConfig(r=16, target_modules=list(arch.lora_modules(ALL_LINEAR))))
    settings = TrainingSettings(seq_len=32, method=method, zero_stage=stage, num_gpus=int(os.environ["WORLD_SIZE"]),
                                gpus_per_node=int(os.environ["WORLD_SIZE"]), buckets=BUCKETS)
    config = ds_config(settings)
    # No fused CUDA Adam on the CPU: torch's AdamW holds the same states.
    config["optimizer"]["params"]["torch_adam"] = True
    engine, optimizer, _, _ = deepspeed.initialize(
        model=model, model_parameters=[p for p in model.parameters() if p.requires_grad], config=config)
    del model
    ids = torch.randint(0, arch.vocab_size, (1, 32))
    for _ in range(2):
        engine.backward(engine(input_ids=ids, labels=ids).loss)
        engine.step()
    gc.collect()
    result = {"stage": stage, "method": method, "optimizer": type(optimizer).__name__,
              "at_rest_bytes": live_tensor_bytes() - before - ids.numel() * ids.element_size()}
    engine.destroy()
    return result


def main() -> None:
    deepspeed.utils.logger.setLevel(logging.ERROR)
    deepspeed.init_distributed(dist_backend="gloo")
    for stage in (0, 1, 2, 3):
        for method in ("full", "lora"):
            result = measure(stage, method)
            if int(os.environ.get("RANK", "0")) == 0:
                print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
