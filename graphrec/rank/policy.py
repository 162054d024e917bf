"""Policy value of a ranker's homepage order: its expected clicks under the generated shop's true click model, and
the same value estimated off-policy from the logged propensities, so the estimator's error is known.

The truth: every module live at a logged request is scored (`candidate_rows` builds those rows, with the same
point-in-time features as training rows), the top `slots` by score fill the page, and `ClickModel.expected_clicks`
sums P(examine | slot) x P(relevant) over it.

The estimate (`pbm_ips`) uses the logs only: the module logged at the first slot, whether it was clicked and its
logged propensity. At the first slot the logged propensity is the logging policy's exact marginal probability of
showing that module there (later slots' propensities are conditional on the slots above, so they are not). Under the
position-based model P(click at slot j) = theta_j x P(relevant), so a first-slot click weighted by theta_j / theta_0
stands for a click the target order would get with that module at slot j:

    V_IPS = mean over requests of  c_0 / theta_0 x sum_j theta_j 1[target puts the logged module at j] / p_0

unbiased whenever the logging policy gives every live module a positive first-slot propensity (uniform exploration
does) and theta is right; theta comes from a ranker's position tower (what a shop has) or the truth. The
self-normalised version divides by the mean importance weight over its expectation (the filled target slots)
(Swaminathan & Joachims 2015, "The Self-Normalized Estimator for Counterfactual Learning"; the position-based
reweighting as in Li et al. 2018, "Offline Evaluation of Ranking Policies with Click Models").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from graphrec.data.homepage import ClickModel, top_orders

__all__ = [
    "PolicySetting",
    "candidate_rows",
    "first_slot_log",
    "pbm_ips",
    "policy_setting",
    "policy_table",
    "ranked_value",
    "score_grid",
]


def candidate_rows(model: ClickModel, impressions: pl.DataFrame, requests: np.ndarray) -> pl.DataFrame:
    """One row per (request, module live at its time) for the click model's `requests` (row indexes), with the
    request's user, time, device and session from the logged impressions: rows for `behaviour_features` and the
    embedding join. `request_pos` is the row's position in `requests` (its click-model request is
    `requests[request_pos]`) and `module` its click-model module index."""
    requests = np.asarray(requests)
    live = model.active(requests)
    request_pos, module = np.nonzero(live)
    request_ids = model.request_ids[requests]
    logged = (
        impressions.filter(pl.col("request_id").is_in(request_ids.tolist()))
        .group_by("request_id")
        .agg(pl.col("session_id").first(), pl.col("device").first())
    )
    frame = pl.DataFrame(
        {
            "request_pos": request_pos.astype(np.int64),
            "request_id": request_ids[request_pos],
            "user_id": model.user_ids[model.request_user[requests[request_pos]]],
            "content_id": model.content_ids[module],
            "module": module.astype(np.int64),
            "timestamp": model.request_time[requests[request_pos]] * 1_000_000,
        }
    )
    frame = frame.with_columns(
        pl.col("request_id").cast(impressions["request_id"].dtype),
        pl.col("user_id").cast(impressions["user_id"].dtype),
        pl.col("content_id").cast(impressions["content_id"].dtype),
        pl.col("timestamp").cast(pl.Datetime("us", "UTC")).cast(impressions["timestamp"].dtype),
    )
    frame = frame.join(logged, on="request_id", how="left", maintain_order="left")
    if frame["device"].null_count():
        missing = frame.filter(pl.col("device").is_null())["request_id"].n_unique()
        raise ValueError(f"{missing} requests of the click model have no logged impressions")
    return frame.with_row_index("row_id").with_columns(
        pl.col("row_id").cast(pl.Int64), pl.lit(0, pl.Int64).alias("slot"), pl.lit(0, pl.Int8).alias("clicked")
    )


def score_grid(candidates: pl.DataFrame, scores: np.ndarray, n_requests: int, n_modules: int) -> np.ndarray:
    """[n_requests, n_modules] the candidates' scores, -inf where a module was not a candidate."""
    grid = np.full((n_requests, n_modules), -np.inf)
    grid[candidates["request_pos"].to_numpy(), candidates["module"].to_numpy()] = scores
    return grid


