"""Benchmark: a training step with full-graph propagation vs with sampled neighbourhoods (`train.fanouts`).

Usage: python benchmarks/sampling.py [--sizes 1000000 10000000] [--fanouts 10 5 5] [--steps 10]

For each size, the generated shop of benchmarks/graph_build.py (same generator, same work folder) is turned into
a graph snapshot of all its events, and each mode runs in its own fresh process: build the default model (dim 64,
3 layers, BPR, batch 4096), take 2 warm-up steps, then time `--steps` optimiser steps (forward, backward, Adam)
on the first batches of epoch 0. The process reports seconds per step and its peak resident memory (VmHWM) during
the steps, next to the memory it held before the first step (snapshot, task, model, triples). Each mode runs twice:
with glibc's default allocator settings, which keep freed blocks of the previous step mapped (so the peak shows
what the process holds, not what the step needs), and with MALLOC_MMAP_THRESHOLD_ fixed at 128 KiB, which hands
every large tensor back to the OS when freed (so the peak is close to the step's live memory, at the price of page
faults on every allocation). Results: benchmarks/results/sampling.{md,json}.
Quality of sampled training is measured separately, by `benchmarks/embeddings.py --dataset generated --fanouts
...` (its `generated/sampled` section).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import current_rss_gib, machine, peak_rss_gib, reset_peak_rss, write_results  # noqa: E402


def child(snapshot_dir: str, fanouts: str, steps: str) -> dict:
    import torch

    from graphrec.embed.config import ModelConfig
    from graphrec.embed.model import MultiBehaviourGCN
    from graphrec.graph.snapshot import load_snapshot
    from graphrec.graph.tasks import task_from_snapshot
    from training.config import TrainConfig
    from training.data import BPRTriples, NegativeSampler
    from training.system import EmbeddingSystem

    torch.manual_seed(0)
    task = task_from_snapshot(load_snapshot(snapshot_dir))
    model = MultiBehaviourGCN(
        task.num_users, task.num_items, task.behaviours, task.target, ModelConfig(), task.feature_sizes()
    )
    config = TrainConfig(fanouts=json.loads(fanouts))
    system = EmbeddingSystem(model, config)
    system.attach(task, None)
    system.log = lambda *args, **kwargs: None  # no Trainer here
    optimizer = system.configure_optimizers()
    batches = BPRTriples(task, task.target, config, 0, NegativeSampler(task, task.target)).batches
    base, setup_peak = current_rss_gib(), peak_rss_gib()
    reset_peak_rss()  # from here VmHWM is the steps' own peak
    subgraph_sizes = []
    if system.sampler is not None:
        original = system.sampler.sample

        def counting(*args):
            subgraph = original(*args)
            edges = sum(len(u) for u, _ in subgraph.edges.values())
            subgraph_sizes.append((len(subgraph.users) + len(subgraph.items), edges))
            return subgraph

        system.sampler.sample = counting
    timings = []
    for index, batch in enumerate(batches[: int(steps) + 2]):
        start = time.perf_counter()
        loss = system.training_step(batch, index)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if index >= 2:
            timings.append(time.perf_counter() - start)
    edges = sum(len(task.edges[b][0]) for b in system.model.behaviours)
    result = {
        "seconds_per_step": sum(timings) / len(timings),
        "steps_per_epoch": len(batches),
        "rss_before_steps_gib": base,
        "setup_peak_rss_gib": setup_peak,
        "steps_peak_rss_gib": peak_rss_gib(),
        "graph_nodes": task.num_users + task.num_items,
        "graph_edges": edges,
    }
    if subgraph_sizes:
        result["subgraph_nodes"] = sum(n for n, _ in subgraph_sizes) / len(subgraph_sizes)
        result["subgraph_edges"] = sum(e for _, e in subgraph_sizes) / len(subgraph_sizes)
    return result


ALLOCATORS = {"glibc default": {}, "mmap threshold 128 KiB": {"MALLOC_MMAP_THRESHOLD_": "131072"}}


def run_child(*args: str, env: dict[str, str]) -> dict:
    command = [sys.executable, __file__, "--child", *args]
    proc = subprocess.run(command, capture_output=True, text=True, check=False, env={**os.environ, **env})
    if proc.returncode:
        raise SystemExit(f"child {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    from training.signals import stop_on_sigterm

    stop_on_sigterm()  # a scheduler's SIGTERM stops the run within seconds, nothing half-written
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--fanouts", type=int, nargs="+", default=[10, 5, 5])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--workdir", type=Path, default=HERE / "work")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = child(*args.child)
        print(json.dumps(result))
        return

    from graph_build import child_graphrec, prepare

    rows = []
    for size in args.sizes:
        shop_dir, cutoff, events, _ = prepare(size, args.workdir)
        snapshot_dir = args.workdir / f"snap-{size}"  # the same snapshot benchmarks/graph_build.py writes
        if not (snapshot_dir / "manifest.json").exists():
            print(f"[{size:,}] building the snapshot ...", flush=True)
            child_graphrec(
                shop_dir / "events.validated.parquet",
                shop_dir / "items.parquet",
                shop_dir / "content.parquet",
                snapshot_dir,
                cutoff,
            )
        for allocator, env in ALLOCATORS.items():
            row = {"target_events": size, "events": events, "allocator": allocator}
            for mode, fanouts in (("full", None), ("sampled", args.fanouts)):
                print(f"[{size:,}] {mode}, {allocator} ...", flush=True)
                row[mode] = run_child(str(snapshot_dir), json.dumps(fanouts), str(args.steps), env=env)
                print(f"[{size:,}] {mode}: {row[mode]['seconds_per_step']:.3f} s/step", flush=True)
            row["step_speedup"] = row["full"]["seconds_per_step"] / row["sampled"]["seconds_per_step"]
            row["steps_peak_ratio"] = row["sampled"]["steps_peak_rss_gib"] / row["full"]["steps_peak_rss_gib"]
            rows.append(row)
    payload = {
        "benchmark": "sampling",
        "command": "python benchmarks/sampling.py " + " ".join(sys.argv[1:]),
        "data": "generated shop (graphrec.data.shop, ShopConfig.scaled_to(size)), snapshot of all events",
        "settings": {"model": "dim 64, 3 layers, features", "train": "BPR, batch 4096", "fanouts": args.fanouts},
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
    }
    lines = [
        "# Training step: full-graph propagation vs sampled neighbourhoods",
        "",
        f"Command: `{payload['command']}`  ",
        f"Data: {payload['data']}  ",
        f"Settings: model {payload['settings']['model']}; {payload['settings']['train']}; fanouts {args.fanouts}  ",
        f"Machine: {payload['machine']['cpus']} CPUs ({payload['machine']['cpu_model']}), "
        f"torch {payload['machine']['torch']}, {payload['date']}",
        "",
        "Each mode in its own process; s/step averages the timed steps after 2 warm-up steps. Memory: resident "
        "after set-up (snapshot, task, model, the epoch's triples), the set-up's peak, and the peak during the "
        "steps alone (VmHWM, reset after set-up). Allocator: glibc's defaults keep the previous step's freed "
        "blocks mapped, so their peak is what the process holds; a fixed 128 KiB mmap threshold returns large "
        "tensors to the OS when freed, so its peak is near the step's live memory (but every step page-faults).",
        "",
        "| events | graph edges | allocator | mode | s/step | epoch (steps x s/step) | nodes / edges per step "
        "| after set-up GiB | set-up peak GiB | steps peak GiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for mode in ("full", "sampled"):
            r = row[mode]
            per_step = (
                f"{r['subgraph_nodes']:,.0f} / {r['subgraph_edges']:,.0f}"
                if "subgraph_nodes" in r
                else f"{r['graph_nodes']:,} / {r['graph_edges']:,}"
            )
            lines.append(
                f"| {row['events']:,} | {r['graph_edges']:,} | {row['allocator']} | {mode} | "
                f"{r['seconds_per_step']:.3f} | "
                f"{r['steps_per_epoch'] * r['seconds_per_step']:.0f} s | {per_step} | "
                f"{r['rss_before_steps_gib']:.2f} | {r['setup_peak_rss_gib']:.2f} | {r['steps_peak_rss_gib']:.2f} |"
            )
    lines += [
        "",
        "Sampled vs full, per size and allocator: "
        + "; ".join(
            f"{r['events']:,} events, {r['allocator']}: step {r['step_speedup']:.1f}x faster, "
            f"steps peak x{r['steps_peak_ratio']:.2f}"
            for r in rows
        ),
    ]
    write_results(RESULTS, "sampling", payload, lines, workdir=args.workdir)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
