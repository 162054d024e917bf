"""A generated shop: users, catalog, content modules, a behaviour funnel and a realistic homepage.

Deterministic for a seed. Users, items and modules share a hidden taste space (style and brand affinity) and
price levels that the catalog does not spell out: users view items of their interest categories that fit their
taste and the session's intent, so tastes show only through co-interactions. Item popularity is Zipf-distributed
within categories; sessions follow a daily rhythm; activity is heavy-tailed and a share of users arrive during
the period (cold users). The homepage (graphrec.data.homepage) has a pool of modules launched and retired every
day, a partly personalised logging policy with exploration and the propensity of every impression, and a
position-based click model whose relevance comes mostly from the hidden factors; its truth is written beside the
logs (`impressions_truth.parquet`, `click_model.npz`). A share of the catalogue arrives during the period (new
arrivals, promoted), so some items are new when a model is trained; their launch days are written beside the
catalog (`items_truth.parquet`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from graphrec.artifacts import atomic_directory, code_version, utc_now_iso, write_json_atomic
from graphrec.data.config import DEVICES, MODULE_TYPES, ShopConfig
from graphrec.data.homepage import (
    DAY,
    STYLE_WORDS,
    ClickModel,
    ModulePool,
    build_module_pool,
    examination_keys,
    sample_policy,
)
from graphrec.data.schema import EVENT_TYPE_DTYPE, TIMESTAMP_DTYPE

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
DEVICE_SHARE = (0.55, 0.25, 0.20)  # mobile_web, desktop, app
_CANDIDATES_PER_VIEW = 16  # popular items of the category among which taste picks the viewed one
_INTENT_PERSISTENCE = 0.8  # correlation of a session's intent with the user's taste


@dataclass
class Shop:
    """The generated tables, in the input contract's format, and the homepage's true click model."""

    events: pl.DataFrame
    items: pl.DataFrame
    content: pl.DataFrame
    impressions: pl.DataFrame
    truth: pl.DataFrame
    config: ShopConfig
    stats: dict[str, Any] = field(default_factory=dict)
    click_model: ClickModel | None = None
    item_launch: pl.DataFrame | None = None  # item_id, launch: when each item went on sale (the truth of arrivals)


def _segment_cumsum(gaps: np.ndarray, group_start: np.ndarray) -> np.ndarray:
    """Cumulative sum of `gaps` restarting at every index where group_start is True."""
    total = np.cumsum(gaps)
    starts = np.flatnonzero(group_start)
    offsets = np.zeros_like(total)
    offsets[starts[1:]] = total[starts[1:] - 1]
    return total - np.maximum.accumulate(offsets)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-9)


def generate_shop(config: ShopConfig | None = None) -> Shop:
    """Generate a shop deterministically from `config.seed`."""
    cfg = config or ShopConfig()
    home = cfg.homepage
    rng = np.random.default_rng(cfg.seed)
    # Titles and images draw from their own stream, so the shop's behaviour does not depend on them.
    content_rng = np.random.default_rng([cfg.seed, 1])
    n_cat, n_items, n_users, n_content, dim = cfg.n_categories, cfg.n_items, cfg.n_users, cfg.n_content, cfg.taste_dim
    start = int(datetime.fromisoformat(cfg.start).replace(tzinfo=UTC).timestamp())

    # Catalog: items sorted by category so that each category is one contiguous segment.
    category_weight = rng.dirichlet(np.full(n_cat, 2.0))
    item_category = np.sort(rng.choice(n_cat, size=n_items, p=category_weight))
    category_start = np.searchsorted(item_category, np.arange(n_cat + 1))
    shuffled_rank = np.empty(n_items)
    for c in range(n_cat):  # one permutation per category, a few hundred at most
        lo, hi = category_start[c], category_start[c + 1]
        shuffled_rank[lo:hi] = rng.permutation(hi - lo)
    popularity = 1.0 / (shuffled_rank + 1.0) ** cfg.popularity_exponent
    # New arrivals: launched on days spread over the period (never a category's most popular item, so every
    # category has items from the first day), and promoted.
    item_launch_day = np.zeros(n_items, dtype=np.int64)
    n_new = round(cfg.new_item_share * n_items) if cfg.days > 1 else 0
    if n_new:
        arrivals = rng.choice(np.flatnonzero(shuffled_rank > 0), size=n_new, replace=False)
        item_launch_day[arrivals] = 1 + rng.permutation(n_new) % (cfg.days - 1)
        popularity[arrivals] *= cfg.new_item_boost
    category_mass = np.bincount(item_category, weights=popularity, minlength=n_cat)
    within = popularity / np.maximum(category_mass[item_category], 1e-12)
    # Category c occupies [c, c + 1) of this cumulative scale: sampling an item of c is searchsorted(c + u).
    first_of_category = np.r_[True, item_category[1:] != item_category[:-1]]
    item_scale = item_category + _segment_cumsum(within, first_of_category)
    empty = category_start[1:] == category_start[:-1]

    brands_per_category = max(2, cfg.n_brands // max(1, n_cat // 2))
    item_brand = (item_category * 7 + rng.integers(0, brands_per_category, n_items)) % cfg.n_brands
    # Hidden factors: a category's look, a brand's style across its categories and the item's own; price levels
    # per brand and item. Prices show the level only in part (categories differ in price more than brands).
    category_style = rng.normal(size=(n_cat, dim))
    brand_style = rng.normal(size=(cfg.n_brands, dim))
    item_factor = _unit(
        0.45 * category_style[item_category] + 0.6 * brand_style[item_brand] + 0.65 * rng.normal(size=(n_items, dim))
    )
    brand_level = rng.normal(size=cfg.n_brands)
    item_level = 0.6 * brand_level[item_brand] + 0.8 * rng.normal(size=n_items)
    price_level = rng.lognormal(3.0, 0.8, n_cat)
    item_price = np.round(price_level[item_category] * np.exp(0.35 * item_level), 2)
    item_ids = np.sort(rng.choice(20 * n_items, size=n_items, replace=False)) + 1_000

    # Users: a hidden taste and price level; interest categories drawn towards categories whose look fits the
    # taste; a consideration set drawn from them. Activity is heavy-tailed and some users arrive late.
    user_taste = rng.normal(size=(n_users, dim))
    user_level = rng.normal(size=n_users)
    occupied = np.flatnonzero(~empty)
    fit = np.exp(user_taste @ _unit(category_style[occupied]).T)  # [U, occupied]
    pick_weight = category_weight[occupied][None, :] * fit
    pick_cum = np.cumsum(pick_weight / pick_weight.sum(axis=1, keepdims=True), axis=1)
    draws = rng.random((n_users, cfg.interests_per_user))
    interests = occupied[np.minimum((draws[:, :, None] > pick_cum[:, None, :]).sum(axis=2), len(occupied) - 1)]
    interest_weight = rng.dirichlet(np.full(cfg.interests_per_user, cfg.interest_concentration), size=n_users)
    interest_cum = np.cumsum(interest_weight, axis=1)
    user_activity = rng.lognormal(0.0, cfg.activity_sigma, n_users)
    user_device = rng.choice(len(DEVICES), size=n_users, p=DEVICE_SHARE)
    arrival = np.where(rng.random(n_users) < cfg.new_user_share, rng.integers(0, cfg.days, n_users), 0)

    def sample_items(users: np.ndarray, taste: np.ndarray, day: np.ndarray) -> np.ndarray:
        """Items viewed by `users` steered by `taste` ([n, D]) on `day` ([n]): popular items of an interest
        category on sale that day, the one that fits the taste and price level best (a softmax over a few
        candidates) viewed; where no candidate is on sale yet, the category's most popular item."""
        out = np.empty(len(users), dtype=np.int64)
        for lo in range(0, len(users), 200_000):
            u, t = users[lo : lo + 200_000], taste[lo : lo + 200_000]
            slot = (rng.random(len(u))[:, None] > interest_cum[u]).sum(axis=1)
            category = interests[u, np.minimum(slot, cfg.interests_per_user - 1)]
            draw = category[:, None] + rng.random((len(u), _CANDIDATES_PER_VIEW)) * (1 - 1e-9)
            index = np.searchsorted(item_scale, draw)
            index = np.clip(index, category_start[category][:, None], category_start[category + 1][:, None] - 1)
            score = cfg.taste_weight * np.einsum("nd,nkd->nk", t, item_factor[index])
            score -= 0.5 * (user_level[u][:, None] - item_level[index]) ** 2
            score = score + rng.gumbel(size=score.shape)
            on_sale = item_launch_day[index] <= day[lo : lo + len(u), None]
            score = np.where(on_sale, score, -np.inf)
            chosen = index[np.arange(len(u)), np.argmax(score, axis=1)]
            out[lo : lo + len(u)] = np.where(on_sale.any(axis=1), chosen, top_of_category[category])
        return out

    top_of_category = np.zeros(n_cat, dtype=np.int64)
    top_of_category[item_category[shuffled_rank == 0]] = np.flatnonzero(shuffled_rank == 0)
    # The items a user keeps coming back to: on sale from the start, so revisits never reach an item before its
    # launch.
    consideration = sample_items(
        np.repeat(np.arange(n_users), cfg.consideration_set),
        np.repeat(user_taste, cfg.consideration_set, axis=0),
        np.zeros(n_users * cfg.consideration_set, dtype=np.int64),
    ).reshape(n_users, cfg.consideration_set)
    user_affinity = np.zeros((n_users, n_cat))
    np.add.at(
        user_affinity,
        (np.repeat(np.arange(n_users), cfg.interests_per_user), interests.ravel()),
        interest_weight.ravel(),
    )

    category_names = [f"cat-{c:03d}" for c in range(n_cat)]
    brand_names = [f"brand-{b:04d}" for b in range(cfg.n_brands)]
    pool = build_module_pool(
        home,
        n_content,
        cfg.days,
        start,
        rng,
        item_factor=item_factor,
        item_price=item_level,
        item_category=item_category,
        item_brand=item_brand,
        popularity=popularity,
        category_names=category_names,
        brand_names=brand_names,
        item_launch_day=item_launch_day,
    )

    # Sessions, sized for the target event count from the expected events per session.
    exam_sum = np.mean(
        [(1.0 / (np.arange(home.slots_by_device[d]) + 1.0) ** home.examination_power[d]).sum() for d in DEVICES]
    )
    per_view = 1 + cfg.p_click * (1 + cfg.p_cart * (1 + cfg.p_purchase) + cfg.p_wishlist)
    per_session = cfg.views_per_session * per_view + cfg.homepage_share * exam_sum * 1.1
    n_sessions = max(1, int(cfg.target_events / per_session * 1.25))
    session_user = rng.choice(n_users, size=n_sessions, p=user_activity / user_activity.sum())
    day = arrival[session_user] + (rng.random(n_sessions) * (cfg.days - arrival[session_user])).astype(np.int64)
    hour = rng.choice(24, size=n_sessions, p=HOURLY_RHYTHM / HOURLY_RHYTHM.sum())
    session_start = start + day * DAY + hour * 3_600 + rng.integers(0, 3_600, n_sessions)
    session_device = np.where(
        rng.random(n_sessions) < 0.8, user_device[session_user], rng.choice(len(DEVICES), n_sessions, p=DEVICE_SHARE)
    )
    persistence = _INTENT_PERSISTENCE
    session_intent = persistence * user_taste[session_user] + np.sqrt(1 - persistence**2) * rng.normal(
        size=(n_sessions, dim)
    )

    # Own views of each session, steered by the session's intent; a share goes back to the consideration set.
    views_per = 1 + rng.poisson(cfg.views_per_session - 1, n_sessions)
    view_session = np.repeat(np.arange(n_sessions), views_per)
    view_user = session_user[view_session]
    revisit = rng.random(len(view_session)) < cfg.revisit_probability
    view_item = sample_items(view_user, session_intent[view_session], day[view_session])
    view_item[revisit] = consideration[view_user[revisit], rng.integers(0, cfg.consideration_set, revisit.sum())]
    first = np.r_[True, view_session[1:] != view_session[:-1]]
    position = np.arange(len(view_session)) - np.flatnonzero(first).repeat(views_per)
    offset = _segment_cumsum(rng.exponential(45.0, len(view_session)), first)

    # Homepage requests: at the session's start (landing) or after the first few views (a return to the
    # homepage); the views after it come later.
    has_request = rng.random(n_sessions) < cfg.homepage_share
    request_session = np.flatnonzero(has_request)
    landing = rng.random(len(request_session)) < home.landing_share
    before = np.where(landing, 0, np.minimum(1 + rng.poisson(1.0, len(request_session)), views_per[request_session]))
    views_before = np.zeros(n_sessions, dtype=np.int64)
    views_before[request_session] = before
    session_offset = np.zeros(n_sessions)
    last_before = np.flatnonzero(first)[request_session] + before - 1
    session_offset[request_session] = np.where(before > 0, offset[np.maximum(last_before, 0)], 0.0) + 5.0
    after_request = has_request[view_session] & (position >= views_before[view_session])
    view_time = session_start[view_session] + (offset + 30.0 * after_request).astype(np.int64)
    request_time = session_start[request_session] + session_offset[request_session].astype(np.int64)
    request_user = session_user[request_session]
    request_device = session_device[request_session]
    slots_by_device = np.array([home.slots_by_device[d] for d in DEVICES])
    n_requests = len(request_session)

    # The logging policy fills the slots, day by day (a day's live modules are its candidates).
    model = ClickModel(
        config=asdict(home),
        start=start,
        user_ids=np.array([f"u{i:07d}" for i in range(n_users)]),
        user_taste=user_taste.astype(np.float32),
        user_price=user_level.astype(np.float32),
        user_interests=interests.astype(np.int32),
        user_interest_weight=interest_weight.astype(np.float32),
        content_ids=np.array([f"{MODULE_TYPES[t]}-{m:05d}" for m, t in enumerate(pool.module_type)]),
        module_type=pool.module_type.astype(np.int8),
        module_factor=pool.factor.astype(np.float32),
        module_price=pool.price.astype(np.float32),
        module_quality=pool.quality,
        module_launch=pool.launch.astype(np.int64),
        module_end=pool.end.astype(np.int64),
        module_mix=pool.mix,
        policy_quality=pool.quality + rng.normal(0.0, home.policy_quality_noise, n_content),
        request_ids=np.arange(n_requests, dtype=np.int64),
        request_user=request_user.astype(np.int32),
        request_time=request_time.astype(np.int64),
        request_device=request_device.astype(np.int8),
        request_intent=session_intent[request_session].astype(np.float32),
        request_slots=slots_by_device[request_device].astype(np.int16),
        exposure_keys=np.zeros(0, dtype=np.int64),
    )
    max_slots = home.max_slots
    shown = np.full((n_requests, max_slots), -1, dtype=np.int64)
    propensity = np.zeros((n_requests, max_slots))
    request_day = (request_time - start) // DAY
    for d in np.unique(request_day):
        rows = np.flatnonzero(request_day == d)
        day_start = start + int(d) * DAY
        live = np.flatnonzero((model.module_launch <= day_start) & (day_start < model.module_end))
        for lo in range(0, len(rows), 4_096):
            chunk = rows[lo : lo + 4_096]
            logits = model.policy_logits(chunk, live)
            picks, props = sample_policy(logits, model.request_slots[chunk], home.exploration, rng)
            shown[chunk, : picks.shape[1]] = np.where(picks >= 0, live[np.maximum(picks, 0)], -1)
            propensity[chunk, : picks.shape[1]] = props

    # Examination, then fatigue from the user's earlier examinations of the same module, then clicks.
    slot_grid = np.broadcast_to(np.arange(max_slots), shown.shape)
    exam_prob = model.examination(np.arange(n_requests)[:, None], slot_grid)
    examined = (rng.random(shown.shape) < exam_prob) & (shown >= 0)
    model.exposure_keys = examination_keys(model, examined, shown)
    shown_r, shown_s = np.nonzero(shown >= 0)
    parts = model.logit_parts(shown_r, shown[shown_r, shown_s])
    relevance = 1.0 / (1.0 + np.exp(-sum(parts.values())))
    clicked = examined[shown_r, shown_s] & (rng.random(len(shown_r)) < relevance)

    # Views of items featured by clicked modules, then the funnel on every view.
    click_r, click_s = shown_r[clicked], shown_s[clicked]
    click_module = shown[click_r, click_s]
    click_session = request_session[click_r]
    click_time = request_time[click_r] + 3 + 2 * click_s
    module_len = np.array([len(x) for x in pool.featured])
    module_offset = np.concatenate([[0], np.cumsum(module_len)])
    flat_module_items = np.concatenate(pool.featured)
    follow = 1 + rng.poisson(1.0, len(click_module))
    follow_module = np.repeat(click_module, follow)
    follow_item = flat_module_items[
        module_offset[follow_module] + (rng.random(len(follow_module)) * module_len[follow_module]).astype(np.int64)
    ]
    follow_time = np.repeat(click_time, follow) + 5 + rng.exponential(30.0, len(follow_item)).astype(np.int64)
    view_session = np.concatenate([view_session, np.repeat(click_session, follow)])
    view_item = np.concatenate([view_item, follow_item])
    view_time = np.concatenate([view_time, follow_time])
    considered = np.concatenate([revisit, np.zeros(len(follow_item), dtype=bool)])
    view_user = session_user[view_session]

    # Funnel: click -> cart / wishlist -> purchase, more likely for items of the user's interests and taste.
    cat_fit = user_affinity[view_user, item_category[view_item]]
    taste_fit = 1.0 / (1.0 + np.exp(-np.einsum("nd,nd->n", session_intent[view_session], item_factor[view_item])))
    p_click = np.clip(cfg.p_click * (0.3 + 0.8 * cat_fit + 0.8 * taste_fit + 0.6 * considered), 0, 0.95)
    item_click = rng.random(len(view_item)) < p_click
    cheap = np.clip(price_level.mean() / item_price[view_item], 0.3, 2.0)
    item_cart = item_click & (rng.random(len(view_item)) < np.clip(cfg.p_cart * (1 + considered) * cheap, 0, 0.9))
    item_wish = item_click & ~item_cart & (rng.random(len(view_item)) < cfg.p_wishlist)
    item_buy = item_cart & (rng.random(len(view_item)) < np.clip(cfg.p_purchase * (1 + considered), 0, 0.9))

    # Each step follows the one before it: view < click < cart / wishlist < purchase.
    n_views = len(view_item)
    item_click_time = view_time + 1 + rng.exponential(5.0, n_views).astype(np.int64)
    cart_time = item_click_time + 1 + rng.exponential(40.0, n_views).astype(np.int64)
    wish_time = item_click_time + 1 + rng.exponential(30.0, n_views).astype(np.int64)
    buy_time = cart_time + 1 + rng.exponential(300.0, n_views).astype(np.int64)

    exam_r, exam_s = np.nonzero(examined)
    event_parts = {
        "view": (view_user, view_item, None, view_time, view_session),
        "click": (
            view_user[item_click],
            view_item[item_click],
            None,
            item_click_time[item_click],
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
        "purchase": (view_user[item_buy], view_item[item_buy], None, buy_time[item_buy], view_session[item_buy]),
        "content_view": (
            request_user[exam_r],
            None,
            shown[exam_r, exam_s],
            request_time[exam_r] + 1 + exam_s // 4,
            request_session[exam_r],
        ),
        "content_click": (request_user[click_r], None, click_module, click_time, click_session),
    }
    events, session_of_event = _assemble_events(event_parts)

    # Cut to the target at a session boundary, users in a random order and each user's sessions in time order:
    # a kept impression's fatigue never counted an examination that was cut (only later ones or other users').
    per_session_count = np.bincount(session_of_event, minlength=n_sessions)
    user_rank = rng.permutation(n_users)
    cut_order = np.lexsort((session_start, user_rank[session_user]))
    kept_in_order = np.cumsum(per_session_count[cut_order]) <= cfg.target_events
    keep_session = np.zeros(n_sessions, dtype=bool)
    keep_session[cut_order[kept_in_order]] = True
    events = events.filter(pl.Series(keep_session[session_of_event]))
    keep_request = keep_session[request_session]

    # Requests renumbered in time order; the model keeps the logged requests and their examinations only.
    kept = np.flatnonzero(keep_request)
    kept = kept[np.argsort(request_time[kept], kind="stable")]
    request_id = np.zeros(n_requests, dtype=np.int64)
    request_id[kept] = np.arange(1, len(kept) + 1)
    model.request_ids = request_id
    model = _reorder(model, kept)
    model.exposure_keys = examination_keys(model, examined[kept], shown[kept])

    user_names = pl.Series("user_id", model.user_ids)
    content_names = pl.Series("content_id", model.content_ids)
    device_names = pl.Series("device", list(DEVICES))
    events = events.with_columns(
        user_names.gather(events["user"]).alias("user_id"),
        pl.Series(item_ids).gather(events["item"]).alias("item_id"),
        content_names.gather(events["content"]).alias("content_id"),
        device_names.gather(session_device[events["session"].to_numpy()]).alias("device"),
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

    logged = keep_request[shown_r]
    r, slot = shown_r[logged], shown_s[logged]
    module = shown[r, slot]
    truth_parts = {f"logit_{name}": value[logged] for name, value in parts.items() if name != "base"}
    impressions = pl.DataFrame(
        {
            "request_id": request_id[r],
            "session": request_session[r],
            "user": request_user[r],
            "content": module,
            "slot": slot.astype(np.int64),
            "timestamp": request_time[r],
            "clicked": clicked[logged].astype(np.int8),
            "device_index": request_device[r],
            "propensity": propensity[r, slot],
            "examined": examined[r, slot],
            "earlier_examinations": model.earlier_examinations(
                np.searchsorted(model.request_ids, request_id[r]), module
            ),
            "examine_prob": exam_prob[r, slot],
            "relevance_prob": relevance[logged],
            **truth_parts,
        }
    ).sort("request_id", "slot")
    impressions = impressions.with_columns(
        (pl.lit("s") + pl.col("session").cast(pl.String)).alias("session_id"),
        user_names.gather(impressions["user"]).alias("user_id"),
        content_names.gather(impressions["content"]).alias("content_id"),
        device_names.gather(impressions["device_index"]).alias("device"),
        pl.from_epoch("timestamp", time_unit="s").dt.replace_time_zone("UTC").cast(TIMESTAMP_DTYPE),
    )
    truth = impressions.select(
        "request_id",
        "content_id",
        "slot",
        "examine_prob",
        "relevance_prob",
        (pl.col("examine_prob") * pl.col("relevance_prob")).alias("click_prob"),
        "examined",
        "earlier_examinations",
        *truth_parts,
    )
    impressions = impressions.select(
        "request_id", "session_id", "user_id", "content_id", "slot", "timestamp", "clicked", "device", "propensity"
    )

    items = pl.DataFrame(
        {
            "item_id": item_ids,
            "category": [category_names[c] for c in item_category],
            "brand": [brand_names[b] for b in item_brand],
            "price": item_price,
            "title": _item_titles(item_factor, item_category, item_brand, brand_names, content_rng),
        }
    )
    content = _content_table(pool, model.content_ids, item_ids)
    if cfg.image_dim:
        # One projection for items and modules: a module's image shows the look of the items it features.
        projection = content_rng.normal(size=(dim, cfg.image_dim))
        items = items.with_columns(_images(item_factor, projection, cfg.image_noise, content_rng))
        content = content.with_columns(_images(pool.factor, projection, cfg.image_noise, content_rng))
    if cfg.corrupt_fraction > 0:
        events = _corrupt(events, cfg.corrupt_fraction, rng)
    stats = _shop_stats(events, impressions, truth, content)
    stats["new_items"] = n_new
    item_launch = pl.DataFrame({"item_id": item_ids, "launch": start + item_launch_day * DAY}).with_columns(
        pl.from_epoch("launch", time_unit="s").dt.replace_time_zone("UTC").cast(TIMESTAMP_DTYPE)
    )
    return Shop(events, items, content, impressions, truth, cfg, stats, model, item_launch)


# Product nouns per category (cycled past the list's end); titles name the category's noun, two style words and
# the brand, as shop titles do.
CATEGORY_NOUNS = (
    "sneakers", "jacket", "dress", "backpack", "watch", "sunglasses", "lamp", "armchair", "rug", "mug",
    "headphones", "speaker", "blender", "kettle", "scarf", "boots", "shirt", "jeans", "sofa", "vase",
    "notebook", "pen", "perfume", "lipstick", "candle", "cushion", "bike", "tent", "yoga mat", "skillet",
)  # fmt: skip


def _item_titles(
    item_factor: np.ndarray,
    item_category: np.ndarray,
    item_brand: np.ndarray,
    brand_names: list[str],
    rng: np.random.Generator,
) -> list[str]:
    """Titles naming the two style dimensions an item's hidden factors lean to most (with noise, as module titles
    do), its category's noun and its brand: informative about the factors without spelling them out."""
    lean = item_factor + rng.normal(0.0, 0.25, item_factor.shape)
    top = np.argsort(-np.abs(lean), axis=1)[:, :2]
    titles = []
    for i in range(len(item_factor)):  # a few thousand string formats
        words = [STYLE_WORDS[d % len(STYLE_WORDS)][0 if lean[i, d] > 0 else 1] for d in top[i]]
        noun = CATEGORY_NOUNS[item_category[i] % len(CATEGORY_NOUNS)]
        titles.append(f"{words[0].capitalize()} {words[1]} {noun} by {brand_names[item_brand[i]]}")
    return titles


def _images(factor: np.ndarray, projection: np.ndarray, noise: float, rng: np.random.Generator) -> pl.Series:
    """Synthetic image vectors: the unit-length projection of hidden factors plus noise of norm about `noise`,
    normalised. [N, image_dim] as a fixed-size float32 array column `image_embedding`."""
    signal = _unit(factor @ projection)
    vectors = _unit(signal + noise * rng.normal(size=signal.shape) / np.sqrt(signal.shape[1])).astype(np.float32)
    return pl.Series("image_embedding", vectors, dtype=pl.Array(pl.Float32, vectors.shape[1]))


def _content_table(pool: ModulePool, content_ids: np.ndarray, item_ids: np.ndarray) -> pl.DataFrame:
    """The content catalog: type, title, featured items and live period of every module."""
    return pl.DataFrame(
        {
            "content_id": content_ids,
            "module_type": [MODULE_TYPES[t] for t in pool.module_type],
            "title": pool.titles,
            "item_ids": [item_ids[x].tolist() for x in pool.featured],
            "launch": pool.launch,
            "end": pool.end,
        },
        schema_overrides={"item_ids": pl.List(pl.Int64)},
    ).with_columns(
        pl.from_epoch(c, time_unit="s").dt.replace_time_zone("UTC").cast(TIMESTAMP_DTYPE) for c in ("launch", "end")
    )


def _shop_stats(events: pl.DataFrame, impressions: pl.DataFrame, truth: pl.DataFrame, content: pl.DataFrame) -> dict:
    """The shop's shape for the manifest: sizes, click rates by slot, module popularity."""
    per_slot = impressions.group_by("slot").agg(pl.col("clicked").mean()).sort("slot")
    clicks = impressions.group_by("content_id").agg(pl.col("clicked").sum()).sort("clicked", descending=True)
    total_clicks = max(1, int(clicks["clicked"].sum()))
    top = max(1, clicks.height // 10)
    requests = impressions["request_id"].n_unique()
    return {
        "events": events.height,
        "events_by_type": dict(events.group_by("event_type").len().sort("event_type").iter_rows()),
        "impressions": impressions.height,
        "requests": requests,
        "impression_ctr": float(impressions["clicked"].mean()) if impressions.height else 0.0,
        "clicks_per_request": float(impressions["clicked"].sum() / max(1, requests)),
        "ctr_by_slot": [round(float(v), 5) for v in per_slot["clicked"]],
        "modules": content.height,
        "modules_shown": clicks.height,
        "top_decile_module_click_share": round(float(clicks["clicked"].head(top).sum()) / total_clicks, 4),
        "mean_true_click_prob": float(truth["click_prob"].mean()) if truth.height else 0.0,
        "users_with_events": events["user_id"].n_unique(),
    }


def _reorder(model: ClickModel, rows: np.ndarray) -> ClickModel:
    """The model holding the requests `rows`, in that order."""
    names = ("request_ids", "request_user", "request_time", "request_device", "request_intent", "request_slots")
    return replace(model, **{name: getattr(model, name)[rows] for name in names})


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
        files = ["events.parquet", "items.parquet", "content.parquet", "impressions.parquet"]
        files.append("impressions_truth.parquet")
        if shop.item_launch is not None:
            shop.item_launch.write_parquet(staging / "items_truth.parquet")
            files.append("items_truth.parquet")
        if shop.click_model is not None:
            shop.click_model.save(staging / "click_model.npz")
            files.append("click_model.npz")
        write_json_atomic(
            staging / "manifest.json",
            {
                "kind": "generated_shop",
                "created_at": utc_now_iso(),
                "config": asdict(shop.config),
                "stats": shop.stats,
                "code_version": code_version(),
                "files": files,
            },
        )
    return out_dir
