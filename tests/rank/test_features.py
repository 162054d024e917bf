"""Point-in-time behaviour features: equal to a brute-force recount of the history strictly before each row,
blind to anything at or after it, one Float32 row per input row, and the same online as offline."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from graphrec.data.schema import EVENT_TYPES
from graphrec.errors import ConfigError
from graphrec.rank.features import (
    FEATURES,
    RankFeatureConfig,
    behaviour_features,
    encode_ids,
    feature_descriptions,
)

PLURAL = {
    "view": "views",
    "click": "clicks",
    "add_to_cart": "carts",
    "add_to_wishlist": "wishlists",
    "purchase": "purchases",
}
# Features that are whole counts (compared exactly); the others are ratios, days, angles or cosines (allclose).
RATIOS = ("share", "days", "hour_", "module_coec", "user_category_events", "similarity")
# The small shop's items and modules carry image vectors but no title vectors: those features are 0 throughout.
SIMILARITY = [name for name in FEATURES if name.endswith("_similarity")]
ABSENT = ["user_title_similarity", "session_title_similarity"]
COUNTS = [name for name in FEATURES if not any(part in name for part in RATIOS)]


def _features(shop, rows=None, events=None, impressions=None, config=None, feedback=None) -> pl.DataFrame:
    return behaviour_features(
        shop.impressions if rows is None else rows,
        (shop.events if events is None else events).lazy(),
        (shop.impressions if impressions is None else impressions).lazy(),
        shop.content,
        shop.items,
        config,
        feedback,
    )


def _shopper_feedback(shop) -> pl.DataFrame:
    """Feedback on modules shoppers were shown, 10 s after the impression (the generated shop records none)."""
    shown = shop.impressions.sample(600, seed=11).sort("timestamp")
    actions = np.random.default_rng(11).choice(["more_like_this", "hide", "hide_similar"], shown.height)
    return shown.select(
        "user_id", "content_id", (pl.col("timestamp") + timedelta(seconds=10)).alias("timestamp")
    ).with_columns(action=pl.Series(actions))


@pytest.fixture(scope="module")
def offline(small_shop) -> pl.DataFrame:
    """Features of every logged impression (rows = the impressions, row_id = position)."""
    return _features(small_shop)


class Reference:
    """The features recounted row by row in plain Python from the raw tables, keeping only timestamps < t."""

    def __init__(self, shop, config: RankFeatureConfig, feedback: pl.DataFrame | None = None) -> None:
        self.cfg = config
        self.feedback = feedback.to_dicts() if feedback is not None else []
        self.events = shop.events.with_columns(pl.col("event_type").cast(pl.String)).to_dicts()
        self.impressions = shop.impressions.to_dicts()
        self.by_user, self.by_session = defaultdict(list), defaultdict(list)
        for e in self.events:
            self.by_user[e["user_id"]].append(e)
            if e["session_id"] is not None:
                self.by_session[e["session_id"]].append(e)
        self.category = dict(zip(shop.items["item_id"], shop.items["category"], strict=True))
        self.brand = dict(zip(shop.items["item_id"], shop.items["brand"], strict=True))
        self.featured = {
            c: set(ids) for c, ids in zip(shop.content["content_id"], shop.content["item_ids"], strict=True)
        }
        self.launch = dict(zip(shop.content["content_id"], shop.content["launch"], strict=True))
        self.ctr: dict[tuple, float] = {}
        unit = lambda v: np.asarray(v, dtype=np.float64) / np.linalg.norm(v)  # noqa: E731
        self.image = {i: unit(v) for i, v in zip(shop.items["item_id"], shop.items["image_embedding"], strict=True)}
        self.module_image = {
            c: unit(v) for c, v in zip(shop.content["content_id"], shop.content["image_embedding"], strict=True)
        }

    def similarity(self, events: list[dict], module: str, module_clicks: bool = True) -> float:
        """Cosine between the module's image and the event-weighted sum of the item images of the item events and
        (unless `module_clicks` is False) of the module images of the content clicks."""
        profile = np.zeros(len(self.module_image[module]))
        for e in events:
            weight = self.cfg.event_weights[e["event_type"]]
            if e["item_id"] is not None:
                profile += weight * self.image[e["item_id"]]
            if module_clicks and e["content_id"] is not None and e["event_type"] == "click":
                profile += weight * self.module_image[e["content_id"]]
        norm = np.linalg.norm(profile)
        return float(profile @ self.module_image[module] / norm) if norm > 0 else 0.0

    def slot_ctr(self, day, device: str, slot: int) -> float:
        """CTR of (device, slot) on the days before `day`, shrunk to those days' CTR and that to the prior."""
        if (day, device, slot) not in self.ctr:
            k, p0 = self.cfg.slot_prior_impressions, self.cfg.prior_ctr
            earlier = [i for i in self.impressions if i["timestamp"].date() < day]
            overall = (sum(i["clicked"] for i in earlier) + k * p0) / (len(earlier) + k)
            cell = [i for i in earlier if i["device"] == device and i["slot"] == slot]
            self.ctr[day, device, slot] = (sum(i["clicked"] for i in cell) + k * overall) / (len(cell) + k)
        return self.ctr[day, device, slot]

    def row(self, row: dict) -> dict[str, float]:
        cfg, t, user, module = self.cfg, row["timestamp"], row["user_id"], row["content_id"]
        weight = cfg.event_weights
        mine = [e for e in self.by_user[user] if e["timestamp"] < t]
        items = [e for e in mine if e["item_id"] is not None]
        contents = [e for e in mine if e["content_id"] is not None]
        out: dict[str, float] = {}
        for kind in EVENT_TYPES:
            for days in cfg.windows_days:
                start = t - timedelta(days=days)
                out[f"user_{PLURAL[kind]}_{days}d"] = sum(
                    e["event_type"] == kind and e["timestamp"] >= start for e in items
                )
        out["user_item_events"] = len(items)
        out["user_content_views"] = sum(e["event_type"] == "view" for e in contents)
        out["user_content_clicks"] = sum(e["event_type"] == "click" for e in contents)
        out["user_days_since_first_event"] = (t - min(e["timestamp"] for e in mine)) / timedelta(days=1) if mine else 0

        featured = self.featured.get(module, set())
        categories = Counter(self.category[i] for i in featured if i in self.category)
        brands = Counter(self.brand[i] for i in featured if i in self.brand)
        user_weight = sum(weight[e["event_type"]] for e in items)
        per_category = Counter()
        for e in items:
            per_category[self.category.get(e["item_id"])] += weight[e["event_type"]]
        category_events = sum(n * per_category[c] for c, n in categories.items()) / max(1, sum(categories.values()))
        out["user_category_events"] = category_events
        out["user_category_share"] = category_events / user_weight if user_weight else 0
        main = min(brands, key=lambda b: (-brands[b], b)) if brands else None
        on_main = sum(weight[e["event_type"]] for e in items if self.brand.get(e["item_id"]) == main)
        share = brands[main] / sum(brands.values()) if brands else 0
        out["user_brand_share"] = share * on_main / user_weight if user_weight else 0
        out["user_featured_events"] = sum(e["item_id"] in featured for e in items)
        out["user_featured_any"] = float(out["user_featured_events"] > 0)

        in_session = [e for e in self.by_session.get(row["session_id"], []) if e["timestamp"] < t]
        session = [e for e in in_session if e["item_id"] is not None]
        n = len(session)
        out["session_item_events"] = n
        out["session_category_share"] = (
            sum(self.category.get(e["item_id"]) in categories for e in session) / n if n else 0
        )
        out["session_featured_events"] = sum(e["item_id"] in featured for e in session)
        out["session_featured_share"] = out["session_featured_events"] / n if n else 0
        out["user_image_similarity"] = self.similarity(mine, module)
        out["session_image_similarity"] = self.similarity(in_session, module)
        # Not features: the profiles of the items alone, to show that module clicks move the features.
        out["items_only_user_image_similarity"] = self.similarity(mine, module, module_clicks=False)
        out["items_only_session_image_similarity"] = self.similarity(in_session, module, module_clicks=False)
        out["user_title_similarity"] = out["session_title_similarity"] = 0.0

        cutoff = t - timedelta(seconds=cfg.feedback_delay_seconds)
        shown = [i for i in self.impressions if i["content_id"] == module and i["timestamp"] < cutoff]
        clicks = sum(i["clicked"] for i in shown)
        expected = sum(self.slot_ctr(i["timestamp"].date(), i["device"], i["slot"]) for i in shown)
        out["module_impressions"] = len(shown)
        out["module_clicks"] = clicks
        out["module_coec"] = (clicks + cfg.coec_prior_clicks) / (expected + cfg.coec_prior_clicks)
        first = min((i["timestamp"] for i in shown), default=None)
        out["module_days_since_first_impression"] = (t - first) / timedelta(days=1) if first else 0
        out["module_age_days"] = max(0.0, (t - self.launch[module]) / timedelta(days=1))
        to_user = [i for i in shown if i["user_id"] == user]
        out["user_module_impressions"] = len(to_user)
        out["user_module_clicks"] = sum(i["clicked"] for i in to_user)
        out["user_module_views"] = sum(e["content_id"] == module and e["event_type"] == "view" for e in contents)
        said = [
            f["action"]
            for f in self.feedback
            if (f["user_id"], f["content_id"]) == (user, module) and f["timestamp"] < t
        ]
        out["user_module_more_like_this"] = said.count("more_like_this")
        out["user_module_hidden"] = said.count("hide") + said.count("hide_similar")

        hour = t.hour + t.minute / 60 + t.second / 3_600
        out["hour_sin"], out["hour_cos"] = math.sin(2 * math.pi * hour / 24), math.cos(2 * math.pi * hour / 24)
        out["weekday"] = t.weekday()
        for device in cfg.devices:
            out[f"device_{device}"] = float(row["device"] == device)
        return out


