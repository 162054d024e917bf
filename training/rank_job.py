"""The ranker job: point-in-time rows, a temporal evaluation, the final fit and the serving artifact.

`graphrec rank --validated artifacts/default/validated --export.store artifacts/store --out artifacts/default/ranker`
joins every validated impression to its behaviour features and (with `ranker.embeddings`) to the user and module
embeddings of the version live at its time, trains the ranker on the earlier days, early-stops on the next ones and
evaluates it on the last `ranker.split.test_days` (AUC, logloss, GAUC, NDCG@10, ECE; overall and for cold users,
heavy users and new modules), then trains the published ranker on every day for the epoch count the evaluation
chose and writes it with `graphrec.rank.artifact.save_ranker`. Given the generated shop's click model, the test
requests' orders are also scored with the true click model (policy value) beside the logging policy, a popularity
order and the oracle, with the off-policy estimates of the same values.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from graphrec.artifacts import write_json_atomic
from graphrec.data.config import DEVICES
from graphrec.errors import InputError
from graphrec.rank.features import feature_descriptions
from graphrec.rank.rows import DAY_SECONDS, RankRows, day_origin, impression_rows
from training.config import RankerStageConfig, RankSplitConfig

log = logging.getLogger("graphrec.rank")

MAX_POSITION_SLOTS = 100  # the position tower's slots; later slots share the last one


def build_rows(
    validated: str | Path, config: RankerStageConfig, store: str | Path | None = None, feature_store=None
) -> RankRows:
    """Training rows of the validated impressions after `config.split.skip_days` (the days before are history:
    no part of the split reads their rows), with embeddings from `store` when `config.embeddings`."""
    if config.embeddings and store is None:
        raise InputError("ranker.embeddings is on but no embedding store was given (--export.store)")
    if config.embeddings:
        from graphrec.store.versions import list_versions

        if not (Path(store) / "embeddings").exists() or not list_versions(store):
            raise InputError(
                f"{store}: no embedding versions; publish some with `graphrec backfill` (or set --ranker.embeddings "
                "false to train on behaviour features alone)"
            )
    return impression_rows(
        validated, store if config.embeddings else None, feature_store, config.features, config.split.skip_days
    )


def impression_days(rows: RankRows) -> np.ndarray:
    """Each row's day index, counted from the log's first impression's UTC midnight (`rows.origin`; else the first
    row's)."""
    origin = rows.origin if rows.origin is not None else day_origin(rows.frame["timestamp"])
    return (rows.frame["timestamp"].dt.epoch("s").to_numpy() - origin) // DAY_SECONDS


def split_rows(rows: RankRows, split: RankSplitConfig) -> dict[str, np.ndarray]:
    """Row indexes of the temporal parts: `train` (after `skip_days`), `validation`, `test` (the last days) and
    `all` (every row after `skip_days`, for the final fit)."""
    day = impression_days(rows)
    last = int(day.max())
    test_from = last + 1 - split.test_days
    validation_from = test_from - split.validation_days
    if validation_from <= split.skip_days:
        raise InputError(
            f"the impressions span {last + 1} days: too few for ranker.split (skip {split.skip_days}, validation "
            f"{split.validation_days}, test {split.test_days} days)"
        )
    parts = {
        "train": np.flatnonzero((day >= split.skip_days) & (day < validation_from)),
        "validation": np.flatnonzero((day >= validation_from) & (day < test_from)),
        "test": np.flatnonzero(day >= test_from),
        "all": np.flatnonzero(day >= split.skip_days),
    }
    for name in ("train", "validation"):
        clicks = int(rows.frame["clicked"].gather(parts[name]).sum()) if len(parts[name]) else 0
        if clicks == 0:
            raise InputError(f"the ranker's {name} days hold no clicked impression; more days or a larger log needed")
    return parts


