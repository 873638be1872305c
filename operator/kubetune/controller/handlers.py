"""kopf handlers. One level-based reconcile, run on create, on spec changes and by a timer: plan if not
planned, make sure the children exist, and read the Job and its pods into conditions, phase and Events."""

import asyncio
import copy
import json
import os
import time
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from kubetune.api import contract
from kubetune.api import v1alpha1 as api
from kubetune.controller import children, planning, progress, recovery, refusals
from kubetune.controller import conditions as c
from kubetune.controller import metrics as m
from kubetune.controller.kube import Kube, Refused
from kubetune.controller.serial import Serial
from kubetune.controller.snapshot import CapacitySnapshot
from kubetune.planner.settings import Offload

RESOURCE = (api.GROUP, api.VERSION, api.PLURAL)
RECONCILE_SECONDS = float(os.environ.get("KUBETUNE_RECONCILE_SECONDS", "10"))
# USD per GPU-hour by kubetune GPU id, overriding the catalog's list prices (the chart's gpuPrices value).
GPU_PRICES: dict[str, float] = json.loads(os.environ.get("KUBETUNE_GPU_PRICES") or "{}")
RECENT_PLANS = 256
_recent_plans: dict[tuple[str, int], planning.Decision] = {}


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # kopf's own bookkeeping lives in annotations under our prefix, never in status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kubetune.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="kubetune.io")
    settings.persistence.finalizer = "kubetune.io/finalizer"
    # Watches that hang forever without a server timeout (kopf#698, #204).
    settings.watching.server_timeout = 60
    settings.networking.request_timeout = 30
    # kopf's own log lines become Events only for warnings and errors: one Event per handler run ("Handler
    # succeeded") was most of the operator's apiserver traffic at 1,000 jobs. Ours are posted explicitly.
    settings.posting.level = 30
    memo.kube = await Kube.connect()
    memo.capacity = CapacitySnapshot(memo.kube)
    memo.series = m.JobSeries()
    memo.progress = progress.ProgressReader()
    memo.serial = Serial()


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    await memo.kube.close()


def _unfinished(status: kopf.Status, **_: Any) -> bool:
    """A finished job needs no timer: kopf stops it when this stops matching."""
    return not any(cond.get("type") in (c.SUCCEEDED, c.FAILED) and cond.get("status") == "True"
                   for cond in status.get("conditions", []))


