"""Shared fixtures. The local cluster is started once per session, only when a `cluster` test runs."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from kubetune.devcluster import profile
from kubetune.devcluster.cluster import LocalCluster

ROOT = Path(__file__).resolve().parents[1]
# A fixed folder per checkout, so a run that crashed leaves pid files the next run can clean up.
TEST_CLUSTER_STATE = ROOT / ".kubetune" / "test-cluster"


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    local = LocalCluster("kubetune-test", TEST_CLUSTER_STATE)
    try:
        local.up(profile.load("default"))
        yield local
    finally:
        local.down()