def _sample(shop, n: int, seed: int = 0) -> list[int]:
    """Row positions of `n` impressions drawn at random."""
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(shop.impressions.height, size=n, replace=False).tolist())


def _after_module_clicks(shop, n: int) -> pl.DataFrame:
    """Rows (user, module, time, session, device) 30 s after each of `n` module clicks, in the clicking session,
    for 6 modules each: the shop's sessions hold one homepage request, before their clicks."""
    clicks = shop.events.filter(pl.col("content_id").is_not_null() & (pl.col("event_type") == "click")).head(n)
    modules = shop.content.select("content_id").head(6)
    return clicks.select(
        "user_id", (pl.col("timestamp") + timedelta(seconds=30)).alias("timestamp"), "session_id", "device"
    ).join(modules, how="cross")


@pytest.mark.parametrize("delay", [0, 45])
def test_every_feature_equals_a_brute_force_recount_of_the_history_before_t(small_shop, delay):
    config = RankFeatureConfig(feedback_delay_seconds=delay)
    feedback = _shopper_feedback(small_shop)
    features = _features(small_shop, config=config, feedback=feedback)
    reference = Reference(small_shop, config, feedback)
    picks = _sample(small_shop, 40, seed=delay)
    # Rows with in-session history and with featured-item history are the ones where bugs hide: add some.
    has_session = features.filter(pl.col("session_item_events") > 0)["row_id"].head(5).to_list()
    has_exposure = features.filter(pl.col("user_module_clicks") > 0)["row_id"].head(5).to_list()
    # And rows whose user clicked modules before, and rows just after module clicks in the clicking session: those
    # clicks join the content profiles.
    has_module_clicks = features.filter(pl.col("user_content_clicks") > 0)["row_id"].head(5).to_list()
    # And rows after the user's feedback on the module.
    said = (pl.col("user_module_more_like_this") > 0) | (pl.col("user_module_hidden") > 0)
    has_feedback = features.filter(said)["row_id"].head(5).to_list()
    assert len(has_feedback) == 5
    rows = [*picks, *has_session, *has_exposure, *has_module_clicks, *has_feedback]
    after_clicks = _after_module_clicks(small_shop, 8)
    after_features = _features(small_shop, rows=after_clicks, config=config, feedback=feedback)
    checked = [(small_shop.impressions, features, position) for position in rows]
    checked += [(after_clicks, after_features, position) for position in range(after_clicks.height)]
    moved = Counter()
    for row_table, feature_table, position in checked:
        expected = reference.row(row_table.row(position, named=True))
        got = feature_table.row(position, named=True)
        assert got["row_id"] == position
        for name in FEATURES:
            if name in COUNTS:
                assert got[name] == expected[name], (position, name)
            else:
                assert np.isclose(got[name], expected[name], rtol=1e-5, atol=1e-6), (position, name)
        for owner in ("user", "session"):
            name = f"{owner}_image_similarity"
            moved[owner] += not np.isclose(expected[name], expected[f"items_only_{name}"], rtol=1e-3, atol=1e-3)
    # Module clicks move both profiles on the checked rows: features that ignored them would fail the recount.
    assert moved["user"] >= 10 and moved["session"] >= 10, moved
    # The sample exercises every feature (none is trivially 0 on it) the shop has the data for.
    sample = features[rows]
    assert all(sample[name].abs().max() > 0 for name in FEATURES if name not in ABSENT)
    assert sample.select(ABSENT).sum_horizontal().abs().max() == 0


