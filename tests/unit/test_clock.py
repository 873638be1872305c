"""Kubernetes timestamps, written and read in one place (controller/clock.py)."""

from datetime import UTC, datetime

import pytest

from kubetune.controller import clock

AT = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("timestamp", ["2026-12-02T11:59:00Z", "2026-12-02T11:59:00.000000Z",
                                       "2026-12-02T12:59:00+01:00", "2026-12-02T11:59:00"])
def test_every_form_the_apiserver_and_clients_write_is_read(timestamp: str) -> None:
    assert clock.seconds_since(timestamp, AT) == 60


def test_written_timestamps_read_back() -> None:
    assert clock.time(AT) == "2026-12-02T12:00:00Z"
    assert clock.micro_time(AT) == "2026-12-02T12:00:00.000000Z"
    assert clock.parse(clock.micro_time(AT)) == clock.parse(clock.time(AT)) == AT
