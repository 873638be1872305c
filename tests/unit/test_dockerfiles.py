"""Both images' Dockerfiles pass hadolint (no container engine here to build them)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HADOLINT = Path(sys.executable).parent / "hadolint"


@pytest.mark.tools
@pytest.mark.parametrize("dockerfile", ["Dockerfile", "trainer_image/Dockerfile"])
def test_dockerfile_passes_hadolint(dockerfile: str) -> None:
    result = subprocess.run([str(HADOLINT), str(ROOT / dockerfile)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_trainer_image_runs_the_trainer_module() -> None:
    text = (ROOT / "trainer_image" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "-m", "kubetune.trainer"]' in text
    # The trainer extra's dependencies in their own layer, then kubetune alone, so code changes keep torch's.
    assert '["optional-dependencies"]["trainer"]' in text
    assert "pip install --no-deps" in text
