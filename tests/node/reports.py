"""What the real kubelet and torchrun report when training pods fail, captured for the unit tests of the
operator's classification (tests/unit/test_failure_reports.py), so they classify real reports, not ones we
imagined. A node test watches its job's pods (the operator deletes a failed attempt's Job, and its pods with
it, seconds after it fails) and compares what it saw with the stored capture: when the kubelet's report
changes shape, the test says so; `KUBETUNE_CAPTURE_REPORTS=1` writes the captures anew."""

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from kubetune.devcluster import binaries
from kubetune.devcluster.cluster import LocalCluster

REPORTS = Path(__file__).resolve().parents[1] / "unit" / "reports"


class PodWatch:
    """Every version of a FineTuneJob's pods the apiserver serves while the watch runs; the last one of each."""

    def __init__(self, cluster: LocalCluster, namespace: str, name: str) -> None:
        self.process = subprocess.Popen(
            [str(binaries.kubectl()), "--kubeconfig", str(cluster.kubeconfig), "get", "pods", "-n", namespace, "-l",
             f"kubetune.io/finetunejob={name}", "--watch", "-o", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        # Read as it comes: a pipe holds 64 KiB, a few versions of a pod, and kubectl would block on the rest.
        self.chunks: list[str] = []
        self.reader = threading.Thread(target=lambda: self.chunks.extend(iter(self.process.stdout.readline, "")),
                                       daemon=True)
        self.reader.start()

    def stop(self, waiting: str | None = None) -> list[dict[str, Any]]:
        """The last version of each pod; with `waiting`, the first in which a container waits for that reason
        (the kubelet goes on changing such pods, e.g. ErrImagePull and ImagePullBackOff in turn)."""
        time.sleep(1)  # the watch's last events, a moment behind the status the test has just read
        self.process.terminate()
        self.process.wait(timeout=30)
        self.reader.join(timeout=30)
        text = "".join(self.chunks)
        chosen: dict[str, dict[str, Any]] = {}
        decoder, position = json.JSONDecoder(), 0
        while (position := _skip_space(text, position)) < len(text):
            try:
                pod, position = decoder.raw_decode(text, position)
            except json.JSONDecodeError:
                break  # the watch was stopped in the middle of an object
            name = pod["metadata"]["name"]
            if waiting is None:
                chosen[name] = pod
            elif name not in chosen and any(s.get("state", {}).get("waiting", {}).get("reason") == waiting
                                            for s in pod.get("status", {}).get("containerStatuses", [])):
                chosen[name] = pod
        return list(chosen.values())


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def essentials(pods: list[dict[str, Any]], attempt: int) -> list[dict[str, Any]]:
    """The attempt's pods as the operator's classification reads them; names made stable (no random suffix)."""
    kept = []
    for pod in pods:
        labels = pod["metadata"].get("labels", {})
        if labels.get("kubetune.io/attempt") != str(attempt):
            continue
        index = labels.get("batch.kubernetes.io/job-completion-index", "0")
        status = pod.get("status", {})
        kept.append({
            "metadata": {"name": f"{labels['kubetune.io/finetunejob']}-train-{index}"},
            "status": {
                "phase": status.get("phase"),
                "conditions": [{k: c.get(k) for k in ("type", "status", "reason", "message") if k in c}
                               for c in status.get("conditions", []) if c["type"] == "DisruptionTarget"],
                "containerStatuses": [{"name": s["name"], "state": {
                    kind: {k: v for k, v in state.items() if k in ("exitCode", "reason", "message", "signal")}
                    for kind, state in s.get("state", {}).items()}} for s in status.get("containerStatuses", [])],
            },
        })
    return sorted(kept, key=lambda p: p["metadata"]["name"])


def _shape(pods: list[dict[str, Any]]) -> list[tuple]:
    """What must not change unnoticed: each container's state, exit code and reason, and its message's kind."""
    return [(p["metadata"]["name"], s["name"], kind, state.get("exitCode"), state.get("reason"),
             (state.get("message") or "").split(" ", 1)[0])
            for p in pods for s in p["status"]["containerStatuses"] for kind, state in s["state"].items()]


def check(name: str, pods: list[dict[str, Any]], attempt: int = 1, *, or_: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The attempt's pods, compared with (or, when capturing, stored as) the capture `name`, or one of the
    captures `or_` of the same failure: where pods race (a rank's peer sees its collective break, or is stopped
    first by its Job ending), each real outcome has its capture, and the unit tests classify every one."""
    report = essentials(pods, attempt)
    names = (name, *or_)
    matching = [n for n in names if (REPORTS / f"{n}.json").exists() and
                _shape(json.loads((REPORTS / f"{n}.json").read_text())["pods"]) == _shape(report)]
    if os.environ.get("KUBETUNE_CAPTURE_REPORTS") == "1":
        REPORTS.mkdir(exist_ok=True)
        path = REPORTS / f"{(matching or [name])[0]}.json"
        path.write_text(json.dumps({"pods": report}, indent=2) + "\n")
        return report
    assert matching, (
        f"the real kubelet's report differs from {', '.join(n + '.json' for n in names)}; if that is right, "
        f"capture it anew with KUBETUNE_CAPTURE_REPORTS=1: {json.dumps(report)}")
    return report
