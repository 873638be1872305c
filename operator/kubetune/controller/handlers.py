"""kopf handlers. One level-based reconcile, run on create, on spec changes and periodically (controller/ticks.py):
plan if not planned, make sure the children exist, and read the Job and its pods into conditions, phase and
Events.

The handlers gather facts (the spec, status, the indexed Job, the capacity snapshot, pods when a policy asks
for them), call the pure policies (planner.decision, suspension, observation, recovery, refusals, events)
and act on what they return: API calls, the status patch, Events and metrics."""

import asyncio
import copy
import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
from cachetools import LRUCache
from pydantic import ValidationError

from kubetune.api import contract
from kubetune.api import v1alpha1 as api
from kubetune.api.conditions import ConditionType, Reason
from kubetune.catalog.cluster_gpus import GpuNodeGroup
from kubetune.config import OperatorConfig
from kubetune.controller import clock, events, observation, progress, recovery, refusals, resize, suspension
from kubetune.controller import metrics as m
from kubetune.controller.conditions import Conditions, finished
from kubetune.controller.diffbase import SlimDiffBase
from kubetune.controller.event_poster import EventPoster
from kubetune.controller.kube import Kube
from kubetune.controller.refusals import Refused
from kubetune.controller.serial import Serial
from kubetune.controller.snapshot import CapacitySnapshot
from kubetune.controller.ticks import Ticks
from kubetune.planner import decision
from kubetune.resources import names
from kubetune.resources.config_map import config_map
from kubetune.resources.job import job as job_manifest
from kubetune.resources.service import service

RESOURCE = (api.GROUP, api.VERSION, api.PLURAL)
# kopf's copy of the last handled spec, an annotation as long as the spec (configure() sets its prefix).
DIFF_BASE = "kubetune.io/last-handled-configuration"
# Identical specs against the same read of the cluster get the same plan; fleets submit many alike.
RECENT_PLANS = 256
# One DEBUG line per reconcile with its exact wall time, and whether it changed the status (a plan, children,
# a phase...) or was a no-op tick: `run-operator --log-reconcile-timings` turns it on; the histogram's buckets
# cannot tell the two apart or give exact quantiles.
timings = logging.getLogger("kubetune.reconciles")


def register(registry: kopf.OperatorRegistry) -> None:
    """The handlers, on a registry of their own. kopf's default registry would bring its login through the
    installed client library; this one is told which."""
    kopf.on.login(registry=registry)(kopf.login_via_async_client)
    kopf.on.startup(registry=registry)(configure)  # type: ignore[arg-type]  # its indexes, by name, as for reconcile
    kopf.on.cleanup(registry=registry)(close)
    for on in (kopf.on.create(*RESOURCE, registry=registry), kopf.on.resume(*RESOURCE, registry=registry),
               kopf.on.update(*RESOURCE, field="spec", registry=registry)):
        on(reconcile)  # type: ignore[arg-type]  # kopf passes its indexes by name, beyond its protocols' arguments
    kopf.index(*RESOURCE, registry=registry)(unfinished_jobs)
    kopf.index("batch", "v1", "jobs", labels={names.LABEL_COMPONENT: "trainer"}, registry=registry)(trainer_jobs)
    kopf.on.delete(*RESOURCE, optional=True, registry=registry)(forget)


