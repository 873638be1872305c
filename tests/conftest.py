"""Shared fixtures and the test tiers. The local cluster is started once per session, only when a `cluster` test
runs. Every test under tests/unit is in the `unit` tier (a bare `pip install -e .` with pytest and hypothesis: no
torch, no built binaries) unless it is marked with what else it needs."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from kubetune.devcluster import profile
from kubetune.devcluster.cluster import LocalCluster
from kubetune.devcluster.kueue import Kueue
from tests.integration.queues import Queue

ROOT = Path(__file__).resolve().parents[1]
# A fixed folder per checkout, so a run that crashed leaves pid files the next run can clean up.
TEST_CLUSTER_STATE = ROOT / ".kubetune" / "test-cluster"
UNIT = ROOT / "tests" / "unit"
# The markers (pyproject.toml) that name something beyond a bare install: a test under tests/unit with one of
# them is in that tier and not in `unit`.
NEEDS = frozenset({"tools", "torch", "measured", "cluster", "node", "image"})


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(UNIT) and not NEEDS & {mark.name for mark in item.iter_markers()}:
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    local = LocalCluster("kubetune-test", TEST_CLUSTER_STATE)
    try:
        local.up(profile.load("default"))
        yield local
    finally:
        local.down()


@pytest.fixture(scope="module")
def kueue(cluster: LocalCluster) -> Iterator[Kueue]:
    """A real Kueue beside the session's cluster for the module's tests; its webhooks go with it, so the
    other modules' Jobs do not pass through it."""
    cluster.start_kueue()
    try:
        yield cluster.kueue
    finally:
        cluster.kueue.down()


@pytest.fixture
def queue(cluster: LocalCluster, kueue: Kueue) -> Iterator[Queue]:
    """A queue admin's Kueue objects for one test, removed afterwards."""
    made = Queue(cluster)
    try:
        yield made
    finally:
        made.remove()
