"""Which cluster, context and namespace a command means, resolved as kubectl resolves them: --kubeconfig, else
the KUBECONFIG list (the first file to set a current context wins), else ~/.kube/config; --context, else the
current context; -n, else the context's namespace, else `default`."""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class KubeconfigProblem(Exception):
    """No usable kubeconfig or context; the message says what to do."""


@dataclass(frozen=True)
class Target:
    paths: str  # the kubeconfig files, joined with os.pathsep as in KUBECONFIG
    context: str
    namespace: str


def _read(path: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(Path(path).expanduser().read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise KubeconfigProblem(f"kubeconfig {path}: {error}") from error
    return loaded if isinstance(loaded, dict) else {}


def resolve(kubeconfig: str | None, context: str | None, namespace: str | None,
            environ: Mapping[str, str] = os.environ) -> Target:
    if kubeconfig:
        paths = [kubeconfig]
    elif environ.get("KUBECONFIG"):
        paths = [p for p in environ["KUBECONFIG"].split(os.pathsep) if p and Path(p).expanduser().exists()]
    else:
        default = Path(environ.get("HOME", str(Path.home()))) / ".kube" / "config"
        paths = [str(default)] if default.exists() else []
    if not paths:
        raise KubeconfigProblem("no kubeconfig: pass --kubeconfig, set KUBECONFIG, or create ~/.kube/config")
    files = [_read(p) for p in paths]
    chosen = context or next((f["current-context"] for f in files if f.get("current-context")), None)
    if not chosen:
        raise KubeconfigProblem(f"no current context in {os.pathsep.join(paths)}: pass --context")
    # As kubectl merges: the first file that defines a context's name wins.
    found = next((c.get("context") or {} for f in files for c in f.get("contexts") or [] if c.get("name") == chosen),
                 None)
    if found is None:
        raise KubeconfigProblem(f"context {chosen!r} is not in {os.pathsep.join(paths)}")
    return Target(os.pathsep.join(paths), chosen, namespace or found.get("namespace") or "default")
