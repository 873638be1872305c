"""The `kubetune` command line."""

import json
import logging
import os
import sys
from pathlib import Path

import typer
import yaml
from rich.console import Console
from rich.table import Table

from kubetune.api import crd
from kubetune.api.vocabulary import AdapterPrecision, Attention, Method, Objective, Offload, Precision, ZeroStage
from kubetune.catalog import gpus
from kubetune.devcluster import profile as profiles
from kubetune.devcluster.cluster import ClusterError, LocalCluster
from kubetune.planner import architecture, report, search
from kubetune.planner.settings import ALL_LINEAR, Lora, Optimizer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Plan and run distributed LLM fine-tuning on Kubernetes.")
dev_cluster = typer.Typer(no_args_is_help=True, help="A local control plane with simulated GPU nodes (kwok).")
app.add_typer(dev_cluster, name="dev-cluster")

# Piped output (CI logs, `| less`) would otherwise wrap the node table at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)


def _gpu_types(names: list[str]) -> list[gpus.GpuType]:
    if any(name.lower() == "all" for name in names):
        return list(gpus.catalog())
    found = []
    for name in names:
        try:
            found.append(gpus.by_id(name))
        except gpus.UnknownGpuError:
            found.append(gpus.by_gfd_product(name))
    return found


def _on_off(value: str | None, option: str) -> bool | None:
    if value is None:
        return None
    if value not in ("on", "off"):
        raise typer.BadParameter(f"must be 'on' or 'off', not '{value}'", param_hint=option)
    return value == "on"


