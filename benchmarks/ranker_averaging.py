"""Benchmark: the ranker's weight averaging (`ranker.train.average_epochs`) against the last step's weights.

For each generated shop (`--shops EVENTS:SEED ...`), the shop is generated and `graphrec run` builds its validated
tables and embedding history in `--workdir` (skipped where that run is there already); then the ranker rows are
built once and the evaluation fit (train days, early stopping on the validation days) is trained for each setting
and seed, and measured on the test days. Reported per fit: epochs run, the epoch early stopping kept, the
validation loss per epoch and its mean relative change between epochs (how noisy the early-stopping signal is),
test AUC / logloss / ECE and the fit's seconds; per setting, the mean and standard deviation over seeds.

Run: python benchmarks/ranker_averaging.py [--shops 1000000:7 600000:11] [--seeds 0 1 2] [--workdir DIR]
Writes benchmarks/results/ranker_averaging.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE.parent))

from benchmarks.common import machine, write_results  # noqa: E402

SETTINGS = (0.0, 0.25)


def prepare(events: int, seed: int, workdir: Path) -> Path:
    """The shop's `graphrec run` workdir (validated tables, embedding history under `store/`), made once."""
    root = workdir / f"shop-{events}-{seed}"
    if (root / "run" / "validated" / "impressions.parquet").exists() and (root / "store" / "embeddings").exists():
        return root
    graphrec = str(Path(sys.executable).with_name("graphrec"))
    root.mkdir(parents=True, exist_ok=True)
    shop, config = str(root / "shop"), str(HERE.parent / "conf" / "default.yaml")
    generate = [graphrec, "generate", "--out", shop, "--events", str(events), "--shop.seed", str(seed)]
    run = [graphrec, "run", "--config", config, "--input.format", "contract", "--input.path", shop]
    run += ["--workdir", str(root / "run"), "--export.store", str(root / "store")]
    commands = [generate, run]
    for command in commands:
        with open(root / "prepare.log", "a") as log:
            subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    return root


def measure(root: Path, seeds: list[int]) -> list[dict]:
    """Every (setting, seed) evaluation fit on the shop's rows."""
    from training.config import RankerStageConfig
    from training.rank_job import build_rows, evaluate_ranker, fit_split, split_rows

    config = RankerStageConfig()
    rows = build_rows(root / "run" / "validated", config, root / "store", None)
    parts = split_rows(rows, config.split)
    fits = []
    for average in SETTINGS:
        for seed in seeds:
            fit_config = replace(config, train=replace(config.train, seed=seed, average_epochs=average))
            started = time.perf_counter()
            model, summary = fit_split(rows, parts, fit_config, root / "fits" / f"{average}-{seed}")
            seconds = time.perf_counter() - started
            test = evaluate_ranker(model, rows, parts["test"], fit_config)["overall"]
            losses = np.asarray(summary["val_loss"])
            change = float(np.mean(np.abs(np.diff(losses)) / losses[:-1])) if len(losses) > 1 else 0.0
            fits.append(
                {
                    "average_epochs": average,
                    "seed": seed,
                    "epochs_run": summary["epochs_run"],
                    "best_epoch": summary.get("best_epoch"),
                    "val_loss": [round(float(v), 6) for v in losses],
                    "val_loss_change": round(change, 5),
                    "auc": round(test["auc"], 5),
                    "logloss": round(test["logloss"], 6),
                    "ece": round(test["ece"], 5),
                    "seconds": round(seconds, 1),
                }
            )
            print(json.dumps(fits[-1]), flush=True)
    return fits


def summarise(fits: list[dict]) -> dict:
    out = {}
    for average in SETTINGS:
        mine = [f for f in fits if f["average_epochs"] == average]
        out[str(average)] = {
            name: {"mean": float(np.mean([f[name] for f in mine])), "std": float(np.std([f[name] for f in mine]))}
            for name in ("auc", "logloss", "ece", "val_loss_change", "epochs_run", "seconds")
        } | {"best_epochs": [f["best_epoch"] for f in mine]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shops", nargs="+", default=["1000000:7", "600000:11"], help="EVENTS:SEED")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--workdir", type=Path, default=HERE / "work" / "ranker_averaging")
    args = parser.parse_args()
    command = "python benchmarks/ranker_averaging.py " + " ".join(sys.argv[1:])
    shops = []
    for spec in args.shops:
        events, seed = (int(part) for part in spec.split(":"))
        root = prepare(events, seed, args.workdir)
        fits = measure(root, args.seeds)
        shops.append({"events": events, "shop_seed": seed, "fits": fits, "summary": summarise(fits)})
    payload = {"command": command, "machine": machine(), "seeds": args.seeds, "shops": shops}
    lines = [
        "# Ranker weight averaging",
        "",
        f"Command: `{command}`. Machine: {machine()['cpus']} CPUs ({machine()['cpu_model']}).",
        "",
        "Each generated shop (`graphrec generate --events E --shop.seed S`, then `graphrec run` for its validated "
        "tables and embedding history); the evaluation fit of `graphrec rank` (train days, early stopping on the "
        "validation days) with `ranker.train.average_epochs` 0 (the last step's weights) and 0.25 (the default: an "
        "exponential moving average over about a quarter epoch of steps), each over the seeds "
        f"{args.seeds}, measured on the test days. 'Validation change': the mean relative change of the validation "
        "loss between consecutive epochs, the noise early stopping reads.",
        "",
        "| shop | average_epochs | test AUC | logloss | ECE | validation change | epochs run | epoch kept | fit (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for shop in shops:
        for average, row in shop["summary"].items():
            lines.append(
                f"| {shop['events']:,} events, seed {shop['shop_seed']} | {average} "
                f"| {row['auc']['mean']:.4f} ± {row['auc']['std']:.4f} "
                f"| {row['logloss']['mean']:.5f} ± {row['logloss']['std']:.5f} "
                f"| {row['ece']['mean']:.4f} | {100 * row['val_loss_change']['mean']:.2f}% "
                f"| {row['epochs_run']['mean']:.1f} | {row['best_epochs']} | {row['seconds']['mean']:.1f} |"
            )
    write_results(RESULTS, "ranker_averaging", payload, lines, workdir=args.workdir)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
