"""How a training pod's end is decided from its ranks' verdicts (api/contract.py, trainer/launch.py)."""

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from kubetune.api import contract, trainer_config
from kubetune.api.vocabulary import Attention, Method, Precision
from kubetune.trainer import launch
from kubetune.trainer.launch import verdict_of

OOM = contract.Verdict(rank=3, exit_code=contract.OOM_EXIT_CODE, message=contract.oom_message(23_000, 24_000))
BAD = contract.Verdict(rank=0, exit_code=contract.INVALID_INPUT_EXIT_CODE, message="kubetune-invalid-input x")
ERROR = contract.Verdict(rank=1, exit_code=1, message="kubetune-error RuntimeError: peer closed")


def test_out_of_memory_explains_its_peers_whatever_their_order() -> None:
    assert verdict_of(1, [ERROR, BAD, OOM]) == (contract.OOM_EXIT_CODE, OOM.message)
    assert verdict_of(1, [ERROR, BAD]) == (contract.INVALID_INPUT_EXIT_CODE, BAD.message)
    assert verdict_of(1, [ERROR]) == (1, ERROR.message)


def test_success_has_no_message_and_silence_says_so() -> None:
    assert verdict_of(0, [ERROR]) == (0, None)
    code, message = verdict_of(1, [])
    assert code == 1 and "no rank said why" in message
    assert verdict_of(-9, []) == (137, "kubetune-error torchrun was killed by signal 9")


def test_verdicts_survive_a_half_written_file(tmp_path: Path) -> None:
    contract.write_verdict(tmp_path, OOM)
    (tmp_path / "rank-1.json").write_text('{"rank": 1, "exit_co')
    assert contract.read_verdicts(tmp_path) == [OOM]
    assert contract.parse_oom(OOM.message) == (23_000, 24_000)


def test_the_fault_injection_setting_is_strict() -> None:
    assert contract.injected_fault(None) is None and contract.injected_fault("gpu-oom:5:1") == ("gpu-oom", 5, 1)
    assert contract.injected_fault("host-oom:2:0") == ("host-oom", 2, 0)
    for malformed in ("5:1", "gpu-oom:step 5", "disk-full:5:1"):
        with pytest.raises(ValueError, match="KIND:STEP:RANK"):
            contract.injected_fault(malformed)


def test_a_kernel_kill_for_memory_explains_the_pod_whatever_its_ranks_said() -> None:
    """A rank killed by SIGKILL writes nothing; its peers' collectives then fail with errors of their own."""
    code, message = verdict_of(1, [ERROR], killed_for_memory=True, limit_bytes=6 * 1024**3)
    assert code == contract.HOST_OOM_EXIT_CODE and contract.parse_host_oom(message) == 6 * 1024**3
    assert "6.0 GiB" in message
    assert contract.parse_host_oom(contract.host_oom_message(None)) == 0


def test_a_container_stopped_from_outside_says_so_whatever_its_ranks_said() -> None:
    """The kubelet's SIGTERM (pod deleted, evicted, preempted, its Job ended): torchrun then exits 1 and its
    ranks die with errors of their own; a kill for memory still comes first."""
    code, message = verdict_of(1, [ERROR], stopped_by=15)
    assert code == 143 and message.startswith("kubetune-stopped") and "deleted, evicted or preempted" in message
    assert verdict_of(1, [], killed_for_memory=True, stopped_by=15)[0] == contract.HOST_OOM_EXIT_CODE


def test_the_launcher_reads_the_kernels_oom_kills_and_limit_from_either_cgroup_version(tmp_path: Path) -> None:
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    v1.mkdir(), v2.mkdir()
    (v1 / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    (v1 / "memory.limit_in_bytes").write_text("6442450944\n")
    (v2 / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\n")
    (v2 / "memory.max").write_text("max\n")
    assert (launch.oom_kills(v1), launch.memory_limit(v1)) == (2, 6442450944)
    assert (launch.oom_kills(v2), launch.memory_limit(v2)) == (1, None)
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    assert launch.memory_limit(v1) is None
    assert launch.oom_kills(tmp_path) == 0


def _config_json(**extra: object) -> dict:
    from kubetune.api.trainer_config import TrainerConfig

    config = TrainerConfig(job="j", model={"name": "m"}, dataset={"source": "d"}, training={}, output={},
                           checkpoint_interval_steps=1, method=Method.LORA, gradient_checkpointing=False,
                           attention=Attention.SDPA, precision=Precision.BF16)
    return {**json.loads(config.model_dump_json(by_alias=True, exclude_none=True)), **extra}


def test_fields_an_older_trainer_does_not_know_are_ignored_and_named() -> None:
    raw = _config_json(newReport=True)
    raw["training"]["newHint"] = 3
    config, ignored = trainer_config.parse(json.dumps(raw))
    assert config.job == "j" and sorted(ignored) == ["newReport", "training.newHint"]


def test_a_config_of_another_contract_version_names_both() -> None:
    for version, side in ((trainer_config.VERSION + 1, "newer"), (0, "older"), (None, "older")):
        with pytest.raises(trainer_config.ContractVersionError,
                           match=f"contract version {version}, written by an? {side} operator; this trainer image "
                                 f"speaks version {trainer_config.VERSION}"):
            trainer_config.parse(json.dumps(_config_json(version=version)))


def test_a_wrong_value_is_not_mistaken_for_an_unknown_field() -> None:
    with pytest.raises(ValidationError):
        trainer_config.parse(json.dumps(_config_json(method="qlora", newReport=1)))


def test_a_run_that_saved_when_asked_to_stop_is_no_success() -> None:
    """The ranks exit 0 after saving on a stop; the Job must not count the pod as finished."""
    assert verdict_of(0, [], stopped_by=15, saved_on_stop=True) == (143, contract.stopped_message(15))
    assert verdict_of(0, [], saved_on_stop=True) == (143, contract.peer_stopped_message())  # a peer pod's stop
    assert verdict_of(0, [], stopped_by=15) == (0, None)  # stopped as the last step was done: finished
    assert verdict_of(0, []) == (0, None)


def test_the_grace_period_gives_the_trainer_time_to_write_its_checkpoint() -> None:
    small, big = contract.grace_seconds(10 * 1024**2), contract.grace_seconds(800 * 1000**3)
    assert small == contract.SAVE_MARGIN_SECONDS + 1
    assert big == contract.SAVE_MARGIN_SECONDS + 800 * 1000**3 // contract.SAVE_BYTES_PER_SECOND