def first_slot_log(model: ClickModel, impressions: pl.DataFrame, requests: np.ndarray) -> dict[str, np.ndarray]:
    """The logged first slot of each request: module index, click, logged propensity, device index and the page's
    logged slots."""
    request_ids = model.request_ids[np.asarray(requests)]
    pages = (
        impressions.filter(pl.col("request_id").is_in(request_ids.tolist()))
        .group_by("request_id")
        .agg((pl.col("slot").max() + 1).alias("page"))
    )
    first = (
        impressions.filter((pl.col("slot") == 0) & pl.col("request_id").is_in(request_ids.tolist()))
        .unique("request_id", keep="first")
        .select("request_id", "content_id", "clicked", "propensity", "device")
    )
    frame = pl.DataFrame({"request_id": request_ids}).cast({"request_id": first["request_id"].dtype})
    frame = frame.join(first, on="request_id", how="left", maintain_order="left")
    frame = frame.join(pages, on="request_id", how="left", maintain_order="left")
    if frame["content_id"].null_count():
        raise ValueError(f"{frame['content_id'].null_count()} requests have no logged first slot")
    return {
        "module": model.module_index(frame["content_id"].to_numpy()),
        "clicked": frame["clicked"].cast(pl.Float64).to_numpy(),
        "propensity": frame["propensity"].cast(pl.Float64).to_numpy(),
        "device": model.request_device[np.asarray(requests)].astype(np.int64),
        "page": frame["page"].to_numpy().astype(np.int64),
    }


