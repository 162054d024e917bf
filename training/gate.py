"""The quality gate: is the candidate (embedding version, ranker) pair good enough to replace the live one?

The candidate "blesses" (the idea of TFX's Evaluator) when it clears the floors (the ranker's test AUC at least
`min_auc`; the embeddings at least as good as the popularity baseline on the same test window) and is not worse
than the live pair beyond the tolerances of `GateConfig`:

- the ranker's AUC and logloss, and the policy value under the click model where the data has one, on the same
  holdout: the test impressions after the last one the live ranker was trained on, which neither ranker has seen
  (`training.rank_job.compare_baseline`). With fewer than `min_holdout_clicks` clicks there (a rerun on the same
  data, or a run a few hours after the last), each ranker's own recorded test metrics are compared instead, and
  the check says so;
- the embeddings' test NDCG@20 against the live version's recorded one (both measured by the same protocol on the
  last `split.test_days` of their data).

Every check is listed with both values, the tolerance and its basis, so the report shows why a pair was or was not
published.
"""

from __future__ import annotations

from typing import Any

from training.config import GateConfig


def _check(name: str, candidate, published, passed: bool, rule: str, basis: str) -> dict[str, Any]:
    return {
        "check": name,
        "candidate": None if candidate is None else round(float(candidate), 6),
        "published": None if published is None else round(float(published), 6),
        "rule": rule,
        "basis": basis,
        "passed": bool(passed),
    }


def gate_decision(
    candidate: dict[str, Any],
    published: dict[str, Any] | None,
    comparison: dict[str, Any] | None,
    config: GateConfig,
) -> dict[str, Any]:
    """The gate's decision on `candidate` (see `pair_metrics`) against the live pair's recorded metrics
    (`published`, None for the first pair) and the same-holdout `comparison` of the rankers (None where there is no
    live ranker). Returns {blessed, checks, reasons, basis}."""
    checks = []
    auc = candidate["ranker"].get("auc")
    checks.append(
        _check(
            "ranker AUC floor", auc, None, auc is not None and auc >= config.min_auc, f">= {config.min_auc}", "floor"
        )
    )
    if config.beat_popularity and candidate.get("popularity_ndcg") is not None:
        ndcg, popularity = candidate["ndcg"], candidate["popularity_ndcg"]
        checks.append(
            _check("embeddings NDCG@20 vs popularity", ndcg, popularity, ndcg >= popularity, ">= popularity", "floor")
        )
    if published is not None:
        if candidate.get("ndcg") is not None and published.get("ndcg") is not None:
            drop = published["ndcg"] - candidate["ndcg"]
            checks.append(
                _check(
                    "embeddings NDCG@20",
                    candidate["ndcg"],
                    published["ndcg"],
                    drop <= config.max_ndcg_drop,
                    f"drop <= {config.max_ndcg_drop}",
                    "recorded test metrics",
                )
            )
        same = (
            comparison is not None
            and comparison.get("comparable")
            and comparison.get("holdout_clicks", 0) >= config.min_holdout_clicks
        )
        if same:
            new, old = comparison["candidate"], comparison["published"]
            basis = f"same holdout: {comparison['holdout_rows']:,} impressions after the live ranker's data"
        else:
            new, old = candidate["ranker"], published.get("ranker", {})
            why = (comparison or {}).get("reason") or (
                f"{(comparison or {}).get('holdout_clicks', 0)} clicks after the live ranker's data "
                f"(< {config.min_holdout_clicks})"
            )
            basis = f"recorded test metrics ({why})"
        if old.get("auc") is not None:
            checks.append(
                _check(
                    "ranker AUC",
                    new["auc"],
                    old["auc"],
                    old["auc"] - new["auc"] <= config.max_auc_drop,
                    f"drop <= {config.max_auc_drop}",
                    basis,
                )
            )
        if old.get("logloss") is not None:
            checks.append(
                _check(
                    "ranker logloss",
                    new["logloss"],
                    old["logloss"],
                    new["logloss"] <= old["logloss"] * (1 + config.max_logloss_rise),
                    f"rise <= {config.max_logloss_rise:.0%}",
                    basis,
                )
            )
        if same and comparison.get("policy_value"):
            value = comparison["policy_value"]
            new_value, old_value = value["candidate"]["expected_clicks"], value["published"]["expected_clicks"]
            policy_basis = f"same holdout: {comparison.get('policy_requests', 0):,} requests, true click model"
        else:
            new_value = (candidate.get("policy_value") or {}).get("expected_clicks")
            old_value = (published.get("policy_value") or {}).get("expected_clicks")
            policy_basis = "recorded test metrics, true click model"
        if new_value is not None and old_value is not None:
            checks.append(
                _check(
                    "expected clicks per request",
                    new_value,
                    old_value,
                    new_value >= old_value * (1 - config.max_policy_drop),
                    f"drop <= {config.max_policy_drop:.0%}",
                    policy_basis,
                )
            )
    failed = [c for c in checks if not c["passed"]]
    reasons = [
        f"{c['check']}: {c['candidate']} against {c['published']} ({c['rule']}; {c['basis']})"
        if c["published"] is not None
        else f"{c['check']}: {c['candidate']} ({c['rule']})"
        for c in failed
    ]
    return {
        "blessed": not failed,
        "against": published.get("version") if published else None,
        "checks": checks,
        "reasons": reasons,
    }


def pair_metrics(evaluation: dict[str, Any], rank_report: dict[str, Any]) -> dict[str, Any]:
    """The metrics a pair is gated on (and recorded with when published): the embeddings' test NDCG@20 and the
    popularity baseline's, the ranker's overall test metrics and, where measured, its policy value."""
    ndcg = evaluation.get("ndcg@20", {})
    policy = (rank_report.get("policy_value") or {}).get("orders", {}).get("ranker")
    return {
        "ndcg": ndcg.get("graphrec"),
        "popularity_ndcg": ndcg.get("popularity"),
        "ranker": {k: rank_report["evaluation"]["test"]["overall"].get(k) for k in ("auc", "logloss", "gauc", "ece")},
        "policy_value": {k: policy[k] for k in ("expected_clicks", "ratio_to_oracle")} if policy else None,
    }