def new_ranker(rows: RankRows, config: RankerStageConfig, features: list[str] | None = None, embeddings=None):
    """An untrained ranker for `rows`' features (`features`: a subset) and embeddings (None: `config.embeddings`),
    its weights drawn from `config.train.seed`."""
    import torch

    from graphrec.rank.model import HomepageRanker

    torch.manual_seed(config.train.seed)

    names = features if features is not None else rows.feature_names
    use = config.embeddings if embeddings is None else embeddings
    slots = min(int(rows.frame["slot"].max()) + 1, MAX_POSITION_SLOTS)
    return HomepageRanker(len(names), rows.embedding_dim if use else 0, slots, len(DEVICES), replace(config.model))


def fit_split(
    rows: RankRows,
    parts: dict[str, np.ndarray],
    config: RankerStageConfig,
    out_dir: str | Path,
    callbacks: list | None = None,
    features: list[str] | None = None,
    embeddings: bool | None = None,
):
    """Train a ranker on `parts["train"]`, early-stopping on `parts["validation"]`; returns (model, summary)."""
    from training.rank_system import fit_ranker

    use = config.embeddings if embeddings is None else embeddings
    model = new_ranker(rows, config, features, use)
    train = rows.arrays(parts["train"], use, features, keys=False)
    validation = rows.arrays(parts["validation"], use, features, keys=False)
    return fit_ranker(model, train, validation, config.train, Path(out_dir), callbacks)


def slice_masks(rows: RankRows, test: np.ndarray, config: RankerStageConfig) -> dict[str, np.ndarray]:
    """Boolean masks over the `test` rows: cold and heavy users (by their item events and content clicks before the
    row), and new modules: launched at or after the cutoff of the embedding version live at the row (the content
    table's launch, else the module's first impression); where the rows have no embeddings, launched less than
    `skip_days` before."""
    wanted = ["user_item_events", "user_content_clicks", "module_age_days", "timestamp", "module_impressions"]
    wanted += ["module_days_since_first_impression", "module_launch", "embedding_cutoff"]
    frame = rows.frame.select(c for c in wanted if c in rows.frame.columns)[test]  # not every column of every row
    events = (frame["user_item_events"] + frame["user_content_clicks"]).to_numpy()
    heavy_from = float(np.quantile(events, config.slices.heavy_user_quantile)) if len(events) else 0.0
    if "embedding_cutoff" in frame.columns:
        seconds = pl.col("timestamp").dt.epoch("s")
        age = (pl.col("module_days_since_first_impression") * DAY_SECONDS).cast(pl.Int64)
        first_shown = pl.when(pl.col("module_impressions") > 0).then(seconds - age).otherwise(seconds)
        catalog = pl.col("module_launch").dt.epoch("s") if "module_launch" in frame.columns else pl.lit(None)
        cutoff = pl.col("embedding_cutoff").dt.epoch("s")
        new = cutoff.is_null() | (pl.coalesce(catalog, first_shown) >= cutoff)
        new_module = frame.select(new.alias("new"))["new"].to_numpy()
    else:
        new_module = frame["module_age_days"].to_numpy() < max(config.split.skip_days, 1)
    return {
        "cold_users": events <= config.slices.cold_user_max_events,
        "heavy_users": events >= max(heavy_from, 1.0),
        "new_modules": new_module,
        "warm_modules": ~new_module,
    }


def evaluate_ranker(model, rows: RankRows, test: np.ndarray, config: RankerStageConfig, features=None) -> dict:
    """Click metrics of `model` on the `test` rows, overall and per slice (P(click) at the logged slot)."""
    from graphrec.rank.metrics import click_metrics
    from training.rank_system import predict

    # The slices first: their columns of the test rows are gone before the model's inputs are gathered.
    slices = slice_masks(rows, test, config)
    arrays = rows.arrays(test, model.embedding_dim > 0, features)
    _, click = predict(model, arrays)
    result = {"overall": click_metrics(click, arrays["clicked"], arrays["user_id"], arrays["request"])}
    result["calibration"] = reliability_bins(click, arrays["clicked"])
    for name, mask in slices.items():
        if mask.any() and 0 < arrays["clicked"][mask].sum() < mask.sum():
            result[name] = click_metrics(
                click[mask], arrays["clicked"][mask], arrays["user_id"][mask], arrays["request"][mask]
            )
        else:
            result[name] = {"impressions": int(mask.sum()), "note": "no clicks and non-clicks both in this slice"}
    return result


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """The reliability diagram's points: rows in `bins` equal-count bins of predicted probability, each bin's mean
    prediction, observed click rate and row count."""
    order = np.argsort(probabilities, kind="stable")
    points = []
    for part in np.array_split(order, bins):
        if len(part):
            points.append(
                {
                    "predicted": float(probabilities[part].mean()),
                    "observed": float(labels[part].mean()),
                    "rows": len(part),
                }
            )
    return points


