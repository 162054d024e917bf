"""Benchmark: point-in-time behaviour features (graphrec.rank.features) for every logged impression.

For each of `--sizes`, a generated shop (`ShopConfig.scaled_to(size)`) is written once in its own process, then a
fresh process reads its Parquet tables and computes `behaviour_features` for all impressions, timed from the
call to the returned frame (reading excluded); it reports wall and CPU seconds, rows/s and its peak resident
memory (VmHWM). On the `--auc-size` shop it also reports each feature's univariate AUC against `clicked`
(graphrec.data.homepage.binary_auc), with the slot's for reference.

Run: python benchmarks/rank_features.py [--sizes 100000 1000000] [--auc-size 1000000] [--workdir DIR]
Writes benchmarks/results/rank_features.{md,json}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE.parent))

from benchmarks.common import machine, peak_rss_gib, write_results  # noqa: E402


def child_generate(size: int, out: str) -> dict:
    """Generate and write the shop for `size` events."""
    from graphrec.data.config import ShopConfig
    from graphrec.data.shop import generate_shop, write_shop

    started = time.perf_counter()
    shop = generate_shop(ShopConfig.scaled_to(size))
    write_shop(shop, out)
    return {"seconds": time.perf_counter() - started, "events": shop.stats["events"]}


def child_features(shop_dir: str, with_auc: str) -> dict:
    """Features of every impression of the shop in `shop_dir`: time, memory and (optionally) univariate AUCs."""
    import numpy as np
    import polars as pl

    from graphrec.data.homepage import binary_auc
    from graphrec.rank.features import FEATURES, behaviour_features

    root = Path(shop_dir)
    events = pl.scan_parquet(root / "events.parquet")
    impressions = pl.read_parquet(root / "impressions.parquet")
    content, items = pl.read_parquet(root / "content.parquet"), pl.read_parquet(root / "items.parquet")
    read_gib = peak_rss_gib()
    wall, cpu = time.perf_counter(), time.process_time()
    features = behaviour_features(impressions, events, impressions.lazy(), content, items)
    result = {
        "events": events.select(pl.len()).collect().item(),
        "impressions": impressions.height,
        "seconds": time.perf_counter() - wall,
        "cpu_seconds": time.process_time() - cpu,
        "peak_rss_gib": peak_rss_gib(),
        "peak_rss_gib_after_reading": read_gib,
        "load_average": os.getloadavg()[0],
    }
    if with_auc == "1":
        clicked = impressions["clicked"].to_numpy()
        result["auc"] = {name: binary_auc(features[name].to_numpy(), clicked) for name in FEATURES}
        result["auc"]["slot (position; not a feature)"] = binary_auc(-impressions["slot"].to_numpy(), clicked)
        result["ctr"] = float(np.mean(clicked))
    return result


def run_child(kind: str, *args: str) -> dict:
    command = [sys.executable, __file__, "--child", kind, *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--auc-size", type=int, default=1_000_000, help="shop whose features' AUCs are reported")
    parser.add_argument("--workdir", type=Path, default=None, help="keeps the generated shops (default: temporary)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = child_generate(int(rest[0]), rest[1]) if kind == "generate" else child_features(*rest)
        result.setdefault("peak_rss_gib", peak_rss_gib())
        print(json.dumps(result))
        return
    from training.signals import stop_on_sigterm

    stop_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="graphrec-rank-features-") as scratch:
        workdir = args.workdir or Path(scratch)
        rows, auc = [], None
        for size in args.sizes:
            shop_dir = workdir / f"shop-{size}"
            if not (shop_dir / "manifest.json").exists():
                print(f"[{size:,}] generating ...", flush=True)
                made = run_child("generate", str(size), str(shop_dir))
                print(f"[{size:,}] generated in {made['seconds']:.1f} s, peak {made['peak_rss_gib']:.2f} GiB")
            print(f"[{size:,}] features ...", flush=True)
            result = run_child("features", str(shop_dir), "1" if size == args.auc_size else "0")
            auc = result.pop("auc", auc)
            ctr = result.pop("ctr", None)
            result |= {"size": size, "rows_per_s": result["impressions"] / result["seconds"]}
            if ctr is not None:
                result["ctr"] = ctr
            print(
                f"[{size:,}] {result['impressions']:,} rows in {result['seconds']:.1f} s "
                f"({result['rows_per_s']:,.0f} rows/s, {result['cpu_seconds']:.1f} CPU s), "
                f"peak {result['peak_rss_gib']:.2f} GiB",
                flush=True,
            )
            rows.append(result)
    report(args, rows, auc, args.workdir)


def report(args, rows: list[dict], auc: dict | None, workdir: Path | None) -> None:
    from graphrec.rank.features import FEATURES

    command = "python benchmarks/rank_features.py --sizes " + " ".join(map(str, args.sizes))
    command += f" --auc-size {args.auc_size}" + (f" --workdir {workdir}" if workdir else "")
    info = machine()
    payload = {
        "benchmark": "rank_features",
        "command": command,
        "machine": info,
        "data": "generated shop, ShopConfig.scaled_to(size) (seed 7, default homepage); rows = every impression",
        "features": list(FEATURES),
        "results": rows,
        "auc_size": args.auc_size,
        "univariate_auc": auc,
        "date": time.strftime("%Y-%m-%d"),
    }
    lines = [
        "# Point-in-time behaviour features for the homepage ranker",
        "",
        f"Command: `{command}`  ",
        f"Data: {payload['data']}.  ",
        f"Machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['memory_gib']} GiB, Python {info['python']}, "
        f"polars {info['polars']}.  ",
        f"Date: {payload['date']}",
        "",
        f"`behaviour_features` computes {len(FEATURES)} Float32 features for every logged impression from the "
        "events and impressions strictly before it. Each size runs in a fresh process, timed from the call to the "
        "returned frame (reading the Parquet tables excluded); peak memory is the process's high-water RSS "
        "(VmHWM), reading included. The machine is shared: the 1-minute load average at the end of each run is "
        "given, and CPU seconds (both cores together) are steadier than wall seconds there.",
        "",
        "| events | impressions (rows) | seconds | CPU seconds | rows/s | peak GiB | load average |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['events']:,} | {r['impressions']:,} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | "
            f"{r['rows_per_s']:,.0f} | {r['peak_rss_gib']:.2f} | {r['load_average']:.1f} |"
        )
    if len(rows) > 1:
        steps = [
            f"{small['impressions']:,} -> {large['impressions']:,} rows: CPU time "
            f"x{large['cpu_seconds'] / small['cpu_seconds']:.1f}, peak memory "
            f"x{large['peak_rss_gib'] / small['peak_rss_gib']:.1f}"
            for small, large in itertools.pairwise(rows)
        ]
        lines += ["", "Growth from each size to the next (10x the rows): " + "; ".join(steps) + "."]
    if auc:
        ordered = sorted(auc.items(), key=lambda kv: -abs(kv[1] - 0.5))
        lines += [
            "",
            f"## Univariate AUC against `clicked` ({args.auc_size:,}-event shop)",
            "",
            "Each feature alone as a score for the logged clicks (below 0.5: more of it, fewer clicks). The slot is "
            "not a feature (the ranker models position apart) and is given for reference; the features are not "
            "position-corrected, so a feature correlated with the slot the policy chose carries some of its AUC.",
            "",
            "| feature | AUC |",
            "|---|---:|",
        ]
        lines += [f"| {name} | {value:.4f} |" for name, value in ordered]
    write_results(RESULTS, "rank_features", payload, lines, workdir=workdir)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
