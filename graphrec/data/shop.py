"""A generated shop: users, catalog, content modules, a behaviour funnel and homepage impressions.

Deterministic for a seed. Users hold latent interests over categories and a small consideration set of items
they return to; item popularity is Zipf-distributed within categories; sessions follow a daily rhythm. Homepage
requests fill slots with content modules and clicks follow a position-based click model:
P(click) = P(examine | slot) * P(relevant | user, module), with P(examine | slot) = 1 / (slot + 1) ** bias_power.
The true click probability of every impression is written to a separate ground-truth table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from graphrec.artifacts import atomic_directory, code_version, utc_now_iso, write_json_atomic
from graphrec.data.config import ShopConfig
from graphrec.data.schema import EVENT_TYPE_DTYPE, TIMESTAMP_DTYPE

MODULE_TYPES = ("carousel", "banner", "teaser", "editorial")
DEVICES = ("mobile_web", "desktop", "app")
# Share of sessions per hour of day (UTC): quiet nights, a lunch bump and an evening peak.
HOURLY_RHYTHM = np.array(
    [
        1,
        0.6,
        0.4,
        0.3,
        0.3,
        0.5,
        1.0,
        1.8,
        2.4,
        2.6,
        2.8,
        3.0,
        3.6,
        3.2,
        2.8,
        2.8,
        3.0,
        3.4,
        4.2,
        5.0,
        5.4,
        4.8,
        3.4,
        2.0,
    ]
)


@dataclass
class Shop:
    """The generated tables, in the input contract's format."""

    events: pl.DataFrame
    items: pl.DataFrame
    content: pl.DataFrame
    impressions: pl.DataFrame
    truth: pl.DataFrame
    config: ShopConfig
    stats: dict[str, Any] = field(default_factory=dict)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _segment_cumsum(gaps: np.ndarray, group_start: np.ndarray) -> np.ndarray:
    """Cumulative sum of `gaps` restarting at every index where group_start is True."""
    total = np.cumsum(gaps)
    starts = np.flatnonzero(group_start)
    offsets = np.zeros_like(total)
    offsets[starts[1:]] = total[starts[1:] - 1]
    return total - np.maximum.accumulate(offsets)