def rank_job(
    validated: str | Path,
    out: str | Path,
    config: RankerStageConfig | None = None,
    store: str | Path | None = None,
    feature_store=None,
    click_model: str | Path | None = None,
    evaluation_out: str | Path | None = None,
) -> dict[str, Any]:
    """Build rows, evaluate on the temporal split, train the final ranker and write its artifact to `out`; returns
    the report, also written as `<out>/report.json` (with the policy value where `click_model` is given). With
    `evaluation_out` the evaluation fit (trained before the test days) is kept there as a ranker artifact too, so
    the quality gate can measure it beside a published ranker (`compare_baseline`)."""
    import shutil

    config = config or RankerStageConfig()
    out = Path(out)
    truth = load_click_model(click_model) if click_model is not None and config.policy_requests else None
    work = out.parent / f".{out.name}.work"
    try:
        return _rank_job(validated, out, config, store, feature_store, truth, work, evaluation_out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def load_click_model(path: str | Path):
    """The generated shop's click model at `path`, or a one-line InputError."""
    from graphrec.data.homepage import ClickModel

    try:
        return ClickModel.load(path)
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"{path}: not a readable click model ({type(exc).__name__}: {exc})") from None


def _rank_job(
    validated, out: Path, config: RankerStageConfig, store, feature_store, truth, work: Path, evaluation_out=None
) -> dict:
    from graphrec.rank.artifact import save_ranker

    started = time.perf_counter()
    rows = build_rows(validated, config, store, feature_store)
    parts = split_rows(rows, config.split)
    if truth is not None:
        known = np.isin(rows.frame["request_id"].gather(parts["test"]).to_numpy(), truth.request_ids.astype(np.int64))
        if not known.all():
            raise InputError(
                f"the click model does not hold {int((~known).sum()):,} of the test impressions' requests: it belongs "
                "to another shop (pass that shop's click_model.npz)"
            )
    log.info(
        "ranker rows: %s impressions (%s train, %s validation, %s test; the %s of the first %d days are history "
        "only), %d features%s (%.0fs)",
        f"{rows.frame.height:,}",
        f"{len(parts['train']):,}",
        f"{len(parts['validation']):,}",
        f"{len(parts['test']):,}",
        f"{rows.history_only:,}",
        config.split.skip_days,
        len(rows.feature_names),
        f", {rows.embedding_dim}-dim embeddings" if rows.embedding_dim else "",
        time.perf_counter() - started,
    )
    model, summary = fit_split(rows, parts, config, work / "evaluation")
    metrics = evaluate_ranker(model, rows, parts["test"], config)
    overall = metrics["overall"]
    log.info(
        "ranker test: AUC %.4f, logloss %.5f, GAUC %.4f, ECE %.4f (%d epochs)",
        overall["auc"],
        overall["logloss"],
        overall["gauc"],
        overall["ece"],
        summary["epochs_run"],
    )
    report: dict[str, Any] = {
        "rows": {name: len(index) for name, index in parts.items()}
        | {"impressions": rows.frame.height, "history_only": rows.history_only},
        "evaluation": {"training": summary, "test": metrics},
    }
    final, final_summary = model, None
    if config.final_fit != "off":
        final, final_summary = _final_fit(model, summary, rows, parts, config, work / "final")
    descriptions = feature_descriptions(config.features) | {
        "has_user_embedding": "1 if the live embedding version holds the user",
        "has_module_embedding": "1 if the live embedding version holds the module",
    }
    info = {
        "features": {
            "names": rows.feature_names,
            "descriptions": {n: descriptions[n] for n in rows.feature_names},
            "config": asdict(config.features),
        },
        "embeddings": _embedding_info(rows, store) if config.embeddings else None,
        "training": {
            "config": asdict(config.train),
            "split": asdict(config.split),
            "evaluation_fit": summary,
            "final_fit": final_summary,
        },
        # Measured on the test days with the evaluation fit; the weights are the final fit's (every day).
        "metrics": {"measured_with": "evaluation fit", **metrics},
        # Absolute: the API indexes its request-time features from here, whatever its working directory.
        "data": {
            "validated": str(Path(validated).resolve()),
            "rows": report["rows"],
            "last_impression": _last_impression(rows),
        },
    }
    save_ranker(final, out, info)
    if evaluation_out is not None:
        test_from = rows.frame["timestamp"].gather(parts["test"]).min()
        last_seen = rows.frame["timestamp"].filter(rows.frame["timestamp"] < test_from).max()
        evaluation_data = info["data"] | {"last_impression": last_seen.isoformat() if last_seen else None}
        save_ranker(model, evaluation_out, info | {"data": evaluation_data, "role": "evaluation fit"})
    if truth is not None:
        test_requests = rows.frame["request_id"].gather(parts["test"]).to_numpy()
        embeddings = rows.embedding_dim > 0
        # The rows are the stage's largest holding (every impression's features): gone before the policy value
        # reads the log again for its candidates.
        del rows, parts, final
        gc.collect()
        report["policy_value"] = policy_value(
            {"ranker": model}, test_requests, config, validated, truth, store if embeddings else None, feature_store
        )
    report["seconds"] = round(time.perf_counter() - started, 1)
    write_json_atomic(out / "report.json", report)
    return report


