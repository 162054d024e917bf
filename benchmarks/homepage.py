"""The generated homepage's shape and the room it leaves for personal rankers.

For the benchmark shop (`--events`, default 1M): CTR by slot, click rate, module popularity, the share of each
relevance part, the oracle AUC, and reference orders computed from the generator's own truth (oracle, best one-hop,
best non-personal, the logging policy, a random order): expected clicks per request from the click model, and
their AUC on the logged impressions. Also the generator's time and peak memory at each of `--sizes`.

Run: python benchmarks/homepage.py [--events 1000000] [--sizes 100000 1000000 10000000]
Writes benchmarks/results/homepage.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, peak_rss_gib, write_results

RESULTS = Path(__file__).resolve().parent / "results"
GOALS = {"non_personal_ratio_below": 0.80, "one_hop_ratio_below": 0.90}


def child_generate(size: int, out: str) -> None:
    """Generate and write the shop for `size` events in this (fresh) process; print its time and peak memory."""
    from graphrec.data.config import ShopConfig
    from graphrec.data.shop import generate_shop, write_shop

    started = time.perf_counter()
    shop = generate_shop(ShopConfig.scaled_to(size))
    seconds = time.perf_counter() - started
    if out:
        write_shop(shop, out)
    result = {"events": shop.stats["events"], "impressions": shop.stats["impressions"], "seconds": seconds}
    print(json.dumps(result | {"peak_rss_gib": peak_rss_gib()}))


def generate(size: int, out: Path | None) -> dict:
    print(f"generating {size:,} events ...", flush=True)
    command = [sys.executable, __file__, "--child", str(size), str(out or "")]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {result['seconds']:.1f} s, peak {result['peak_rss_gib']:.2f} GiB", flush=True)
    return result


def analyse(shop_dir: Path) -> dict:
    """Shape and reference orders of the shop written in `shop_dir`."""
    import polars as pl

    from graphrec.data.homepage import ClickModel, ReferenceScorer, binary_auc, top_orders

    model = ClickModel.load(shop_dir)
    impressions = pl.read_parquet(shop_dir / "impressions.parquet")
    truth = pl.read_parquet(shop_dir / "impressions_truth.parquet")
    logged = impressions.join(truth.drop("content_id"), on=["request_id", "slot"])
    clicked = logged["clicked"].to_numpy()
    n_requests = len(model.request_ids)
    requests = model.request_index(logged["request_id"].to_numpy())
    modules = model.module_index(logged["content_id"].to_numpy())
    slots = logged["slot"].to_numpy()

    by_slot = logged.group_by("slot").agg(pl.col("clicked").mean(), pl.col("click_prob").mean(), pl.len()).sort("slot")
    shown = logged.group_by("content_id").agg(pl.len().alias("impressions"), pl.col("clicked").sum().alias("clicks"))
    shown = shown.sort("impressions", descending=True)
    top = max(1, shown.height // 10)
    parts = [c for c in truth.columns if c.startswith("logit_")]
    logit_std = {c.removeprefix("logit_"): float(truth[c].std()) for c in parts}
    personal = truth["logit_taste"] + truth["logit_intent"] + truth["logit_price"]
    total = sum(truth[c] for c in parts)
    live = np.array(
        [model.active(np.array([r])).sum() for r in np.linspace(0, n_requests - 1, 50).astype(int)], dtype=float
    )

    print("fitting the reference orders ...", flush=True)
    scorer = ReferenceScorer.fit(model)
    max_slots = model.homepage.max_slots
    orders = np.full((n_requests, max_slots), -1)
    orders[requests, slots] = modules
    value = {"logging policy": model.expected_clicks(np.arange(n_requests), orders)}
    rng = np.random.default_rng(0)
    for kind in ("oracle", "one_hop", "non_personal", "random"):
        parts_value = []
        for lo in range(0, n_requests, 2_048):
            chunk = np.arange(lo, min(n_requests, lo + 2_048))
            if kind == "random":
                scores = np.where(model.active(chunk), rng.random((len(chunk), len(model.content_ids))), -np.inf)
            else:
                scores = scorer.scores(kind, chunk)
            parts_value.append(model.expected_clicks(chunk, top_orders(scores, max_slots)))
        value[kind] = np.concatenate(parts_value)
        print(f"  {kind}: {value[kind].mean():.4f} expected clicks per request", flush=True)
    examination = logged["examine_prob"].to_numpy()
    rows = []
    for kind in ("oracle", "one_hop", "non_personal", "logging policy", "random"):
        row = {"order": kind, "expected_clicks_per_request": float(value[kind].mean())}
        row["ratio_to_oracle"] = row["expected_clicks_per_request"] / float(value["oracle"].mean())
        if kind in ("oracle", "one_hop", "non_personal"):
            score = scorer.scores(kind, requests, modules)
            row["auc"] = binary_auc(score, clicked)
            row["auc_with_examination"] = binary_auc(examination / (1 + np.exp(-score)), clicked)
        elif kind == "logging policy":
            row["auc"] = binary_auc(-slots, clicked)  # the slot order itself
        rows.append(row)
    return {
        "events": json.loads((shop_dir / "manifest.json").read_text())["stats"]["events"],
        "requests": n_requests,
        "impressions": logged.height,
        "modules": len(model.content_ids),
        "live_modules_per_request": {"mean": float(live.mean()), "min": float(live.min()), "max": float(live.max())},
        "slots_by_device": model.homepage.slots_by_device,
        "impression_ctr": float(clicked.mean()),
        "clicks_per_request": float(clicked.sum() / n_requests),
        "expected_clicks_logged": float(logged["click_prob"].sum() / n_requests),
        "ctr_by_slot": [round(float(v), 5) for v in by_slot["clicked"]],
        "true_ctr_by_slot": [round(float(v), 5) for v in by_slot["click_prob"]],
        "top_decile_modules_impression_share": float(shown["impressions"].head(top).sum() / shown["impressions"].sum()),
        "top_decile_modules_click_share": float(
            shown.sort("clicks", descending=True)["clicks"].head(top).sum() / max(1, shown["clicks"].sum())
        ),
        "modules_never_clicked_share": float((shown["clicks"] == 0).mean()),
        "relevance_logit_std": logit_std,
        "personal_share_of_logit_variance": float(personal.var() / total.var()),
        "oracle_auc": binary_auc(logged["click_prob"].to_numpy(), clicked),
        "one_hop_affinity_weight": scorer.affinity_weight,
        "orders": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events of the benchmark shop")
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_generate(int(args.child[0]), args.child[1])
        return
    from training.signals import stop_on_sigterm

    stop_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="graphrec-homepage-") as work:
        shop_dir = Path(work) / "shop"
        bench = generate(args.events, shop_dir)
        sizes = []
        for size in args.sizes:
            sizes.append(bench | {"size": size} if size == args.events else generate(size, None) | {"size": size})
        analysis = analyse(shop_dir)
    report(args, bench, sizes, analysis)


def report(args, bench: dict, sizes: list[dict], analysis: dict) -> None:
    command = f"python benchmarks/homepage.py --events {args.events} --sizes " + " ".join(map(str, args.sizes))
    info = machine()
    orders = {row["order"]: row for row in analysis["orders"]}
    met = {
        "non_personal": orders["non_personal"]["ratio_to_oracle"] < GOALS["non_personal_ratio_below"],
        "one_hop": orders["one_hop"]["ratio_to_oracle"] < GOALS["one_hop_ratio_below"],
    }
    payload = {
        "benchmark": "homepage",
        "command": command,
        "machine": info,
        "data": f"generated shop, ShopConfig.scaled_to({args.events}) (seed 7, default homepage)",
        "goal": GOALS,
        "goal_met": met,
        "generation": sizes,
        "shop": analysis,
        "date": time.strftime("%Y-%m-%d"),
    }
    a = analysis
    ctr = a["ctr_by_slot"]
    lines = [
        "# The generated homepage: its shape and the room it leaves for personal rankers",
        "",
        f"Command: `{command}`  ",
        f"Data: {payload['data']}: {a['events']:,} events, {a['requests']:,} homepage requests, "
        f"{a['impressions']:,} impressions, {a['modules']:,} modules in the pool.  ",
        f"Machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['memory_gib']} GiB, Python {info['python']}.  ",
        f"Date: {payload['date']}",
        "",
        "## Shape",
        "",
        f"- Live modules per request (the candidates): mean {a['live_modules_per_request']['mean']:.0f} "
        f"(min {a['live_modules_per_request']['min']:.0f}, max {a['live_modules_per_request']['max']:.0f}); slots "
        f"per request by device: {a['slots_by_device']}.",
        f"- Click rate: {a['impression_ctr']:.2%} of impressions, {a['clicks_per_request']:.3f} clicks per request "
        f"(the click model expects {a['expected_clicks_logged']:.3f}).",
        "- CTR by slot (1, 2, 3, 5, 10, 20, 30, 40): "
        + ", ".join(f"{ctr[i]:.2%}" for i in (0, 1, 2, 4, 9, 19, 29, 39) if i < len(ctr))
        + ".",
        f"- Module popularity: the top 10 % of shown modules take {a['top_decile_modules_impression_share']:.1%} of "
        f"impressions and {a['top_decile_modules_click_share']:.1%} of clicks; "
        f"{a['modules_never_clicked_share']:.1%} of shown modules are never clicked.",
        "- Relevance logit parts, standard deviation over the logged impressions: "
        + ", ".join(f"{k} {v:.2f}" for k, v in a["relevance_logit_std"].items())
        + f"; the personal parts (taste, intent, price) carry {a['personal_share_of_logit_variance']:.0%} of the "
        "logit's variance.",
        f"- Oracle AUC (true click probability, slot included) on the logged impressions: {a['oracle_auc']:.4f}.",
        "",
        "## Reference orders (from the generator's truth)",
        "",
        "Each order fills every request's slots from its live modules; expected clicks come from the click model. "
        "AUC is on the logged impressions: of the order's relevance score, and of that score times the true "
        "examination probability of the logged slot (the logging policy's AUC is that of the slot alone).",
        "",
        "| order | expected clicks / request | ratio to oracle | AUC | AUC x examination |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in a["orders"]:
        auc = f"{row['auc']:.4f}" if "auc" in row else "-"
        auc_exam = f"{row['auc_with_examination']:.4f}" if "auc_with_examination" in row else "-"
        lines.append(
            f"| {row['order']} | {row['expected_clicks_per_request']:.4f} | {row['ratio_to_oracle']:.3f} | {auc} | "
            f"{auc_exam} |"
        )
    lines += [
        "",
        f"Goals: non-personal below {GOALS['non_personal_ratio_below']} of the oracle's expected clicks: "
        f"{orders['non_personal']['ratio_to_oracle']:.3f} ({'met' if met['non_personal'] else 'MISSED'}); "
        f"one-hop below {GOALS['one_hop_ratio_below']}: {orders['one_hop']['ratio_to_oracle']:.3f} "
        f"({'met' if met['one_hop'] else 'MISSED'}).",
        "",
        "The oracle knows each session's intent and each user's hidden taste, which no ranker observes directly "
        "(a landing request has no in-session events, and a cold user has no history): it is a ceiling, not a "
        "target.",
        "",
        "## Generation time and peak memory",
        "",
        "| events | impressions | seconds | peak GiB |",
        "|---:|---:|---:|---:|",
    ]
    for s in sizes:
        lines.append(f"| {s['events']:,} | {s['impressions']:,} | {s['seconds']:.1f} | {s['peak_rss_gib']:.2f} |")
    write_results(RESULTS, "homepage", payload, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
