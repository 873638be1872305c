"""Training records (jsonl: instruction, chat or text) -> token ids padded to the planned sequence length,
with the loss masked on prompts and padding."""

import json
import random
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

IGNORE = -100


def read_records(source: str) -> list[dict[str, Any]]:
    """jsonl records from a file (on a mounted claim, say), else the train split of a Hub dataset."""
    path = Path(source)
    if path.exists() or path.is_absolute() or source.startswith("."):
        with path.open() as lines:
            return [json.loads(line) for line in lines if line.strip()]
    from datasets import load_dataset  # only needed, and only reachable, for Hub datasets

    return [dict(record) for record in load_dataset(source, split="train")]


def _prompt_and_answer(record: dict[str, Any], fmt: str, tokenizer: PreTrainedTokenizerBase) -> tuple[str, str]:
    if fmt == "Instruction":
        prompt = record["instruction"] + ("\n" + record["input"] if record.get("input") else "") + "\n"
        return prompt, record["output"]
    if fmt == "Chat":
        messages = record["messages"]
        prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        return str(prompt), messages[-1]["content"]
    return "", record["text"]


def encode(record: dict[str, Any], fmt: str, tokenizer: PreTrainedTokenizerBase, seq_len: int) -> dict[str, list[int]]:
    prompt, answer = _prompt_and_answer(record, fmt, tokenizer)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (prompt_ids + answer_ids)[:seq_len]
    labels = ([IGNORE] * len(prompt_ids) + answer_ids)[:seq_len]
    pad = seq_len - len(ids)
    return {"input_ids": ids + [tokenizer.pad_token_id] * pad, "labels": labels + [IGNORE] * pad,
            "attention_mask": [1] * len(ids) + [0] * pad}


class Batches:
    """Deterministic micro-batches for one rank. Epochs are whole global batches, and the examples of a step
    depend only on the seed, the step and the global batch: a run resumed on another layout (GPU count,
    micro-batch and accumulation, with the same global batch, as replans keep it) trains on exactly what the
    interrupted one would have."""

    def __init__(self, examples: list[dict[str, list[int]]], micro_batch: int, accumulation: int, rank: int,
                 world: int, seed: int):
        self.examples = examples
        self.micro_batch = micro_batch
        self.rank, self.world, self.seed = rank, world, seed
        self.global_batch = micro_batch * accumulation * world
        self.steps_per_epoch = max(1, len(examples) // self.global_batch)

    def batch(self, step: int, micro: int) -> dict[str, torch.Tensor]:
        """This rank's `micro`-th micro-batch of optimizer step `step`, over as many epochs as it takes."""
        epoch, position = divmod(step, self.steps_per_epoch)
        order = list(range(len(self.examples)))
        random.Random(self.seed + epoch).shuffle(order)
        start = position * self.global_batch + (micro * self.world + self.rank) * self.micro_batch
        chosen = [self.examples[order[(start + i) % len(order)]] for i in range(self.micro_batch)]
        return {key: torch.tensor([example[key] for example in chosen]) for key in chosen[0]}
