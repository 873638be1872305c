"""The `kubectl-kubetune` executable: kubectl runs it as `kubectl kubetune` when it is on PATH."""

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import aiohttp
import typer
import yaml
from pydantic import ValidationError
from rich.console import Console

from kubetune.api import v1alpha1 as api
from kubetune.config import ConfigError
from kubetune.controller.kube import ApiError, Kube, KubeconfigError
from kubetune.planner import decision
from kubetune.plugin import facts, render
from kubetune.plugin.kubeconfig import KubeconfigProblem, Target, resolve

app = typer.Typer(name="kubectl kubetune", no_args_is_help=True, add_completion=False,
                  help="Plan FineTuneJobs against the live cluster's GPUs, and see one on a screen.")
# Piped output gets 160 columns, unless COLUMNS says otherwise (rich reads it).
console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160)
errors = Console(stderr=True, width=None if sys.stderr.isatty() or "COLUMNS" in os.environ else 160)

KubeconfigOption = typer.Option(None, "--kubeconfig", help="Path to the kubeconfig file (default: KUBECONFIG, "
                                "then ~/.kube/config).")
ContextOption = typer.Option(None, "--context", help="The kubeconfig context (default: the current one).")
NamespaceOption = typer.Option(None, "-n", "--namespace", help="Namespace (default: the context's).")
T = TypeVar("T")


