"""How long a full plan takes: every GPU type in the catalog, up to 16 nodes each, default request.

    .venv/bin/python benchmarks/plan_speed.py [--repeat 20] [--smoke] [--out results/plan-speed.json]

Prints a table and, with --out, saves every run's time; the targets are a 405B plan in under 20 ms and an 8B plan
in under 50 ms (median; docs/benchmarks.md records the figures).
`--smoke` plans each model twice only, to check the script (CI), not the figures.
"""

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from kubetune.catalog import gpus
from kubetune.planner import architecture, search

MODELS = ("meta-llama/Llama-3.1-405B", "tiiuae/falcon-180B", "meta-llama/Llama-3.1-70B", "meta-llama/Llama-3.1-8B")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--smoke", action="store_true", help="two runs per model: checks the script, not the figures")
    parser.add_argument("--out", type=Path, help="where to save the raw times (JSON)")
    args = parser.parse_args()
    if args.smoke:
        args.repeat = 2
    pools = [search.GpuPool(gpu=gpu, gpus_per_node=8, nodes=16) for gpu in gpus.catalog()]
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}; "
          f"{len(pools)} GPU types x up to 16 nodes; seq_len {args.seq_len}; {args.repeat} runs each\n")
    print("| model | candidates | median ms | max ms | chosen |")
    print("|---|---:|---:|---:|---|")
    raw: dict[str, dict] = {}
    for name in MODELS:
        arch = architecture.load(name)
        request = search.Request(seq_len=args.seq_len)
        search.plan(arch, request, pools)  # first run fills the per-shape caches, as the operator's would
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            plan = search.plan(arch, request, pools)
            times.append((time.perf_counter() - start) * 1000)
        chosen = f"{plan.chosen.gpu} x{plan.chosen.settings.num_gpus}" if plan.chosen else "nothing fits"
        print(f"| {name} | {plan.candidates_evaluated} | {statistics.median(times):.1f} | {max(times):.1f} | {chosen} |")
        raw[name] = {"candidates": plan.candidates_evaluated, "chosen": chosen, "ms": [round(t, 3) for t in times]}
    if args.out:
        args.out.write_text(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
                                        "seq_len": args.seq_len, "date": time.strftime("%Y-%m-%d"),
                                        "models": raw}, indent=1) + "\n")


if __name__ == "__main__":
    main()
