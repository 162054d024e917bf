"""Request-time features from the in-memory index equal the offline `behaviour_features` of the same rows and
events: for known and unknown users, with fresh session events, at a time inside the log and after it, with and
without a feedback delay."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from graphrec.rank.config import RankFeatureConfig
from graphrec.rank.features import behaviour_features
from graphrec.rank.online import FeatureState, RecentEvents

US = 1_000_000


def _offline(shop, user_id, modules, when, device, session_id, recent_rows, config):
    """behaviour_features of (user, module, when) rows over the shop's events plus `recent_rows`."""
    rows = pl.DataFrame(
        {
            "user_id": [user_id] * len(modules),
            "content_id": modules,
            "timestamp": [when] * len(modules),
            "session_id": [session_id] * len(modules),
            "device": [device] * len(modules),
        },
        schema={
            "user_id": shop.events.schema["user_id"],
            "content_id": shop.content.schema["content_id"],
            "timestamp": pl.Datetime("us", "UTC"),
            "session_id": pl.String,
            "device": pl.String,
        },
    )
    events = shop.events
    if recent_rows:
        extra = pl.DataFrame(recent_rows).with_columns(
            pl.col("user_id").cast(events.schema["user_id"]),
            pl.col("item_id").cast(events.schema["item_id"]),
            pl.col("content_id").cast(events.schema["content_id"]),
            pl.col("event_type").cast(events.schema["event_type"]),
            pl.col("timestamp").cast(pl.Datetime("us", "UTC")),
            pl.col("session_id").cast(events.schema["session_id"]),
            pl.col("device").cast(events.schema["device"]),
        )
        events = pl.concat([events, extra.select(events.columns)])
    out = behaviour_features(rows, events.lazy(), shop.impressions.lazy(), shop.content, shop.items, config)
    return out.drop("row_id").to_numpy()


@pytest.fixture(scope="module", params=[0, 600], ids=["no_delay", "delay_600s"])
def state(small_shop, request):
    config = RankFeatureConfig(feedback_delay_seconds=request.param)
    return FeatureState(small_shop.events, small_shop.impressions, small_shop.content, small_shop.items, config)


