"""The `kubetune` command line."""

import json
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from kubetune.devcluster import profile as profiles
from kubetune.devcluster.cluster import ClusterError, LocalCluster

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Plan and run distributed LLM fine-tuning on Kubernetes.")
dev_cluster = typer.Typer(no_args_is_help=True, help="A local control plane with simulated GPU nodes (kwok).")
app.add_typer(dev_cluster, name="dev-cluster")

# Piped output (CI logs, `| less`) would otherwise wrap the node table at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)


def _state_root() -> Path:
    default = Path.home() / ".local" / "state" / "kubetune" / "clusters"
    return Path(os.environ.get("KUBETUNE_STATE", default))


NameOption = typer.Option("kubetune-dev", "--name", help="Cluster name; its state lives under $KUBETUNE_STATE.")


@dev_cluster.command("up")
def dev_cluster_up(
    name: str = NameOption,
    profile: str = typer.Option("default", help="A built-in profile name or a profile .yaml path."),
) -> None:
    """Start (or restart) the local cluster and register the profile's GPU nodes."""
    cluster = LocalCluster(name, _state_root() / name)
    try:
        chosen = profiles.load(profile)
        console.print(f"starting cluster '{name}' with profile '{chosen.name}' ...")
        cluster.up(chosen)
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
