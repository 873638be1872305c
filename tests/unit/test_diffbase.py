"""The diff base kopf compares each FineTuneJob event against (to tell a spec change from a status patch) is
kopf's own essence, built without copying the status and managed fields first."""

import json

import kopf

from kubetune.controller.diffbase import SlimDiffBase


def body(status: dict, spec: dict) -> kopf.Body:
    return kopf.Body({
        "apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": "a", "namespace": "ns", "uid": "u", "resourceVersion": "7", "generation": 3,
                     "labels": {"team": "a"},
                     "annotations": {"kubetune.io/last-handled-configuration": json.dumps({"spec": spec}),
                                     "kubetune.io/reconcile": "{}", "note": "kept"},
                     "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}] * 50},
        "spec": spec, "status": status})


def test_the_essence_is_kopfs_and_ignores_status_but_not_the_spec() -> None:
    spec = {"model": {"name": "Qwen/Qwen2.5-0.5B"}, "dataset": {"uri": "pvc://d"}}
    planned = body({"phase": "Running", "plan": {"memory": {"total": 1}}}, spec)
    for extra in ([], [("spec",)], [("status", "phase")], [("metadata", "labels")]):
        ours = SlimDiffBase(prefix="kubetune.io").build(body=planned, extra_fields=extra)
        kopfs = kopf.AnnotationsDiffBaseStorage(prefix="kubetune.io").build(body=planned, extra_fields=extra)
        assert ours == kopfs, extra
    storage = SlimDiffBase(prefix="kubetune.io")
    assert (storage.build(body=planned, extra_fields=[("spec",)])
            == storage.build(body=body({"phase": "Succeeded"}, spec), extra_fields=[("spec",)]))
    assert (storage.build(body=planned, extra_fields=[("spec",)])
            != storage.build(body=body({}, {**spec, "seqLen": 4096}), extra_fields=[("spec",)]))
    essence = storage.build(body=planned)
    assert set(essence) == {"metadata", "spec"} and set(essence["metadata"]) == {"labels", "annotations"}
