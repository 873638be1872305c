"""A replan changes the GPU count, micro-batch and accumulation but keeps the global batch: every step must
still train on the same examples, epoch after epoch, or a resumed run would see other data than the run it
continues."""

from collections import Counter

import pytest

from kubetune.trainer import data

EXAMPLES = [{"input_ids": [i], "labels": [i], "attention_mask": [1]} for i in range(70)]  # 70: not a multiple of 8


def step_examples(micro_batch: int, accumulation: int, world: int, step: int) -> Counter:
    seen: Counter = Counter()
    for rank in range(world):
        batches = data.Batches(EXAMPLES, micro_batch, accumulation, rank, world, seed=7)
        for micro in range(accumulation):
            seen.update(batches.batch(step, micro)["input_ids"].flatten().tolist())
    return seen


@pytest.mark.parametrize("layout", [(2, 2, 2), (1, 1, 8), (8, 1, 1), (2, 4, 1)])
def test_each_step_trains_on_the_same_examples_whatever_the_layout(layout: tuple[int, int, int]) -> None:
    for step in range(30):  # past three epoch boundaries
        assert step_examples(*layout, step) == step_examples(4, 2, 1, step), step


def test_an_epoch_covers_distinct_examples() -> None:
    epoch = Counter()
    for step in range(70 // 8):
        epoch.update(step_examples(4, 2, 1, step))
    assert len(epoch) == 64 and set(epoch.values()) == {1}
