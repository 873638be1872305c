"""The trainer image for the local cluster's real node, built from this checkout by hack/build-trainer-image.sh.

No registry is reachable here, so the image travels as an archive that the node's containerd imports
(`ctr -n k8s.io images import ARCHIVE`); its reference names the build's inputs, so an unchanged checkout
reuses the archive at once and a code change rebuilds only the small code layer.
"""

import subprocess
from dataclasses import dataclass
from pathlib import Path

# operator/kubetune/devcluster/ -> the repository root; an installed package has no hack/ beside it.
SCRIPT = Path(__file__).resolve().parents[3] / "hack" / "build-trainer-image.sh"


class TrainerImageError(RuntimeError):
    """The trainer image could not be built, or this is not a checkout that can build it."""


@dataclass(frozen=True)
class TrainerImage:
    ref: str  # e.g. localhost/kubetune/trainer:dev-0123456789ab
    archive: Path  # a docker-archive (uncompressed layers) whose manifest.json names ref


def build(timeout: float = 3600) -> TrainerImage:
    """Builds the image unless its archive is up to date (then it returns in well under a second).

    A cold build takes about 6 minutes on 2 cores (torch and its CUDA wheels: 6 GB), a code change about a
    minute; progress goes to this process's stderr, so a long wait shows where it is.
    """
    if not SCRIPT.is_file():
        raise TrainerImageError(
            f"{SCRIPT} is missing: the trainer image is built from a kubetune checkout, not an installed package"
        )
    result = subprocess.run([str(SCRIPT), "--print-archive"], cwd=SCRIPT.parents[1], stdout=subprocess.PIPE,
                            text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise TrainerImageError(f"{SCRIPT.name} failed (exit {result.returncode}); its log is on stderr above")
    lines = result.stdout.strip().splitlines()
    ref, _, archive = lines[-1].partition(" ") if lines else ("", "", "")
    if not ref or not archive or not Path(archive).is_file():
        raise TrainerImageError(f"{SCRIPT.name} printed no 'REF ARCHIVE' line: {result.stdout!r}")
    return TrainerImage(ref=ref, archive=Path(archive))