@kopf.on.create(*RESOURCE)
@kopf.on.resume(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
@kopf.timer(*RESOURCE, interval=RECONCILE_SECONDS, initial_delay=RECONCILE_SECONDS, when=_unfinished)
async def reconcile(body: kopf.Body, spec: kopf.Spec, status: kopf.Status, name: str, namespace: str,
                    patch: kopf.Patch, memo: kopf.Memo, retry: int, trainer_jobs: kopf.Index, **_: Any) -> None:
    key = (namespace, name)
    async with memo.serial.turn(key):
        if memo.serial.stale(key, dict(status)):
            m.reconcile_stale_skips.inc()
            return
        started = time.perf_counter()
        if retry:
            m.reconcile_retries.inc()
        try:
            await _reconcile(body, spec, status, name, namespace, patch, memo, trainer_jobs)
        except Exception as error:
            m.reconcile_errors.labels(type(error).__name__).inc()
            raise
        finally:
            m.reconcile_seconds.observe(time.perf_counter() - started)
            memo.serial.wrote(key, copy.deepcopy(dict(patch.status)))
    plan = patch.status.get("plan") or status.get("plan")
    memo.series.observe(namespace, name, patch.status.get("phase") or status.get("phase") or "Pending",
                        api.Plan.model_validate(plan) if plan else None)


@kopf.index("batch", "v1", "jobs", labels={children.LABEL_COMPONENT: "trainer"})
def trainer_jobs(namespace: str, body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """The training Jobs by (namespace, FineTuneJob), from kopf's watch: steady-state reconciles read them
    here instead of asking the apiserver every time."""
    owner = next((ref["name"] for ref in body["metadata"].get("ownerReferences", []) if ref.get("kind") == api.KIND),
                 None)
    if owner is None:
        return {}
    # Only what reconciling reads: 1,000 whole Jobs would be most of the operator's memory.
    return {(namespace, owner): {"metadata": {"name": body["metadata"]["name"],
                                              "labels": dict(body["metadata"].get("labels", {})),
                                              "ownerReferences": copy.deepcopy(body["metadata"]["ownerReferences"])},
                                 "spec": {"suspend": body["spec"].get("suspend"),
                                          "parallelism": body["spec"].get("parallelism")},
                                 "status": copy.deepcopy(dict(body.get("status", {})))}}


@kopf.on.delete(*RESOURCE, optional=True)
async def forget(name: str, namespace: str, status: kopf.Status, memo: kopf.Memo, **_: Any) -> None:
    memo.series.forget(namespace, name)
    memo.serial.forget((namespace, name))
    for attempt in range(1, len(status.get("attempts", [])) + 2):
        memo.progress.forget((namespace, name, attempt))


async def _reconcile(body: kopf.Body, spec: kopf.Spec, status: kopf.Status, name: str, namespace: str,
                     patch: kopf.Patch, memo: kopf.Memo, trainer_jobs: kopf.Index) -> None:
    generation = body["metadata"].get("generation", 1)
    conds = c.Conditions(status.get("conditions"), generation)
    if conds.true(c.SUCCEEDED) or conds.true(c.FAILED) or body["metadata"].get("deletionTimestamp"):
        return
    try:
        job_spec = api.FineTuneJobSpec.model_validate(dict(spec))
    except ValidationError as error:
        conds.set(c.FAILED, True, "InvalidSpec", str(error))
        return _write(body, patch, conds, status)
    if (problem := api.name_problem(name)) is not None:
        conds.set(c.FAILED, True, c.REASON_INVALID_NAME, problem)
        return _write(body, patch, conds, status)
    _output_durability(job_spec.output, conds)
    plan = api.Plan.model_validate(status["plan"]) if status.get("plan") else None
    if plan is None:
        plan = await _plan(job_spec, memo.capacity, conds, patch)
        if plan is None:
            return _write(body, patch, conds, status)
    attempt = len(status.get("attempts", [])) + 1
    # kopf fills its indexes before any handler runs, so a Job missing here is one that does not exist yet, or
    # one whose creation the watch has not delivered; creating treats the latter as existing (a conflict), so
    # no read is needed first: at 1,000 new jobs that read was a tenth of each creating reconcile.
    indexed = list(trainer_jobs.get((namespace, name), []))
    job = indexed[0] if indexed else None
    if job is not None and not _owned(job, body):
        conds.set(c.FAILED, True, c.REASON_NAME_CONFLICT, _foreign_message(job))
        return _write(body, patch, conds, status)
    if job is not None and children.attempt_of(job) < attempt:
        # An earlier attempt's Job, recorded as ended: make sure it goes before the next one is created.
        await memo.kube.delete_job(namespace, job["metadata"]["name"])
        return _write(body, patch, conds, status)
    if job is None:
        if attempt > 1 and await _workers_left(memo.kube, namespace, name):
            conds.set(c.RUNNING, False, c.REASON_RESTARTING, f"attempt {attempt}: waiting for the previous "
                      "attempt's workers to stop")
            return _write(body, patch, conds, status)
        missing = [ref for ref in refusals.references(job_spec) if await memo.kube.read(namespace, *ref) is None]
        outcome = refusals.missing_references(missing, _seconds_since(body["metadata"]["creationTimestamp"]))
        if outcome is None:
            # Creation is idempotent (fixed names, conflicts ignored), so a restart at any point is safe; the Job
            # goes last, so once it exists its ConfigMap and Service do too and steady state reads only the index.
            try:
                foreign = await _ensure_children(body, name, namespace, job_spec, plan, attempt, memo.kube,
                                                 memo.capacity, patch)
            except Refused as refused:
                outcome = refusals.child_refused(refused)
            else:
                if foreign:
                    conds.set(c.FAILED, True, c.REASON_NAME_CONFLICT, foreign)
        if outcome is not None:
            conds.set(c.RUNNING, False, outcome.reason, outcome.message)
            if outcome.failed:
                conds.set(c.FAILED, True, outcome.reason, outcome.message)
                patch.status["completionTime"] = c.now()
        # The new Job reaches the trainer_jobs index through the watch; the next reconcile observes it.
        return _write(body, patch, conds, status)
    if job is not None:
        await _observe(body, name, namespace, job_spec, plan, attempt, job, memo.kube, memo.capacity, memo.progress,
                       conds, patch, status)
    _write(body, patch, conds, status)


def _output_durability(output: api.Output, conds: c.Conditions) -> None:
    """Say, in status and once as a Warning Event, when the model and checkpoints die with the pods: the
    user may have meant it (a quick experiment) but must not find out after hours of GPU time."""
    if output.claim_name:
        conds.set(c.OUTPUT_DURABLE, True, c.REASON_OUTPUT_ON_CLAIM,
                  f"checkpoints and the model are written to claim {output.claim_name} at {output.path}")
    else:
        conds.set(c.OUTPUT_DURABLE, False, c.REASON_EPHEMERAL_OUTPUT,
                  "spec.output.claimName is not set: checkpoints and the model are written to an emptyDir and are "
                  "lost when the pods end, and a restart starts from step 0; set it to a PersistentVolumeClaim to "
                  "keep them")


async def _workers_left(kube: Kube, namespace: str, name: str) -> bool:
    return any(pod["status"].get("phase") in ("Pending", "Running") for pod in await _trainer_pods(kube, namespace, name))


async def _trainer_pods(kube: Kube, namespace: str, name: str, attempt: int | None = None) -> list[dict[str, Any]]:
    """The run's training pods: of every attempt, or of the one named."""
    labels = children.labels(name, "trainer")
    if attempt is not None:
        labels[children.LABEL_ATTEMPT] = str(attempt)
    return await kube.pods(namespace, ",".join(f"{k}={v}" for k, v in labels.items()))


async def _plan(spec: api.FineTuneJobSpec, capacity: CapacitySnapshot, conds: c.Conditions,
                patch: kopf.Patch) -> api.Plan | None:
    groups = await capacity.groups()
    # Identical specs against the same read of the cluster get the same plan; fleets submit many alike.
    key = (spec.model_dump_json(), capacity.version)
    decision = _recent_plans.get(key)
    if decision is None:
        decision = planning.decide(spec, groups, GPU_PRICES)
        _recent_plans[key] = decision
        if len(_recent_plans) > RECENT_PLANS:
            _recent_plans.pop(next(iter(_recent_plans)))
    return _record_plan(decision, conds, patch)


def _record_plan(decision: planning.Decision, conds: c.Conditions, patch: kopf.Patch) -> api.Plan | None:
    if decision.plan is None:
        reason = decision.reason or c.REASON_UNSCHEDULABLE
        m.plan_failures.labels(reason).inc()
        conds.set(c.PLANNED, False, reason, decision.message)
        conds.set(c.FAILED, True, reason, decision.message)
        return None
    _set_plan(decision.plan, c.REASON_PLANNED, conds, patch)
    return decision.plan


def _set_plan(plan: api.Plan, reason: str, conds: c.Conditions, patch: kopf.Patch) -> None:
    """Make `plan` the job's plan (a first plan or a replan): status, the Planned condition, the plans counter."""
    patch.status["plan"] = plan.model_dump(by_alias=True, exclude_none=True)
    conds.set(c.PLANNED, True, reason, _summary(plan))
    m.plans.labels(plan.gpu_type, str(plan.zero_stage), plan.offload, plan.method,
                   str(plan.gradient_checkpointing).lower(), plan.attention).inc()


def _summary(plan: api.Plan) -> str:
    return (f"{plan.gpu_type} x {plan.gpus} ({plan.nodes} node(s)): {plan.method}"
            f"{f' r={plan.lora_rank}' if plan.lora_rank else ''}, ZeRO-{plan.zero_stage}, offload {plan.offload}, "
            f"checkpointing {'on' if plan.gradient_checkpointing else 'off'}, {plan.attention}, "
            f"micro-batch {plan.micro_batch} x {plan.gradient_accumulation}; predicted peak {plan.peak_summary} "
            f"per GPU, {plan.predicted_tokens_per_second:,} tokens/s")


def _owned(child: dict[str, Any], body: kopf.Body) -> bool:
    return any(ref.get("uid") == body["metadata"]["uid"] for ref in child["metadata"].get("ownerReferences", []))


def _foreign_message(child: dict[str, Any]) -> str:
    return (f"a {child['kind']} named {child['metadata']['name']} already exists and does not belong to this "
            "FineTuneJob; kubetune leaves it alone: rename the FineTuneJob or remove that object")


async def _ensure(body: kopf.Body, namespace: str, manifest: dict[str, Any], kube: Kube,
                  created: list[str]) -> str | None:
    """Create one child unless it exists; a message when an object of its name exists that is not ours."""
    kopf.adopt(manifest, owner=body)
    if await kube.create(namespace, manifest):
        created.append(f"{manifest['kind']} {manifest['metadata']['name']}")
        return None
    existing = await kube.read(namespace, manifest["kind"], manifest["metadata"]["name"])
    if existing is not None and not _owned(existing, body):
        existing.setdefault("kind", manifest["kind"])
        return _foreign_message(existing)
    if existing is not None and manifest["kind"] == "ConfigMap" and existing.get("data") != manifest["data"]:
        await kube.set_config_map_data(namespace, manifest["metadata"]["name"], manifest["data"])
    return None


async def _ensure_children(body: kopf.Body, name: str, namespace: str, spec: api.FineTuneJobSpec, plan: api.Plan,
                           attempt: int, kube: Kube, capacity: CapacitySnapshot, patch: kopf.Patch) -> str | None:
    """Create the missing children; a message when an object of a child's name exists that is not ours. The
    ConfigMap is brought in step with the plan in status, which a replan changes."""
    settings = planning.settings_from_plan(spec, plan)
    groups = [g for g in await capacity.groups(count_pods=False) if g.product == plan.gpu_product]
    group = groups[0] if groups else None
    created: list[str] = []
    try:
        # The ConfigMap and Service at once, the Job after them: it must only ever exist beside them. Both
        # creations finish before an error of either is raised, so the Event names all that was created.
        results = await asyncio.gather(
            _ensure(body, namespace, children.config_map(name, spec, plan, settings), kube, created),
            _ensure(body, namespace, children.service(name), kube, created), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        foreign = [message for message in results if message]
        if foreign:
            return foreign[0]
        if group is not None:
            manifest = children.job(name, spec, plan, group, attempt, dict(body["metadata"].get("annotations", {})))
            foreign_job = await _ensure(body, namespace, manifest, kube, created)
            if foreign_job:
                return foreign_job
    finally:
        if created:  # one Event for what this reconcile created
            kopf.event(body, type="Normal", reason="Created", message="created " + ", ".join(created))
    child = children.names(name)
    patch.status["children"] = {"configMap": child["config_map"], "service": child["service"], "job": child["job"]}
    return None


async def _observe(body: kopf.Body, name: str, namespace: str, spec: api.FineTuneJobSpec, plan: api.Plan,
                   attempt: int, job: dict[str, Any], kube: Kube, capacity: CapacitySnapshot,
                   progress_reader: progress.ProgressReader, conds: c.Conditions, patch: kopf.Patch,
                   status: kopf.Status) -> None:
    job_name = job["metadata"]["name"]
    suspended = bool(job["spec"].get("suspend"))
    # The user's suspend flag drives the Job, except that Kueue alone lifts suspension of a queued Job.
    if spec.suspend != suspended and (spec.suspend or spec.queue_name is None):
        await kube.suspend_job(namespace, job_name, spec.suspend)
        suspended = spec.suspend
    if spec.suspend:
        conds.set(c.ADMITTED, False, c.REASON_SUSPENDED, "spec.suspend is true: the training pods are stopped")
    elif suspended:
        conds.set(c.ADMITTED, False, c.REASON_QUEUED, f"waiting for Kueue to admit it from queue '{spec.queue_name}'")
    else:
        conds.set(c.ADMITTED, True, c.REASON_ADMITTED, "the Job may run" +
                  (f" (admitted by Kueue from '{spec.queue_name}')" if spec.queue_name else ""))
    job_status = job.get("status", {})
    job_conditions = {cond["type"]: cond for cond in job_status.get("conditions", []) if cond["status"] == "True"}
    if "Complete" in job_conditions:
        conds.set(c.RUNNING, False, c.REASON_COMPLETED, "all workers finished")
        conds.set(c.SUCCEEDED, True, c.REASON_COMPLETED, f"Job {job_name} completed")
        last = status.get("progress") or {}
        if last.get("totalSteps"):  # the last read may predate the last steps
            total = last["totalSteps"]
            patch.status["progress"] = {**last, "step": total, "etaSeconds": 0, "summary": f"{total}/{total}"}
        progress_reader.forget((namespace, name, attempt))
        patch.status["completionTime"] = job_status.get("completionTime") or c.now()
    elif "Failed" in job_conditions:
        progress_reader.forget((namespace, name, attempt))
        await _recover(body, name, namespace, spec, plan, attempt, job_conditions["Failed"].get("message", ""),
                       kube, capacity, conds, patch, status)
    elif job_status.get("active", 0) > 0 and not suspended:
        ready = job_status.get("ready", 0)
        if ready < job["spec"]["parallelism"] and _seconds_since(job_status.get("startTime") or c.now()) > \
                recovery.BLOCKED_AFTER_SECONDS:
            blocked = recovery.blocked(await capacity.blocked_workers(namespace, name, attempt))
            if blocked is not None:
                await _recover(body, name, namespace, spec, plan, attempt, "", kube, capacity, conds, patch, status,
                               failure=blocked)
                await kube.suspend_job(namespace, job_name, True)  # its pods cannot start: stop retrying them
                return
        conds.set(c.RUNNING, True, c.REASON_PODS_RUNNING, f"{ready}/{job['spec']['parallelism']} workers ready")
        if not status.get("startTime"):
            patch.status["startTime"] = c.now()
            m.time_to_running.observe(_seconds_since(body["metadata"]["creationTimestamp"]))
        ip = await capacity.rank0_ip(namespace, name, attempt)
        if ip is not None:
            current = progress_reader.latest((namespace, name, attempt), f"http://{ip}:{contract.METRICS_PORT}/metrics")
            written = current.model_dump(by_alias=True, exclude_none=True) if current is not None else None
            if written is not None and written != status.get("progress"):
                patch.status["progress"] = written
    elif not suspended:
        conds.set(c.RUNNING, False, c.REASON_PODS_PENDING, "waiting for the workers to be scheduled")


def _seconds_since(timestamp: str) -> float:
    return (datetime.now(UTC) - datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)).total_seconds()


async def _recover(body: kopf.Body, name: str, namespace: str, spec: api.FineTuneJobSpec, plan: api.Plan,
                   attempt: int, job_message: str, kube: Kube, capacity: CapacitySnapshot, conds: c.Conditions,
                   patch: kopf.Patch, status: kopf.Status, failure: recovery.Failure | None = None) -> None:
    """The attempt failed: record it, then replan, restart or give up (recovery.py decides which). Only the
    record is written here: the next reconcile sees a Job older than the attempt in status, deletes it and, once
    its workers are gone, creates the next; so a crash at any point neither loses an attempt nor repeats one."""
    if failure is None:
        failure = recovery.classify(await _trainer_pods(kube, namespace, name, attempt), job_message)
    attempts = [api.Attempt.model_validate(a) for a in status.get("attempts", [])]
    todo = recovery.action(failure, attempts, spec.recovery, plan)
    scale = float(status.get("memoryScale") or 1)
    new_plan, how = None, ""
    if todo is recovery.Action.REPLAN:
        # The host's memory: less offload at the same scale; the GPU's: the same offload bound at a larger scale.
        if failure.kind is recovery.Kind.HOST_OUT_OF_MEMORY:
            most = recovery.less_offload(plan)
            fits, replanned = f"with offload at most {most}", f"with offload at most {most} (less host memory)"
        else:
            most, scale = Offload.ALL, recovery.memory_scale(failure, plan, scale)
            fits = f"{scale:.2f}x the predicted memory (all but the CUDA context)"
            replanned = f"for {fits}"
        decision = planning.decide(spec, await capacity.groups(), GPU_PRICES, memory_scale=scale, resuming=plan,
                                   max_offload=most)
        if decision.plan is None:
            todo, how = recovery.Action.GIVE_UP, f"no plan fits {fits}: {decision.message}"
        else:
            new_plan = decision.plan
            how = f"replanned {replanned}: {_summary(new_plan)}"
    elif todo is recovery.Action.RESTART:
        how = "restarted from the newest checkpoint" if spec.output.claim_name else \
            "restarted from the start (the output is not on a claim, so no checkpoint survives)"
    else:
        how = recovery.why_not_retried(failure, plan, attempts)
    record = api.Attempt(number=attempt, reason=failure.kind.value, message=failure.message[:4096],
                         plan_summary=_summary(plan)[:512], predicted_peak_bytes=plan.predicted_peak_bytes,
                         measured_peak_bytes=failure.measured_peak_bytes, action=how[:512], finished_at=c.now())
    patch.status["attempts"] = [*status.get("attempts", []), record.model_dump(by_alias=True, exclude_none=True)]
    if todo is recovery.Action.GIVE_UP:
        conds.set(c.RUNNING, False, failure.kind.value, failure.message)
        conds.set(c.FAILED, True, failure.kind.value, f"{failure.message} ({how})")
        patch.status["completionTime"] = c.now()
        return
    if new_plan is not None:
        _set_plan(new_plan, c.REASON_REPLANNED, conds, patch)
        patch.status["memoryScale"] = f"{scale:.3f}"
    kopf.warn(body, reason=c.REASON_REPLANNED if new_plan else c.REASON_RESTARTING,
              message=f"attempt {attempt} ended ({failure.kind.value}): {failure.message[:1024]}; {how}")
    conds.set(c.RUNNING, False, c.REASON_RESTARTING, f"attempt {attempt} ended ({failure.kind.value}); {how}")


def _worth_an_event(condition: dict[str, Any]) -> bool:
    """Events for what a user acts on: the plan, queueing and suspension, output that will be lost, the end. The
    Running condition's comings and goings stay in status (restarts have their own Warning): at 1,000 jobs an
    Event per transition was a third of the operator's apiserver writes."""
    if condition["type"] == c.RUNNING:
        return condition["reason"] in refusals.WAITING
    if condition["type"] in (c.ADMITTED, c.OUTPUT_DURABLE):
        return condition["status"] == "False"
    return condition["type"] == c.PLANNED or condition["status"] == "True"


def _write(body: kopf.Body, patch: kopf.Patch, conds: c.Conditions, status: kopf.Status) -> None:
    for condition in conds.changed:
        if condition["type"] == c.FAILED and condition["status"] == "True":
            m.failures.labels(body["metadata"]["namespace"], condition["reason"]).inc()
        if not _worth_an_event(condition):
            continue
        kind = "Warning" if condition["type"] in (c.FAILED, c.OUTPUT_DURABLE) or \
            condition["reason"] in (c.REASON_UNSCHEDULABLE, *refusals.WAITING) else "Normal"
        kopf.event(body, type=kind, reason=condition["reason"], message=f"{condition['type']}={condition['status']}: "
                   f"{condition['message']}")
    if conds.changed:
        patch.status["conditions"] = conds.as_list()
    phase = conds.phase()
    if status.get("phase") != phase:
        patch.status["phase"] = phase
    if status.get("observedGeneration") != conds.generation:
        patch.status["observedGeneration"] = conds.generation
