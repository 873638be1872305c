"""How the local cluster installs Kueue (devcluster/kueue.py), on a small copy of its module's config: only the
webhooks for Kueue's own objects and for Jobs are registered, each at its path on loopback, and the CRDs its
kustomization converts get the conversion webhook there."""

from pathlib import Path

import yaml

from kubetune.devcluster import kueue

URL = "https://127.0.0.1:9443"


def hook(name: str, group: str, path: str) -> dict:
    return {"name": name, "clientConfig": {"service": {"name": "webhook-service", "namespace": "system", "path": path}},
            "rules": [{"apiGroups": [group], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["x"]}]}


def config(tmp_path: Path) -> Path:
    (tmp_path / "webhook").mkdir()
    (tmp_path / "webhook" / "manifests.yaml").write_text(yaml.safe_dump_all([
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
         "metadata": {"name": "mutating-webhook-configuration"},
         "webhooks": [hook("mjob.kb.io", "batch", "/mutate-batch-v1-job"),
                      hook("mpod.kb.io", "", "/mutate--v1-pod"),
                      hook("mrayjob.kb.io", "ray.io", "/mutate-ray-io-v1-rayjob")]},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
         "metadata": {"name": "validating-webhook-configuration"},
         "webhooks": [hook("vclusterqueue.kb.io", "kueue.x-k8s.io", "/validate-kueue-x-k8s-io-v1beta2-clusterqueue")]},
    ]))
    crd = tmp_path / "crd"
    (crd / "bases").mkdir(parents=True)
    (crd / "patches").mkdir()
    for name in ("workloads", "topologies"):
        (crd / "bases" / f"{name}.yaml").write_text(yaml.safe_dump(
            {"kind": "CustomResourceDefinition", "metadata": {"name": f"{name}.kueue.x-k8s.io"}, "spec": {}}))
    (crd / "patches" / "webhook_in_workloads.yaml").write_text(yaml.safe_dump(
        {"metadata": {"name": "workloads.kueue.x-k8s.io"}, "spec": {"conversion": {"strategy": "Webhook"}}}))
    (crd / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": ["bases/workloads.yaml", "bases/topologies.yaml"],
        "patches": [{"path": "patches/webhook_in_workloads.yaml"}]}))
    return tmp_path


def test_only_kueues_own_and_the_job_webhooks_are_registered_at_their_paths_on_loopback(tmp_path: Path) -> None:
    mutating, validating = kueue.webhooks(config(tmp_path), URL, "Q0E=")
    assert mutating["metadata"]["name"] == "kueue-mutating-webhook-configuration"
    assert [h["name"] for h in mutating["webhooks"]] == ["mjob.kb.io"]  # not pods, not Ray
    assert mutating["webhooks"][0]["clientConfig"] == {"url": f"{URL}/mutate-batch-v1-job", "caBundle": "Q0E="}
    assert [h["clientConfig"]["url"] for h in validating["webhooks"]] == [
        f"{URL}/validate-kueue-x-k8s-io-v1beta2-clusterqueue"]


def test_the_crds_kustomization_converts_are_converted_on_loopback(tmp_path: Path) -> None:
    workloads, topologies = kueue.crds(config(tmp_path), URL, "Q0E=")
    assert workloads["spec"]["conversion"]["webhook"]["clientConfig"] == {"url": f"{URL}/convert", "caBundle": "Q0E="}
    assert "conversion" not in topologies["spec"]


def test_the_manager_runs_alone_on_loopback_and_manages_only_jobs_that_name_a_queue() -> None:
    configured = kueue.configuration(9443, 8081, Path("/certs"))
    assert configured["manageJobsWithoutQueueName"] is False and configured["integrations"]["frameworks"] == ["batch/job"]
    assert configured["webhook"] == {"host": "127.0.0.1", "port": 9443, "certDir": "/certs"}
    assert configured["leaderElection"] == {"leaderElect": False} and configured["internalCertManagement"] == {
        "enable": False}