class Output(StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


class Refusal(Exception):
    """What the user must fix, said in one message; the exit code says what kind."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _api_message(error: ApiError) -> str:
    """The API server's Status message, with each refused field (the CRD's schema and CEL messages)."""
    try:
        body = json.loads(error.body or error.reason or "")
    except ValueError:
        return str(error.reason or error)
    causes = [f"{c.get('field', '')}: {c.get('message', '')}".lstrip(": ")
              for c in (body.get("details") or {}).get("causes") or []]
    return "\n".join(causes) if causes else str(body.get("message", error.reason))


def _on_cluster(target: Target, work: Callable[[Kube], Awaitable[T]]) -> T:
    """Run `work` with a client for the target, turning what the cluster says into Refusals."""
    async def run() -> T:
        try:
            kube = await Kube.from_kubeconfig(target.paths, target.context)
        except (KubeconfigError, OSError, ValueError) as error:
            raise Refusal(f"kubeconfig {target.paths}, context {target.context!r}: {error}") from error
        host = kube.api.configuration.host
        try:
            return await work(kube)
        except (TimeoutError, aiohttp.ClientConnectionError, OSError) as error:
            raise Refusal(f"cannot reach the cluster at {host} (context {target.context!r}): {error}") from error
        except ApiError as error:
            if error.status in (401, 403):
                raise Refusal(f"the API server at {host} refused (HTTP {error.status}): {_api_message(error)}") \
                    from error
            raise Refusal(f"the API server at {host} answered HTTP {error.status}: {_api_message(error)}") from error
        finally:
            await kube.close()
    return asyncio.run(run())


def _target(kubeconfig: str | None, context: str | None, namespace: str | None) -> Target:
    try:
        return resolve(kubeconfig, context, namespace)
    except KubeconfigProblem as error:
        raise Refusal(str(error)) from error


def _manifest(filename: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if filename == "-" else Path(filename).read_text()
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except (OSError, yaml.YAMLError) as error:
        raise Refusal(f"{filename}: {error}", 2) from error
    if len(documents) != 1 or not isinstance(documents[0], dict) or documents[0].get("kind") != "FineTuneJob":
        kinds = [str(d.get("kind")) if isinstance(d, dict) else type(d).__name__ for d in documents]
        raise Refusal(f"{filename}: expected one FineTuneJob, found {', '.join(kinds) or 'nothing'}", 2)
    return documents[0]


def _namespace(manifest: dict[str, Any], target: Target, flag: str | None) -> str:
    written = (manifest.get("metadata") or {}).get("namespace")
    if written and flag and written != flag:
        raise Refusal(f"the file's namespace {written!r} does not match -n {flag!r}", 2)
    return str(written or target.namespace)


async def _plan(kube: Kube, namespace: str,
                manifest: dict[str, Any]) -> tuple[decision.Decision, facts.OperatorSettings]:
    try:
        for warning in await kube.dry_run_create(namespace, manifest):  # the chart's admission warnings
            errors.print(f"Warning: {render.warning_text(warning)}", highlight=False, markup=False)
    except ApiError as error:
        if error.status == 404:
            raise Refusal(f"the FineTuneJob CRD is not installed in this cluster (or namespace {namespace!r} does "
                          "not exist): install the chart or kubectl apply -f crds/") from error
        if error.status in (400, 422):
            raise Refusal(f"the cluster refuses this FineTuneJob:\n{_api_message(error)}", 2) from error
        raise
    try:
        spec = api.FineTuneJobSpec.model_validate(manifest.get("spec") or {})
    except ValidationError as error:  # the CRD admits it; the operator would fail it as InvalidSpec
        raise Refusal(f"the operator would fail this FineTuneJob (InvalidSpec): {error}", 2) from error
    if (problem := api.name_problem(str((manifest.get("metadata") or {}).get("name", "")))) is not None:
        raise Refusal(f"the operator would fail this FineTuneJob (InvalidName): {problem}", 2)
    try:
        settings = await facts.operator_settings(kube)
    except ConfigError as error:
        raise Refusal(str(error)) from error
    groups = await facts.gpu_groups(kube, settings)
    return decision.decide(spec, groups, settings.config.gpu_prices), settings


def _fail(refusal: Refusal) -> NoReturn:
    errors.print(f"[red]error:[/red] {refusal}", highlight=False, markup=True)
    raise typer.Exit(refusal.code)


@app.command("plan")
def plan_command(
    filename: str = typer.Option(..., "-f", "--filename", help="The FineTuneJob manifest ('-': standard input)."),
    output: Output = typer.Option(Output.TABLE, "-o", "--output", help="table, or the plan as status.plan holds it "
                                  "(json, yaml)."),
    kubeconfig: str | None = KubeconfigOption, context: str | None = ContextOption,
    namespace: str | None = NamespaceOption,
) -> None:
    """Plan a FineTuneJob on the cluster's GPUs now, as the operator would: the choice, the runners-up and the
    memory breakdown, before submitting it. Exits 1 when nothing fits."""
    try:
        manifest = _manifest(filename)
        target = _target(kubeconfig, context, namespace)
        where = _namespace(manifest, target, namespace)
        decided, settings = _on_cluster(target, lambda kube: _plan(kube, where, manifest))
    except Refusal as refusal:
        _fail(refusal)
    if settings.config.namespaces and where not in settings.config.namespaces:
        errors.print(f"[yellow]warning:[/yellow] the operator watches only {', '.join(settings.config.namespaces)}: "
                     f"it would not plan a FineTuneJob in {where}", highlight=False)
    if decided.plan is None:
        _fail(Refusal(f"no plan ({decided.reason}): {decided.message}"))
    plan = decided.plan.model_dump(mode="json", by_alias=True, exclude_none=True)
    if output is Output.JSON:
        print(json.dumps(plan, indent=2))
    elif output is Output.YAML:
        print(yaml.safe_dump(plan, sort_keys=False), end="")
    else:
        name = manifest.get("metadata", {}).get("name", "")
        console.print(render.plan_view(decided.plan, f"{where}/{name} on context {target.context!r}: "
                                                     f"{manifest['spec']['model']['name']}"))
        console.print(f"[dim]{settings.source}[/dim]")


@app.command("describe")
def describe_command(
    name: str = typer.Argument(..., help="The FineTuneJob's name."),
    kubeconfig: str | None = KubeconfigOption, context: str | None = ContextOption,
    namespace: str | None = NamespaceOption,
) -> None:
    """A FineTuneJob on one screen: its plan, predicted against measured memory, the attempts and why they
    ended, its progress, conditions and Events."""
    async def read(kube: Kube) -> tuple[dict[str, Any], list[dict[str, Any]], int | None]:
        ftj = await kube.finetunejob(target.namespace, name)
        if ftj is None:
            raise Refusal(f'finetunejob "{name}" not found in namespace "{target.namespace}"')
        events = await kube.events_of(target.namespace, "FineTuneJob", name)
        running = (ftj.get("status") or {}).get("phase") == api.JobPhase.RUNNING
        return ftj, events, await facts.live_peak(kube, ftj) if running else None

    try:
        target = _target(kubeconfig, context, namespace)
        ftj, events, peak = _on_cluster(target, read)
    except Refusal as refusal:
        _fail(refusal)
    console.print(render.job_view(ftj, events, peak))


def main() -> None:
    """The entry point: usage lines read as the command is typed."""
    app(prog_name="kubectl kubetune")
