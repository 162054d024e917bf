"""The evaluation job: graphrec's embeddings against baselines on one leak-free split, in one run.

Methods: popularity, history, item-kNN, matrix factorisation (BPR), single-behaviour LightGCN and graphrec's
multi-behaviour model, plus its ablations (no auxiliary behaviours, no catalog features) and its pure
dot-product scores (what the feature store carries); and the strong training-free baselines (tuned item-kNN,
EASE^R, GF-CF), whose settings are chosen on the validation task (or, without one, on one training target pair
per user held out) and then fitted on the test snapshot. With a validation task, each trained method early-stops on
validation NDCG and is then refitted on the test snapshot for its best epoch count; without one, it trains a
fixed number of epochs. Output: `metrics.json`, `metrics.md` and `curves.png` in `out_dir`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import polars as pl
import torch
from tqdm import tqdm

from graphrec.artifacts import code_version, fingerprint_inputs, utc_now_iso, write_json_atomic
from graphrec.data.adapters import open_dataset
from graphrec.data.config import ValidationConfig
from graphrec.data.validation import validate_dataset
from graphrec.embed.baselines import (
    EASE_GRID,
    EASE_WEIGHTINGS,
    GF_CF_GRID,
    ITEM_KNN_GRID,
    TooLarge,
    ease_family,
    gf_cf_family,
    history_scorer,
    item_knn_family,
    item_knn_scorer,
    popularity_scorer,
    select_on_validation,
    with_weightings,
)
from graphrec.embed.config import ModelConfig
from graphrec.embed.scoring import model_scorer
from graphrec.graph.config import GraphConfig, SplitConfig
from graphrec.graph.split import split_validated
from graphrec.graph.tasks import RecTask, holdout_task, window_task
from graphrec.metrics import Interactions, candidate_auc, evaluate_ranking, sample_users
from training.config import EvalConfig, TrainConfig
from training.logs import progress_bar_wanted
from training.trainer import train_embeddings

log = logging.getLogger("graphrec.evaluate")


def learned_variants(
    model: ModelConfig, train: TrainConfig, eval_config: EvalConfig, target: str, content: bool = False
):
    """(name, model config, train config) of every trained method; `content`: the items carry content vectors
    (then the ablations include graphrec without them)."""
    single = {"behaviours": [target], "use_features": False, "history": False}
    variants = []
    if "mf_bpr" in eval_config.methods:
        # No propagation, so nothing to sample: MF trains on its id vectors whatever `train.fanouts` says.
        mf_train = replace(train, aux_ratio=0.0, fanouts=None)
        variants.append(("mf_bpr", replace(model, num_layers=0, **single), mf_train))
    if "lightgcn" in eval_config.methods:
        variants.append(("lightgcn", replace(model, **single), replace(train, aux_ratio=0.0)))
    if "graphrec" in eval_config.methods:
        variants.append(("graphrec", model, train))
        if eval_config.ablations:
            variants.append(
                ("graphrec_no_aux", replace(model, behaviours=[target], history=False), replace(train, aux_ratio=0.0))
            )
            variants.append(("graphrec_no_features", replace(model, use_features=False), train))
            if content and model.use_content:
                variants.append(("graphrec_no_content", replace(model, use_content=False), train))
    return variants


def _slices(task: RecTask, cold_max: int) -> dict[str, tuple[Interactions, torch.Tensor | None, torch.Tensor | None]]:
    """Per slice: its truth, the users evaluated (None: all with truth) and the items to compute an AUC among
    (None: no AUC). Slices: cold users, and new items (no training interaction through any behaviour)."""
    activity = task.user_activity()
    cold_users = torch.nonzero(activity <= cold_max).flatten()
    item_seen = task.popularity() > 0
    users = torch.repeat_interleave(torch.arange(task.num_users), task.truth.counts())
    items = task.truth.indices
    new = ~item_seen[items]
    new_items = Interactions.from_pairs(users[new], items[new], task.num_users, task.num_items)
    return {"cold_users": (task.truth, cold_users, None), "new_items": (new_items, None, ~item_seen)}


def _evaluate_scorer(score, task: RecTask, ks, slices, sample: torch.Tensor | None = None) -> dict[str, Any]:
    """Metrics of `score` on the task's truth and slices; with `sample` (sorted user indexes) only over those
    users (the slices over their share of it)."""
    result = evaluate_ranking(score, task.truth, task.exclude, ks, task.popularity(), users=sample)
    for name, (truth, users, candidates) in slices.items():
        if sample is not None:
            users = sample if users is None else users[torch.isin(users, sample)]
        part = evaluate_ranking(score, truth, task.exclude, ks, users=users)
        result[name] = {k: v for k, v in part.items() if k.startswith(("recall", "ndcg", "hr")) or k == "users"}
        if candidates is not None:  # new items: how well they are ordered among themselves
            result[name]["auc"] = candidate_auc(score, truth, candidates)
    return result


def _log_result(name: str, result: dict[str, Any], k: int) -> None:
    """One line per method as it finishes: on a large shop the stage runs for many minutes."""
    log.info("%s: test ndcg@%d %.4f (%.0fs)", name, k, result[f"ndcg@{k}"], result["seconds"])


def compare_methods(
    test_task: RecTask,
    val_task: RecTask | None,
    out_dir: str | Path,
    model: ModelConfig | None = None,
    train: TrainConfig | None = None,
    eval_config: EvalConfig | None = None,
    progress: bool = False,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every method on the same task and return {method: metrics, ...} with timings.

    With `progress`, each fit shows Lightning's progress (a bar on a terminal, a line per epoch elsewhere);
    without it, a terminal gets one bar over the methods; either way the log gets a line per finished method.
    `on_result` is called with the results so far after each method, so a caller can keep them before the end.
    """
    model = model or ModelConfig()
    train = train or TrainConfig()
    eval_config = eval_config or EvalConfig()
    out_dir = Path(out_dir)
    ks = tuple(eval_config.ks)
    slices = _slices(test_task, eval_config.cold_user_max_events)
    sample = sample_users(test_task.truth, eval_config.max_users)  # None: every user with truth
    if sample is not None:
        log.info("test metrics over a fixed sample of %s of the test users", f"{len(sample):,}")
    results: dict[str, Any] = {}
    scorers = {
        "popularity": popularity_scorer,
        "history": history_scorer,
        "item_knn": lambda t: item_knn_scorer(t, eval_config.knn_neighbours),
    }
    tuned = {
        "item_knn_tuned": (item_knn_family, with_weightings(test_task, ITEM_KNN_GRID)),
        "ease": (
            lambda t, grid: ease_family(t, grid, max_dim=eval_config.ease_max_dim),
            with_weightings(test_task, EASE_GRID, EASE_WEIGHTINGS),
        ),
        "gf_cf": (gf_cf_family, with_weightings(test_task, GF_CF_GRID)),
    }
    variants = learned_variants(model, train, eval_config, test_task.target, bool(test_task.vector_sizes()))
    bar = tqdm(
        total=len([n for n in (*scorers, *tuned) if n in eval_config.methods]) + len(variants),
        desc="evaluate",
        unit="method",
        leave=False,
        disable=progress or not progress_bar_wanted(),
    )
    for name, make in scorers.items():
        if name in eval_config.methods:
            bar.set_postfix_str(name)
            start = time.perf_counter()
            results[name] = _evaluate_scorer(make(test_task), test_task, ks, slices, sample)
            results[name]["seconds"] = round(time.perf_counter() - start, 2)
            _log_result(name, results[name], ks[-1])
            bar.update()
            if on_result:
                on_result(results)
    tuning_task = None
    for name, (family, grid) in tuned.items():
        if name not in eval_config.methods:
            continue
        bar.set_postfix_str(name)
        start = time.perf_counter()
        if tuning_task is None:  # without a validation window, one training target pair per user held out
            tuning_task = val_task if val_task is not None else holdout_task(test_task)
        try:
            scorer, choice = select_on_validation(
                family,
                grid,
                tuning_task,
                test_task,
                metric=f"ndcg@{ks[-1]}",
                max_users=eval_config.tune_max_users,
            )
        except TooLarge as exc:  # too large for the method's memory limit (EASE's dense inverse): say so
            log.info("%s skipped: %s", name, exc)
            results[name] = {"skipped": str(exc)}
        else:
            results[name] = _evaluate_scorer(scorer, test_task, ks, slices, sample)
            results[name]["tuning"] = {**choice, "on": "validation" if val_task is not None else "training holdout"}
            del scorer
            log.debug("%s chose %s", name, choice["settings"])
        results[name]["seconds"] = round(time.perf_counter() - start, 2)
        if "skipped" not in results[name]:
            _log_result(name, results[name], ks[-1])
        bar.update()
        if on_result:
            on_result(results)
    for name, model_config, train_config in variants:
        bar.set_postfix_str(name)
        start = time.perf_counter()
        info: dict[str, Any] = {}
        keep_history: bool | float = True
        if val_task is not None:
            _, summary = train_embeddings(
                val_task, val_task, model_config, train_config, out_dir / name / "val", resume=False, progress=progress
            )
            epochs = summary["best_epoch"] + 1
            info["val"] = summary
            train_config = replace(train_config, epochs=epochs)
            if summary.get("history"):  # the validation run chose the history term's scale (0: dropped)
                keep_history = summary["history"]["scale"]
                info["history_kept"] = summary["history"]["kept"]
                info["history_scale"] = keep_history
        trained, summary = train_embeddings(
            test_task, None, model_config, train_config, out_dir / name / "test", resume=False, progress=progress
        )
        info["epochs"] = train_config.epochs
        # A refit cut short by the time budget trained fewer epochs than planned: the results say so.
        info["refit_epochs_run"] = summary["epochs_run"]
        info["refit_stopped_by_time_budget"] = summary["stopped_by_time_budget"]
        info["behaviour_weights"] = dict(zip(trained.behaviours, trained.behaviour_weights().tolist(), strict=True))
        results[name] = _evaluate_scorer(model_scorer(trained, history=keep_history), test_task, ks, slices, sample)
        if model_config.history:
            dot_only = model_scorer(trained, history=False)
            results[f"{name}_dot_only"] = _evaluate_scorer(dot_only, test_task, ks, slices, sample)
        results[name].update(info)
        results[name]["seconds"] = round(time.perf_counter() - start, 2)
        # Training cost per million training interactions (validation run and refit together): comparable across
        # shops of different sizes.
        interactions = sum(len(users) for users, _, _ in test_task.edges.values())
        results[name]["seconds_per_million_interactions"] = round(
            results[name]["seconds"] / max(interactions / 1e6, 1e-9), 1
        )
        _log_result(name, results[name], ks[-1])
        bar.update()
        if on_result:
            on_result(results)
    bar.close()
    return results


