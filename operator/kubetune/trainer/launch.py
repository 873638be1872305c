"""`python -m kubetune.trainer.launch TORCHRUN_ARGS...`: the training container's command.

Runs torchrun with a verdict folder for its ranks (api/contract.py), passes the kubelet's SIGTERM on to it, and
when it fails exits with the most telling rank's exit code, that rank's line as the pod's termination message:
torchrun alone exits 1 whatever its workers did, and several ranks of one pod would otherwise race for one
termination log. Imports no torch, so it starts at once.
"""

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from kubetune.api import contract


def verdict_of(returncode: int, verdicts: list[contract.Verdict]) -> tuple[int, str | None]:
    """The container's exit code and termination message after torchrun exited with `returncode`."""
    if returncode == 0:
        return 0, None
    telling = contract.most_telling(verdicts)
    if telling is not None:
        return telling.exit_code, telling.message
    if returncode < 0:  # torchrun itself was killed by a signal
        return 128 - returncode, f"kubetune-error torchrun was killed by signal {-returncode}"
    return returncode, f"kubetune-error torchrun exited with code {returncode} and no rank said why (see the logs)"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    stopping: list[int] = []
    process: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: object) -> None:
        stopping.append(signum)
        if process is not None:
            process.send_signal(signum)

    # As the container's PID 1, signals without a handler would be ignored; installed first, so none is lost.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    with tempfile.TemporaryDirectory(prefix="kubetune-verdicts-") as folder:
        # torchrun's module, whatever the image's layout puts its script.
        process = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *args],
                                   env={**os.environ, contract.VERDICT_DIR_ENV: folder})
        if stopping:
            process.send_signal(stopping[0])
        returncode = process.wait()
        code, message = verdict_of(returncode, contract.read_verdicts(Path(folder)))
    if message is not None:
        termination_log = Path(os.environ.get("KUBETUNE_TERMINATION_LOG", contract.TERMINATION_LOG))
        try:
            termination_log.write_text(message[:contract.MAX_MESSAGE])
        except OSError:
            pass
        print(message, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
