"""One reconcile of a FineTuneJob at a time, never on a view that misses the previous one's writes."""

import asyncio

from kubetune.controller import serial
from kubetune.controller.serial import Serial


def test_reconciles_of_one_object_take_turns_and_others_run_beside_them() -> None:
    guard, running, most = Serial(), {"a": 0, "b": 0}, {"a": 0, "b": 0}

    async def reconcile(name: str) -> None:
        async with guard.turn(("ns", name)):
            running[name] += 1
            most[name] = max(most[name], running[name])
            await asyncio.sleep(0.05)
            running[name] -= 1

    async def burst() -> float:
        started = asyncio.get_running_loop().time()
        await asyncio.gather(*(reconcile(name) for name in "ab" * 5))
        return asyncio.get_running_loop().time() - started

    seconds = asyncio.run(burst())
    assert most == {"a": 1, "b": 1}
    assert seconds < 0.45  # a's and b's five turns each ran side by side (0.25 s), not all ten in a row (0.5 s)


def test_a_view_without_the_last_write_is_stale_until_it_shows(monkeypatch) -> None:
    guard, key = Serial(), ("ns", "j")
    assert not guard.stale(key, {})
    guard.wrote(key, {"phase": "Planned", "plan": {"gpus": 2}})
    assert guard.stale(key, {"phase": "Pending"})
    assert not guard.stale(key, {"phase": "Planned", "plan": {"gpus": 2}, "other": 1})
    assert not guard.stale(key, {"phase": "Pending"})  # seen once: later views are the watch's own
    guard.wrote(key, {})
    assert not guard.stale(key, {"phase": "Pending"})  # nothing written, nothing to wait for


def test_a_write_that_never_shows_stops_nothing_for_long(monkeypatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(serial.time, "monotonic", lambda: now[0])
    guard, key = Serial(), ("ns", "j")
    guard.wrote(key, {"phase": "Planned"})
    assert guard.stale(key, {"phase": "Pending"})
    now[0] += serial.STALE_FOR_AT_MOST_SECONDS + 1
    assert not guard.stale(key, {"phase": "Pending"})