def run_evaluation(
    split_dir: str | Path,
    out_dir: str | Path = "artifacts/evaluation",
    target_event: str = "purchase",
    target_node: str = "item",
    model: ModelConfig | None = None,
    train: TrainConfig | None = None,
    eval_config: EvalConfig | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Evaluate on a split directory written by `write_split` (val/ and test/ snapshots and targets); `on_result`
    as in `compare_methods`."""
    split_dir, out_dir = Path(split_dir), Path(out_dir)
    tasks = {name: window_task(split_dir / name, target_event, target_node) for name in ("val", "test")}
    start = time.perf_counter()
    results = compare_methods(
        tasks["test"], tasks["val"], out_dir / "runs", model, train, eval_config, on_result=on_result
    )
    report = {
        "kind": "evaluation",
        "created_at": utc_now_iso(),
        "split_dir": str(split_dir),
        "target": f"{target_event} {target_node}",
        "task_stats": {
            name: task.stats | {"users_evaluated": int((task.truth.counts() > 0).sum())} for name, task in tasks.items()
        },
        "config": {
            "model": asdict(model or ModelConfig()),
            "train": asdict(train or TrainConfig()),
            "eval": asdict(eval_config or EvalConfig()),
        },
        "code_version": code_version(),
        "seconds": round(time.perf_counter() - start, 1),
        "results": results,
    }
    write_report(report, out_dir)
    return report


def evaluate_events(
    input: str | Path,
    out_dir: str | Path = "artifacts/evaluation",
    format: str = "contract",
    target_event: str = "purchase",
    target_node: str = "item",
    split: SplitConfig | None = None,
    validation: ValidationConfig | None = None,
    graph: GraphConfig | None = None,
    model: ModelConfig | None = None,
    train: TrainConfig | None = None,
    eval_config: EvalConfig | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Validate any events input, split it by time and evaluate: `out_dir/{validated,split}` then the report."""
    out_dir = Path(out_dir)
    split = split or SplitConfig()
    tables, sources, _ = open_dataset(format, input)
    fingerprint = fingerprint_inputs(dict(sources))
    validate_dataset(tables, out_dir / "validated", validation, fingerprint)
    split_validated(out_dir / "validated", out_dir / "split", split, graph, ((target_event, target_node),), fingerprint)
    return run_evaluation(
        out_dir / "split", out_dir, target_event, target_node, model, train, eval_config, on_result=on_result
    )


def markdown_table(results: dict[str, Any], ks: list[int]) -> str:
    """A Markdown table of the main metrics (and slices) per method."""
    columns = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg", "hr", "map")]
    columns += [f"coverage@{ks[-1]}", f"avg_pop@{ks[-1]}"]
    slices = f"cold users ndcg@{ks[-1]} | new items recall@{ks[-1]} | new items auc"
    header = "| method | " + " | ".join(columns) + f" | {slices} | s |"
    lines = [header, "|---" * (len(columns) + 5) + "|"]
    for name, r in results.items():
        if "skipped" in r:
            lines.append(f"| {name} | not run: {r['skipped']} |" + " |" * (len(columns) + 3))
            continue
        cells = [f"{r.get(c, float('nan')):.4f}" for c in columns]
        cold = r.get("cold_users", {}).get(f"ndcg@{ks[-1]}", float("nan"))
        new = r.get("new_items", {}).get(f"recall@{ks[-1]}", float("nan"))
        auc = r.get("new_items", {}).get("auc", float("nan"))
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {cold:.4f} | {new:.4f} | {auc:.4f} | {r.get('seconds', '')} |"
        )
    return "\n".join(lines)


