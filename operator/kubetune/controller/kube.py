"""The only module that talks to the Kubernetes API (kubernetes_asyncio), with plain-dict objects in and out."""

import json
import urllib.request
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from kubetune.controller.refusals import Refused

CONFLICT, NOT_FOUND = 409, 404
# Kueue's API (v1beta2: Kueue 0.15 and later), for the Workloads of the Jobs it manages.
KUEUE = ("kueue.x-k8s.io", "v1beta2")
KUEUE_JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
FINETUNEJOBS = ("kubetune.io", "v1alpha1", "finetunejobs")
# Pods that may hold GPUs: the server leaves out finished ones.
ACTIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"
_WATCHED: dict[str, dict[str, str]] = {"Node": {}, "Pod": {"field_selector": ACTIVE_PODS}}
# What callers outside the operator (the kubectl plugin) catch without importing the client.
ApiError = ApiException
KubeconfigError = config.ConfigException


def _env_read_once(api: client.ApiClient) -> None:
    """The client's proxy from the environment, read now instead of on every request. kubernetes_asyncio's
    session trusts the environment, so aiohttp looks up the proxy and ~/.netrc on a thread of its own for every
    request: two thread hops per apiserver call, a twentieth of the operator's CPU at 1,000 jobs. The
    environment does not change while the process runs, and the apiserver's credentials are the kubeconfig's."""
    rest = api.rest_client
    url = urlsplit(api.configuration.host)
    if rest.proxy is None and url.hostname and not urllib.request.proxy_bypass(url.hostname):
        rest.proxy = urllib.request.getproxies().get(url.scheme)
    trusting = rest.pool_manager
    # The read buffer as kubernetes_asyncio sets it: a watch event of a large object exceeds aiohttp's default.
    rest.pool_manager = aiohttp.ClientSession(connector=trusting.connector, trust_env=False, read_bufsize=2**21)
    trusting.detach()  # the connection pool now belongs to the new session


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        _env_read_once(api)
        self.api = api
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.scheduling = client.SchedulingV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.apps = client.AppsV1Api(api)

    @classmethod
    async def connect(cls) -> "Kube":
        try:
            config.load_incluster_config()
        except config.ConfigException:
            await config.load_kube_config()
        return cls(client.ApiClient())

    @classmethod
    async def from_kubeconfig(cls, paths: str, context: str) -> "Kube":
        """A client for one context of the kubeconfig files in `paths` (joined as in KUBECONFIG), as kubectl
        would connect: no in-cluster fallback, and the files are never written back."""
        return cls(await config.new_client_from_config(config_file=paths, context=context, persist_config=False))

    async def close(self) -> None:
        await self.api.close()

    @staticmethod
    async def _json(response: Any) -> dict[str, Any]:
        if response.status >= 400:
            raise ApiException(status=response.status, reason=await response.text())
        return json.loads(await response.read())

    async def nodes(self) -> list[dict[str, Any]]:
        return (await self._json(await self.core.list_node(_preload_content=False)))["items"]

    async def pods(self, namespace: str | None = None, selector: str | None = None) -> list[dict[str, Any]]:
        if namespace is None:
            response = await self.core.list_pod_for_all_namespaces(_preload_content=False)
        else:
            response = await self.core.list_namespaced_pod(namespace, label_selector=selector or "",
                                                           _preload_content=False)
        return (await self._json(response))["items"]

    async def active_pods(self) -> list[dict[str, Any]]:
        """Pods of every namespace that may hold GPUs (not finished): the server filters out the rest."""
        response = await self.core.list_pod_for_all_namespaces(field_selector=ACTIVE_PODS, _preload_content=False)
        return (await self._json(response))["items"]

    async def listed(self, kind: str) -> tuple[list[dict[str, Any]], str]:
        """All nodes, or every namespace's active pods, with the list's resourceVersion to watch from."""
        found = await self._json(await self._lister(kind)(_preload_content=False, **_WATCHED[kind]))
        return found["items"], found["metadata"]["resourceVersion"]

    async def watch(self, kind: str, resource_version: str, seconds: int) -> AsyncIterator[dict[str, Any]]:
        """The watch events ({"type", "object"}) of what `listed(kind)` lists, after `resource_version`, for up to
        `seconds`. A pod that finishes leaves the field selector's set, which the server sends as DELETED. Read as
        raw lines: client models for every event of a thousand pods cost more than the operator's planning."""
        response = await self._lister(kind)(
            watch=True, resource_version=resource_version, allow_watch_bookmarks=True, timeout_seconds=seconds,
            _preload_content=False, _request_timeout=seconds + 30, **_WATCHED[kind])
        try:
            if response.status >= 400:
                raise ApiException(status=response.status, reason=await response.text())
            pending = b""
            # By chunks, not aiohttp's readline: a line (one object) may exceed its 64 KiB line limit.
            async for chunk in response.content.iter_any():
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        finally:
            response.release()

    def _lister(self, kind: str) -> Any:
        return {"Node": self.core.list_node, "Pod": self.core.list_pod_for_all_namespaces}[kind]

    async def create(self, namespace: str, manifest: dict[str, Any]) -> bool:
        """Create unless an object of that name exists; True when this call created it."""
        kind = manifest["kind"]
        create: Any = {"ConfigMap": self.core.create_namespaced_config_map, "Service": self.core.create_namespaced_service,
                  "Job": self.batch.create_namespaced_job}[kind]
        # Not deserialised into client models: at 1,000 jobs that alone was 5% of the operator's time.
        response = await create(namespace, manifest, _preload_content=False)
        if response.status == CONFLICT:
            return False
        if response.status in (400, 403, 422):
            text = await response.text()
            try:
                status = json.loads(text)
            except ValueError:
                status = {}
            raise Refused(kind, manifest["metadata"]["name"], response.status, status.get("reason", ""),
                          status.get("message", text))
        await self._json(response)
        return True

    async def read(self, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
        read: Any = {"ConfigMap": self.core.read_namespaced_config_map, "Service": self.core.read_namespaced_service,
                "Job": self.batch.read_namespaced_job, "Lease": self.coordination.read_namespaced_lease,
                "PersistentVolumeClaim": self.core.read_namespaced_persistent_volume_claim,
                # Cluster-wide: the namespace is not the API's to know.
                "PriorityClass": lambda name, _namespace, **kw: self.scheduling.read_priority_class(name, **kw)}[kind]
        # Without preloading, the client hands back error responses instead of raising.
        response = await read(name, namespace, _preload_content=False)
        if response.status == NOT_FOUND:
            return None
        return await self._json(response)

    async def suspend_job(self, namespace: str, name: str, suspend: bool) -> None:
        await self.batch.patch_namespaced_job(name, namespace, {"spec": {"suspend": suspend}})

    async def workload_of(self, namespace: str, job_uid: str) -> dict[str, Any] | None:
        """The Workload Kueue keeps for the Job of that uid; None before Kueue made one, or without Kueue."""
        response = await self.custom.list_namespaced_custom_object(
            *KUEUE, namespace, "workloads", label_selector=f"{KUEUE_JOB_UID_LABEL}={job_uid}", _preload_content=False)
        if response.status == NOT_FOUND:  # Kueue's API is not installed
            return None
        items = (await self._json(response))["items"]
        return items[0] if items else None

    async def set_workload_active(self, namespace: str, name: str, active: bool) -> None:
        # A merge patch: the client's default for custom objects is a JSON patch, a list of operations.
        response = await self.custom.patch_namespaced_custom_object(  # type: ignore[call-arg]
            *KUEUE, namespace, "workloads", name, {"spec": {"active": active}},
            _content_type="application/merge-patch+json", _preload_content=False)
        await self._json(response)

    async def write_lease(self, namespace: str, lease: dict[str, Any]) -> bool:
        """Create the Lease, or replace it at the resourceVersion it was read at; False when another writer got
        there first (the optimistic concurrency the election rests on)."""
        # Plain dicts serialise as they are; without preloading the client returns the raw response.
        response: Any
        if "resourceVersion" in lease["metadata"]:
            response = await self.coordination.replace_namespaced_lease(lease["metadata"]["name"], namespace, lease,  # type: ignore[arg-type]
                                                                        _preload_content=False)
        else:
            response = await self.coordination.create_namespaced_lease(namespace, lease,  # type: ignore[arg-type]
                                                                       _preload_content=False)
        if response.status == CONFLICT:
            return False
        await self._json(response)
        return True

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job; its pods go with it (background propagation). Gone already is fine."""
        response = await self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background",
                                                          _preload_content=False)
        if response.status != NOT_FOUND:
            await self._json(response)

    async def delete_config_map(self, namespace: str, name: str) -> None:
        """Gone already is fine."""
        response = await self.core.delete_namespaced_config_map(name, namespace, _preload_content=False)
        if response.status != NOT_FOUND:
            await self._json(response)

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """A merge patch ({"status": ...}) of a FineTuneJob's status subresource, as kopf applies its handlers'
        patches. Gone already is fine."""
        response = await self.custom.patch_namespaced_custom_object_status(  # type: ignore[call-arg]
            *FINETUNEJOBS[:2], namespace, FINETUNEJOBS[2], name, patch,
            _content_type="application/merge-patch+json", _preload_content=False)
        if response.status != NOT_FOUND:
            await self._json(response)

    async def post_event(self, event: dict[str, Any]) -> None:
        response = await self.core.create_namespaced_event(event["metadata"]["namespace"], event,  # type: ignore[arg-type]
                                                           _preload_content=False)
        await self._json(response)

    async def finetunejob(self, namespace: str, name: str) -> dict[str, Any] | None:
        response = await self.custom.get_namespaced_custom_object(*FINETUNEJOBS[:2], namespace, FINETUNEJOBS[2], name,
                                                                  _preload_content=False)
        return None if response.status == NOT_FOUND else await self._json(response)

    async def dry_run_create(self, namespace: str, manifest: dict[str, Any]) -> list[str]:
        """Submit without storing (dryRun=All): the API server runs the CRD's schema and CEL rules and admission,
        raising ApiError with its message when they refuse (an existing object of that name passed them).
        Returns the Warning headers admission answered with, as sent."""
        response = await self.custom.create_namespaced_custom_object(
            *FINETUNEJOBS[:2], namespace, FINETUNEJOBS[2], manifest, dry_run="All", _preload_content=False)
        if response.status != CONFLICT:
            await self._json(response)
        return list(response.headers.getall("Warning", []))

    async def events_of(self, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
        response = await self.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.kind={kind},involvedObject.name={name}", _preload_content=False)
        return (await self._json(response))["items"]

    async def deployments(self, selector: str) -> list[dict[str, Any]]:
        response = await self.apps.list_deployment_for_all_namespaces(label_selector=selector, _preload_content=False)
        return (await self._json(response))["items"]

    async def pod_page(self, namespace: str, pod: str, port: int, path: str) -> str | None:
        """A pod's HTTP page through the API server's pod proxy (reachable wherever the API server is); None
        when the pod does not answer."""
        response: Any = await self.core.connect_get_namespaced_pod_proxy_with_path(
            f"{pod}:{port}", namespace, path, _preload_content=False)
        return await response.text() if response.status == 200 else None