def _cases(shop):
    imps = shop.impressions.sort("timestamp")
    end = max(shop.events["timestamp"].max(), imps["timestamp"].max())
    middle = imps["timestamp"][imps.height // 2]
    heavy = shop.events.group_by("user_id").len().sort("len", descending=True)["user_id"][0]
    shown = imps.filter(pl.col("user_id") == heavy)["content_id"].unique().sort().to_list()
    return end, middle, heavy, shown


@pytest.mark.parametrize("moment", ["after_the_log", "inside_the_log"])
def test_request_features_equal_the_offline_features(small_shop, state, moment):
    end, middle, heavy, shown = _cases(small_shop)
    when = end + timedelta(hours=3) if moment == "after_the_log" else middle
    modules = sorted(set(shown[:10]) | set(small_shop.content["content_id"].head(20).to_list()))
    index = np.array([state.module_of(m) for m in modules])
    for device in ("mobile", "desktop", None):
        online = state.features(heavy, index, int(when.timestamp() * US), device).dense
        offline = _offline(small_shop, heavy, modules, when, device, None, [], state.config)
        np.testing.assert_allclose(online, offline, rtol=2e-6, atol=2e-6, err_msg=f"device {device}")
    assert online[:, state.names.index("user_module_impressions")].sum() > 0  # the case exercises exposure
    assert online[:, state.names.index("user_content_clicks")].min() > 0  # and module clicks in the content profile


def test_fresh_session_events_count_like_logged_ones(small_shop, state):
    end, _, heavy, _ = _cases(small_shop)
    when = end + timedelta(days=2)
    t = int(when.timestamp() * US)
    content = small_shop.content
    module_items = content.filter(pl.col("item_ids").list.len() > 2).row(0, named=True)
    items = module_items["item_ids"][:3]
    modules = content["content_id"].head(30).to_list()
    index = np.array([state.module_of(m) for m in modules])
    for user in (heavy, "a-shopper-the-log-never-saw" if small_shop.events.schema["user_id"] == pl.String else 10**9):
        kinds = ["view", "view", "add_to_cart", "click"]
        stamps = [t - 50 * US, t - 40 * US, t - 30 * US, t - 20 * US]
        recent = RecentEvents(
            item_ids=[*items, None],
            content_ids=[None, None, None, module_items["content_id"]],
            event_types=kinds,
            timestamps=stamps,
        )
        online = state.features(user, index, t, "mobile", "fresh-session", recent)
        rows = [
            {
                "user_id": user,
                "item_id": item,
                "content_id": module,
                "event_type": kind,
                "timestamp": stamp,
                "session_id": "fresh-session",
                "device": "mobile",
            }
            for item, module, kind, stamp in zip([*items, None], recent.content_ids, kinds, stamps, strict=True)
        ]
        for row in rows:
            row["timestamp"] = pl.Series([row["timestamp"]]).cast(pl.Datetime("us", "UTC"))[0]
        offline = _offline(small_shop, user, modules, when, "mobile", "fresh-session", rows, state.config)
        np.testing.assert_allclose(online.dense, offline, rtol=2e-6, atol=2e-6, err_msg=f"user {user}")
        featured = online.dense[modules.index(module_items["content_id"]), state.names.index("session_featured_events")]
        assert featured == 3  # the three fresh views and carts on its items
        # The fresh module click is in the session's content profile (and the user's), offline as online.
        without_click = RecentEvents(items, [None] * 3, kinds[:3], stamps[:3])
        unclicked = state.features(user, index, t, "mobile", "fresh-session", without_click).dense
        for name in ("session_image_similarity", "user_image_similarity"):
            column = state.names.index(name)
            assert np.abs(online.dense[:, column] - unclicked[:, column]).max() > 1e-3, name
    assert not state.features("a-shopper-the-log-never-saw", index, t).known_user


def test_events_at_or_after_the_request_time_do_not_count(small_shop, state):
    end, _, heavy, _ = _cases(small_shop)
    t = int((end + timedelta(hours=1)).timestamp() * US)
    index = np.arange(10)
    item = small_shop.content["item_ids"][0][0]
    base = state.features(heavy, index, t).dense
    late = RecentEvents([item, item], [None, None], ["view", "purchase"], [t, t + US])
    np.testing.assert_array_equal(state.features(heavy, index, t, recent=late).dense, base)


def test_active_modules_follow_launch_and_end(small_shop, state):
    content = small_shop.content
    if "launch" not in content.columns:
        pytest.skip("the small shop's content has no launch column")
    t = content["launch"].drop_nulls().sort()[content.height // 2]
    active = {state.module_ids[i] for i in state.active_modules(int(t.timestamp() * US))}
    expected = content.filter(
        (pl.col("launch").is_null() | (pl.col("launch") <= t)) & (pl.col("end").is_null() | (pl.col("end") > t))
    )["content_id"].to_list()
    assert active == set(expected) and active


def test_sparse_and_dense_category_tables_give_the_same_features(small_shop, monkeypatch):
    import graphrec.rank.online as online

    tables = (small_shop.events, small_shop.impressions, small_shop.content, small_shop.items)
    dense = FeatureState(*tables)
    monkeypatch.setattr(online, "DENSE_LIMIT", 0)
    sparse_state = FeatureState(*tables)
    assert not isinstance(sparse_state.categories, np.ndarray) and isinstance(dense.categories, np.ndarray)
    end, _, heavy, _ = _cases(small_shop)
    t = int((end + timedelta(hours=1)).timestamp() * US)
    index = np.arange(dense.n_modules)
    np.testing.assert_array_equal(sparse_state.features(heavy, index, t).dense, dense.features(heavy, index, t).dense)
    assert sparse_state.top_category(3, np.ones(dense.n_categories)) == dense.top_category(
        3, np.ones(dense.n_categories)
    )
