"""The conditions written to status: every one that was set, in the order of a job's life."""

from kubetune.controller import conditions as c


def test_every_condition_set_is_written_in_the_order_of_the_jobs_life() -> None:
    conds = c.Conditions([{"type": "SomethingOlder", "status": "True", "reason": "R", "message": "",
                           "lastTransitionTime": "2026-12-01T00:00:00Z"}], generation=1)
    conds.set(c.OUTPUT_DURABLE, False, c.REASON_EPHEMERAL_OUTPUT, "lost with the pods")
    conds.set(c.RUNNING, True, c.REASON_PODS_RUNNING, "2/2 workers ready")
    conds.set(c.PLANNED, True, c.REASON_PLANNED, "A10G x 2")
    assert [x["type"] for x in conds.as_list()] == [c.PLANNED, c.RUNNING, c.OUTPUT_DURABLE, "SomethingOlder"]
    assert conds.phase() == "Running"
