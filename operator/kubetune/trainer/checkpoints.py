"""Checkpoints that are never half-read: DeepSpeed writes each one under its own tag, and only after every
rank has finished does rank 0 mark it complete and point `latest-complete` at it (write, then rename)."""

import os
from pathlib import Path

import torch.distributed as dist

COMPLETE = "COMPLETE"
LATEST = "latest-complete"


def tag(step: int) -> str:
    return f"step-{step:08d}"


def latest(directory: Path) -> str | None:
    """The newest checkpoint every rank finished writing, or None."""
    pointer = directory / LATEST
    if not pointer.exists():
        return None
    name = pointer.read_text().strip()
    return name if (directory / name / COMPLETE).exists() else None


def save(engine, directory: Path, step: int, client_state: dict) -> None:
    name = tag(step)
    engine.save_checkpoint(str(directory), tag=name, client_state=client_state, save_latest=False)
    dist.barrier()
    if dist.get_rank() == 0:
        (directory / name / COMPLETE).write_text(f"{step}\n")
        temporary = directory / f".{LATEST}.tmp"
        temporary.write_text(name + "\n")
        os.replace(temporary, directory / LATEST)
    dist.barrier()
