"""Settings of the data stage: where events come from, the generated shop, and validation.

Plain dataclasses with no heavy imports, so the command line can show them without loading the stage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from graphrec.errors import at_least_zero, check_settings, fraction, positive


@dataclass
class ShopConfig:
    """Sizes and behaviour of the generated shop; `scaled_to(events)` picks sizes for a target event count.

    Args:
        seed: seeds every draw: the same config gives the same shop.
        target_events: the event count the session count is chosen for.
        n_users: users.
        n_items: catalogue items.
        n_content: homepage content modules.
        n_categories: item categories.
        n_brands: item brands.
        days: days of activity.
        start: the first day (ISO date, UTC).
        slots: homepage slots per request.
        homepage_share: share of sessions that open with a homepage request.
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
        bias_power: position bias: P(examine | slot) = 1 / (slot + 1) ** bias_power.
        relevance_bias: intercept of the logistic relevance of a module to a user.
        relevance_weight: weight of the user's affinity to the module's categories in that relevance.
        corrupt_fraction: share of faulty rows added (null users, unknown event names, future timestamps,
            duplicates) to exercise the quarantine.
    """

    seed: int = 7
    target_events: int = 100_000
    n_users: int = 2_500
    n_items: int = 4_000
    n_content: int = 40
    n_categories: int = 30
    n_brands: int = 150
    days: int = 28
    start: str = "2026-01-05"
    slots: int = 6
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
    bias_power: float = 0.8
    relevance_bias: float = -3.2
    relevance_weight: float = 6.0
    corrupt_fraction: float = 0.0

    def __post_init__(self) -> None:
        sizes = ("target_events", "n_users", "n_items", "n_content", "n_categories", "n_brands", "days", "slots")
        shares = ("homepage_share", "interest_concentration", "revisit_probability", "p_click", "p_cart")
        shares += ("p_wishlist", "p_purchase", "corrupt_fraction")
        rules = {name: (positive, "a positive integer") for name in sizes}
        rules |= {name: (fraction, "between 0 and 1") for name in shares if name != "interest_concentration"}
        rules |= {
            "interest_concentration": (positive, "positive"),
            "interests_per_user": (positive, "a positive integer"),
            "consideration_set": (positive, "a positive integer"),
            "views_per_session": (lambda v: v >= 1, "at least 1"),
            "popularity_exponent": (at_least_zero, "0 or more"),
            "bias_power": (at_least_zero, "0 or more"),
            "start": (_is_iso_time, "an ISO date such as 2026-01-05"),
        }
        check_settings("shop", self, rules)
        check_settings("shop", self, {"n_content": (lambda v: v >= self.slots, f"at least shop.slots ({self.slots})")})

    @classmethod
    def scaled_to(cls, target_events: int, **overrides: Any) -> ShopConfig:
        """Return a config whose entity counts grow with the target event count (about 40 events per user)."""
        items = max(1_000, target_events // 25)
        sizes = dict(
            target_events=target_events,
            n_users=max(500, target_events // 40),
            n_items=items,
            n_content=int(min(400, max(30, target_events // 5_000))),
            n_categories=int(min(400, max(12, math.sqrt(items) / 2))),
            n_brands=int(min(5_000, max(50, items // 25))),
        )
        return cls(**(sizes | overrides))


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

    def __post_init__(self) -> None:
        check_settings(
            "validation",
            self,
            {
                "max_bad_fraction": (fraction, "between 0 and 1"),
                "max_future_seconds": (at_least_zero, "0 or more"),
                "min_timestamp": (_is_iso_time, "an ISO-8601 time"),
                "reference_time": (lambda v: v is None or _is_iso_time(v), "null or an ISO-8601 time"),
                "timezone": (_is_time_zone, "an IANA time zone such as UTC or Europe/Berlin"),
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
    """

    format: str = "generated"
    path: str | None = None


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
