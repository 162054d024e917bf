"""Benchmark: graphrec embeddings vs baselines and published numbers, one command per dataset.

Usage (each dataset runs its recipe in RECIPES; flags override it):
    python benchmarks/embeddings.py --dataset taobao-mb     # MuLe protocol, HR@10 / NDCG@10 on held-out buys
    python benchmarks/embeddings.py --dataset gowalla       # LightGCN protocol, Recall@20 / NDCG@20
    python benchmarks/embeddings.py --dataset ecomm         # temporal split on its dates
    python benchmarks/embeddings.py --dataset generated     # the generated shop, temporal split
    python benchmarks/embeddings.py --dataset taobao-mb-noview   # taobao-mb without its views (carts only aside)
    python benchmarks/embeddings.py --dataset generated-sparse   # many light users, wishlist-heavy

Every dataset also runs the strong training-free baselines (tuned item-kNN, EASE^R, GF-CF), their settings chosen
on validation (or the training holdout), never on the test pairs. The section is rewritten after every method
(marked partial until the last), so a killed run keeps what finished.

Fixed-split datasets (taobao-mb, gowalla) have no validation window: trained methods early-stop on one
training target pair per user held out from training, then refit on all of it; with --no-holdout they train
exactly --epochs on all of it instead (an epoch count read off an earlier holdout run's curve, which halves the
time). Temporal datasets early-stop on the validation window and refit on the test snapshot.
Each run replaces its dataset's section in benchmarks/results/embeddings.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
from common import peak_rss_gib, portable, write_results  # noqa: E402

SHARED = Path(os.environ.get("GRAPHREC_SHARED_DATA", HERE.parent.parent / "shared" / "data"))

PUBLISHED = {
    "taobao-mb": {
        "metrics": ["hr@10", "ndcg@10"],
        "rows": {
            "LightGCN": [0.0411, 0.0240],
            "CRGCN": [0.0855, 0.0439],
            "MB-CGCN": [0.1233, 0.0677],
            "MB-HGCN": [0.1299, 0.0690],
            "MuLe": [0.1918, 0.1103],
            "CascadingRank": [0.3324, 0.1626],
        },
        "source": "MuLe README (CIKM 2024) and CascadingRank README, via ../shared/data/README.md",
    },
    "gowalla": {
        "metrics": ["recall@20", "ndcg@20"],
        "rows": {"LightGCN": [0.1830, 0.1554], "NGCF": [0.1570, 0.1327]},
        "source": "LightGCN (SIGIR 2020), Table 3",
    },
}


# Each dataset's settings when the command names no others: the recorded run of its default section.
RECIPES = {
    "taobao-mb": {"epochs": 30, "eval_every": 1, "patience": 3, "layers": 3},
    # The same protocol without the view behaviour: purchases and a few carts, the sparse shape on which the
    # default recipe fell behind item-kNN on shops it was not tuned on.
    "taobao-mb-noview": {"epochs": 30, "eval_every": 1, "patience": 3, "layers": 3},
    # One behaviour, so no history term to lean on: a sampled softmax on 256-d plain dot products with a strong L2
    # from the spectral start (README, Embeddings); bfloat16 logits; weights averaged (EMA, decay 0.99). It trains a
    # fixed 8 epochs on all training data, read off the holdout curve of section gowalla/ema-holdout: flat from epoch
    # 5 (0.1043-0.1053), epoch 8 within 0.0002 of its best (epoch 10) for 20 % less time; a holdout run plus a refit
    # at 256 dimensions takes 41 minutes on 2 cores. Baselines that need training (MF, LightGCN) would not fit
    # beside it.
    "gowalla": {
        "epochs": 8,
        "holdout": False,
        "eval_every": 1,
        "loss": "softmax",
        "logits_dtype": "bfloat16",
        "ema_decay": 0.99,
        "init": "spectral",
        "lr": 0.01,
        "l2": 3e-2,
        "dim": 256,
        "batch_size": 4096,
        "methods": ["popularity", "item_knn", "item_knn_tuned", "ease", "gf_cf", "graphrec"],
        "no_ablations": True,
    },
    "ecomm": {"layers": 3},
    "generated": {"layers": 3},
    "generated-sparse": {"layers": 3},
}


def _shops():
    from graphrec.data.config import ShopConfig

    return {
        "generated": ShopConfig(target_events=200_000, n_users=5_000, n_items=8_000, n_categories=40, n_brands=300),
        # A sparser, wishlist-heavy shop: the same events over about three times the active users (15.8k active
        # with 12.6 events each on average against 5k with 40; 1.4k with one or two), short sessions, clicks ending
        # on the wishlist about twice as often as in the cart, and carts that mostly end in a purchase.
        "generated-sparse": ShopConfig(
            target_events=200_000,
            n_users=60_000,
            n_items=8_000,
            n_categories=40,
            n_brands=300,
            new_user_share=0.6,
            activity_sigma=1.0,
            views_per_session=1.5,
            p_click=0.5,
            p_cart=0.12,
            p_wishlist=0.5,
            p_purchase=0.9,
        ),
    }


def fixed_split_tasks(name: str):
    import polars as pl

    from graphrec.data.adapters import TAOBAO_MB_TEST_TIME, read_gowalla, read_taobao_mb
    from graphrec.data.config import ValidationConfig
    from graphrec.data.schema import EVENTS
    from graphrec.data.validation import validate_table
    from graphrec.graph.snapshot import build_snapshot
    from graphrec.graph.split import evaluation_targets
    from graphrec.graph.tasks import task_from_snapshot

    root = SHARED / ("taobao-mb" if name.startswith("taobao-mb") else name)
    if not root.exists():
        sys.exit(f"dataset folder {root} not found; set GRAPHREC_SHARED_DATA")
    dataset = read_taobao_mb(root) if name.startswith("taobao-mb") else read_gowalla(root)
    events = validate_table(dataset.events, EVENTS, ValidationConfig(max_bad_fraction=0.0), name).frame
    if name == "taobao-mb-noview":
        events = events.filter(pl.col("event_type") != "view")
    snapshot = build_snapshot(events, TAOBAO_MB_TEST_TIME)
    targets = evaluation_targets(events, snapshot, TAOBAO_MB_TEST_TIME, TAOBAO_MB_TEST_TIME + timedelta(days=1))
    return task_from_snapshot(snapshot, targets), events.height


def main() -> None:
    from training.signals import stop_on_sigterm

    stop_on_sigterm()  # a scheduler's SIGTERM stops the run within seconds, nothing half-written
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset",
        required=True,
        choices=["taobao-mb", "taobao-mb-noview", "gowalla", "ecomm", "generated", "generated-sparse"],
    )
    parser.add_argument("--epochs", type=int, default=None, help="epochs (fixed-split) or maximum epochs (temporal)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--eval-every", type=int, default=2)
    parser.add_argument("--l2", type=float, default=1e-4)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument(
        "--val-max-users", type=int, default=10_000, help="see TrainConfig.val_max_users; 0: every validation user"
    )
    parser.add_argument("--loss", choices=["bpr", "softmax"], default="bpr")
    parser.add_argument("--logits-dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument(
        "--ema-decay", type=float, default=None, help="weight averaging (see TrainConfig.ema_decay); 0: none"
    )
    parser.add_argument(
        "--fanouts",
        type=int,
        nargs="+",
        default=None,
        help="train on these sampled neighbourhoods (default: TrainConfig's auto, by the graph's size)",
    )
    parser.add_argument("--normalize", action="store_true", help="cosine / temperature scores (see ModelConfig)")
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--no-history", action="store_true", help="no learned history term: pure dot-product model")
    parser.add_argument("--init", choices=["normal", "spectral"], default="normal", help="see ModelConfig.init")
    parser.add_argument(
        "--cooccurrence", action="store_true", help="the history term's item-item co-occurrence (ModelConfig)"
    )
    parser.add_argument("--history-negatives", type=float, default=0.5, help="see TrainConfig.history_negatives")
    parser.add_argument("--methods", nargs="+", default=None)
    parser.add_argument(
        "--tag", default=None, help="store the run as '<dataset>/<tag>' beside the dataset's default run"
    )
    parser.add_argument("--no-ablations", action="store_true")
    parser.add_argument(
        "--holdout",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fixed-split datasets: pick the epoch count on a per-user holdout, then refit (default); "
        "--no-holdout trains exactly --epochs",
    )
    parser.add_argument("--workdir", type=Path, default=HERE / "work" / "embeddings")
    dataset, _ = parser.parse_known_args()
    parser.set_defaults(**RECIPES[dataset.dataset])
    args = parser.parse_args()
    fixed_split = args.dataset in ("taobao-mb", "taobao-mb-noview", "gowalla")
    if not args.holdout and not fixed_split:
        parser.error("--no-holdout is for the fixed-split datasets; temporal ones early-stop on their validation days")

    import logging

    import polars as pl
    import torch

    from graphrec.embed.config import ModelConfig
    from graphrec.graph.tasks import holdout_task
    from training.config import METHODS, EvalConfig, TrainConfig
    from training.evaluate import compare_methods, evaluate_events, markdown_table

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import warnings

    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model = ModelConfig(
        dim=args.dim,
        num_layers=args.layers,
        normalize=args.normalize,
        temperature=args.temperature,
        history=not args.no_history,
        init=args.init,
        cooccurrence=args.cooccurrence,
    )
    eval_config = EvalConfig(ablations=not args.no_ablations, methods=list(METHODS))
    if args.methods:
        eval_config.methods = args.methods
    workdir = args.workdir / args.dataset
    settings = TrainConfig(
        batch_size=args.batch_size,
        lr=args.lr,
        eval_every=args.eval_every,
        patience=args.patience,
        l2=args.l2,
        loss=args.loss,
        logits_dtype=args.logits_dtype,
        fanouts=args.fanouts or "auto",
        ema_decay=args.ema_decay or None,
        history_negatives=args.history_negatives,
        val_max_users=args.val_max_users or None,
    )
    start = time.perf_counter()
    key = args.dataset + (f"/{args.tag}" if args.tag else "")
    section = {
        "dataset": args.dataset,
        "command": "python benchmarks/embeddings.py " + " ".join(sys.argv[1:]),
        "holdout": args.holdout,
        "model": asdict(model),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "polars": pl.__version__,
        },
        "date": time.strftime("%Y-%m-%d"),
    }

    def write(results: dict, partial: bool) -> None:
        section.update(
            results=results,
            partial=partial,
            wall_seconds=round(time.perf_counter() - start, 1),
            peak_rss_gib=round(peak_rss_gib(), 2),
        )
        path = RESULTS / "embeddings.json"
        payload = json.loads(path.read_text()) if path.exists() else {"benchmark": "embeddings", "datasets": {}}
        # The other sections stay as committed; this run's paths become relative (see common.write_results).
        payload["datasets"][key] = portable(section, args.workdir)
        write_results(RESULTS, "embeddings", payload, markdown_lines(payload, markdown_table), workdir=args.workdir)

    if fixed_split:
        train = replace(settings, epochs=args.epochs or 40)
        task, rows = fixed_split_tasks(args.dataset)
        eval_config.ks = [10, 20]
        val = holdout_task(task) if args.holdout else None
        stats = {"events": rows, "users_evaluated": int((task.truth.counts() > 0).sum()), **task.stats}
        section.update(stats=stats, train=asdict(train), protocol="(running)")
        results = compare_methods(
            task, val, workdir / "runs", model, train, eval_config, on_result=lambda r: write(r, partial=True)
        )
        protocol = (
            "fixed published split; held-out pairs stamped after the cutoff; every item scored, the "
            "user's training target pairs masked; "
            + (
                "trained methods early-stop on one training target pair per user held out (seed 0; its auxiliary "
                "edges kept), then refit on all training data for the best epoch count"
                if args.holdout
                else f"trained methods train exactly {train.epochs} epochs on all training data, no early stopping "
                "(the count read off a holdout run's curve, never off the test pairs)"
            )
        )
    else:
        train = replace(settings, epochs=args.epochs or 100)
        if args.dataset == "ecomm":
            source, fmt, split_days = SHARED / "ecomm", "ecomm", 2
            if not source.exists():
                sys.exit(f"dataset folder {source} not found; set GRAPHREC_SHARED_DATA")
        else:
            from graphrec.data.shop import generate_shop, write_shop

            source, fmt, split_days = workdir / "shop", "contract", 7
            if not (source / "manifest.json").exists():
                write_shop(generate_shop(_shops()[args.dataset]), source)
        from graphrec.graph.config import SplitConfig

        section.update(stats={}, train=asdict(train), protocol="(running)")
        report = evaluate_events(
            source,
            workdir,
            fmt,
            split=SplitConfig(val_days=split_days, test_days=split_days),
            model=model,
            train=train,
            eval_config=eval_config,
            on_result=lambda r: write(r, partial=True),
        )
        results = report["results"]
        stats = report["task_stats"]["test"]
        protocol = (
            f"temporal split: test = last {split_days} days, validation = the {split_days} days before; "
            "trained methods early-stop on validation NDCG@20, then refit on the test snapshot"
        )
    section.update(protocol=protocol, stats=stats, train=asdict(train), published=PUBLISHED.get(args.dataset))
    write(results, partial=False)


# The metric each dataset's published protocol reports first: graphrec is judged against the baselines on it.
TARGET_METRIC = {"taobao-mb": "hr@10", "taobao-mb-noview": "hr@10", "gowalla": "recall@20"}
BASELINES = ("popularity", "history", "item_knn", "item_knn_tuned", "ease", "gf_cf", "mf_bpr", "lightgcn")


def against_baselines(section: dict) -> str | None:
    """One line: graphrec's default recipe against the best baseline of the run on the dataset's target metric."""
    metric = TARGET_METRIC.get(section["dataset"], "ndcg@20")
    results = section["results"]
    ran = {n: results[n][metric] for n in BASELINES if metric in results.get(n, {})}
    if "graphrec" not in results or not ran:
        return None
    best = max(ran, key=ran.get)
    ours = results["graphrec"][metric]
    gap = ours - ran[best]
    word = "beats" if gap > 0 else "loses to"
    return (
        f"**graphrec {word} the best baseline on {metric}**: {ours:.4f} against {best} {ran[best]:.4f} "
        f"({gap:+.4f}, {gap / max(ran[best], 1e-12):+.1%})."
    )


def grid_edges(tuning: dict) -> list[str]:
    """The numeric settings whose chosen value is the smallest or largest tried: the optimum may lie beyond (0, the
    setting switched off, is a natural bound, not an edge)."""
    edges = []
    for key, value in tuning["settings"].items():
        tried = {t["settings"].get(key) for t in tuning["validation"]}
        numbers = [v for v in tried if isinstance(v, int | float) and not isinstance(v, bool)]
        if isinstance(value, int | float) and value != 0 and len(numbers) > 2 and value in (min(numbers), max(numbers)):
            edges.append(key)
    return edges


def markdown_lines(payload: dict, markdown_table) -> list[str]:
    lines = [
        "# Embeddings: graphrec vs baselines and published numbers",
        "",
        "Every method runs in the same process on the same split; `*_dot_only` rows rank by the pure embedding "
        "dot product (what the feature store carries), the others add the model's learned history term "
        "(sum over auxiliary behaviours of w_b * log(1 + count_b(user, item)), plus, for items the user touched, "
        "w_c * log10 of the item's smoothed conversion rate relative to the catalogue's; runs made before the "
        "conversion term existed have `conversion` absent from their model settings). Slices: cold users have at most "
        "5 training interactions; new items have none; `new items auc` is how a method orders the new items "
        "among themselves for the users who bought one (0.5 = chance), since they rarely reach a full-catalogue "
        "top 20.",
        "",
    ]
    for name, section in payload["datasets"].items():
        lines += [
            f"## {name}",
            "",
            f"Command: `{section['command']}`  ",
            *([f"Note: {section['note']}  "] if section.get("note") else []),
            f"Protocol: {section['protocol']}  ",
            f"Data: {json.dumps(section['stats'])}  ",
            f"Wall time {section['wall_seconds']:.0f} s for all methods, peak memory {section['peak_rss_gib']} GiB "
            f"({section['machine']['cpus']} CPUs, torch {section['machine']['torch']}), {section['date']}.  ",
            f"Model: dim {section['model']['dim']}, {section['model']['num_layers']} layers; training: "
            f"{section['train']['epochs']} epochs {'max' if section.get('holdout', True) else 'fixed'}, "
            f"batch {section['train']['batch_size']}, "
            f"lr {section['train']['lr']}, loss {section['train'].get('loss', 'bpr')}"
            + (", normalised embeddings" if section["model"].get("normalize") else "")
            + (
                f", co-occurrence term ({section['model']['cooccurrence_neighbours']} neighbours)"
                if section["model"].get("cooccurrence")
                else ""
            )
            + (f", L2 {section['train']['l2']}" if section["train"].get("l2", 1e-4) != 1e-4 else "")
            + (", bfloat16 logits" if section["train"].get("logits_dtype") == "bfloat16" else "")
            + (
                f", weights averaged (EMA decay {section['train']['ema_decay']})"
                if section["train"].get("ema_decay")
                else ""
            )
            + (
                f", sampled neighbourhoods {section['train']['fanouts']}"
                if isinstance(section["train"].get("fanouts"), list)
                else ""
            )
            + ".",
            "",
            markdown_table(section["results"], [10, 20]),
            "",
        ]
        if section.get("partial"):
            lines += ["**Partial**: the run stopped (or is still running) after the methods above.", ""]
        verdict = against_baselines(section)
        if verdict:
            lines += [verdict, ""]
        cost = section["results"].get("graphrec", {}).get("seconds_per_million_interactions")
        if cost is not None:
            lines += [
                f"graphrec's training (validation run and refit): {section['results']['graphrec']['seconds']:.0f} s, "
                f"{cost:,.0f} s per million training interactions.",
                "",
            ]
        tuned = {n: r["tuning"] for n, r in section["results"].items() if "tuning" in r}
        if tuned:
            lines += [
                "Strong baselines' settings, chosen on "
                + next(iter(tuned.values()))["on"]
                + ": "
                + "; ".join(
                    f"{n} {json.dumps(t['settings'])} (of {len(t['validation'])}, {t['validation_seconds']:.0f} s"
                    + "".join(f", {key} at the grid's edge" for key in grid_edges(t))
                    + ")"
                    for n, t in tuned.items()
                ),
                "",
            ]
        decision = section["results"].get("graphrec", {}).get("val", {}).get("history")
        if decision and "with_history" in decision:
            scale = decision.get("scale")
            chosen = "" if scale is None else f" at scale {scale:g} (0: the dot product alone, 1: as trained)"
            lines += [
                f"History term {'kept' if decision['kept'] else 'dropped'} by the run{chosen}: validation NDCG@20 at "
                f"the best epoch {decision['with_history']:.4f} with the trained term, {decision['dot_only']:.4f} "
                "with the dot product alone"
                + (
                    "; by scale " + ", ".join(f"{s}: {v:.4f}" for s, v in decision["by_scale"].items())
                    if decision.get("by_scale")
                    else ""
                )
                + ".",
                "",
            ]
        curve = section["results"].get("graphrec", {}).get("val", {}).get("val_curve")
        if curve:
            lines += [
                "graphrec's early-stopping score (validation NDCG@20) by epoch: "
                + ", ".join(f"{int(epoch) + 1}: {score:.4f}" for epoch, score in curve.items()),
                "",
            ]
        published = section.get("published")
        if published:
            metrics = published["metrics"]
            lines += [
                f"Published ({published['source']}):",
                "",
                "| method | " + " | ".join(metrics) + " |",
                "|---" * (len(metrics) + 1) + "|",
            ]
            lines += [
                f"| {m} | " + " | ".join(f"{v:.4f}" for v in values) + " |" for m, values in published["rows"].items()
            ]
            ours = section["results"].get("graphrec", {})
            dot = section["results"].get("graphrec_dot_only", {})
            lines += [
                "| **graphrec (this run)** | " + " | ".join(f"{ours.get(m, float('nan')):.4f}" for m in metrics) + " |",
                "| graphrec dot product only | "
                + " | ".join(f"{dot.get(m, float('nan')):.4f}" for m in metrics)
                + " |",
                "",
            ]
    return lines


if __name__ == "__main__":
    main()