def test_events_and_impressions_at_or_after_t_change_no_feature(small_shop):
    events, impressions = small_shop.events, small_shop.impressions
    requests = impressions["request_id"].unique().sort()
    for request_id in requests.gather([len(requests) // 3, len(requests) // 2, len(requests) - 5]):
        rows = impressions.filter(pl.col("request_id") == request_id)
        t, user, session = rows["timestamp"][0], rows["user_id"][0], rows["session_id"][0]
        module, featured = (
            rows["content_id"][0],
            small_shop.content.filter(pl.col("content_id") == rows["content_id"][0]),
        )
        item = featured["item_ids"][0][0]
        # The whole log again from t on, the request's own click, its impressions again (clicked), and item events
        # at exactly t in its session on an item the first module features.
        later_events = pl.concat(
            [
                events.with_columns(pl.col("timestamp") + (t - events["timestamp"].min())),
                events.head(0).vstack(
                    pl.DataFrame(
                        {
                            "user_id": [user, user, user],
                            "item_id": [None, item, item],
                            "content_id": [module, None, None],
                            "event_type": ["click", "view", "purchase"],
                            "timestamp": [t + timedelta(seconds=5), t, t],
                            "session_id": [session] * 3,
                            "device": [rows["device"][0]] * 3,
                        },
                        schema=events.schema,
                    )
                ),
            ]
        )
        later_impressions = pl.concat(
            [
                impressions.with_columns(pl.col("timestamp") + (t - impressions["timestamp"].min())),
                rows.with_columns(pl.lit(1, dtype=pl.Int8).alias("clicked")),
            ]
        )
        before = _features(small_shop, rows=rows)
        after = _features(
            small_shop,
            rows=rows,
            events=pl.concat([events, later_events]),
            impressions=pl.concat([impressions, later_impressions]),
        )
        assert_frame_equal(before, after)


def test_one_float32_row_per_input_row_in_input_order_without_nulls(small_shop, offline):
    assert offline.columns == ["row_id", "slot", *FEATURES]
    assert offline.height == small_shop.impressions.height
    assert offline["row_id"].to_list() == list(range(offline.height))
    assert offline["slot"].equals(small_shop.impressions["slot"])
    assert all(offline.schema[name] == pl.Float32 for name in FEATURES)
    assert offline.null_count().sum_horizontal().item() == 0
    assert offline.select(pl.col(list(FEATURES)).is_nan().any()).sum_horizontal().item() == 0
    # Shuffled rows with their own ids come back in their order, each row's features unchanged.
    shuffled = (
        small_shop.impressions.with_row_index("row_id")
        .with_columns(pl.col("row_id") * 7 + 3)
        .sample(fraction=1.0, shuffle=True, seed=1)
    )
    again = _features(small_shop, rows=shuffled)
    assert again["row_id"].equals(shuffled["row_id"])
    restored = again.with_columns((pl.col("row_id") - 3) // 7).sort("row_id")
    assert_frame_equal(restored, offline, check_dtypes=False)
    # Without slot the output has no slot; rows at the log's first instant see no history at all (the shop's
    # first request follows its session's first item views).
    start = min(small_shop.events["timestamp"].min(), small_shop.impressions["timestamp"].min())
    first = small_shop.impressions.head(3).drop("slot").with_columns(pl.lit(start).alias("timestamp"))
    no_slot = _features(small_shop, rows=first)
    assert no_slot.columns == ["row_id", *FEATURES]
    history = [n for n in FEATURES if n.startswith(("user_", "session_", "module_")) and n not in ("module_coec",)]
    assert no_slot.select(history).drop("module_age_days").sum_horizontal().sum() == 0
    assert no_slot["module_coec"].to_list() == [1.0] * 3


@pytest.mark.parametrize("delay", [0, 3_600])
def test_rows_computed_in_time_chunks_get_the_features_of_all_at_once(small_shop, delay):
    """Large logs are computed a million rows at a time, each part from the events up to its last row and from the
    impressions' totals computed once for every row (read `delay` seconds before the row); shuffled rows with their
    own ids still come back in their order with the same features (up to float32 rounding of sums taken in another
    order)."""
    feedback = _shopper_feedback(small_shop)
    config = RankFeatureConfig(feedback_delay_seconds=delay)
    shuffled = small_shop.impressions.with_row_index("row_id").sample(fraction=1.0, shuffle=True, seed=2)
    whole = behaviour_features(
        shuffled, small_shop.events, small_shop.impressions, small_shop.content, small_shop.items, config, feedback
    )
    assert shuffled.height > 3 * 1_000
    chunked = behaviour_features(
        shuffled,
        small_shop.events,
        small_shop.impressions,
        small_shop.content,
        small_shop.items,
        config,
        feedback,
        chunk_rows=shuffled.height // 3 + 1,
    )
    assert chunked["row_id"].equals(shuffled["row_id"])
    assert_frame_equal(chunked, whole, check_exact=False, rel_tol=1e-6, abs_tol=1e-6)


def test_string_item_ids_read_as_codes_get_the_features_of_the_strings(small_shop):
    """Parts of a large log read every id as a 4-byte code (`encode_ids`): with string item ids too (featured lists,
    catalog, events), the features are those of the strings read as they are."""
    as_text = pl.col("item_id").cast(pl.String)
    events = small_shop.events.with_columns(as_text)
    items = small_shop.items.with_columns(as_text)
    content = small_shop.content.with_columns(pl.col("item_ids").cast(pl.List(pl.String)))
    rows = small_shop.impressions.with_row_index("row_id").with_columns(pl.col("row_id").cast(pl.Int64))
    whole = behaviour_features(rows, events, small_shop.impressions, content, items)
    chunked = behaviour_features(rows, events, small_shop.impressions, content, items, chunk_rows=rows.height // 2 + 1)
    assert whole["user_featured_events"].sum() > 0 and whole["user_category_events"].sum() > 0
    assert_frame_equal(chunked, whole, check_exact=False, rel_tol=1e-6, abs_tol=1e-6)
    assert encode_ids(events).schema["item_id"] == pl.Categorical
    assert encode_ids(small_shop.events).schema["item_id"] == small_shop.events.schema["item_id"]  # integers stay


def test_serving_features_equal_the_offline_features_of_the_same_request(small_shop, offline):
    impressions = small_shop.impressions.with_row_index("row_id")
    request = impressions.filter(pl.col("request_id") == impressions["request_id"].unique().sort()[500])
    user = request["user_id"][0]
    served = _features(small_shop, rows=request, events=small_shop.events.filter(pl.col("user_id") == user))
    offline_rows = offline.filter(pl.col("row_id").is_in(request["row_id"].implode()))
    assert_frame_equal(served, offline_rows.with_columns(pl.col("row_id").cast(served.schema["row_id"])))


def test_recent_events_of_the_request_raise_its_session_features(small_shop):
    events, content = small_shop.events, small_shop.content
    # A landing request (no item events of its session before it) of a user with history.
    earlier = small_shop.impressions.join(
        events.filter(pl.col("item_id").is_not_null()).select("session_id", pl.col("timestamp").alias("event_ts")),
        on="session_id",
    ).filter(pl.col("event_ts") < pl.col("timestamp"))
    landing = small_shop.impressions.join(earlier.select("request_id").unique(), on="request_id", how="anti")
    request = landing.filter(pl.col("request_id") == landing["request_id"].unique().sort()[200]).head(1)
    user, session, t, device = request.select("user_id", "session_id", "timestamp", "device").row(0)
    live = content.filter((pl.col("launch") <= t) & (t < pl.col("end")))
    rows = live.select(
        pl.lit(user).alias("user_id"),
        "content_id",
        pl.lit(t).alias("timestamp"),
        pl.lit(session).alias("session_id"),
        pl.lit(device).alias("device"),
    )
    target = live.filter(pl.col("item_ids").list.len() >= 3)["content_id"][0]
    viewed = live.filter(pl.col("content_id") == target)["item_ids"][0][:3]
    recent = pl.DataFrame(
        {
            "user_id": [user] * 3,
            "item_id": viewed,
            "content_id": [None] * 3,
            "event_type": ["view"] * 3,
            "timestamp": [t - timedelta(seconds=s) for s in (30, 20, 10)],
            "session_id": [session] * 3,
            "device": [device] * 3,
        },
        schema=events.schema,
    )
    history = events.filter((pl.col("user_id") == user) & (pl.col("timestamp") < t))
    before = _features(small_shop, rows=rows, events=history)
    after = _features(small_shop, rows=rows, events=pl.concat([history, recent]))
    at = rows["content_id"].to_list().index(target)
    assert before["session_item_events"].max() == 0 and after["session_item_events"].min() == 3
    assert after["user_views_1d"].to_list() == [v + 3 for v in before["user_views_1d"]]
    assert after["session_featured_events"][at] == 3 and after["session_featured_share"][at] == 1.0
    assert after["session_category_share"][at] == 1.0
    assert after["user_featured_events"][at] == before["user_featured_events"][at] + 3
    assert after["user_featured_any"][at] == 1.0
    # Modules featuring none of the viewed items gain no featured events; module statistics do not move.
    others = ~live["item_ids"].list.eval(pl.element().is_in(pl.lit(viewed).implode())).list.any()
    assert after.filter(others)["session_featured_events"].max() == 0
    module_columns = [n for n in FEATURES if n.startswith("module_")]
    assert_frame_equal(before.select(module_columns), after.select(module_columns))


def test_features_are_deterministic(small_shop, offline):
    assert_frame_equal(_features(small_shop), offline)


def test_missing_impressions_and_items_give_zero_features_not_errors(small_shop):
    rows = small_shop.impressions.sample(200, seed=3)
    full = _features(small_shop, rows=rows)
    bare = behaviour_features(rows, small_shop.events.lazy(), None, small_shop.content, None)
    impression_features = [
        n for n in FEATURES if n.startswith(("module_", "user_module_")) and n != "user_module_views"
    ]
    catalog_features = ["user_category_events", "user_category_share", "user_brand_share", "session_category_share"]
    zero = [n for n in impression_features + catalog_features if n not in ("module_coec", "module_age_days")]
    assert bare.select(zero).sum_horizontal().sum() == 0
    assert bare["module_coec"].unique().to_list() == [1.0]
    kept = [n for n in FEATURES if n not in impression_features + catalog_features + SIMILARITY]
    assert_frame_equal(bare.select(kept), full.select(kept))
    # Without items the content profiles hold the module clicks alone, as with items without vectors or with
    # vectors of another size; with them, the items' vectors join.
    assert bare["user_image_similarity"].abs().max() > 0
    for items in (
        small_shop.items.drop("image_embedding"),
        small_shop.items.with_columns(pl.col("image_embedding").arr.slice(0, 16, as_array=True)),
    ):
        clicks_only = behaviour_features(rows, small_shop.events.lazy(), None, small_shop.content, items)
        assert_frame_equal(clicks_only.select(SIMILARITY), bare.select(SIMILARITY))
    assert not full.select(SIMILARITY).equals(bare.select(SIMILARITY))


def test_config_names_the_windows_and_rejects_nonsense(small_shop):
    config = RankFeatureConfig(windows_days=(3,), devices=("app",))
    out = _features(small_shop, rows=small_shop.impressions.head(50), config=config)
    assert out.columns == ["row_id", "slot", *feature_descriptions(config)]
    assert "user_purchases_3d" in out.columns and "user_views_7d" not in out.columns and "device_desktop" not in out
    for bad in ({"windows_days": ()}, {"windows_days": (0,)}, {"coec_prior_clicks": 0}, {"prior_ctr": 1.5}):
        with pytest.raises(ConfigError):
            RankFeatureConfig(**bad)
    with pytest.raises(ConfigError, match="event_weights"):
        RankFeatureConfig(event_weights={"view": 1.0})


def test_windows_hold_the_events_from_t_minus_the_window_to_just_before_t(small_shop):
    t = small_shop.impressions["timestamp"].max() + timedelta(days=1)
    module = small_shop.content["content_id"][0]
    item = small_shop.content["item_ids"][0][0]
    us = timedelta(microseconds=1)
    offsets = [timedelta(0), us, timedelta(days=1), timedelta(days=1) + us, timedelta(days=7), timedelta(days=7) + us]
    events = pl.DataFrame(
        {
            "user_id": ["u-new"] * len(offsets),
            "item_id": [item] * len(offsets),
            "content_id": [None] * len(offsets),
            "event_type": ["view"] * len(offsets),
            "timestamp": [t - offset for offset in offsets],
            "session_id": ["s-new"] * len(offsets),
            "device": ["app"] * len(offsets),
        },
        schema=small_shop.events.schema,
    )
    rows = pl.DataFrame({"user_id": ["u-new"], "content_id": [module], "timestamp": [t], "session_id": ["s-new"]})
    out = _features(small_shop, rows=rows, events=events).row(0, named=True)
    # At t: not counted; t - 1 us and t - 1 day: in the 1-day window; t - 1 day - 1 us and t - 7 days: 7 days.
    assert (out["user_views_1d"], out["user_views_7d"], out["user_views_28d"]) == (2, 4, 5)
    assert out["user_days_since_first_event"] == pytest.approx(7, abs=1e-6)
    assert out["session_featured_events"] == out["user_featured_events"] == 5
    assert out["device_app"] == out["device_desktop"] == 0  # no device given
