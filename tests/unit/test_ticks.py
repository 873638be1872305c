"""The periodic reconcile: one pass visits every unfinished job once, side by side up to a limit, and a job
whose reconcile fails does not stop the others; what it visits holds only what reconciling reads."""

import asyncio
import json
from typing import Any

import kopf

from kubetune.controller import event_poster, ticks
from kubetune.controller.handlers import DIFF_BASE, unfinished_jobs
from kubetune.controller.ticks import Ticks


def job(name: str, conditions: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob",
            "metadata": {"name": name, "namespace": "team-a", "uid": f"uid-{name}", "generation": 2,
                         "creationTimestamp": "2026-12-03T12:00:00Z", "resourceVersion": "7",
                         "labels": {"team": "a"},
                         "annotations": {DIFF_BASE: json.dumps({"spec": {"model": "x" * 2000}}),
                                         "kubetune.io/inject-fault": "oom"},
                         "managedFields": [{"manager": "kopf", "fieldsV1": {"f:status": {"f:plan": {}}}}]},
            "spec": {"model": {"name": "Qwen/Qwen2.5-0.5B"}},
            "status": {"phase": "Running", "conditions": conditions or []}}


def test_a_pass_reconciles_each_job_once_side_by_side_and_survives_a_failing_one(monkeypatch) -> None:
    monkeypatch.setattr(ticks, "CONCURRENCY", 3)
    seen: list[str] = []
    running, most = 0, 0

    async def reconcile(body: dict[str, Any]) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        running -= 1
        seen.append(body["metadata"]["name"])
        if body["metadata"]["name"] == "j2":
            raise RuntimeError("the apiserver refused")

    bodies = [job(f"j{i}") for i in range(10)]
    asyncio.run(Ticks(10.0, lambda: bodies, reconcile).once())
    assert sorted(seen) == sorted(f"j{i}" for i in range(10))
    assert most == 3


def test_the_periodic_pass_runs_every_interval_until_closed() -> None:
    passes: list[float] = []

    async def reconcile(body: dict[str, Any]) -> None:
        passes.append(asyncio.get_running_loop().time())

    async def run() -> None:
        periodic = Ticks(0.05, lambda: [job("j")], reconcile)
        periodic.start()
        await asyncio.sleep(0.28)
        await periodic.close()
        count = len(passes)
        await asyncio.sleep(0.1)
        assert len(passes) == count  # closed: no more passes

    asyncio.run(run())
    assert 3 <= len(passes) <= 5


def test_the_index_keeps_unfinished_jobs_without_managed_fields_or_kopfs_copy_of_the_spec() -> None:
    [(key, kept)] = asyncio.run(unfinished_jobs(kopf.Body(job("a")))).items()
    assert key == ("team-a", "a")
    assert "managedFields" not in kept["metadata"] and DIFF_BASE not in kept["metadata"]["annotations"]
    assert kept["metadata"]["annotations"] == {"kubetune.io/inject-fault": "oom"}
    assert kept["metadata"]["labels"] == {"team": "a"} and kept["metadata"]["uid"] == "uid-a"
    assert kept["spec"] == job("a")["spec"] and kept["status"] == job("a")["status"]
    done = job("b", [{"type": "Succeeded", "status": "True"}])
    assert asyncio.run(unfinished_jobs(kopf.Body(done))) == {}
    failed_false = job("c", [{"type": "Failed", "status": "False"}])
    assert list(asyncio.run(unfinished_jobs(kopf.Body(failed_false)))) == [("team-a", "c")]


def test_an_event_names_its_object_and_a_long_message_is_cut_in_the_middle() -> None:
    posted = event_poster.event(job("a"), "Warning", "OutOfMemory", "start " + "x" * 5000 + " end", "operator-0")
    assert posted["involvedObject"] == {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "name": "a",
                                        "namespace": "team-a", "uid": "uid-a"}
    assert posted["metadata"] == {"namespace": "team-a", "generateName": "a."}
    assert (posted["type"], posted["reason"], posted["reportingInstance"]) == ("Warning", "OutOfMemory", "operator-0")
    assert len(posted["message"]) <= event_poster.MAX_MESSAGE_LENGTH
    assert posted["message"].startswith("start x") and posted["message"].endswith("x end")
