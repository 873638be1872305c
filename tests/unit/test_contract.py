"""How a training pod's end is decided from its ranks' verdicts (api/contract.py, trainer/launch.py)."""

from pathlib import Path

import pytest

from kubetune.api import contract
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
    assert contract.injected_oom(None) is None and contract.injected_oom("5:1") == (5, 1)
    with pytest.raises(ValueError, match="STEP:RANK"):
        contract.injected_oom("step 5")