def _final_fit(model, summary: dict, rows: RankRows, parts: dict, config: RankerStageConfig, work: Path):
    """The published ranker: with `ranker.final_fit` "update", the evaluation fit trained one epoch more on the days
    after its training days (validation and test), from its weights; with "retrain", a new ranker trained on every
    day for the epoch count the evaluation's early stopping chose. Returns (model, summary)."""
    import copy

    from training.rank_system import fit_ranker

    if config.final_fit == "update":
        newer = np.concatenate([parts["validation"], parts["test"]])
        train_config = replace(config.train, epochs=1)
        arrays = rows.arrays(newer, config.embeddings, keys=False)
        final, summary = fit_ranker(copy.deepcopy(model), arrays, None, train_config, work, warm=True)
        days = config.split.validation_days + config.split.test_days
        log.info("final ranker: the evaluation fit, one epoch more on the %d days after its training days", days)
        return final, summary | {"mode": "update", "rows": len(newer)}
    epochs = int(summary.get("best_epoch", summary["epochs_run"]))
    train_config = replace(config.train, epochs=epochs)
    arrays = rows.arrays(parts["all"], config.embeddings, keys=False)
    final, summary = fit_ranker(new_ranker(rows, config), arrays, None, train_config, work)
    log.info("final ranker: %d epochs on every day after the first %d", epochs, config.split.skip_days)
    return final, summary | {"mode": "retrain", "rows": len(parts["all"])}


def _last_impression(rows: RankRows) -> str:
    return rows.frame["timestamp"].max().isoformat()


