"""Benchmark: the graph model with and without MiniLM title vectors, on the generated shop.

Usage:
    python benchmarks/text_embeddings.py                      # the default job's 200k-event shop
    python benchmarks/text_embeddings.py --events 500000 --workdir /tmp/text-embeddings

The shop is generated, validated with `validation.text.enabled` (item and module titles encoded by
all-MiniLM-L6-v2 into `title_embedding`, beside the shop's synthetic `image_embedding`) and split by time as the
main job does (`graphrec generate`, `validate`, `split`). Then graphrec's default model is trained on the same split
with three sets of item content vectors: image and title, image only, none; and the first two again with
`embeddings.model.content_inputs: all` (content in every item's layer 0, beside its id vector). Each arm
early-stops on the validation window, then refits the chosen epoch count on the test snapshot, as `graphrec
evaluate` does; the results are the test window's NDCG@20 and Recall@20 and the new-item slice (items without
training interactions): AUC among them and Recall@20. The validation curve of each arm shows how fast it learns.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results"
from common import machine, peak_rss_gib, write_results  # noqa: E402

ARMS = {  # arm -> (content-vector columns left out of the items' inputs, model settings besides the defaults)
    "image_and_title": ([], {}),
    "image_only": (["title_embedding"], {}),
    "no_content": (["title_embedding", "image_embedding"], {}),
    "image_and_title, content_inputs all": ([], {"content_inputs": "all"}),
    "image_only, content_inputs all": (["title_embedding"], {"content_inputs": "all"}),
}


def prepare(workdir: Path, events: int) -> Path:
    """The shop, validated with title vectors and split; reused when already there."""
    graphrec = str(Path(sys.executable).parent / "graphrec")
    shop, validated, split = workdir / f"shop-{events}", workdir / "validated", workdir / "split"
    steps = [
        (shop / "manifest.json", [graphrec, "generate", "--out", str(shop), "--events", str(events)]),
        (
            validated / "report.json",
            [
                *(graphrec, "validate", "--input.format", "contract", "--input.path", str(shop), "--out"),
                *(str(validated), "--validation.text.enabled", "true"),
                *("--validation.text.cache_dir", str(workdir / "text_cache")),
            ],
        ),
        (split / "test", [graphrec, "split", "--validated", str(validated), "--out", str(split)]),
    ]
    for done, command in steps:
        if not done.exists():
            print(" ".join(command[1:]), flush=True)
            subprocess.run(command, check=True)
    return split


def run_arm(split: Path, workdir: Path, leave_out: list[str], settings: dict) -> dict:
    from graphrec.embed.config import ModelConfig
    from graphrec.embed.scoring import model_scorer
    from graphrec.graph.tasks import window_task
    from training.config import TrainConfig
    from training.evaluate import _evaluate_scorer, _slices
    from training.trainer import train_embeddings

    tasks = {name: window_task(split / name) for name in ("val", "test")}
    for task in tasks.values():
        for name in leave_out:
            task.item_features.pop(name, None)
    model_config, train_config = ModelConfig(**settings), TrainConfig()
    started = time.perf_counter()
    _, summary = train_embeddings(tasks["val"], tasks["val"], model_config, train_config, workdir / "val", resume=False)
    validated = time.perf_counter()
    epochs = summary["best_epoch"] + 1
    model, _ = train_embeddings(
        tasks["test"], None, model_config, replace(train_config, epochs=epochs), workdir / "test", resume=False
    )
    refit = time.perf_counter()
    keep_history = summary["history"]["scale"] if summary.get("history") else True
    test = tasks["test"]
    metrics = _evaluate_scorer(model_scorer(model, history=keep_history), test, (10, 20), _slices(test, 5))
    return {
        "vectors": {k: int(v.shape[1]) for k, v in test.item_features.items() if v.dim() == 2},
        "ndcg@20": metrics["ndcg@20"],
        "recall@20": metrics["recall@20"],
        "new_items": {k: metrics["new_items"].get(k) for k in ("auc", "recall@20", "users")},
        "best_epoch": summary["best_epoch"],
        "epochs_run": summary["epochs_run"],
        "validation_curve": summary.get("val_curve"),
        "validation_seconds": round(validated - started, 1),
        "refit_seconds": round(refit - validated, 1),
        "config": {"model": asdict(model_config), "train": asdict(train_config)},
    }


def markdown(payload: dict) -> list[str]:
    host = payload["machine"]
    lines = [
        "# The graph model with and without title vectors",
        "",
        f"Command: `{payload['command']}`. Machine: {host['cpus']} CPUs ({host['cpu_model']}), "
        f"{host['memory_gib']} GiB. Date: {payload['date']}. Generated shop of {payload['events']:,} events, peak "
        f"memory {payload['peak_gib']} GiB. Load average at the end {payload['load_average'][:3]} (seconds "
        "lengthen with other work on the machine).",
        "",
        "graphrec's default model on one split (validation and test weeks as in the main job), trained with three "
        "sets of item content vectors, and with `content_inputs: all` (content in every item's layer 0, not only in "
        "that of items without a trained id vector); each arm early-stops on the validation week and refits the "
        "chosen epochs on the test snapshot. New items: items without training interactions (AUC among them, "
        "Recall@20 over the whole catalogue).",
        "",
        "| arm | vectors | NDCG@20 | Recall@20 | new items AUC | new items Recall@20 | best epoch "
        "| s (validation + refit) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm, r in payload["arms"].items():
        new = r["new_items"]
        lines.append(
            f"| {arm} | {', '.join(f'{k} {v}' for k, v in r['vectors'].items()) or 'none'} | {r['ndcg@20']:.4f} | "
            f"{r['recall@20']:.4f} | {new['auc']:.4f} | {new['recall@20']:.4f} ({new['users']} users) | "
            f"{r['best_epoch'] + 1} | {r['validation_seconds'] + r['refit_seconds']:.0f} |"
        )
    lines += ["", "Validation NDCG@20 by epoch:", ""]
    for arm, r in payload["arms"].items():
        curve = ", ".join(f"{int(e) + 1}: {v:.4f}" for e, v in (r["validation_curve"] or {}).items())
        lines.append(f"- {arm}: {curve}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--workdir", type=Path, default=HERE / "work" / "text_embeddings")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    split = prepare(args.workdir, args.events)
    arms = {}
    for arm, (leave_out, settings) in ARMS.items():
        arms[arm] = run_arm(
            split, args.workdir / "runs" / arm.replace(", ", "-").replace(" ", "_"), leave_out, settings
        )
        r = arms[arm]
        print(f"{arm}: NDCG@20 {r['ndcg@20']:.4f}, new-item AUC {r['new_items']['auc']:.4f}", flush=True)
    payload = {
        "command": "python benchmarks/text_embeddings.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "events": args.events,
        "peak_gib": round(peak_rss_gib(), 2),
        "load_average": os.getloadavg(),
        "arms": arms,
    }
    write_results(RESULTS, "text_embeddings", payload, markdown(payload), workdir=args.workdir)
    print(f"wrote {RESULTS / 'text_embeddings.md'}")


if __name__ == "__main__":
    main()