async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, trainer_jobs: kopf.Index,
                    unfinished_jobs: kopf.Index, **_: Any) -> None:
    # kopf's own bookkeeping lives in annotations under our prefix, never in status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kubetune.io")
    settings.persistence.diffbase_storage = SlimDiffBase(prefix="kubetune.io")
    settings.persistence.finalizer = "kubetune.io/finalizer"
    # Watches that hang forever without a server timeout (kopf#698, #204).
    settings.watching.server_timeout = 60
    settings.networking.request_timeout = 30
    # kopf's own log lines become Events only for warnings and errors: one Event per handler run ("Handler
    # succeeded") was most of the operator's apiserver traffic at 1,000 jobs. Ours are posted explicitly.
    settings.posting.level = 30
    memo.kube = await Kube.connect()
    memo.capacity = CapacitySnapshot(memo.kube, memo.config.autoscaled_pools)
    memo.capacity.start()
    memo.series = m.JobSeries()
    memo.progress = progress.ProgressReader()
    memo.serial = Serial()
    memo.plans = LRUCache(maxsize=RECENT_PLANS)
    memo.planner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kubetune-planner")
    memo.events = EventPoster(memo.kube, memo.config.identity)
    # The jobs kopf's handlers have reconciled in this process: kopf filled its indexes before they ran, which
    # reconciling relies on, and they are the jobs this operator serves (its namespaces).
    memo.handled = set()

    def ticked() -> list[dict[str, Any]]:
        return [body for key in memo.handled for body in unfinished_jobs.get(key, [])]

    async def tick(body: dict[str, Any]) -> None:
        patch = kopf.Patch()
        try:
            await _reconcile(memo, body, body["spec"], body.get("status", {}), patch, trainer_jobs, retry=0)
        finally:  # as kopf does for its handlers: what a reconcile decided before an error is kept
            if patch:
                await memo.kube.patch_status(body["metadata"]["namespace"], body["metadata"]["name"], dict(patch))

    memo.ticks = Ticks(memo.config.reconcile_seconds, ticked, tick)
    memo.ticks.start()


async def close(memo: kopf.Memo, **_: Any) -> None:
    await memo.ticks.close()
    await memo.events.close()
    await memo.capacity.close()
    await memo.kube.close()
    memo.planner.shutdown(cancel_futures=True)


