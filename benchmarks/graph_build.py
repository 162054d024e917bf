"""Benchmark: Parquet events -> saved graph snapshot, graphrec vs a pandas + Python-dict reference.

Usage: python benchmarks/graph_build.py [--sizes 1000000 10000000] [--workdir benchmarks/work]

For each size, a generated shop is written and validated once (not timed), then each implementation runs in its
own fresh process, timed from reading the validated Parquet to the snapshot on disk; the process reports its peak
resident memory (VmHWM). The reference builds the same edges (per behaviour and target: count, last
timestamp, decayed weight; reverse edges; catalog nodes and containment edges) the way PyG's `load_csv` example
does: pandas frames, `{id: index}` dicts and list comprehensions, then `torch.save`. Validation throughput is
reported on its own row. Results: benchmarks/results/graph_build.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # graphrec from this checkout, as the other benchmarks import it
from common import machine, peak_rss_gib, write_results  # noqa: E402


def child_graphrec(events: Path, items: Path, content: Path, out: Path, cutoff: str) -> dict:
    import polars as pl

    from graphrec.graph.snapshot import build_snapshot, save_snapshot

    start = time.perf_counter()
    snapshot = build_snapshot(pl.scan_parquet(events), cutoff, pl.read_parquet(items), pl.read_parquet(content))
    save_snapshot(snapshot, out)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "num_edges": snapshot.manifest["num_edges"]}


def child_reference(events: Path, items: Path, content: Path, out: Path, cutoff: str) -> dict:
    import math

    import numpy as np
    import pandas as pd
    import torch
    from torch_geometric.data import HeteroData

    start = time.perf_counter()
    cut = pd.Timestamp(cutoff)
    df = pd.read_parquet(events)
    df = df[df["timestamp"] < cut]
    catalog = pd.read_parquet(items)
    modules = pd.read_parquet(content)
    df["event_type"] = df["event_type"].astype(str)
    user_mapping = {uid: i for i, uid in enumerate(sorted(df["user_id"].unique()))}
    item_ids = set(df["item_id"].dropna().astype("int64").unique()) | set(catalog["item_id"])
    item_ids |= {i for lst in modules["item_ids"] for i in lst}
    item_mapping = {iid: i for i, iid in enumerate(sorted(item_ids))}
    content_ids = set(df["content_id"].dropna().unique()) | set(modules["content_id"])
    content_mapping = {cid: i for i, cid in enumerate(sorted(content_ids))}
    data = HeteroData()
    data["user"].num_nodes = len(user_mapping)
    data["item"].num_nodes = len(item_mapping)
    data["content"].num_nodes = len(content_mapping)
    half_life_s = 14 * 86_400
    num_edges = {}
    for target, column, mapping in (("item", "item_id", item_mapping), ("content", "content_id", content_mapping)):
        part = df[df[column].notna()]
        for event_type, group in part.groupby("event_type"):
            src = [user_mapping[u] for u in group["user_id"]]
            dst = [mapping[t] for t in group[column]]
            age = (cut - group["timestamp"]).dt.total_seconds().to_numpy()
            frame = pd.DataFrame(
                {
                    "src": src,
                    "dst": dst,
                    "ts": group["timestamp"].to_numpy(),
                    "w": np.exp(-math.log(2) * age / half_life_s),
                }
            )
            agg = frame.groupby(["src", "dst"], sort=True).agg(count=("w", "size"), last=("ts", "max"), w=("w", "sum"))
            agg = agg.reset_index()
            edge_index = torch.tensor(np.stack([agg["src"].to_numpy(), agg["dst"].to_numpy()]))
            store = data["user", event_type, target]
            store.edge_index = edge_index
            store.count = torch.tensor(agg["count"].to_numpy())
            store.last_timestamp = torch.tensor(agg["last"].astype("int64").to_numpy() // 10**9)
            store.weight = torch.tensor(agg["w"].to_numpy(), dtype=torch.float32)
            reverse = data[target, f"rev_{event_type}", "user"]
            reverse.edge_index = edge_index.flip(0)
            num_edges[f"user__{event_type}__{target}"] = edge_index.shape[1]
    for column, relation in (("category", "in_category"), ("brand", "of_brand")):
        mapping = {v: i for i, v in enumerate(sorted(catalog[column].dropna().unique()))}
        data[column].num_nodes = len(mapping)
        src = [item_mapping[i] for i in catalog["item_id"]]
        dst = [mapping[v] for v in catalog[column]]
        data["item", relation, column].edge_index = torch.tensor([src, dst])
        data[column, f"rev_{relation}", "item"].edge_index = torch.tensor([dst, src])
    pairs = [
        (content_mapping[c], item_mapping[i])
        for c, lst in zip(modules["content_id"], modules["item_ids"], strict=True)
        for i in lst
    ]
    data["content", "features", "item"].edge_index = torch.tensor(pairs).t()
    data["item", "rev_features", "content"].edge_index = torch.tensor(pairs).t().flip(0)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(data.to_dict(), out / "graph.pt")
    pd.DataFrame({"user_id": list(user_mapping), "index": list(user_mapping.values())}).to_parquet(out / "user.parquet")
    pd.DataFrame({"item_id": list(item_mapping), "index": list(item_mapping.values())}).to_parquet(out / "item.parquet")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "num_edges": num_edges}


def child_validate(raw_events: Path, out: Path) -> dict:
    from graphrec.data.validation import validate_events

    start = time.perf_counter()
    result = validate_events(raw_events)
    result.frame.write_parquet(out)
    return {"seconds": time.perf_counter() - start, "report": result.report.summary()}


def run_child(kind: str, *args: str) -> dict:
    command = [sys.executable, __file__, "--child", kind, *args]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def prepare(size: int, workdir: Path) -> tuple[Path, str, int]:
    import polars as pl

    from graphrec.data.config import ShopConfig
    from graphrec.data.shop import generate_shop, write_shop

    shop_dir = workdir / f"shop-{size}"
    if not (shop_dir / "manifest.json").exists():
        print(f"generating {size:,} events ...", flush=True)
        write_shop(generate_shop(ShopConfig.scaled_to(size)), shop_dir)
    validated = shop_dir / "events.validated.parquet"
    validation = run_child("validate", str(shop_dir / "events.parquet"), str(validated))
    from graphrec.graph.snapshot import default_cutoff

    rows = pl.scan_parquet(validated).select(pl.len()).collect().item()
    return shop_dir, default_cutoff(pl.scan_parquet(validated)).isoformat(), rows, validation


def main() -> None:
    from training.signals import stop_on_sigterm

    stop_on_sigterm()  # a scheduler's SIGTERM stops the run within seconds, nothing half-written
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--workdir", type=Path, default=HERE / "work")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        func = {"graphrec": child_graphrec, "reference": child_reference, "validate": child_validate}[kind]
        result = func(*[Path(r) for r in rest[:-1]], rest[-1]) if kind != "validate" else func(*map(Path, rest))
        result["peak_rss_gib"] = peak_rss_gib()
        print(json.dumps(result))
        return

    rows = []
    for size in args.sizes:
        shop_dir, cutoff, events, validation = prepare(size, args.workdir)
        paths = [
            str(shop_dir / "events.validated.parquet"),
            str(shop_dir / "items.parquet"),
            str(shop_dir / "content.parquet"),
        ]
        print(f"[{size:,}] graphrec ...", flush=True)
        ours = run_child("graphrec", *paths, str(args.workdir / f"snap-{size}"), cutoff)
        print(f"[{size:,}] graphrec {ours['seconds']:.2f}s; reference ...", flush=True)
        ref = run_child("reference", *paths, str(args.workdir / f"ref-{size}"), cutoff)
        print(f"[{size:,}] reference {ref['seconds']:.2f}s", flush=True)
        user_edges_ours = {k: v for k, v in ours["num_edges"].items() if k.startswith("user__")}
        rows.append(
            {
                "target_events": size,
                "events": events,
                "graphrec": {
                    "seconds": round(ours["seconds"], 3),
                    "events_per_s": round(events / ours["seconds"]),
                    "peak_rss_gib": round(ours["peak_rss_gib"], 3),
                },
                "reference": {
                    "seconds": round(ref["seconds"], 3),
                    "events_per_s": round(events / ref["seconds"]),
                    "peak_rss_gib": round(ref["peak_rss_gib"], 3),
                },
                "speedup": round(ref["seconds"] / ours["seconds"], 2),
                "same_edges": user_edges_ours == ref["num_edges"],
                "validation": {
                    "seconds": round(validation["seconds"], 3),
                    "rows_per_s": round(events / validation["seconds"]),
                    "peak_rss_gib": round(validation["peak_rss_gib"], 3),
                },
            }
        )
    report(rows, args)


def report(rows: list[dict], args) -> None:
    command = "python benchmarks/graph_build.py --sizes " + " ".join(str(s) for s in args.sizes)
    info = machine()
    payload = {
        "benchmark": "graph_build",
        "command": command,
        "machine": info,
        "data": "generated shop (graphrec.data.config.ShopConfig.scaled_to(size), seed 7), validated events",
        "goal": {"events_per_s_at_10M": 2_000_000, "peak_rss_gib": 3.0, "speedup": 10},
        "results": rows,
        "date": time.strftime("%Y-%m-%d"),
    }
    lines = [
        "# Graph build: Parquet events -> saved snapshot",
        "",
        f"Command: `{command}`  ",
        f"Data: {payload['data']}; snapshot cutoff one second after the last event (every event used).  ",
        f"Machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['memory_gib']} GiB, Python {info['python']}, "
        f"polars {info['polars']}, torch {info['torch']}.  ",
        f"Date: {payload['date']}",
        "",
        "Each implementation runs in a fresh process, timed from reading the validated Parquet to the snapshot on "
        "disk (interpreter start and imports excluded); peak memory is the process's high-water RSS (VmHWM). "
        "The reference "
        "is pandas + `{id: index}` dicts + list comprehensions + `torch.save`, as in PyG's `load_csv` example, "
        "building the same edges and attributes.",
        "",
        "| events | graphrec s | graphrec events/s | graphrec peak GiB | reference s | reference events/s "
        "| reference peak GiB | speedup | same edge counts |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in rows:
        g, ref = r["graphrec"], r["reference"]
        lines.append(
            f"| {r['events']:,} | {g['seconds']:.2f} | {g['events_per_s']:,} | {g['peak_rss_gib']:.2f} | "
            f"{ref['seconds']:.2f} | {ref['events_per_s']:,} | {ref['peak_rss_gib']:.2f} | "
            f"{r['speedup']:.1f}x | {'yes' if r['same_edges'] else 'NO'} |"
        )
    lines += [
        "",
        "Validation of the raw generated events (typing, checks, dedup, quarantine; separate step):",
        "",
        "| events | seconds | rows/s | peak GiB |",
        "|---:|---:|---:|---:|",
    ]
    for r in rows:
        v = r["validation"]
        lines.append(f"| {r['events']:,} | {v['seconds']:.2f} | {v['rows_per_s']:,} | {v['peak_rss_gib']:.2f} |")
    big = max(rows, key=lambda r: r["events"])
    lines += [
        "",
        "Goals at the largest size: "
        f"{big['graphrec']['events_per_s']:,} events/s (goal 2,000,000), "
        f"peak {big['graphrec']['peak_rss_gib']:.2f} GiB (goal < 3), "
        f"{big['speedup']:.1f}x the reference (goal 10x).",
        "",
    ]
    write_results(RESULTS, "graph_build", payload, lines, workdir=args.workdir)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
