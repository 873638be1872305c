"""The trainer with the chunked cross-entropy (trainer.json's lossChunkTokens, as the operator writes it from a plan)
really trains: two ranks under torchrun on the CPU, DeepSpeed ZeRO-3 full fine-tuning (the head is trained and
partitioned, and gathered again for each chunk's recomputation) and ZeRO-2 LoRA with checkpointing. Each run's
losses are the stock loss's step for step, from the same seed and data, and fall."""

import json
from pathlib import Path

import pytest

from kubetune.api import trainer_config
from kubetune.api.vocabulary import Method
from tests.trainer.conftest import SEQ_LEN, Run, finish, launch, write_configs

pytestmark = pytest.mark.measured

STEPS = 12
# 4 sequences of 48 tokens a micro-batch: 192 tokens, in 9 chunks of 21 and one of 3.
CHUNK = 21


def losses(run: Run) -> list[float]:
    return [entry["loss"] for entry in run.log()]


@pytest.mark.parametrize(("method", "stage", "port"), [(Method.FULL, 3, 19480), (Method.LORA, 2, 19490)],
                         ids=["full-zero3", "lora-zero2"])
def test_the_chunked_loss_trains_as_the_stock_loss_does(world: Path, tmp_path: Path, method: Method, stage: int,
                                                        port: int) -> None:
    runs = {}
    for loss, offset in (("stock", 0), ("chunked", 1)):
        output = tmp_path / loss
        config, ds = write_configs(world, output, method=method, stage=stage, steps=STEPS, interval=STEPS,
                                   port=port + 2 * offset)
        if loss == "chunked":
            raw = json.loads(config.read_text())
            raw["lossChunkTokens"] = CHUNK
            config.write_text(json.dumps(raw))
            parsed, ignored = trainer_config.parse(config.read_text())
            assert parsed.loss_chunk_tokens == CHUNK and not ignored
        runs[loss] = Run(output, launch(config, ds, output, master_port=29700 + port % 100 + offset))
        finish(runs[loss].process, output)
    stock, chunked = losses(runs["stock"]), losses(runs["chunked"])
    assert len(chunked) == STEPS and 4 * SEQ_LEN % CHUNK
    # bf16: the head's gradient is summed over the chunks in bf16, so the runs drift apart by rounding only.
    assert chunked == pytest.approx(stock, rel=2e-3)
    assert chunked[0] == pytest.approx(stock[0], rel=1e-3)
    assert sum(chunked[-3:]) < sum(chunked[:3])
