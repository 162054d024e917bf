"""The input contract: columns and types of events, catalog, impressions and feedback, and canonical event types."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import polars as pl

# Defined with the settings, which import no polars.
from graphrec.data.config import EVENT_TYPES, FEEDBACK_ACTIONS, VECTOR_SUFFIX

DEFAULT_EVENT_ALIASES: dict[str, str] = {
    "pv": "view",
    "page_view": "view",
    "pageview": "view",
    "impression": "view",
    "detail_view": "view",
    "clk": "click",
    "tap": "click",
    "cart": "add_to_cart",
    "add-to-cart": "add_to_cart",
    "addtocart": "add_to_cart",
    "fav": "add_to_wishlist",
    "favorite": "add_to_wishlist",
    "favourite": "add_to_wishlist",
    "collect": "add_to_wishlist",
    "wishlist": "add_to_wishlist",
    "add-to-wishlist": "add_to_wishlist",
    "buy": "purchase",
    "order": "purchase",
    "transaction": "purchase",
}
"""Raw event names mapped to canonical ones (matched case-insensitively after trimming)."""

ColumnKind = Literal["id", "event_type", "action", "timestamp", "text", "int", "float", "flag", "id_list", "vector"]

KIND_DESCRIPTION: dict[str, str] = {
    "id": "integer or string ids",
    "event_type": "string event names",
    "action": f"one of {', '.join(FEEDBACK_ACTIONS)}",
    "timestamp": "datetime, or epoch seconds/milliseconds, or ISO-8601 strings",
    "text": "strings",
    "int": "integers",
    "float": "numbers",
    "flag": "0/1 integers or booleans",
    "id_list": "a list of ids (or a string of ids separated by '|', ',' or spaces)",
    "vector": "a fixed-size list of numbers (or a string of numbers separated by spaces, ',' or '|')",
}


@dataclass(frozen=True)
class Column:
    """One column of the contract: its name, what kind of values it holds, and whether it must be present."""

    name: str
    kind: ColumnKind
    required: bool = True


@dataclass(frozen=True)
class TableSpec:
    """The columns of one input table; `key` names the columns that identify a row (catalog tables)."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    any_of: tuple[str, ...] = field(default=())
    vectors: bool = False  # whether `*_embedding` columns are content vectors of the table's rows

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def vector_columns(self, names: list[str]) -> list[str]:
        """The content-vector columns among `names` (none unless the table takes vectors)."""
        return [n for n in names if self.vectors and n.endswith(VECTOR_SUFFIX) and n not in self.names]

    def with_vectors(self, names: list[str]) -> TableSpec:
        """This spec plus optional vector columns `names` (as a table holding them is validated)."""
        extra = tuple(Column(n, "vector", required=False) for n in names if n not in self.names)
        return replace(self, columns=self.columns + extra) if extra else self


EVENTS = TableSpec(
    "events",
    (
        Column("user_id", "id"),
        Column("item_id", "id", required=False),
        Column("content_id", "id", required=False),
        Column("event_type", "event_type"),
        Column("timestamp", "timestamp"),
        Column("session_id", "id", required=False),
        Column("device", "text", required=False),
    ),
    any_of=("item_id", "content_id"),
)

IMPRESSIONS = TableSpec(
    "impressions",
    (
        Column("request_id", "id"),
        Column("session_id", "id", required=False),
        Column("user_id", "id"),
        Column("content_id", "id"),
        Column("slot", "int"),
        Column("timestamp", "timestamp"),
        Column("clicked", "flag"),
        Column("device", "text", required=False),
        Column("propensity", "float", required=False),
    ),
)

ITEMS = TableSpec(
    "items",
    (
        Column("item_id", "id"),
        Column("category", "id", required=False),
        Column("brand", "id", required=False),
        Column("price", "float", required=False),
        Column("title", "text", required=False),
        Column("description", "text", required=False),
    ),
    key=("item_id",),
    vectors=True,
)

CONTENT = TableSpec(
    "content",
    (
        Column("content_id", "id"),
        Column("module_type", "text"),
        Column("title", "text", required=False),
        Column("description", "text", required=False),
        Column("item_ids", "id_list", required=False),
        Column("launch", "timestamp", required=False),
        Column("end", "timestamp", required=False),
    ),
    key=("content_id",),
    vectors=True,
)

FEEDBACK = TableSpec(
    "feedback",
    (
        Column("user_id", "id"),
        Column("content_id", "id"),
        Column("action", "action"),
        Column("timestamp", "timestamp"),
    ),
)
"""Shoppers' feedback on modules, as the ranking API records it (`graphrec.data.feedback.read_feedback_store`)."""

TABLES: dict[str, TableSpec] = {spec.name: spec for spec in (EVENTS, IMPRESSIONS, ITEMS, CONTENT, FEEDBACK)}

# The id column of each entity, as the contract's tables name it (and every later artifact keeps it).
ID_COLUMN = {"user": "user_id", "item": "item_id", "content": "content_id"}
TIMESTAMP_DTYPE = pl.Datetime("us", "UTC")
EVENT_TYPE_DTYPE = pl.Enum(list(EVENT_TYPES))
ACTION_DTYPE = pl.Enum(list(FEEDBACK_ACTIONS))