def generate_shop(config: ShopConfig | None = None) -> Shop:
    """Generate a shop deterministically from `config.seed`."""
    cfg = config or ShopConfig()
    rng = np.random.default_rng(cfg.seed)
    n_cat, n_items, n_users, n_content = cfg.n_categories, cfg.n_items, cfg.n_users, cfg.n_content

    # Catalog: items sorted by category so that each category is one contiguous segment.
    category_weight = rng.dirichlet(np.full(n_cat, 2.0))
    item_category = np.sort(rng.choice(n_cat, size=n_items, p=category_weight))
    category_start = np.searchsorted(item_category, np.arange(n_cat + 1))
    shuffled_rank = np.empty(n_items)
    for c in range(n_cat):  # one permutation per category, a few hundred at most
        lo, hi = category_start[c], category_start[c + 1]
        shuffled_rank[lo:hi] = rng.permutation(hi - lo)
    popularity = 1.0 / (shuffled_rank + 1.0) ** cfg.popularity_exponent
    category_mass = np.bincount(item_category, weights=popularity, minlength=n_cat)
    within = popularity / np.maximum(category_mass[item_category], 1e-12)
    # Category c occupies [c, c + 1) of this cumulative scale: sampling an item of c is searchsorted(c + u).
    first_of_category = np.r_[True, item_category[1:] != item_category[:-1]]
    item_scale = item_category + _segment_cumsum(within, first_of_category)
    empty = category_start[1:] == category_start[:-1]

    brands_per_category = max(2, cfg.n_brands // max(1, n_cat // 2))
    item_brand = (item_category * 7 + rng.integers(0, brands_per_category, n_items)) % cfg.n_brands
    price_level = rng.lognormal(3.0, 0.8, n_cat)
    item_price = np.round(price_level[item_category] * rng.lognormal(0.0, 0.4, n_items), 2)
    item_ids = np.sort(rng.choice(20 * n_items, size=n_items, replace=False)) + 1_000

    # Users: a few interest categories with Dirichlet weights, and a consideration set drawn from them.
    occupied = np.flatnonzero(~empty)
    occupied_weight = category_weight[occupied] / category_weight[occupied].sum()
    interests = occupied[rng.choice(len(occupied), size=(n_users, cfg.interests_per_user), p=occupied_weight)]
    interest_weight = rng.dirichlet(np.full(cfg.interests_per_user, cfg.interest_concentration), size=n_users)
    interest_cum = np.cumsum(interest_weight, axis=1)
    user_activity = rng.lognormal(0.0, 1.0, n_users)
    user_device = rng.choice(len(DEVICES), size=n_users, p=[0.55, 0.25, 0.20])

    def sample_items(users: np.ndarray) -> np.ndarray:
        slot = (rng.random(len(users))[:, None] > interest_cum[users]).sum(axis=1)
        slot = np.minimum(slot, cfg.interests_per_user - 1)
        category = interests[users, slot]
        index = np.searchsorted(item_scale, category + rng.random(len(users)) * (1 - 1e-9))
        return np.clip(index, category_start[category], category_start[category + 1] - 1)

    consideration = sample_items(np.repeat(np.arange(n_users), cfg.consideration_set)).reshape(
        n_users, cfg.consideration_set
    )
    user_affinity = np.zeros((n_users, n_cat))
    np.add.at(
        user_affinity,
        (np.repeat(np.arange(n_users), cfg.interests_per_user), interests.ravel()),
        interest_weight.ravel(),
    )

    # Content modules: each features 1-3 categories and up to 12 of their most popular items.
    module_type = rng.choice(len(MODULE_TYPES), size=n_content, p=[0.4, 0.25, 0.2, 0.15])
    module_mix = np.zeros((n_content, n_cat))
    module_items: list[np.ndarray] = []
    for m in range(n_content):  # a few hundred modules at most
        cats = rng.choice(len(occupied), size=rng.integers(1, 4), replace=False, p=occupied_weight)
        cats = occupied[cats]
        module_mix[m, cats] = 1.0 / len(cats)
        pool = np.concatenate([np.arange(category_start[c], category_start[c + 1]) for c in cats])
        top = pool[np.argsort(-popularity[pool], kind="stable")[: max(24, len(pool) // 4)]]
        module_items.append(np.sort(rng.choice(top, size=min(12, len(top)), replace=False)))
    module_quality = rng.normal(0.0, 0.5, n_content)
    module_log_weight = rng.normal(0.0, 0.7, n_content)

    # Sessions, sized for the target event count from the expected events per session.
    exam_prob = 1.0 / (np.arange(cfg.slots) + 1.0) ** cfg.bias_power
    per_view = 1 + cfg.p_click * (1 + cfg.p_cart * (1 + cfg.p_purchase) + cfg.p_wishlist)
    per_session = cfg.views_per_session * per_view + cfg.homepage_share * (exam_prob.sum() * 1.25)
    n_sessions = max(1, int(cfg.target_events / per_session * 1.15))
    session_user = rng.choice(n_users, size=n_sessions, p=user_activity / user_activity.sum())
    day = rng.integers(0, cfg.days, n_sessions)
    hour = rng.choice(24, size=n_sessions, p=HOURLY_RHYTHM / HOURLY_RHYTHM.sum())
    start = int(datetime.fromisoformat(cfg.start).replace(tzinfo=UTC).timestamp())
    session_start = start + day * 86_400 + hour * 3_600 + rng.integers(0, 3_600, n_sessions)

    # Homepage requests: a logging policy fills slots (Gumbel top-k over module weights); position-based clicks.
    has_request = rng.random(n_sessions) < cfg.homepage_share
    request_session = np.flatnonzero(has_request)
    shown = np.empty((len(request_session), cfg.slots), dtype=np.int64)
    for lo in range(0, len(request_session), 200_000):
        keys = module_log_weight + rng.gumbel(size=(min(200_000, len(request_session) - lo), n_content))
        shown[lo : lo + len(keys)] = np.argsort(-keys, axis=1)[:, : cfg.slots]
    request_user = session_user[request_session]
    affinity = _affinity_chunked(user_affinity, module_mix, request_user, shown)  # [requests, slots]
    relevance = _sigmoid(cfg.relevance_bias + cfg.relevance_weight * affinity + module_quality[shown])
    examined = rng.random(shown.shape) < exam_prob[None, :]
    clicked = examined & (rng.random(shown.shape) < relevance)

    # Item views: sessions' own browsing plus views of items featured by clicked modules.
    views_per = 1 + rng.poisson(cfg.views_per_session - 1, n_sessions)
    view_session = np.repeat(np.arange(n_sessions), views_per)
    view_user = session_user[view_session]
    revisit = rng.random(len(view_session)) < cfg.revisit_probability
    view_item = sample_items(view_user)
    view_item[revisit] = consideration[view_user[revisit], rng.integers(0, cfg.consideration_set, revisit.sum())]
    click_r, click_s = np.nonzero(clicked)
    click_module = shown[click_r, click_s]
    click_session = request_session[click_r]
    module_len = np.array([len(x) for x in module_items])
    module_offset = np.concatenate([[0], np.cumsum(module_len)])
    flat_module_items = np.concatenate(module_items)
    follow = 1 + rng.poisson(1.0, len(click_module))
    follow_module = np.repeat(click_module, follow)
    follow_item = flat_module_items[
        module_offset[follow_module] + (rng.random(len(follow_module)) * module_len[follow_module]).astype(np.int64)
    ]
    view_session = np.concatenate([view_session, np.repeat(click_session, follow)])
    view_item = np.concatenate([view_item, follow_item])
    considered = np.concatenate([revisit, np.zeros(len(follow_item), dtype=bool)])
    order = np.argsort(view_session, kind="stable")
    view_session, view_item, considered = view_session[order], view_item[order], considered[order]
    view_user = session_user[view_session]
    first = np.r_[True, view_session[1:] != view_session[:-1]]
    offset_s = _segment_cumsum(rng.exponential(45.0, len(view_session)), first) + 30.0 * has_request[view_session]
    view_time = session_start[view_session] + offset_s.astype(np.int64)

    # Funnel: click -> cart / wishlist -> purchase, more likely for items of the user's interests.
    fit = user_affinity[view_user, item_category[view_item]]
    p_click = np.clip(cfg.p_click * (0.4 + 1.6 * fit + 0.6 * considered), 0, 0.95)
    item_click = rng.random(len(view_item)) < p_click
    cheap = np.clip(price_level.mean() / item_price[view_item], 0.3, 2.0)
    item_cart = item_click & (rng.random(len(view_item)) < np.clip(cfg.p_cart * (1 + considered) * cheap, 0, 0.9))
    item_wish = item_click & ~item_cart & (rng.random(len(view_item)) < cfg.p_wishlist)
    item_buy = item_cart & (rng.random(len(view_item)) < np.clip(cfg.p_purchase * (1 + considered), 0, 0.9))

    # Each step follows the one before it: view < click < cart / wishlist < purchase.
    n_views = len(view_item)
    click_time = view_time + 1 + rng.exponential(5.0, n_views).astype(np.int64)
    cart_time = click_time + 1 + rng.exponential(40.0, n_views).astype(np.int64)
    wish_time = click_time + 1 + rng.exponential(30.0, n_views).astype(np.int64)
    buy_time = cart_time + 1 + rng.exponential(300.0, n_views).astype(np.int64)

    req_exam_r, req_exam_s = np.nonzero(examined)
    parts = {
        "view": (view_user, view_item, None, view_time, view_session),
        "click": (
            view_user[item_click],
            view_item[item_click],
            None,
            click_time[item_click],
            view_session[item_click],
        ),
        "add_to_cart": (
            view_user[item_cart],
            view_item[item_cart],
            None,
            cart_time[item_cart],
            view_session[item_cart],
        ),
        "add_to_wishlist": (
            view_user[item_wish],
            view_item[item_wish],
            None,
            wish_time[item_wish],
            view_session[item_wish],
        ),
        "purchase": (
            view_user[item_buy],
            view_item[item_buy],
            None,
            buy_time[item_buy],
            view_session[item_buy],
        ),
        "content_view": (
            request_user[req_exam_r],
            None,
            shown[req_exam_r, req_exam_s],
            session_start[request_session[req_exam_r]] + 1 + req_exam_s,
            request_session[req_exam_r],
        ),
        "content_click": (
            request_user[click_r],
            None,
            click_module,
            session_start[click_session] + 3 + 2 * click_s,
            click_session,
        ),
    }
    events, session_of_event = _assemble_events(parts)
    # Cut at a session boundary so the event count lands on the target without breaking funnels.
    per_session_count = np.bincount(session_of_event, minlength=n_sessions)
    keep_sessions = int(np.searchsorted(np.cumsum(per_session_count), cfg.target_events, side="right"))
    keep = session_of_event < keep_sessions
    events = events.filter(pl.Series(keep))
    request_keep = request_session < keep_sessions

    user_names = pl.Series("user_id", [f"u{i:07d}" for i in range(n_users)])
    content_names = pl.Series("content_id", [f"{MODULE_TYPES[t]}-{m:04d}" for m, t in enumerate(module_type)])
    device_names = pl.Series("device", list(DEVICES))
    events = events.with_columns(
        user_names.gather(events["user"]).alias("user_id"),
        pl.Series(item_ids).gather(events["item"]).alias("item_id"),
        content_names.gather(events["content"]).alias("content_id"),
        device_names.gather(user_device[events["user"].to_numpy()]).alias("device"),
        (pl.lit("s") + events["session"].cast(pl.String)).alias("session_id"),
    ).sort("timestamp", "session", maintain_order=True)
    events = events.select(
        "user_id",
        "item_id",
        "content_id",
        pl.col("event_type").cast(EVENT_TYPE_DTYPE),
        pl.from_epoch("timestamp", time_unit="s").dt.replace_time_zone("UTC").cast(TIMESTAMP_DTYPE),
        "session_id",
        "device",
    )

    kept_r = np.flatnonzero(request_keep)
    n_req = len(kept_r)
    impressions = pl.DataFrame(
        {
            "request_id": np.repeat(kept_r, cfg.slots).astype(np.int64) + 1,
            "user": np.repeat(request_user[kept_r], cfg.slots),
            "content": shown[kept_r].ravel(),
            "slot": np.tile(np.arange(cfg.slots), n_req),
            "timestamp": np.repeat(session_start[request_session[kept_r]], cfg.slots),
            "clicked": clicked[kept_r].ravel().astype(np.int8),
            "examine_prob": np.tile(exam_prob, n_req),
            "relevance_prob": relevance[kept_r].ravel(),
        }
    )
    impressions = impressions.with_columns(
        user_names.gather(impressions["user"]).alias("user_id"),
        content_names.gather(impressions["content"]).alias("content_id"),
        device_names.gather(user_device[impressions["user"].to_numpy()]).alias("device"),
        pl.from_epoch("timestamp", time_unit="s").dt.replace_time_zone("UTC").cast(TIMESTAMP_DTYPE),
    )
    truth = impressions.select(
        "request_id",
        "content_id",
        "slot",
        "examine_prob",
        "relevance_prob",
        (pl.col("examine_prob") * pl.col("relevance_prob")).alias("click_prob"),
    )
    impressions = impressions.select("request_id", "user_id", "content_id", "slot", "timestamp", "clicked", "device")

    category_names = [f"cat-{c:03d}" for c in range(n_cat)]
    items = pl.DataFrame(
        {
            "item_id": item_ids,
            "category": [category_names[c] for c in item_category],
            "brand": [f"brand-{b:04d}" for b in item_brand],
            "price": item_price,
            "title": [
                f"brand-{b:04d} {category_names[c]} item {i}"
                for i, (b, c) in enumerate(zip(item_brand, item_category, strict=True))
            ],
        }
    )
    content = pl.DataFrame(
        {
            "content_id": content_names,
            "module_type": [MODULE_TYPES[t] for t in module_type],
            "title": [f"{MODULE_TYPES[t]} {m}" for m, t in enumerate(module_type)],
            "item_ids": [item_ids[x].tolist() for x in module_items],
        },
        schema_overrides={"item_ids": pl.List(pl.Int64)},
    )
    if cfg.corrupt_fraction > 0:
        events = _corrupt(events, cfg.corrupt_fraction, rng)
    stats = {
        "events": events.height,
        "events_by_type": dict(events.group_by("event_type").len().sort("event_type").iter_rows()),
        "impressions": impressions.height,
        "requests": n_req,
        "impression_ctr": float(impressions["clicked"].mean()) if impressions.height else 0.0,
        "users_with_events": events["user_id"].n_unique(),
    }
    return Shop(events, items, content, impressions, truth, cfg, stats)


def _affinity_chunked(user_affinity, module_mix, request_user, shown, chunk: int = 50_000) -> np.ndarray:
    out = np.empty(shown.shape)
    for lo in range(0, len(shown), chunk):
        hi = lo + chunk
        out[lo:hi] = np.einsum("rc,rsc->rs", user_affinity[request_user[lo:hi]], module_mix[shown[lo:hi]])
    return out


def _assemble_events(parts: dict[str, tuple]) -> tuple[pl.DataFrame, np.ndarray]:
    frames = []
    for name, (users, items, contents, times, sessions) in parts.items():
        n = len(users)
        frames.append(
            pl.DataFrame(
                {
                    "user": users.astype(np.int64),
                    "item": items.astype(np.int64) if items is not None else np.full(n, -1, dtype=np.int64),
                    "content": contents.astype(np.int64) if contents is not None else np.full(n, -1, dtype=np.int64),
                    "event_type": np.full(n, name.removeprefix("content_"), dtype=object),
                    "timestamp": times.astype(np.int64),
                    "session": sessions.astype(np.int64),
                },
                schema_overrides={"event_type": pl.String},
            )
        )
    events = pl.concat(frames).with_columns(
        pl.when(pl.col("item") >= 0).then(pl.col("item")).alias("item"),
        pl.when(pl.col("content") >= 0).then(pl.col("content")).alias("content"),
    )
    return events, events["session"].to_numpy()


def _corrupt(events: pl.DataFrame, fraction: float, rng: np.random.Generator) -> pl.DataFrame:
    """Add the faults real logs carry: null users, unknown event names, future timestamps, exact duplicates."""
    n = max(4, int(events.height * fraction))
    picks = rng.choice(events.height, size=n, replace=False)
    kinds = np.arange(n) % 4
    raw = events.with_columns(pl.col("event_type").cast(pl.String))
    bad = raw[picks]
    kind = pl.Series(kinds)
    bad = bad.with_columns(
        pl.when(kind == 0).then(None).otherwise(pl.col("user_id")).alias("user_id"),
        pl.when(kind == 1).then(pl.lit("page_scroll")).otherwise(pl.col("event_type")).alias("event_type"),
        pl.when(kind == 2)
        .then(pl.col("timestamp") + pl.duration(days=3650))
        .otherwise(pl.col("timestamp"))
        .alias("timestamp"),
    )
    return pl.concat([raw, bad]).sort("timestamp", maintain_order=True)


def write_shop(shop: Shop, out_dir: str | Path) -> Path:
    """Write the shop's tables as Parquet plus a manifest, atomically, and return the directory."""
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as staging:
        shop.events.write_parquet(staging / "events.parquet")
        shop.items.write_parquet(staging / "items.parquet")
        shop.content.write_parquet(staging / "content.parquet")
        shop.impressions.write_parquet(staging / "impressions.parquet")
        shop.truth.write_parquet(staging / "impressions_truth.parquet")
        write_json_atomic(
            staging / "manifest.json",
            {
                "kind": "generated_shop",
                "created_at": utc_now_iso(),
                "config": asdict(shop.config),
                "stats": shop.stats,
                "code_version": code_version(),
                "files": [
                    "events.parquet",
                    "items.parquet",
                    "content.parquet",
                    "impressions.parquet",
                    "impressions_truth.parquet",
                ],
            },
        )
    return out_dir