def pbm_ips(log: dict[str, np.ndarray], orders: np.ndarray, theta: np.ndarray) -> dict[str, float]:
    """IPS and self-normalised IPS estimates of the expected clicks per request of `orders` ([n, S] module indexes,
    -1 empty) from the logged first slots (`first_slot_log`), with examination `theta` ([devices, S], P(examine)
    by device and slot; only ratios to slot 0 matter). Also the standard error of the IPS mean."""
    n, slots = orders.shape
    theta = np.asarray(theta, dtype=np.float64)[:, :slots]
    ratio = theta[log["device"]] / theta[log["device"], :1]  # [n, S] theta_j / theta_0 of each request's device
    ratio = np.where(np.arange(slots)[None, :] < log["page"][:, None], ratio, 0.0)  # past the page: never seen
    match = (orders == log["module"][:, None]) & (orders >= 0)
    weight = (match * ratio).sum(axis=1) / log["propensity"]
    terms = log["clicked"] * weight
    importance = match.sum(axis=1) / log["propensity"]
    filled = (orders >= 0).sum(axis=1)
    ips = float(terms.mean())
    normaliser = float(importance.mean() / filled.mean()) if filled.mean() > 0 else float("nan")
    return {
        "ips": ips,
        "ips_se": float(terms.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
        "snips": ips / normaliser if normaliser > 0 else float("nan"),
        "matched_requests": int(match.any(axis=1).sum()),
        "requests": int(n),
    }


def ranked_value(
    model: ClickModel, requests: np.ndarray, grid: np.ndarray, slots: int
) -> tuple[np.ndarray, np.ndarray]:
    """The top-`slots` order of each request by `grid` scores and its true expected clicks (the request's own page
    length caps the examined slots)."""
    orders = top_orders(grid, slots)
    return orders, model.expected_clicks(np.asarray(requests), orders)


@dataclass
class PolicySetting:
    """Everything a policy-value table needs for a sample of logged requests: the click model, the candidate rows
    with their behaviour features (`rows`, embeddings joined by `with_store`), the logged first slots and the
    logging policy's own value."""

    model: ClickModel
    requests: np.ndarray  # click-model request indexes
    candidates: pl.DataFrame  # candidate_rows + behaviour features
    feature_names: list[str]
    first_slot: dict[str, np.ndarray]
    logged_value: np.ndarray  # true expected clicks of each request's logged page
    logged_clicks: float  # clicks per request in the log

    def rows(self, store: str | Path | None = None, feature_store=None):
        """The candidates as `RankRows`, with the embeddings of `store` (point-in-time) where given."""
        from graphrec.rank.rows import EMBEDDING_FLAGS, RankRows, with_embeddings

        if store is None:
            return RankRows(self.candidates, list(self.feature_names))
        frame, vectors = with_embeddings(self.candidates, store, feature_store)
        return RankRows(frame, [*self.feature_names, *EMBEDDING_FLAGS], vectors)


def policy_setting(
    validated: str | Path,
    click_model: ClickModel,
    request_ids: np.ndarray,
    features=None,
    sample: int = 2_000,
    seed: int = 0,
) -> PolicySetting:
    """A `PolicySetting` for a seeded sample of `sample` of the logged `request_ids` (the test requests)."""
    from graphrec.data.validation import read_feedback, read_validated
    from graphrec.rank.features import behaviour_features, feature_descriptions
    from graphrec.rank.rows import read_impressions

    rng = np.random.default_rng(seed)
    unique = np.unique(np.asarray(request_ids))
    chosen = np.sort(rng.choice(unique, size=min(sample, len(unique)), replace=False))
    requests = click_model.request_index(chosen)
    impressions = read_impressions(validated)
    candidates = candidate_rows(click_model, impressions, requests)
    events, items, content, _ = read_validated(validated)
    feedback = read_feedback(validated)
    computed = behaviour_features(candidates, events, impressions.lazy(), content, items, features, feedback)
    names = list(feature_descriptions(features))
    frame = candidates.join(computed.select("row_id", *names), on="row_id", how="left", maintain_order="left")
    logged = impressions.filter(pl.col("request_id").is_in(chosen.tolist()))
    return PolicySetting(
        click_model,
        requests,
        frame,
        names,
        first_slot_log(click_model, impressions, requests),
        click_model.expected_clicks(requests, _logged_orders(click_model, logged, requests)),
        float(logged["clicked"].cast(pl.Float64).sum() / len(requests)),
    )


def policy_table(
    setting: PolicySetting, scores: dict[str, np.ndarray], theta: np.ndarray, slots: int, references: bool = True
) -> dict[str, dict[str, float]]:
    """Expected clicks per request (truth) of the top-`slots` order of each candidate score in `scores` (one value
    per candidate row), of the oracle order, a popularity order (the module's clicks before the request) and the
    logged pages, with the first-slot IPS / SNIPS estimates under `theta` ([devices, slots] P(examine)) and under
    the true examination; each with its ratio to the oracle's value (without `references`, only the orders of
    `scores`, still with the ratio)."""
    from graphrec.data.homepage import ReferenceScorer

    model, requests = setting.model, setting.requests
    n, n_modules = len(requests), len(model.content_ids)
    truth_theta = model.examination_curve(slots)
    table: dict[str, dict[str, float]] = {}

    def add(name: str, grid: np.ndarray) -> None:
        orders, value = ranked_value(model, requests, grid, slots)
        learned, true = pbm_ips(setting.first_slot, orders, theta), pbm_ips(setting.first_slot, orders, truth_theta)
        table[name] = {
            "expected_clicks": float(value.mean()),
            "expected_clicks_se": float(value.std(ddof=1) / np.sqrt(n)),
            "ips": learned["ips"],
            "ips_se": learned["ips_se"],
            "snips": learned["snips"],
            "ips_true_theta": true["ips"],
            "snips_true_theta": true["snips"],
        }

    add("oracle", ReferenceScorer.fit(model).scores("oracle", requests))
    for name, values in scores.items():
        add(name, score_grid(setting.candidates, values, n, n_modules))
    oracle = table["oracle"]["expected_clicks"]
    if references:
        frame = setting.candidates
        popularity = frame["module_clicks"].to_numpy() + 1e-6 * frame["module_impressions"].to_numpy()
        add("popularity", score_grid(frame, popularity, n, n_modules))
        table["logging policy"] = {
            "expected_clicks": float(setting.logged_value.mean()),
            "expected_clicks_se": float(setting.logged_value.std(ddof=1) / np.sqrt(n)),
            "logged_clicks": setting.logged_clicks,
        }
    else:
        del table["oracle"]
    for row in table.values():
        row["ratio_to_oracle"] = row["expected_clicks"] / oracle
    return table


def _logged_orders(model: ClickModel, logged: pl.DataFrame, requests: np.ndarray) -> np.ndarray:
    """[n, max slots] the module index logged at each slot of each request (-1 where none)."""
    ids = model.request_ids[requests]  # sorted, as `requests` is
    orders = np.full((len(ids), int(logged["slot"].max()) + 1), -1, dtype=np.int64)
    rows = np.searchsorted(ids, logged["request_id"].to_numpy())
    orders[rows, logged["slot"].to_numpy()] = model.module_index(logged["content_id"].to_numpy())
    return orders
