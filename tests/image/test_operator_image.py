"""The operator image builds without a container engine or registry (buildah from a debootstrap base) and
runs `kubetune` as a non-root user, without torch."""

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.image

ROOT = Path(__file__).resolve().parents[2]
TAG = "localhost/kubetune-operator:test"
ENV = dict(os.environ, STORAGE_DRIVER="vfs", BUILDAH_ISOLATION="chroot")


def in_image(*command: str) -> subprocess.CompletedProcess[str]:
    container = subprocess.run(["buildah", "from", "-q", TAG], env=ENV, capture_output=True, text=True,
                               check=True).stdout.strip()
    try:
        return subprocess.run(["buildah", "run", container, "--", *command], env=ENV, capture_output=True,
                              text=True, timeout=120, check=False)
    finally:
        subprocess.run(["buildah", "rm", container], env=ENV, capture_output=True, check=False)


@pytest.fixture(scope="module")
def image() -> str:
    result = subprocess.run([str(ROOT / "hack" / "build-operator-image.sh"), TAG], capture_output=True, text=True,
                            timeout=1200, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return TAG


def test_kubetune_help_runs_in_the_image(image: str) -> None:
    result = in_image("kubetune", "--help")
    assert result.returncode == 0, result.stderr
    assert "run-operator" in result.stdout and "plan" in result.stdout


def test_the_image_runs_as_non_root_without_torch(image: str) -> None:
    assert in_image("id", "-u").stdout.strip() == "65532"
    probe = in_image("python3", "-c", "import importlib.util as u; print(u.find_spec('torch') is None)")
    assert probe.stdout.strip() == "True"
