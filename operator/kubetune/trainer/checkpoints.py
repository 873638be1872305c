"""Checkpoints that are never half-read: DeepSpeed writes each one under its own tag, and only after every
rank has finished does rank 0 mark it complete and point `latest-complete` at it (write, then rename).

A checkpoint's ZeRO partitions depend on the layout that wrote it (GPU count and ZeRO stage). After an
out-of-memory replan the next attempt runs another layout, so its first resume goes through DeepSpeed's
universal checkpoint format, which any layout can load; optimizer moments and the schedule survive."""

import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import deepspeed
import torch
import torch.distributed as dist
from deepspeed.checkpoint import constants
from pydantic import BaseModel, ConfigDict

COMPLETE = "COMPLETE"
LATEST = "latest-complete"
LAYOUT = "layout.json"
UNIVERSAL = "-universal"
MODEL_STATES = ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_model_states.pt")
# The marker DeepSpeed's universal conversion requires of the client (no tensor or pipeline parallelism to
# describe here).
UNIVERSAL_INFO = {constants.UNIVERSAL_CHECKPOINT_INFO: {
    constants.UNIVERSAL_CHECKPOINT_VERSION_KEY: constants.UNIVERSAL_CHECKPOINT_VERSION_VALUE}}
# How long the other ranks wait for rank 0 to convert a checkpoint: a full model's optimizer states take far
# longer than DeepSpeed's process-group timeout (DEEPSPEED_TIMEOUT, 10 min by default).
CONVERSION_TIMEOUT = timedelta(hours=6)


class Layout(BaseModel):
    """What a checkpoint's partitioned states depend on (micro-batch and accumulation do not)."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    world_size: int
    zero_stage: int

    def loads(self, written: "Layout") -> bool:
        """Whether DeepSpeed loads a checkpoint `written` in that layout as it is. ZeRO-0 replicates every
        state, so any world size loads it (and DeepSpeed cannot convert it: it is never planned unless pinned,
        and a pin holds across replans)."""
        return written == self or written.zero_stage == self.zero_stage == 0


class Resume(BaseModel):
    tag: str
    universal: bool


def tag(step: int) -> str:
    return f"step-{step:08d}"


def latest(directory: Path) -> str | None:
    """The newest checkpoint every rank finished writing, or None."""
    pointer = directory / LATEST
    if not pointer.exists():
        return None
    name = pointer.read_text().strip()
    return name if (directory / name / COMPLETE).exists() else None


def resume_point(directory: Path, layout: Layout) -> Resume | None:
    """Where to resume from, converting the newest checkpoint to the universal format when another layout
    wrote it. Every rank calls this; rank 0 converts while the others wait."""
    name = latest(directory)
    if name is None:
        return None
    written = directory / name / LAYOUT
    # A checkpoint from before layouts were recorded loads as it always did.
    if not written.exists() or layout.loads(Layout.model_validate_json(written.read_text())):
        return Resume(tag=name, universal=False)
    universal = directory / (name + UNIVERSAL)
    waiting = dist.new_group(backend="gloo", timeout=CONVERSION_TIMEOUT)
    if dist.get_rank() == 0 and not (universal / COMPLETE).exists():
        _convert(directory / name, universal)
    dist.barrier(group=waiting)  # type: ignore[arg-type]  # -100 is for ranks outside the group: there are none
    dist.destroy_process_group(waiting)
    return Resume(tag=universal.name, universal=True)


def _scratch(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp")


def _convert(source: Path, target: Path) -> None:
    # Into a scratch folder first: a worker killed mid-conversion leaves nothing that looks complete.
    scratch = _scratch(target)
    shutil.rmtree(scratch, ignore_errors=True)
    # Its own process, with DeepSpeed's worker counts: a full model's optimizer states are large.
    subprocess.run([sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(source),
                    "--output_folder", str(scratch)], check=True)
    # The engine looks for the model-states file under its own stage's name (ZeRO-3 names it per rank), and
    # the conversion keeps the writer's name: give it both, as there is no tensor or pipeline parallelism.
    written = next(scratch.glob("*model_states.pt"))
    for name in MODEL_STATES:
        if not (scratch / name).exists():
            try:
                os.link(written, scratch / name)
            except OSError:  # volumes without hard links (some FUSE mounts)
                shutil.copy2(written, scratch / name)
    _both_optimizer_forms(scratch / "zero")
    (scratch / COMPLETE).write_text(source.name + "\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(scratch, target)
    # The converter's own pointer names the scratch folder; resuming reads `latest-complete` only.
    (target.parent / "latest_universal").unlink(missing_ok=True)


def _both_optimizer_forms(zero: Path) -> None:
    """The conversion writes the optimizer's global state in its source stage's form: ZeRO-3 reads the step
    and hyperparameters under `optimizer_state_dict`, ZeRO-1/2 read `param_groups`, `ds_version` and a step
    file per parameter. Write both forms, so a replan may cross between the stages."""
    path = zero / "optimizer_state.pt"
    state = torch.load(path, weights_only=False)
    if constants.OPTIMIZER_STATE_DICT in state:
        step = state[constants.OPTIMIZER_STATE_DICT]["state"][0]["step"]
        for moments in zero.glob("*/exp_avg.pt"):
            if not (moments.parent / "step.pt").exists():
                torch.save(step, moments.parent / "step.pt")
    else:
        step = torch.load(next(zero.glob("*/step.pt")), weights_only=False)
        state[constants.OPTIMIZER_STATE_DICT] = {"state": {0: {"step": step}},
                                                 constants.PARAM_GROUPS: state[constants.PARAM_GROUPS]}
    state.setdefault(constants.DS_VERSION, deepspeed.__version__)  # the image's DeepSpeed wrote it
    torch.save(state, path)


def prune(directory: Path, keep: int) -> None:
    """Delete all but the `keep` newest complete checkpoints (with their universal conversions), and the
    remains of saves cut short before the newest complete one; a save in progress is newer, so it stays."""
    steps = sorted((int(path.name[len("step-"):]), path) for path in directory.glob("step-" + "[0-9]" * 8))
    complete = [step for step, path in steps if (path / COMPLETE).exists()]
    if not complete:
        return
    kept = set(complete[-keep:])
    for step, path in steps:
        if step not in kept and step < complete[-1]:
            universal = directory / (path.name + UNIVERSAL)
            for leftover in (_scratch(universal), universal, path):
                shutil.rmtree(leftover, ignore_errors=True)


def save(engine, directory: Path, step: int, client_state: dict, layout: Layout, keep: int) -> None:
    name = tag(step)
    if dist.get_rank() == 0 and (directory / name).exists() and not (directory / name / COMPLETE).exists():
        # What a save cut short left under this tag, maybe by another layout whose extra rank files DeepSpeed
        # would not overwrite and a later conversion would count.
        shutil.rmtree(directory / name)
    dist.barrier()
    engine.save_checkpoint(str(directory), tag=name, client_state={**client_state, **UNIVERSAL_INFO},
                           save_latest=False)
    dist.barrier()
    if dist.get_rank() == 0:
        (directory / name / LAYOUT).write_text(layout.model_dump_json())
        (directory / name / COMPLETE).write_text(f"{step}\n")
        temporary = directory / f".{LATEST}.tmp"
        temporary.write_text(name + "\n")
        os.replace(temporary, directory / LATEST)
        prune(directory, keep)
    dist.barrier()
