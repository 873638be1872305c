"""Checkpoint retention: the newest complete checkpoints stay, what a cut-short save left behind goes, and a
save still being written is never touched."""

from pathlib import Path

from kubetune.trainer import checkpoints


def make(directory: Path, step: int, complete: bool, universal: bool = False) -> None:
    path = directory / checkpoints.tag(step)
    path.mkdir(parents=True)
    (path / "mp_rank_00_model_states.pt").write_bytes(b"weights")
    if complete:
        (path / checkpoints.COMPLETE).write_text(f"{step}\n")
    if universal:
        (directory / (path.name + checkpoints.UNIVERSAL)).mkdir()


def test_only_the_newest_complete_checkpoints_and_a_save_in_progress_stay(tmp_path: Path) -> None:
    make(tmp_path, 5, complete=True, universal=True)
    make(tmp_path, 10, complete=True, universal=True)
    make(tmp_path, 12, complete=False)  # a save killed half-way
    make(tmp_path, 15, complete=True)
    make(tmp_path, 20, complete=True)
    make(tmp_path, 25, complete=False)  # being written
    checkpoints.prune(tmp_path, keep=2)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "step-00000015", "step-00000020", "step-00000025"]


def test_a_conversion_stays_while_its_checkpoint_does(tmp_path: Path) -> None:
    make(tmp_path, 5, complete=True)
    make(tmp_path, 10, complete=True, universal=True)
    checkpoints.prune(tmp_path, keep=2)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "step-00000005", "step-00000010", "step-00000010-universal"]


def test_another_world_size_needs_a_conversion_except_under_zero_0() -> None:
    assert checkpoints.Layout(world_size=2, zero_stage=2).loads(checkpoints.Layout(world_size=2, zero_stage=2))
    assert not checkpoints.Layout(world_size=4, zero_stage=2).loads(checkpoints.Layout(world_size=2, zero_stage=2))
    assert not checkpoints.Layout(world_size=2, zero_stage=3).loads(checkpoints.Layout(world_size=2, zero_stage=2))
    assert checkpoints.Layout(world_size=4, zero_stage=0).loads(checkpoints.Layout(world_size=2, zero_stage=0))