def write_report(report: dict[str, Any], out_dir: Path) -> None:
    """metrics.json, metrics.md and a plot of the training curves found under out_dir/runs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "metrics.json", report)
    ks = report["config"]["eval"]["ks"]
    text = [
        f"# Evaluation: {report['target']}",
        "",
        f"Split: `{report['split_dir']}`; evaluated users: {report['task_stats']['test']['users_evaluated']:,}",
        "",
        markdown_table(report["results"], ks),
        "",
    ]
    (out_dir / "metrics.md").write_text("\n".join(text))
    plot_curves(out_dir / "runs", out_dir / "curves.png")


def plot_curves(runs_dir: Path, path: Path) -> None:
    """Training loss and validation NDCG per epoch for every run with CSV logs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = sorted(runs_dir.glob("*/*/logs/version_*/metrics.csv"))
    if not logs:
        return
    fig, (loss_ax, val_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for csv in logs:
        frame = pl.read_csv(csv, infer_schema_length=None)
        label = f"{csv.parents[3].name}/{csv.parents[2].name}"
        if "train_loss" in frame.columns:
            part = frame.filter(pl.col("train_loss").is_not_null())
            loss_ax.plot(part["epoch"], part["train_loss"], label=label)
        ndcg = [c for c in frame.columns if c.startswith("val_ndcg")]
        if ndcg:
            part = frame.filter(pl.col(ndcg[0]).is_not_null())
            val_ax.plot(part["epoch"], part[ndcg[0]], marker="o", label=label)
    loss_ax.set(title="training BPR loss", xlabel="epoch")
    val_ax.set(title="validation NDCG", xlabel="epoch")
    loss_ax.legend(fontsize=7)
    val_ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def load_report(path: str | Path) -> dict[str, Any]:
    """Read a metrics.json written by `run_evaluation`."""
    return json.loads(Path(path).read_text())
