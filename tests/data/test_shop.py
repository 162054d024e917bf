from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import polars as pl

from graphrec.data.config import ShopConfig, ValidationConfig
from graphrec.data.shop import generate_shop, write_shop
from graphrec.data.validation import validate_events, validate_impressions
from tests.conftest import SMALL_SHOP


def test_deterministic_per_seed(small_shop):
    again = generate_shop(SMALL_SHOP)
    assert small_shop.events.equals(again.events)
    assert small_shop.impressions.equals(again.impressions)
    assert small_shop.truth.equals(again.truth)
    assert small_shop.content.equals(again.content)
    assert np.array_equal(small_shop.click_model.exposure_keys, again.click_model.exposure_keys)
    assert np.array_equal(small_shop.click_model.request_intent, again.click_model.request_intent)
    other = generate_shop(replace(SMALL_SHOP, seed=SMALL_SHOP.seed + 1))
    assert not small_shop.events.equals(other.events)


def test_event_count_lands_on_target(small_shop):
    assert abs(small_shop.events.height - SMALL_SHOP.target_events) < 50


def test_generated_events_pass_validation(small_shop):
    result = validate_events(small_shop.events, ValidationConfig(max_bad_fraction=0.0))
    assert result.report.quarantined == 0
    assert validate_impressions(small_shop.impressions, ValidationConfig(max_bad_fraction=0.0)).report.used == (
        small_shop.impressions.height
    )


def test_funnel_purchases_follow_carts_and_views(small_shop):
    events = small_shop.events.filter(pl.col("item_id").is_not_null())
    first = events.group_by("user_id", "item_id", "event_type").agg(pl.col("timestamp").min())
    wide = first.pivot(on="event_type", index=["user_id", "item_id"], values="timestamp")
    purchases = wide.filter(pl.col("purchase").is_not_null())
    assert purchases.height > 0
    assert purchases.filter(pl.col("add_to_cart").is_null() | (pl.col("add_to_cart") > pl.col("purchase"))).height == 0
    assert purchases.filter(pl.col("view").is_null() | (pl.col("view") > pl.col("purchase"))).height == 0


def test_position_bias_and_truth(small_shop):
    joined = small_shop.impressions.join(small_shop.truth, on=["request_id", "slot"])
    by_slot = joined.group_by("slot").agg(pl.col("clicked").mean(), pl.col("click_prob").mean()).sort("slot")
    ctr = by_slot["clicked"].to_numpy()
    assert ctr[0] > ctr[-1] * 1.5  # top slots are examined more
    # The recorded click probabilities explain the observed clicks.
    assert abs(joined["clicked"].mean() - joined["click_prob"].mean()) < 0.01
    top_decile = joined.filter(pl.col("click_prob") >= pl.col("click_prob").quantile(0.9))["clicked"].mean()
    assert top_decile > 2 * joined["clicked"].mean()


def test_popularity_is_heavy_tailed_and_daily_rhythm(small_shop):
    views = small_shop.events.filter(pl.col("event_type") == "view", pl.col("item_id").is_not_null())
    counts = np.sort(views.group_by("item_id").len()["len"].to_numpy())[::-1]
    top = counts[: max(1, len(counts) // 10)].sum() / counts.sum()
    assert top > 0.35  # the top 10% of items draw over a third of views
    hours = small_shop.events["timestamp"].dt.hour().value_counts().sort("timestamp")
    by_hour = dict(zip(hours["timestamp"], hours["count"], strict=True))
    assert by_hour[20] > 3 * by_hour[3]


def test_users_browse_their_interests(small_shop):
    events = small_shop.events.filter(pl.col("item_id").is_not_null()).join(
        small_shop.items.select("item_id", "category"), on="item_id"
    )
    per_user = events.group_by("user_id").agg(pl.col("category").n_unique().alias("categories"), pl.len())
    active = per_user.filter(pl.col("len") >= 30)
    assert active["categories"].median() < SMALL_SHOP.n_categories / 2


def test_content_modules_feature_catalog_items(small_shop):
    featured = small_shop.content["item_ids"].explode()
    assert featured.is_in(small_shop.items["item_id"].implode()).all()
    assert set(small_shop.content["module_type"]) == {"carousel", "banner", "teaser", "editorial", "brand_page"}


def test_new_arrivals_go_on_sale_during_the_period_and_never_appear_before(small_shop):
    launch = small_shop.item_launch
    start = launch["launch"].min()
    arrivals = launch.filter(pl.col("launch") > start)
    assert arrivals.height == small_shop.stats["new_items"] == round(SMALL_SHOP.new_item_share * SMALL_SHOP.n_items)
    assert arrivals["launch"].dt.date().n_unique() > SMALL_SHOP.days // 2  # spread over the period
    item_events = small_shop.events.filter(pl.col("item_id").is_not_null()).join(launch, on="item_id")
    assert item_events.filter(pl.col("timestamp") < pl.col("launch")).height == 0
    # Promoted arrivals are bought: some purchases go to items that launched after the first week.
    late = arrivals.filter(pl.col("launch") >= start + pl.duration(days=7))
    bought = item_events.filter(pl.col("event_type") == "purchase")["item_id"]
    assert bought.is_in(late["item_id"].implode()).sum() > 0
    # A module features only items on sale by its launch (or by the start, for modules launched before it).
    featured = small_shop.content.select("launch", pl.col("item_ids").alias("item_id")).explode("item_id")
    featured = featured.join(launch.rename({"launch": "item_launch"}), on="item_id")
    on_sale_by = pl.max_horizontal("launch", pl.lit(start))
    assert featured.filter(pl.col("item_launch") > on_sale_by).height == 0
    assert featured.filter(pl.col("item_launch") > start).height > 0  # later modules do feature arrivals


def test_a_shop_without_arrivals_has_every_item_from_the_start():
    shop = generate_shop(replace(SMALL_SHOP, new_item_share=0.0, target_events=3_000))
    assert shop.item_launch["launch"].n_unique() == 1 and shop.stats["new_items"] == 0


def test_corrupt_fraction_injects_each_fault():
    shop = generate_shop(replace(SMALL_SHOP, corrupt_fraction=0.01))
    result = validate_events(shop.events, ValidationConfig(max_bad_fraction=1.0))
    reasons = result.report.reasons
    assert reasons["null_user_id"] > 0 and reasons["unknown_event_type"] > 0 and reasons["future_timestamp"] > 0
    assert reasons["duplicate"] > 0


def test_write_shop_and_scaled_config(tmp_path):
    config = ShopConfig.scaled_to(5_000, seed=3)
    assert config.target_events == 5_000 and config.seed == 3
    out = write_shop(generate_shop(config), tmp_path / "shop")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["seed"] == 3 and manifest["stats"]["events"] > 4_900
    assert {p.name for p in out.iterdir()} >= {
        "events.parquet",
        "impressions_truth.parquet",
        "click_model.npz",
        "manifest.json",
    }
    assert len(manifest["stats"]["ctr_by_slot"]) == config.homepage.max_slots