async def unfinished_jobs(body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """The FineTuneJobs the periodic reconcile visits, by (namespace, name): the unfinished ones, holding only
    what reconciling reads (not managedFields, nor kopf's copy of the last handled spec). The index functions
    are coroutines although they never wait: kopf runs a plain function on a thread of its executor, and that
    hop for every watch event of every FineTuneJob and Job was about 6 % of the operator's busy time at 1,000 jobs."""
    metadata = body["metadata"]
    if finished(body.get("status", {}).get("conditions", [])) or metadata.get("deletionTimestamp"):
        return {}
    annotations = {key: value for key, value in metadata.get("annotations", {}).items() if key != DIFF_BASE}
    return {(metadata["namespace"], metadata["name"]): {
        "apiVersion": body["apiVersion"], "kind": body["kind"],
        "metadata": {"name": metadata["name"], "namespace": metadata["namespace"], "uid": metadata["uid"],
                     "generation": metadata.get("generation", 1), "creationTimestamp": metadata["creationTimestamp"],
                     "labels": dict(metadata.get("labels", {})), "annotations": annotations},
        "spec": dict(body["spec"]), "status": dict(body.get("status", {}))}}


async def reconcile(body: kopf.Body, spec: kopf.Spec, status: kopf.Status, patch: kopf.Patch, memo: kopf.Memo,
                    retry: int, trainer_jobs: kopf.Index, **_: Any) -> None:
    memo.handled.add((body["metadata"]["namespace"], body["metadata"]["name"]))
    await _reconcile(memo, body, dict(spec), dict(status), patch, trainer_jobs, retry)


async def _reconcile(memo: kopf.Memo, body: Any, spec: dict[str, Any], status: dict[str, Any], patch: kopf.Patch,
                     trainer_jobs: kopf.Index, retry: int) -> None:
    """One reconcile, from kopf's handlers (kopf applies `patch`) or from a periodic pass (which applies it)."""
    namespace: str = body["metadata"]["namespace"]
    name: str = body["metadata"]["name"]
    key = (namespace, name)
    async with memo.serial.turn(key):
        if memo.serial.stale(key, dict(status)):
            m.reconcile_stale_skips.inc()
            return
        started = time.perf_counter()
        if retry:
            m.reconcile_retries.inc()
        run = _Reconcile(body, status, patch, memo)
        try:
            await run.reconcile(spec, list(trainer_jobs.get(key, [])))
        except Exception as error:
            m.reconcile_errors.labels(type(error).__name__).inc()
            raise
        finally:
            seconds = time.perf_counter() - started
            m.reconcile_seconds.observe(seconds)
            timings.debug("reconciled %s/%s in %.3f ms: %s", namespace, name, seconds * 1000,
                          "changed" if patch.status else "unchanged")
            memo.serial.wrote(key, copy.deepcopy(dict(patch.status)))
    plan = patch.status.get("plan") or status.get("plan")
    memo.series.observe(namespace, name, api.JobPhase(patch.status.get("phase") or status.get("phase") or "Pending"),
                        api.Plan.model_validate(plan) if plan else None)


async def trainer_jobs(body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """The training Jobs by (namespace, FineTuneJob), from kopf's watch: steady-state reconciles read them
    here instead of asking the apiserver every time."""
    owner = next((ref["name"] for ref in body["metadata"].get("ownerReferences", []) if ref.get("kind") == api.KIND),
                 None)
    if owner is None:
        return {}
    # Only what reconciling reads: 1,000 whole Jobs would be most of the operator's memory.
    return {(body["metadata"]["namespace"], owner): {"metadata": {"name": body["metadata"]["name"],
                                              "uid": body["metadata"].get("uid", ""),
                                              "labels": dict(body["metadata"].get("labels", {})),
                                              "ownerReferences": copy.deepcopy(body["metadata"]["ownerReferences"])},
                                 "spec": {"suspend": body["spec"].get("suspend"),
                                          "parallelism": body["spec"].get("parallelism"),
                                          # Which ConfigMap its pods mount: checked against status.children.
                                          "template": {"spec": {"volumes": [
                                              volume for volume in body["spec"]["template"]["spec"].get("volumes", [])
                                              if "configMap" in volume]}}},
                                 "status": copy.deepcopy(dict(body.get("status", {})))}}


async def forget(name: str, body: kopf.Body, status: kopf.Status, memo: kopf.Memo, **_: Any) -> None:
    namespace: str = body["metadata"]["namespace"]
    memo.handled.discard((namespace, name))
    memo.series.forget(namespace, name)
    memo.serial.forget((namespace, name))
    for attempt in range(1, len(status.get("attempts", [])) + 2):
        memo.progress.forget((namespace, name, attempt))


def _owned(child: dict[str, Any], body: kopf.Body) -> bool:
    return any(ref.get("uid") == body["metadata"]["uid"] for ref in child["metadata"].get("ownerReferences", []))


def _config_map_of(job: dict[str, Any]) -> str | None:
    """The ConfigMap of the Job's own config volume (an admission webhook may add others)."""
    return next((volume["configMap"]["name"] for volume in job["spec"].get("template", {}).get("spec", {})
                 .get("volumes", []) if volume.get("name") == "config" and "configMap" in volume), None)


def _foreign_message(child: dict[str, Any]) -> str:
    return (f"a {child['kind']} named {child['metadata']['name']} already exists and does not belong to this "
            "FineTuneJob; kubetune leaves it alone: rename the FineTuneJob or remove that object")


class _Reconcile:
    """One reconcile of one FineTuneJob: the facts it has read, and the writes it has decided on."""

    def __init__(self, body: Any, status: dict[str, Any], patch: kopf.Patch, memo: kopf.Memo) -> None:
        self.body, self.status, self.patch, self.memo = body, status, patch, memo
        self.config: OperatorConfig = memo.config
        self.kube: Kube = memo.kube
        self.capacity: CapacitySnapshot = memo.capacity
        self.name: str = body["metadata"]["name"]
        self.namespace: str = body["metadata"]["namespace"]
        self.conds = Conditions(status.get("conditions"), body["metadata"].get("generation", 1))
        self.attempt = len(status.get("attempts", [])) + 1

    async def reconcile(self, raw_spec: dict[str, Any], indexed: list[dict[str, Any]]) -> None:
        if self.conds.finished or self.body["metadata"].get("deletionTimestamp"):
            return
        await self._decide(raw_spec, indexed)
        self._write()

    async def _decide(self, raw_spec: dict[str, Any], indexed: list[dict[str, Any]]) -> None:
        try:
            spec = api.FineTuneJobSpec.model_validate(raw_spec)
        except ValidationError as error:
            return self._fail(Reason.INVALID_SPEC, str(error))
        if (problem := api.name_problem(self.name)) is not None:
            return self._fail(Reason.INVALID_NAME, problem)
        self.conds.apply([observation.output_durability(spec.output)])
        plan = api.Plan.model_validate(self.status["plan"]) if self.status.get("plan") else await self._plan(spec)
        if plan is None:
            return
        if resize.resized(spec, plan):
            return await self._resize(spec, plan)
        # kopf fills its indexes before any handler runs, so a Job missing here is one that does not exist yet,
        # or one whose creation the watch has not delivered; creating treats the latter as existing (a
        # conflict), so no read is needed first: at 1,000 new jobs that read was a tenth of each creating
        # reconcile.
        job = indexed[0] if indexed else None
        if job is None:
            await self._start(spec, plan)
        elif not _owned(job, self.body):
            self._fail(Reason.NAME_CONFLICT, _foreign_message(job))
        elif names.attempt_of(job) < self.attempt:
            # An earlier attempt's Job, recorded as ended: it must go before the next one is created.
            await self.kube.delete_job(self.namespace, job["metadata"]["name"])
        elif _config_map_of(job) != self.status.get("children", {}).get("configMap"):
            await self._repair(spec, plan, job)
        else:
            await self._observe(spec, plan, observation.JobView.of(job))

    def _fail(self, reason: Reason, message: str) -> None:
        self.conds.set(ConditionType.FAILED, True, reason, message)
        self.conds.set(ConditionType.SUCCEEDED, False, reason, "the job failed")

    async def _decided(self, spec: api.FineTuneJobSpec, groups: list[GpuNodeGroup]) -> decision.Decision:
        key = (spec.model_dump_json(), self.capacity.version)
        decided: decision.Decision | None = self.memo.plans.get(key)
        if decided is None:
            # Off the event loop: a plan is tens of milliseconds of CPU, and with many jobs arriving the other
            # reconciles' apiserver replies would wait behind it. One thread, so plans never run concurrently.
            decided = await asyncio.get_running_loop().run_in_executor(
                self.memo.planner, decision.decide, spec, groups, self.config.gpu_prices)
            self.memo.plans[key] = decided
        return decided

    async def _plan(self, spec: api.FineTuneJobSpec) -> api.Plan | None:
        decided = await self._decided(spec, await self.capacity.groups())
        if decided.plan is None:
            reason = decided.reason or Reason.UNSCHEDULABLE
            m.plan_failures.labels(reason).inc()
            self.conds.set(ConditionType.PLANNED, False, reason, decided.message)
            self._fail(reason, decided.message)
            return None
        self._set_plan(decided.plan)
        self.conds.set(ConditionType.PLANNED, True, Reason.PLANNED, decision.summary(decided.plan))
        return decided.plan

    def _set_plan(self, plan: api.Plan) -> None:
        """Make `plan` the job's plan (a first plan or a replan): status and the plans counter."""
        self.patch.status["plan"] = plan.model_dump(mode="json", by_alias=True, exclude_none=True)
        m.plans.labels(plan.gpu_type, str(int(plan.zero_stage)), plan.offload, plan.method,
                       str(plan.gradient_checkpointing).lower(), plan.attention).inc()

    async def _start(self, spec: api.FineTuneJobSpec, plan: api.Plan) -> None:
        """No Job for this attempt yet: once the last attempt's workers are gone and what the pods refer to
        exists, create the children. The new Job reaches the trainer_jobs index through the watch; the next
        reconcile observes it."""
        if self.attempt > 1 and await self.capacity.workers_left(self.namespace, self.name):
            self.conds.set(ConditionType.RUNNING, False, Reason.RESTARTING,
                           f"attempt {self.attempt}: waiting for the previous attempt's workers to stop")
            return
        if not spec.queue_name:
            placeable = await self._placeable(spec, plan)
            if placeable is None:
                return
            plan = placeable
        missing = [ref for ref in refusals.references(spec) if await self.kube.read(self.namespace, *ref) is None]
        outcome = refusals.missing_references(missing, clock.seconds_since(self.body["metadata"]["creationTimestamp"]))
        if outcome is None:
            await self._create_children(spec, plan)
        else:
            self._outcome(outcome)

    async def _create_children(self, spec: api.FineTuneJobSpec, plan: api.Plan) -> bool:
        """Whether the children exist now; when not, the job has failed with the reason."""
        try:
            foreign = await self._ensure_children(spec, plan)
        except Refused as refused:
            self._outcome(refusals.child_refused(refused))
            return False
        if foreign:
            self._fail(Reason.NAME_CONFLICT, foreign)
        return foreign is None

    def _outcome(self, outcome: refusals.Outcome) -> None:
        self.conds.set(ConditionType.RUNNING, False, outcome.reason, outcome.message)
        if outcome.failed:
            self._fail(outcome.reason, outcome.message)
            self.patch.status["completionTime"] = clock.now()

    async def _placeable(self, spec: api.FineTuneJobSpec, plan: api.Plan) -> api.Plan | None:
        """The plan to create the children for now, or None while its GPUs are busy. The Job is created only
        when all of its pods fit what is free, so no pod holds GPUs while its peers cannot start. A first
        attempt is replanned when the cluster changed and another plan can start now (nodes added, other GPUs
        freed); a later one resumes from checkpoints its plan's layout wrote, and waits for its own."""
        groups = await self.capacity.groups(fresh=True)
        waiting = decision.waiting_for_capacity(plan, groups)
        if waiting is None:
            return plan
        if self.attempt == 1:
            now = (await self._decided(spec, groups)).plan
            if now is not None and now != plan and decision.waiting_for_capacity(now, groups) is None:
                self._set_plan(now)
                self.conds.set(ConditionType.PLANNED, True, Reason.REPLANNED,
                               f"the cluster changed: {decision.summary(now)}")
                return now
        self.conds.set(ConditionType.RUNNING, False, Reason.WAITING_FOR_CAPACITY, waiting)
        return None

    async def _ensure(self, manifest: dict[str, Any], created: list[str]) -> str | None:
        """Create one child unless it exists; a message when an object of its name exists that is not ours."""
        kopf.adopt(manifest, owner=self.body)
        if await self.kube.create(self.namespace, manifest):
            created.append(f"{manifest['kind']} {manifest['metadata']['name']}")
            return None
        existing = await self.kube.read(self.namespace, manifest["kind"], manifest["metadata"]["name"])
        if existing is not None and not _owned(existing, self.body):
            existing.setdefault("kind", manifest["kind"])
            return _foreign_message(existing)
        return None

    async def _ensure_children(self, spec: api.FineTuneJobSpec, plan: api.Plan) -> str | None:
        """Create the missing children; a message when an object of a child's name exists that is not ours.
        Creation is idempotent (fixed names, conflicts ignored), so a restart at any point is safe. The three
        are created at once, one round trip (a second was most of a creating reconcile's time at 1,000 new
        jobs): the ConfigMap is named for its content, so whichever lands first the Job's pods mount what it
        was made for. status.children names them once all exist, which the steady state checks (`_repair`).
        A child refused or taken fails the job, and a Job created beside it goes: its pods could never start."""
        settings = decision.settings_from_plan(spec, plan)
        groups = [g for g in await self.capacity.groups(count_pods=False) if g.product == plan.gpu_product]
        configs = config_map(self.name, spec, plan, settings)
        manifests = [configs, service(self.name)]
        child = names.names(self.name)
        if groups:
            manifests.append(job_manifest(self.name, spec, plan, groups[0], self.config.trainer_image,
                                          configs["metadata"]["name"], self.attempt,
                                          dict(self.body["metadata"].get("annotations", {})),
                                          dict(self.body["metadata"].get("labels", {}))))
        # After a refusal the namespace may go on refusing (a quota, a missing permission): the ConfigMap and
        # Service then go first and the Job after them, so no Job is made and removed again on every retry.
        refused_before = self.conds.reason(ConditionType.RUNNING) in (Reason.QUOTA_EXCEEDED, Reason.CHILD_FORBIDDEN)
        waves = [manifests[:2], manifests[2:]] if refused_before else [manifests]
        created: list[str] = []
        try:
            for wave in waves:
                # A wave's creations all finish before an error of one is raised, so the Event names all created.
                results = await asyncio.gather(*(self._ensure(m, created) for m in wave), return_exceptions=True)
                foreign = next((result for result in results if isinstance(result, str)), None)
                if ((foreign or any(isinstance(result, Refused) for result in results))
                        and f"Job {child['job']}" in created):
                    await self.kube.delete_job(self.namespace, child["job"])
                for result in results:
                    if isinstance(result, BaseException):
                        raise result
                if foreign:
                    return foreign
        finally:
            if created:  # one Event for what this reconcile created
                self.memo.events.post(self.body, "Normal", "Created", "created " + ", ".join(created))
        self._record_children(configs["metadata"]["name"])
        earlier = self.status.get("children", {}).get("configMap")
        if groups and earlier and earlier != configs["metadata"]["name"]:
            # An earlier attempt's configuration, which no Job mounts any more (that Job is gone). Tidying only:
            # a failure must not hold up the job (it goes with the FineTuneJob in any case).
            try:
                await self.kube.delete_config_map(self.namespace, earlier)
            except Exception as error:
                timings.warning("could not delete %s/%s, an earlier attempt's ConfigMap: %s", self.namespace,
                                earlier, error)
        return None

    def _record_children(self, config_map_name: str) -> None:
        """status.children: written once all three exist, which the steady state checks (`_repair`)."""
        child = names.names(self.name)
        self.patch.status["children"] = {"configMap": config_map_name, "service": child["service"], "job": child["job"]}

    async def _repair(self, spec: api.FineTuneJobSpec, plan: api.Plan, job: dict[str, Any]) -> None:
        """A Job whose children status.children does not name: the reconcile that created it did not see the
        others created (an apiserver error, an operator restart), or this view of the status is behind. The
        missing ones are created; a ConfigMap of another configuration that exists is the Job's own and is
        kept. Only a Job whose ConfigMap is gone and cannot be made again (the configuration changed since)
        is replaced: its pods could never start."""
        wanted = config_map(self.name, spec, plan, decision.settings_from_plan(spec, plan))["metadata"]["name"]
        mounted = _config_map_of(job)
        if wanted == mounted:
            if not await self._create_children(spec, plan):
                await self.kube.delete_job(self.namespace, job["metadata"]["name"])
            return
        existing = await self.kube.read(self.namespace, "ConfigMap", mounted) if mounted else None
        if mounted and existing is not None and _owned(existing, self.body):
            created: list[str] = []
            if (foreign := await self._ensure(service(self.name), created)) is not None:
                self._fail(Reason.NAME_CONFLICT, foreign)
                return
            self._record_children(mounted)
            return
        await self.kube.delete_job(self.namespace, job["metadata"]["name"])
        self.memo.events.post(self.body, "Warning", "JobReplaced",
                              f"Job {job['metadata']['name']} mounts ConfigMap {mounted}, which does not exist: "
                              "it is made again with the current configuration")

    async def _observe(self, spec: api.FineTuneJobSpec, plan: api.Plan, job: observation.JobView) -> None:
        workload = None
        # Kueue may manage a Job whose spec names no queue: asked before kubetune changes its suspension.
        if spec.queue_name or spec.suspend != job.suspended:
            if (found := await self.kube.workload_of(self.namespace, job.uid)) is not None:
                workload = suspension.Workload.of(found)
        held = suspension.decide(spec, job.suspended, workload)
        if held.set_job_suspend is not None:
            await self.kube.suspend_job(self.namespace, job.name, held.set_job_suspend)
        if held.set_workload_active is not None and workload is not None:
            await self.kube.set_workload_active(self.namespace, workload.name, held.set_workload_active)
        self.conds.apply(held.updates)
        seen = observation.observe(dataclasses.replace(job, suspended=held.suspended), spec.suspend, self.status)
        key = (self.namespace, self.name, self.attempt)
        if seen.attempt_over:
            self.memo.progress.forget(key)
        if seen.recover:
            pods = await self.kube.pods(self.namespace, names.trainer_selector(self.name, self.attempt))
            return await self._recover(spec, plan, recovery.classify(pods, job.failed_message or ""))
        if seen.check_blocked:
            blocked = recovery.blocked(await self.capacity.blocked_workers(self.namespace, self.name, self.attempt))
            if blocked is not None:
                await self._recover(spec, plan, blocked)
                await self.kube.suspend_job(self.namespace, job.name, True)  # its pods cannot start: stop retrying
                return
        self.conds.apply(seen.updates)
        self.patch.status.update(seen.status)
        if seen.first_start:
            m.time_to_running.observe(clock.seconds_since(self.body["metadata"]["creationTimestamp"]))
        if seen.read_progress and (ip := await self.capacity.rank0_ip(*key)) is not None:
            current = self.memo.progress.latest(key, f"http://{ip}:{contract.METRICS_PORT}/metrics")
            written = current.model_dump(by_alias=True, exclude_none=True) if current is not None else None
            if written is not None and written != self.status.get("progress"):
                self.patch.status["progress"] = written

    async def _recover(self, spec: api.FineTuneJobSpec, plan: api.Plan, failure: recovery.Failure) -> None:
        attempts = [api.Attempt.model_validate(a) for a in self.status.get("attempts", [])]
        response = recovery.respond(failure, self.attempt, attempts, spec, plan,
                                    float(self.status.get("memoryScale") or 1), await self.capacity.groups(),
                                    self.config.gpu_prices)
        self._end_attempt(response)
        if response.plan is not None:
            self.patch.status["memoryScale"] = f"{response.memory_scale:.3f}"
        if response.warning is not None:
            reason, message = response.warning
            self.memo.events.post(self.body, "Warning", reason, message)

    async def _resize(self, spec: api.FineTuneJobSpec, plan: api.Plan) -> None:
        response = resize.respond(spec, plan, self.attempt, await self.capacity.groups(), self.config.gpu_prices)
        self._end_attempt(response)
        if not response.gave_up:
            self.memo.events.post(self.body, "Normal", Reason.RESIZED, response.record.action)

    def _end_attempt(self, response: recovery.Response) -> None:
        """Record the attempt's end and what follows: the next reconcile replaces its Job, or none follows."""
        self.patch.status["attempts"] = [*self.status.get("attempts", []),
                                         response.record.model_dump(by_alias=True, exclude_none=True)]
        if response.plan is not None:
            self._set_plan(response.plan)
        self.conds.apply(response.updates)
        if response.gave_up:
            self.patch.status["completionTime"] = clock.now()

    def _write(self) -> None:
        for condition in self.conds.changed:
            if condition["type"] == ConditionType.FAILED and condition["status"] == "True":
                m.failures.labels(self.namespace, condition["reason"]).inc()
        for event in events.for_changes(self.conds.changed):
            self.memo.events.post(self.body, event.type, event.reason, event.message)
        if self.conds.changed:
            self.patch.status["conditions"] = self.conds.as_list()
        phase = self.conds.phase()
        if self.status.get("phase") != phase:
            self.patch.status["phase"] = phase.value
        if self.status.get("observedGeneration") != self.conds.generation:
            self.patch.status["observedGeneration"] = self.conds.generation

