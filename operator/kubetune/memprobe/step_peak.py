"""The whole training step's peak per rank under DeepSpeed on the CPU (gloo), for a list of cases:

    DS_ACCELERATOR=cpu torchrun --standalone --nproc_per_node 2 -m kubetune.memprobe.step_peak CASES.json

Each case (a `Case` as JSON) builds its tiny random-weight model as the trainer builds it (trainer/model_setup.py),
with the DeepSpeed config kubetune generates (planner/ds_config.py) as the trainer adapts it to the machine, and
trains one step to let DeepSpeed and the optimizer allocate what they allocate lazily; the next step then runs
under the peak probe (memprobe/peak.py) the way the trainer runs it (forward with labels, engine.backward,
engine.step). One JSON line per case comes from rank 0: the peak of live tensor bytes on the rank, counting what
was live when the step began, and the phase and op at which it happened. One process serves every case.
"""

import gc
import json
import logging
import os
import sys
import time
from contextlib import nullcontext

import deepspeed
import torch
from pydantic import BaseModel, ConfigDict

from kubetune.api.vocabulary import Method, Offload, Precision, ZeroStage
from kubetune.memprobe import tiny_models
from kubetune.memprobe.peak import PeakProbe, gc_tensors
from kubetune.planner import architecture
from kubetune.planner.architecture import Architecture
from kubetune.planner.ds_config import ds_config
from kubetune.planner.settings import Buckets, Lora, TrainingSettings
from kubetune.trainer.run import for_this_machine

LINEAR = torch.nn.functional.linear


class Case(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    family: str
    layers: int = 3
    zero_stage: ZeroStage
    method: Method
    gradient_checkpointing: bool
    seq_len: int
    micro_batch: int = 1
    gradient_accumulation: int = 1
    precision: Precision = Precision.BF16
    adapters_fp32: bool = False
    offload: Offload = Offload.NONE

    def model_config_dict(self) -> dict:
        return tiny_models.tiny_config(self.family, self.layers)

    def arch(self) -> Architecture:
        return architecture.from_hf_config(self.model_config_dict())

    def settings(self, ranks: int) -> TrainingSettings:
        """What the planner plans for this case: kubetune's own buckets, sized on the model."""
        return TrainingSettings(seq_len=self.seq_len, micro_batch=self.micro_batch,
                                gradient_accumulation=self.gradient_accumulation, precision=self.precision,
                                method=self.method, lora=Lora(adapters_fp32=self.adapters_fp32),
                                gradient_checkpointing=self.gradient_checkpointing, zero_stage=self.zero_stage,
                                offload=self.offload, num_gpus=ranks, gpus_per_node=ranks,
                                buckets=Buckets.for_hidden_size(self.arch().hidden_size))


def measure(case: Case, ranks: int) -> dict:
    """Bytes are counted without what was live before the case (what earlier cases' engines left behind), which
    is held here so that none of it is freed, or its address reused, while the case runs."""
    gc.collect()
    earlier = {t.untyped_storage()._cdata: t.untyped_storage() for t in gc_tensors()}
    settings = case.settings(ranks)
    model = tiny_models.trainer_model(case.model_config_dict(), settings)
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=for_this_machine(ds_config(settings)))
    del model
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, case.arch().vocab_size, (case.micro_batch, case.seq_len), generator=generator)
    batch = {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}

    def step(probe: PeakProbe | None = None) -> None:
        """One optimizer step: as the trainer runs it, engine.step() after every micro-batch, which DeepSpeed
        turns into the optimizer's step at the accumulation boundary."""
        phase = probe.phase if probe else lambda _: nullcontext()
        for _ in range(case.gradient_accumulation):
            with phase("forward"):
                loss = engine(**batch).loss
            with phase("backward"):
                engine.backward(loss)
            del loss
            with phase("optimizer_step"):
                engine.step()

    step()
    gc.collect()
    with PeakProbe(t for t in gc_tensors() if t.untyped_storage()._cdata not in earlier) as probe:
        at_rest = probe.live_bytes
        step(probe)
    result = {"case": case.model_dump(mode="json"), "peak_bytes": probe.peak.live_bytes, "at_rest_bytes": at_rest,
              "peak_phase": probe.peak.phase, "peak_op": probe.peak.op,
              "batch_bytes": sum(t.numel() * t.element_size() for t in batch.values())}
    engine.destroy()
    # ZeRO-3 replaces torch.nn.functional.linear for the whole process (partition_parameters.py,
    # _enable_mem_efficient_linear), which saves a frozen linear's input too: a trainer runs one engine per
    # process, so the cases after it must not inherit it.
    torch.nn.functional.linear = LINEAR
    # The fit must hold on every rank: the largest peak, and the rank it was on.
    results: list[dict] = [{}] * ranks
    torch.distributed.all_gather_object(results, result)
    rank = max(range(ranks), key=lambda r: results[r]["peak_bytes"])
    return results[rank] | {"rank": rank}


def main() -> None:
    deepspeed.utils.logger.setLevel(logging.ERROR)
    deepspeed.init_distributed(dist_backend="gloo")
    ranks = int(os.environ["WORLD_SIZE"])
    with open(sys.argv[1]) as f:
        cases = [Case.model_validate(c) for c in json.load(f)]
    for case in cases:
        started = time.perf_counter()
        result = measure(case, ranks) | {"seconds": round(time.perf_counter() - started, 2)}
        if int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps(result), flush=True)
        gc.collect()


if __name__ == "__main__":
    main()