@app.command("plan")
def plan_command(
    model: str = typer.Option(..., help="A catalog model name or a path to a config.json (or its folder)."),
    gpu: list[str] = typer.Option(..., help="GPU type (catalog id or GFD product label); repeat it, or 'all'."),
    seq_len: int = typer.Option(..., min=1, help="Sequence length in tokens."),
    gpus_count: int | None = typer.Option(None, "--gpus", min=1, help="Total GPUs (pinned)."),
    nodes: int | None = typer.Option(None, min=1, help="Nodes (pinned); without it, up to --max-nodes."),
    gpus_per_node: int = typer.Option(8, min=1, help="GPUs per node."),
    max_nodes: int = typer.Option(4, min=1, help="Most nodes the planner may use when --nodes is not given."),
    global_batch: int = typer.Option(32, min=1, help="Sequences per optimizer step."),
    micro_batch: int | None = typer.Option(None, min=1, help="Sequences per GPU per micro-step (pinned)."),
    method: Method | None = typer.Option(None, case_sensitive=False, help="LoRA, QLoRA or Full (pinned)."),
    lora_rank: int = typer.Option(16, min=1, help="LoRA rank."),
    lora_target: list[str] = typer.Option([], help="LoRA target modules; repeat it (default: every linear layer)."),
    zero_stage: int | None = typer.Option(None, min=0, max=3, help="DeepSpeed ZeRO stage (pinned)."),
    offload: Offload | None = typer.Option(None, case_sensitive=False, help="None, Optimizer or All (pinned)."),
    gradient_checkpointing: str | None = typer.Option(None, help="on or off (pinned)."),
    attention: Attention | None = typer.Option(None, case_sensitive=False,
                                               help="Eager, SDPA or FlashAttention2 (pinned)."),
    precision: Precision | None = typer.Option(None, case_sensitive=False,
                                               help="BF16, FP16, FP32 or PureBF16 (pinned)."),
    lora_adapter_precision: AdapterPrecision = typer.Option(AdapterPrecision.MODEL, case_sensitive=False,
                                                            help="LoRA adapters in the model's dtype (Model) or FP32."),
    optimizer: Optimizer = typer.Option(Optimizer.ADAMW, help="adamw or sgd."),
    objective: Objective = typer.Option(Objective.CHEAPEST, case_sensitive=False, help="What to optimise."),
    prices: Path | None = typer.Option(None, exists=True, help="YAML map of GPU id to USD per GPU-hour."),
    host_memory_gib: int | None = typer.Option(None, min=1, help="Allocatable host memory per node, GiB."),
    chart: Path | None = typer.Option(None, help="Write an SVG chart of the memory breakdown here."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Predict per-GPU memory and choose a training configuration for each GPU type."""
    try:
        arch = architecture.load(model)
        if lora_target and method is not Method.FULL and \
                (unknown := [t for t in lora_target if t not in arch.lora_modules(tuple(lora_target))]):
            raise ValueError(f"--lora-target {', '.join(unknown)} match no linear module of {arch.name} (its modules: "
                             f"{', '.join(arch.lora_modules(ALL_LINEAR))})")
        types = _gpu_types(gpu)
        request = search.Request(
            seq_len=seq_len, global_batch=global_batch, micro_batch=micro_batch, method=method,
            lora=Lora(rank=lora_rank, target_modules=tuple(lora_target) or ALL_LINEAR,
                      adapters_fp32=lora_adapter_precision is AdapterPrecision.FP32),
            zero_stage=ZeroStage(zero_stage) if zero_stage is not None else None, offload=offload,
            gradient_checkpointing=_on_off(gradient_checkpointing, "--gradient-checkpointing"),
            attention=attention, precision=precision, optimizer=optimizer, num_gpus=gpus_count, num_nodes=nodes,
            objective=objective,
        )
        price_table = yaml.safe_load(prices.read_text()) if prices else {}
    except (LookupError, ValueError, OSError, yaml.YAMLError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    pools = [search.GpuPool(gpu=t, gpus_per_node=gpus_per_node, nodes=nodes or max_nodes,
                            host_memory_bytes=host_memory_gib * 1024**3 if host_memory_gib else None,
                            usd_per_hour=price_table.get(t.id)) for t in types]
    try:
        result = search.plan(arch, request, pools)
    except ValueError as error:  # pins only a configuration contradicts (QLoRA on ZeRO-3)
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    capacities = {t.id: t.memory_bytes for t in types}
    if as_json:
        print(json.dumps(report.to_json(result, request, capacities), indent=2))
    else:
        report.print_plan(console, result, capacities)
    if chart is not None:
        chart.write_text(report.svg_chart(result, capacities))
    if result.chosen is None:
        raise typer.Exit(1)


@app.command("run-operator")
def run_operator(
    namespace: list[str] = typer.Option([], help="Watch only these namespaces (repeat it); default: all."),
    liveness: str | None = typer.Option(None, help="Serve liveness/readiness here, e.g. http://0.0.0.0:8080/healthz."),
    metrics_port: int | None = typer.Option(None, help="Serve Prometheus metrics on this port (all interfaces)."),
    leader_election_namespace: str | None = typer.Option(
        None, help="Elect a leader among replicas on a Lease in this namespace; only the leader reconciles."),
    lease_name: str = typer.Option("kubetune-operator", help="Name of the leader election Lease."),
    log_reconcile_timings: bool = typer.Option(
        False, help="Log every reconcile's wall time and whether it changed the status (benchmarks/scale.py)."),
) -> None:
    """Run the operator against the cluster of the current kubeconfig (or in-cluster). The chart's values
    arrive as KUBETUNE_RECONCILE_SECONDS, KUBETUNE_GPU_PRICES (JSON), KUBETUNE_TRAINER_IMAGE and
    KUBETUNE_AUTOSCALED_GPU_POOLS (JSON)."""
    from kubetune.catalog.cluster_gpus import check_pools
    from kubetune.config import ConfigError, load
    from kubetune.controller import runtime

    try:
        config = load(os.environ, namespaces=tuple(namespace), liveness_endpoint=liveness, metrics_port=metrics_port,
                      leader_election_namespace=leader_election_namespace, lease_name=lease_name)
        check_pools(config.autoscaled_pools)
    except (ConfigError, LookupError, ValueError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    if log_reconcile_timings:
        logging.getLogger("kubetune.reconciles").setLevel(logging.DEBUG)
    if not runtime.run(config):
        raise typer.Exit(1)


@app.command("dashboards")
def dashboards_command(write: bool = typer.Option(False, "--write", help="Write the chart's dashboards/.")) -> None:
    """Print (or write into the chart) the Grafana dashboards, generated from code."""
    from kubetune.observability import dashboards

    if write:
        for path in dashboards.write():
            console.print(f"wrote {path}")
    else:
        print(json.dumps(dashboards.all_dashboards(), indent=2))


@app.command("chart-readme")
def chart_readme_command(write: bool = typer.Option(False, "--write", help="Write charts/kubetune/README.md.")) -> None:
    """Print (or write) the chart's README, generated from its values.yaml comments."""
    from kubetune import chart_readme

    if write:
        console.print(f"wrote {chart_readme.write()}")
    else:
        print(chart_readme.render(), end="")


@app.command("crd")
def crd_command(write: bool = typer.Option(False, "--write", help="Write crds/ and the chart's template.")) -> None:
    """Print (or write) the FineTuneJob CRD, generated from the API models."""
    if write:
        for path, text in crd.outputs().items():
            Path(path).write_text(text)
            console.print(f"wrote {path}")
    else:
        print(crd.render(), end="")


def _state_root() -> Path:
    default = Path.home() / ".local" / "state" / "kubetune" / "clusters"
    return Path(os.environ.get("KUBETUNE_STATE", default))


NameOption = typer.Option("kubetune-dev", "--name", help="Cluster name; its state lives under $KUBETUNE_STATE.")


@dev_cluster.command("up")
def dev_cluster_up(
    name: str = NameOption,
    profile: str = typer.Option("default", help="A built-in profile name or a profile .yaml path."),
    kueue: bool = typer.Option(False, "--kueue", help="Start Kueue beside it (built by hack/build-bins.sh)."),
) -> None:
    """Start (or restart) the local cluster and register the profile's GPU nodes."""
    cluster = LocalCluster(name, _state_root() / name)
    try:
        chosen = profiles.load(profile)
        console.print(f"starting cluster '{name}' with profile '{chosen.name}' ...")
        cluster.up(chosen, kueue=kueue)
    except (ClusterError, FileNotFoundError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error
    _print_nodes(cluster)
    console.print(f"\nexport KUBECONFIG={cluster.kubeconfig}")


@dev_cluster.command("down")
def dev_cluster_down(name: str = NameOption) -> None:
    """Stop the local cluster and every process it started."""
    LocalCluster(name, _state_root() / name).down()
    console.print(f"cluster '{name}' stopped")


@dev_cluster.command("seed")
def dev_cluster_seed(
    name: str = NameOption,
    namespace: str = typer.Option("default", help="Namespace of the claims."),
    data_claim: str = typer.Option("demo-data", help="Claim that gets the dataset and tokenizer."),
    output_claim: str = typer.Option("demo-output", help="Claim for the job's checkpoints and adapter."),
) -> None:
    """Create the tiny example's claims on the real node and put its dataset and tokenizer on the data claim."""
    import tempfile

    from kubetune.devcluster import seed

    cluster = LocalCluster(name, _state_root() / name)
    if not cluster.is_running():
        console.print(f"[red]error:[/red] cluster '{name}' is not running: kubetune dev-cluster up")
        raise typer.Exit(1)
    claims = [seed.claim(data_claim, namespace), seed.claim(output_claim, namespace)]
    cluster.kubectl_ok("apply", "-f", "-", stdin=yaml.safe_dump_all(claims))
    with tempfile.TemporaryDirectory() as folder:
        seed.put_on_claim(cluster.kubectl, namespace, data_claim, seed.write_world(Path(folder)),
                          cluster.node.state().trainer_image)
    console.print(f"claim {data_claim}: {seed.DATASET_FILE} and {seed.TOKENIZER_FOLDER}/; claim {output_claim}: empty")


@dev_cluster.command("trainer-image")
def dev_cluster_trainer_image(name: str = NameOption) -> None:
    """Print the trainer image the real node's runtime has (what KUBETUNE_TRAINER_IMAGE should name)."""
    from kubetune.devcluster.node import NodeError

    try:
        print(LocalCluster(name, _state_root() / name).node.state().trainer_image)
    except NodeError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error


@dev_cluster.command("nodes")
def dev_cluster_nodes(name: str = NameOption) -> None:
    """Show the cluster's nodes with their GPUs, as GPU Feature Discovery labelled them."""
    cluster = LocalCluster(name, _state_root() / name)
    if not cluster.is_running():
        console.print(f"[red]error:[/red] cluster '{name}' is not running: kubetune dev-cluster up")
        raise typer.Exit(1)
    _print_nodes(cluster)


def _print_nodes(cluster: LocalCluster) -> None:
    nodes = json.loads(cluster.kubectl_ok("get", "nodes", "-o", "json"))["items"]
    ready = cluster.ready_nodes()
    table = Table(title=f"nodes of '{cluster.name}'")
    for column in ("node", "ready", "instance type", "gpu.product", "GPUs", "gpu.memory (MiB)", "family", "cpu"):
        table.add_column(column)
    for node in nodes:
        labels = node["metadata"]["labels"]
        table.add_row(
            node["metadata"]["name"],
            "yes" if node["metadata"]["name"] in ready else "no",
            labels.get("node.kubernetes.io/instance-type", ""),
            labels.get("nvidia.com/gpu.product", "-"),
            node["status"]["allocatable"].get("nvidia.com/gpu", "0"),
            labels.get("nvidia.com/gpu.memory", "-"),
            labels.get("nvidia.com/gpu.family", "-"),
            node["status"]["allocatable"]["cpu"],
        )
    console.print(table)