def compare_baseline(
    baseline: str | Path,
    candidate,
    rows: RankRows,
    test: np.ndarray,
    config: RankerStageConfig,
    validated: str | Path,
    truth=None,
    store=None,
    feature_store=None,
) -> dict[str, Any]:
    """The candidate (its evaluation fit) and the `baseline` ranker on the same holdout: the test rows after the
    last impression the baseline was trained on, which neither has seen. Click metrics of both, and with `truth`
    the policy value of both on those rows' requests. `comparable` is false (with the reason) where the baseline
    reads other features, another embedding size, or does not record its data's end."""
    from graphrec.rank.artifact import load_ranker
    from graphrec.rank.metrics import click_metrics
    from training.rank_system import predict

    old, info = load_ranker(baseline)
    names = info["features"]["names"]
    last = info.get("data", {}).get("last_impression")
    result: dict[str, Any] = {"path": str(baseline), "trained_until": last, "comparable": False}
    if names != rows.feature_names or old.embedding_dim not in (0, rows.embedding_dim):
        result["reason"] = "the published ranker reads other features or another embedding size"
        return result
    if last is None:
        result["reason"] = "the published ranker does not record the last impression it was trained on"
        return result
    from datetime import datetime

    after = (rows.frame["timestamp"].gather(test) > datetime.fromisoformat(last)).to_numpy()
    holdout = test[after]
    clicked = rows.frame["clicked"].gather(holdout).to_numpy()
    result |= {"holdout_rows": len(holdout), "holdout_clicks": int(clicked.sum())}
    if not 0 < clicked.sum() < len(holdout):
        result["reason"] = "no clicked and unclicked rows after the published ranker's data"
        return result
    result["comparable"] = True
    for name, ranker in (("candidate", candidate), ("published", old)):
        arrays = rows.arrays(holdout, ranker.embedding_dim > 0)
        _, click = predict(ranker, arrays)
        result[name] = click_metrics(click, arrays["clicked"], arrays["user_id"], arrays["request"])
    if truth is not None:
        known = np.isin(rows.frame["request_id"].gather(holdout).to_numpy(), truth.request_ids.astype(np.int64))
        if known.all():
            both = {"candidate": candidate, "published": old}
            requests = rows.frame["request_id"].gather(holdout).to_numpy()
            candidate_store = store if rows.embedding_dim else None
            value = policy_value(both, requests, config, validated, truth, candidate_store, feature_store)
            result["policy_value"] = {k: value["orders"][k] for k in ("candidate", "published", "oracle")}
            result["policy_requests"] = value["requests"]
    return result


def _embedding_info(rows: RankRows, store) -> dict[str, Any]:
    from graphrec.store.versions import latest_version, read_manifest

    frame = rows.frame
    versions = sorted(set(frame["user_embedding_version"].drop_nulls().to_list()))
    live = latest_version(store)
    manifest = read_manifest(store, live) if live else {}
    return {
        "store": str(store),
        "dim": rows.embedding_dim,
        "trained_on_versions": versions,
        "live_version": live,
        "space": manifest.get("space"),
        "rows_with_user_embedding": float(frame["has_user_embedding"].mean()),
        "rows_with_module_embedding": float(frame["has_module_embedding"].mean()),
    }


def policy_value(
    rankers: dict[str, Any],
    request_ids: np.ndarray,
    config: RankerStageConfig,
    validated: str | Path,
    click_model,
    store=None,
    feature_store=None,
) -> dict[str, Any]:
    """`graphrec.rank.policy.policy_table` of each ranker's order on `config.policy_requests` of the logged
    `request_ids` (the test requests) under `click_model` (a `ClickModel`; theta for the off-policy estimates from
    the first ranker's position tower). Candidates meet the embeddings of `store` where given (the rows the
    rankers were trained on had them), else none."""
    from graphrec.rank.policy import policy_setting, policy_table
    from training.rank_system import predict

    started = time.perf_counter()
    setting = policy_setting(validated, click_model, request_ids, config.features, config.policy_requests)
    candidates = setting.rows(store, feature_store)
    scores = {}
    for name, ranker in rankers.items():
        scores[name], _ = predict(ranker, candidates.arrays(None, ranker.embedding_dim > 0))
    theta = tower_theta(next(iter(rankers.values())), config.top_k)
    table = policy_table(setting, scores, theta, config.top_k)
    log.info("policy value on %d test requests (%.0fs)", len(setting.requests), time.perf_counter() - started)
    return {"requests": len(setting.requests), "top_k": config.top_k, "orders": table}


def tower_theta(ranker, slots: int) -> np.ndarray:
    """[devices, slots] P(seen | slot, device) of a ranker's position tower."""
    import torch

    with torch.no_grad():
        slot = torch.clamp(torch.arange(slots), max=ranker.num_slots - 1).repeat(len(DEVICES))
        device = torch.arange(len(DEVICES)).repeat_interleave(slots)
        return torch.sigmoid(ranker.seen_logit(slot, device)).numpy().reshape(len(DEVICES), slots)
