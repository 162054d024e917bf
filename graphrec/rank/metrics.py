"""Offline metrics of a click model on logged impressions: AUC, logloss, GAUC, NDCG@K per request and ECE."""

from __future__ import annotations

import numpy as np
import polars as pl

from graphrec.data.homepage import binary_auc as auc

__all__ = ["auc", "click_metrics", "expected_calibration_error", "group_auc", "logloss", "ndcg_at_k"]


def logloss(probabilities: np.ndarray, labels: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of predicted click probabilities."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-mass bins: the impression-weighted mean |mean predicted - observed click rate| per bin.
    Equal-mass bins, because click probabilities crowd near zero (Nixon et al. 2019, "Measuring Calibration in
    Deep Learning")."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if len(p) == 0:
        return float("nan")
    order = np.argsort(p, kind="stable")
    error = 0.0
    for chunk in np.array_split(order, min(bins, len(p))):
        error += len(chunk) * abs(p[chunk].mean() - y[chunk].mean())
    return float(error / len(p))


def group_auc(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> float:
    """GAUC: per-group AUC weighted by the group's impressions, over groups with both clicks and non-clicks
    (Zhou et al. 2018, "Deep Interest Network")."""
    frame = pl.DataFrame(
        {"g": groups, "s": np.asarray(scores, dtype=np.float64), "y": np.asarray(labels, dtype=np.int8)}
    )
    frame = frame.with_columns(pl.col("s").rank("average").over("g").alias("r"))
    per = frame.group_by("g").agg(
        pl.len().alias("n"), pl.col("y").sum().alias("pos"), pl.col("r").filter(pl.col("y") == 1).sum().alias("rpos")
    )
    per = per.filter((pl.col("pos") > 0) & (pl.col("pos") < pl.col("n")))
    if per.height == 0:
        return float("nan")
    neg = per["n"] - per["pos"]
    value = (per["rpos"] - per["pos"] * (per["pos"] + 1) / 2) / (per["pos"] * neg)
    return float((value * per["n"]).sum() / per["n"].sum())


def ndcg_at_k(scores: np.ndarray, labels: np.ndarray, requests: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@K of each request's logged modules ordered by score, clicks as gains, over requests with a
    click."""
    frame = pl.DataFrame(
        {"q": requests, "s": np.asarray(scores, dtype=np.float64), "y": np.asarray(labels, dtype=np.float64)}
    )
    frame = frame.filter(pl.col("y").sum().over("q") > 0)
    if frame.height == 0:
        return float("nan")
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ranked = frame.with_columns(
        (pl.col("s").rank("ordinal", descending=True).over("q") - 1).alias("pos"),
        (pl.col("y").rank("ordinal", descending=True).over("q") - 1).alias("ideal"),
    )
    gains = ranked.group_by("q").agg(
        (pl.col("y") * pl.col("pos").replace_strict(dict(enumerate(discount)), default=0.0)).sum().alias("dcg"),
        (pl.col("y") * pl.col("ideal").replace_strict(dict(enumerate(discount)), default=0.0)).sum().alias("idcg"),
    )
    return float((gains["dcg"] / gains["idcg"]).mean())


def click_metrics(
    probabilities: np.ndarray, labels: np.ndarray, users: np.ndarray, requests: np.ndarray, k: int = 10
) -> dict[str, float]:
    """AUC, logloss, GAUC (per user), NDCG@K (per request) and ECE of predicted click probabilities."""
    return {
        "auc": auc(probabilities, labels),
        "logloss": logloss(probabilities, labels),
        "gauc": group_auc(probabilities, labels, users),
        f"ndcg@{k}": ndcg_at_k(probabilities, labels, requests, k),
        "ece": expected_calibration_error(probabilities, labels),
        "impressions": len(labels),
        "ctr": float(np.mean(labels)) if len(labels) else float("nan"),
    }
