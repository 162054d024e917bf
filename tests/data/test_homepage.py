"""The generated homepage: its click model explains the logged clicks, its propensities are the policy's."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from graphrec.data.homepage import ClickModel, ReferenceScorer, policy_distribution, sample_policy, top_orders


def _logged_orders(shop) -> tuple[np.ndarray, np.ndarray]:
    model = shop.click_model
    requests = model.request_index(shop.impressions["request_id"].to_numpy())
    orders = np.full((len(model.request_ids), model.homepage.max_slots), -1)
    orders[requests, shop.impressions["slot"].to_numpy()] = model.module_index(shop.impressions["content_id"])
    return np.arange(len(model.request_ids)), orders


def test_expected_clicks_of_the_logged_orders_match_the_logged_clicks(small_shop):
    requests, orders = _logged_orders(small_shop)
    expected = small_shop.click_model.expected_clicks(requests, orders)
    joined = small_shop.impressions.join(small_shop.truth, on=["request_id", "slot"])
    p = joined["click_prob"].to_numpy()
    clicks = joined["clicked"].sum()
    assert expected.sum() == pytest.approx(p.sum(), rel=1e-9)
    assert abs(clicks - expected.sum()) < 4 * np.sqrt((p * (1 - p)).sum())  # within sampling error
    # Per slot too: the examination curve is the one the clicks follow.
    for slot in (0, 3):
        at = joined.filter(pl.col("slot") == slot)
        q = at["click_prob"].to_numpy()
        assert abs(at["clicked"].sum() - q.sum()) < 4 * np.sqrt((q * (1 - q)).sum()) + 1


def test_truth_parts_and_a_reloaded_model_reproduce_every_relevance(small_shop, tmp_path):
    truth = small_shop.truth
    logit = small_shop.click_model.homepage.base_logit + sum(
        truth[c].to_numpy() for c in truth.columns if c.startswith("logit_")
    )
    assert np.allclose(1 / (1 + np.exp(-logit)), truth["relevance_prob"].to_numpy())
    small_shop.click_model.save(tmp_path / "click_model.npz")
    model = ClickModel.load(tmp_path)
    requests = model.request_index(truth["request_id"].to_numpy())
    modules = model.module_index(truth["content_id"].to_numpy())
    # Fatigue counted from the logged examinations only equals the generator's: the cut dropped none it counted.
    assert np.array_equal(model.earlier_examinations(requests, modules), truth["earlier_examinations"].to_numpy())
    assert np.allclose(model.relevance(requests, modules), truth["relevance_prob"].to_numpy())
    assert np.allclose(model.examination(requests, truth["slot"].to_numpy()), truth["examine_prob"].to_numpy())
    assert truth["earlier_examinations"].max() > 0  # fatigue is exercised


def test_logged_propensities_are_the_policy_distribution(small_shop):
    model = small_shop.click_model
    imp = small_shop.impressions.sort("request_id", "slot")
    exploration = model.homepage.exploration
    for request_id in imp["request_id"].unique().sort().head(40):
        rows = imp.filter(pl.col("request_id") == request_id)
        request = model.request_index([request_id])
        logits = model.policy_logits(request)[0]
        taken = np.zeros(len(logits), dtype=bool)
        for content_id, propensity in rows.select("content_id", "propensity").iter_rows():
            distribution = policy_distribution(logits, taken, exploration)
            assert distribution.sum() == pytest.approx(1.0)
            module = model.module_index([content_id])[0]
            assert distribution[module] == pytest.approx(propensity, rel=1e-6)
            taken[module] = True


def test_policy_choice_frequencies_match_its_propensities():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([8.0, 4.0, 2.0, 1.0, 1.0, 0.5, 0.25, 0.25, np.nan, 0.1]))
    logits[8] = -np.inf  # not a candidate
    n = 40_000
    picks, propensity = sample_policy(np.tile(logits, (n, 1)), np.full(n, 3), 0.2, rng)
    assert (picks != 8).all() and (picks >= 0).all()
    for slot, taken_modules in ((0, []), (1, [0])):
        rows = np.ones(n, dtype=bool) if slot == 0 else picks[:, 0] == 0
        taken = np.isin(np.arange(10), taken_modules)
        distribution = policy_distribution(logits, taken, 0.2)
        frequency = np.bincount(picks[rows, slot], minlength=10) / rows.sum()
        tolerance = 4 * np.sqrt(distribution * (1 - distribution) / rows.sum()) + 1e-9
        assert (np.abs(frequency - distribution) <= tolerance).all()
        assert np.allclose(propensity[rows, slot], distribution[picks[rows, slot]])


def test_oracle_order_is_best_and_references_rank_below_it(small_shop):
    model = small_shop.click_model
    requests, logged = _logged_orders(small_shop)
    scorer = ReferenceScorer.fit(model, sample=300)
    value = {}
    for kind in ("oracle", "one_hop", "non_personal"):
        orders = top_orders(scorer.scores(kind, requests), model.homepage.max_slots)
        value[kind] = model.expected_clicks(requests, orders)
    assert (value["oracle"] >= value["one_hop"] - 1e-12).all()
    assert (value["oracle"] >= value["non_personal"] - 1e-12).all()
    assert (value["oracle"] >= model.expected_clicks(requests, logged) - 1e-12).all()
    # A shuffled oracle page is worse: the best order puts the most relevant modules where examination is highest.
    oracle = top_orders(scorer.scores("oracle", requests), model.homepage.max_slots)
    shuffled = np.random.default_rng(1).permuted(oracle, axis=1)
    assert model.expected_clicks(requests, shuffled).sum() < value["oracle"].sum()


def test_modules_are_shown_only_while_live_and_new_ones_launch_daily(small_shop):
    content = small_shop.content
    shown = small_shop.impressions.join(content, on="content_id")
    assert shown.filter((pl.col("timestamp") < pl.col("launch")) | (pl.col("timestamp") >= pl.col("end"))).height == 0
    start = small_shop.events["timestamp"].min()
    launches = content.filter(pl.col("launch") >= start)["launch"].dt.date().n_unique()
    assert launches >= small_shop.config.days - 1


def test_requests_and_sessions_join_impressions_to_their_session_events(small_shop):
    events, imp = small_shop.events, small_shop.impressions
    requests = imp.group_by("request_id").agg(
        pl.col("session_id").first(),
        pl.col("user_id").first(),
        pl.col("session_id").n_unique().alias("sessions"),
        pl.col("clicked").sum().alias("clicks"),
        pl.col("timestamp").first(),
    )
    assert (requests["sessions"] == 1).all()
    by_session = events.group_by("session_id").agg(pl.col("user_id").unique().alias("users"))
    joined = requests.join(by_session, on="session_id", how="left")
    assert joined["users"].null_count() == 0  # every request's session has events
    assert (joined["users"].list.len() == 1).all()
    assert (joined["users"].list.first() == joined["user_id"]).all()
    # The session's content clicks are the request's clicked impressions.
    content_clicks = (
        events.filter(pl.col("content_id").is_not_null(), pl.col("event_type") == "click").group_by("session_id").len()
    )
    counted = requests.join(content_clicks, on="session_id", how="left").with_columns(pl.col("len").fill_null(0))
    assert (counted["len"] >= counted["clicks"]).all()
    assert counted["len"].sum() == counted["clicks"].sum()
    # Some requests come after item views of the same session: the session's recent intent is in the logs.
    before = events.join(requests.select("session_id", pl.col("timestamp").alias("request_time")), on="session_id")
    assert before.filter(pl.col("item_id").is_not_null(), pl.col("timestamp") < pl.col("request_time")).height > 0


def test_cold_users_and_heavy_users(small_shop):
    first = small_shop.events.group_by("user_id").agg(pl.col("timestamp").min(), pl.len())
    start = small_shop.events["timestamp"].min()
    late = first.filter(pl.col("timestamp") > start + pl.duration(days=small_shop.config.days // 2))
    assert late.height > 0.05 * first.height  # users arrive during the period
    counts = np.sort(first["len"].to_numpy())
    assert counts[-len(counts) // 20 :].sum() > 0.2 * counts.sum()  # the top 5 % of users hold a fifth of events
