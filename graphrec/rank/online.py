"""Request-time behaviour features for the ranking API: the features of `graphrec.rank.features`, computed for
one request's candidate modules from an in-memory index of the logged events and impressions.

`behaviour_features` answers a batch query with a polars plan of a few dozen sorts and as-of joins, a fixed cost
of tens of milliseconds that a page view cannot pay. `FeatureState` indexes the validated tables once (per user:
their events and impressions in time order; per module: its featured items, categories, main brand, launch and
its impressions' running totals), and `FeatureState.features` computes a request's rows with a handful of numpy
operations on the user's own events. The definitions are those of `behaviour_features` (every count over events
strictly before the request's time, windows `[t - days, t)`, impressions up to `t - feedback_delay_seconds`), and
tests/rank/test_online.py checks both paths equal on the same rows and events: the online/offline skew is
tested, not assumed. The index is a second implementation of the same features because no feature-store library
computes as-of aggregates of an event log at request time; Feast serves precomputed values only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy import sparse

from graphrec.data.schema import EVENT_TYPES
from graphrec.errors import InputError
from graphrec.rank.config import RankFeatureConfig
from graphrec.rank.features import (
    _PLURAL,
    DAY_US,
    SECOND_US,
    _impressions,
    _vector_kind,
    content_vector_columns,
    feature_descriptions,
    reduced_vectors,
)

__all__ = ["FeatureState", "RecentEvents", "RequestFeatures", "coerce_id"]

_KIND = {kind: index for index, kind in enumerate(EVENT_TYPES)}
_VIEW, _CLICK = _KIND["view"], _KIND["click"]
_NO_TIME = np.iinfo(np.int64).min
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DENSE_LIMIT = 20_000_000  # module x category cells held dense for fast row gathers (80 MB at most)


@dataclass
class RecentEvents:
    """Events not in the index (the request's fresh session events), as arrays of equal length.

    Args:
        item_ids: the item of each event (None for a content event).
        content_ids: the module of each event (None for an item event).
        event_types: contract event types.
        timestamps: epoch microseconds.
    """

    item_ids: list
    content_ids: list
    event_types: list[str]
    timestamps: list[int]

    def __len__(self) -> int:
        return len(self.event_types)


@dataclass
class RequestFeatures:
    """One request's feature rows: `dense` [n_candidates, F] in `names` order, and the user's counts the reasons
    quote."""

    dense: np.ndarray
    names: list[str]
    known_user: bool
    user_events: int
    category_events: np.ndarray  # [categories] the user's item events per category before t (unweighted)


class _Segments:
    """Rows grouped by an integer key (sorted by key, then time): the row range of each key."""

    def __init__(self, keys: np.ndarray, count: int) -> None:
        self.start = np.searchsorted(keys, np.arange(count), side="left")
        self.end = np.searchsorted(keys, np.arange(count), side="right")

    def of(self, key: int) -> slice:
        return slice(int(self.start[key]), int(self.end[key]))


class FeatureState:
    """An index of the validated events, impressions and catalog from which `features` computes the request-time
    behaviour features of any user (known or not) and any indexed module, equal to `behaviour_features`."""

    def __init__(
        self,
        events: pl.DataFrame,
        impressions: pl.DataFrame | None,
        content: pl.DataFrame,
        items: pl.DataFrame | None,
        config: RankFeatureConfig | None = None,
        feedback: pl.DataFrame | None = None,
    ) -> None:
        self.config = cfg = config or RankFeatureConfig()
        self.names = list(feature_descriptions(cfg))
        self.column = {name: i for i, name in enumerate(self.names)}
        self.item_dtype = events.schema.get("item_id", pl.Int64)
        self.content_dtype = content.schema["content_id"]
        self.user_dtype = events.schema["user_id"]

        # Items: the catalog and every featured item, with category and brand indices (-1 where unknown).
        if items is not None:
            catalog = items.select(
                pl.col("item_id").cast(self.item_dtype),
                *[
                    (pl.col(c).rank("dense").cast(pl.Int64) - 1).fill_null(-1).alias(c)
                    if c in items.columns
                    else pl.lit(-1, pl.Int64).alias(c)
                    for c in ("category", "brand")
                ],
            ).unique("item_id", keep="first", maintain_order=True)
        else:
            catalog = pl.DataFrame(schema={"item_id": self.item_dtype, "category": pl.Int64, "brand": pl.Int64})
        featured_ids = (
            content.select(pl.col("item_ids").explode().cast(self.item_dtype).alias("item_id")).drop_nulls()
            if "item_ids" in content.columns
            else pl.DataFrame(schema={"item_id": self.item_dtype})
        )
        item_table = pl.concat(
            [catalog, featured_ids.unique().join(catalog.select("item_id"), on="item_id", how="anti")],
            how="diagonal",
        ).with_columns(pl.col("category", "brand").fill_null(-1))
        self.item_index = {v: i for i, v in enumerate(item_table["item_id"].to_list())}
        self.item_category = item_table["category"].to_numpy().astype(np.int64)
        self.item_brand = item_table["brand"].to_numpy().astype(np.int64)
        self.category_names, self.brand_names = (
            [str(v) for v in items[c].drop_nulls().unique().sort().to_list()]
            if items is not None and c in items.columns
            else []
            for c in ("category", "brand")
        )  # the dense index's order
        self.n_categories = max(1, int(self.item_category.max(initial=-1)) + 1)
        self.n_brands = max(1, int(self.item_brand.max(initial=-1)) + 1)

        # Modules: the content table's, then any other that events or impressions name.
        others = [events.select(pl.col("content_id").cast(self.content_dtype)).drop_nulls()]
        if impressions is not None:
            others.append(impressions.select(pl.col("content_id").cast(self.content_dtype)))
        extra = (
            pl.concat(others)
            .unique()
            .join(content.select("content_id"), on="content_id", how="anti")
            .sort("content_id")
        )
        module_ids = content["content_id"].to_list() + extra["content_id"].to_list()
        self.module_ids = module_ids
        self.module_index = {v: i for i, v in enumerate(module_ids)}
        n_modules = self.n_modules = len(module_ids)
        self._module_tables(content, n_modules)
        self.content_vectors = self._content_vector_tables(items, content)

        # Users and sessions.
        user_ids = [events.select("user_id")]
        if impressions is not None:
            user_ids.append(impressions.select(pl.col("user_id").cast(self.user_dtype)))
        if feedback is not None and cfg.shopper_feedback:
            ids = pl.col("user_id").cast(pl.String).cast(self.user_dtype, strict=False)
            user_ids.append(feedback.select(ids).drop_nulls())
        users = pl.concat(user_ids).drop_nulls().unique().sort("user_id")
        self.user_index = {v: i for i, v in enumerate(users["user_id"].to_list())}
        sessions = events.select(pl.col("session_id").cast(pl.String)).drop_nulls().unique().sort("session_id")
        self.session_index = {v: i for i, v in enumerate(sessions["session_id"].to_list())}
        self._user_events(events)
        self._impression_tables(impressions)
        self._feedback_tables(feedback if cfg.shopper_feedback else None)
        self.data_end_us = int(
            max(self.module_imps["ts"].max(initial=_NO_TIME), self.events["ts"].max(initial=_NO_TIME))
        )  # the newest indexed event or impression

    # ----------------------------------------------------------------------------------------- building the index

    @classmethod
    def from_validated(cls, validated: str | Path, config: RankFeatureConfig | None = None) -> FeatureState:
        """The index of a validated dataset directory (events, impressions, content and items)."""
        from graphrec.data.validation import read_feedback, read_validated
        from graphrec.rank.rows import read_impressions

        events, items, content, _ = read_validated(validated)
        if content is None:
            raise InputError(f"{validated}: no content.parquet; the ranking API ranks the content table's modules")
        impressions = read_impressions(validated) if (Path(validated) / "impressions.parquet").exists() else None
        feedback = read_feedback(validated)
        feedback = feedback.collect() if feedback is not None else None
        return cls(events.collect(), impressions, content, items, config, feedback)

    def _module_tables(self, content: pl.DataFrame, n_modules: int) -> None:
        self.module_type = content["module_type"].to_list() + [None] * (n_modules - content.height)
        titles = content["title"].to_list() if "title" in content.columns else [None] * content.height
        self.module_title = titles + [None] * (n_modules - content.height)
        rows, cols = [], []
        if "item_ids" in content.columns:
            exploded = content.select(
                pl.int_range(pl.len()).alias("m"), pl.col("item_ids").cast(pl.List(self.item_dtype))
            )
            exploded = exploded.explode("item_ids").drop_nulls().unique(maintain_order=True)
            for m, item in zip(exploded["m"].to_list(), exploded["item_ids"].to_list(), strict=True):
                rows.append(m)
                cols.append(self.item_index[item])
        rows_a, cols_a = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
        n_items = len(self.item_index)
        self.featured = sparse.csr_matrix(
            (np.ones(len(rows_a)), (rows_a, cols_a)), shape=(n_modules, max(1, n_items))
        )  # [modules, items] 1 where the module features the item
        self.featured_items = [
            self.featured.indices[a:b] for a, b in zip(self.featured.indptr[:-1], self.featured.indptr[1:], strict=True)
        ]
        self.item_modules = self.featured.T.tocsr()  # [items, modules], the inverse index
        category = self.item_category[cols_a]
        known = category >= 0
        self.categories = sparse.csr_matrix(
            (np.ones(int(known.sum())), (rows_a[known], category[known])), shape=(n_modules, self.n_categories)
        )  # [modules, categories] featured items per category (duplicates summed)
        self.categorised = np.asarray(self.categories.sum(axis=1)).ravel().astype(np.float32)
        self.in_category = (self.categories > 0).astype(np.float64).tocsr()
        if n_modules * self.n_categories <= DENSE_LIMIT:  # row gathers of a small dense matrix beat scipy's
            self.categories, self.in_category = self.categories.toarray(), self.in_category.toarray()
        brand = self.item_brand[cols_a]
        self.main_brand = np.full(n_modules, -1, np.int64)
        self.brand_share = np.zeros(n_modules, np.float32)
        if (brand >= 0).any():
            pairs = pl.DataFrame({"m": rows_a[brand >= 0], "b": brand[brand >= 0]})
            top = (
                pairs.group_by("m", "b")
                .agg(pl.len().alias("n"))
                .with_columns((pl.col("n") / pl.col("n").sum().over("m")).cast(pl.Float32).alias("share"))
                .sort("m", "n", "b", descending=[False, True, False])  # the most featured brand, first on a tie
                .group_by("m", maintain_order=True)
                .first()
            )
            self.main_brand[top["m"].to_numpy()] = top["b"].to_numpy()
            self.brand_share[top["m"].to_numpy()] = top["share"].to_numpy()
        self.launch = np.full(n_modules, _NO_TIME, np.int64)
        self.end = np.full(n_modules, _NO_TIME, np.int64)
        for column, target in (("launch", self.launch), ("end", self.end)):
            if column in content.columns:
                values = content[column].dt.epoch("us").fill_null(_NO_TIME).to_numpy()
                target[: content.height] = values

    def _content_vector_tables(
        self, items: pl.DataFrame | None, content: pl.DataFrame
    ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Per content-vector column of `content_vector_columns` (by number): the items' and the modules' vectors,
        reduced as the offline features reduce them ([items, d] and [modules, d] by index, zero rows where there is
        none, every item's where the items' vectors do not count)."""
        out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for number, name, size, with_items in content_vector_columns(items, content, self.config):
            module_table = content.select("content_id", name).with_row_index("_row")
            rows, values = reduced_vectors(module_table, "_row", name, size, self.config)
            module_matrix = np.zeros((self.n_modules, values.shape[1]), np.float32)
            module_matrix[rows.to_numpy()] = values  # module m is the content table's row m
            item_matrix = np.zeros((max(1, len(self.item_index)), values.shape[1]), np.float32)
            if with_items:
                item_table = items.select(pl.col("item_id").cast(self.item_dtype), name)
                ids, vectors = reduced_vectors(item_table, "item_id", name, size, self.config)
                item_matrix[[self.item_index[i] for i in ids.to_list()]] = vectors
            out[number] = (item_matrix, module_matrix)
        return out

    def _user_events(self, events: pl.DataFrame) -> None:
        """The users' events sorted by (user, time), as arrays."""
        frame = events.select(
            pl.col("user_id").replace_strict(self.user_index, default=None, return_dtype=pl.Int64).alias("u"),
            pl.col("timestamp").dt.epoch("us").alias("ts"),
            *self._event_columns(events),
        ).filter(pl.col("u").is_not_null() & pl.col("ts").is_not_null())
        frame = frame.sort("u", "ts", maintain_order=True)
        self.events = {c: frame[c].to_numpy() for c in frame.columns if c != "u"}
        self.event_segments = _Segments(frame["u"].to_numpy(), len(self.user_index))

    def _event_columns(self, events: pl.DataFrame) -> list[pl.Expr]:
        schema = events.schema
        item = pl.col("item_id").cast(self.item_dtype) if "item_id" in schema else pl.lit(None, self.item_dtype)
        module = (
            pl.col("content_id").cast(self.content_dtype)
            if "content_id" in schema
            else pl.lit(None, self.content_dtype)
        )
        session = pl.col("session_id").cast(pl.String) if "session_id" in schema else pl.lit(None, pl.String)
        kind = pl.col("event_type").cast(pl.String)
        weight = kind.replace_strict(self.config.event_weights, default=0.0, return_dtype=pl.Float32)
        item_index = item.replace_strict(self.item_index, default=-1, return_dtype=pl.Int64)
        return [
            kind.replace_strict(_KIND, default=-1, return_dtype=pl.Int8).alias("kind"),
            item.is_not_null().alias("is_item"),
            module.is_not_null().alias("is_content"),
            item_index.alias("item"),
            module.replace_strict(self.module_index, default=-1, return_dtype=pl.Int64).alias("module"),
            pl.when(item.is_not_null()).then(weight).otherwise(0.0).cast(pl.Float64).alias("w"),
            session.replace_strict(self.session_index, default=-1, return_dtype=pl.Int64).alias("session"),
        ]

    def _impression_tables(self, impressions: pl.DataFrame | None) -> None:
        """Per module: impression times with running totals (impressions, clicks, expected clicks); per user: their
        impressions (module, time, click)."""
        n_users, n_modules = len(self.user_index), self.n_modules
        if impressions is None or impressions.is_empty():
            empty = np.zeros(0, np.int64)
            self.module_imps = {"ts": empty, "imp": np.zeros(0), "click": np.zeros(0), "expected": np.zeros(0)}
            self.user_imps = {"ts": empty, "module": empty, "click": np.zeros(0)}
            self.module_segments = _Segments(empty, n_modules)
            self.user_imp_segments = _Segments(empty, n_users)
            return
        maps = {
            "_u": pl.DataFrame({"user_id": list(self.user_index)}, schema={"user_id": self.user_dtype}).with_row_index(
                "_u"
            ),
            "_m": pl.DataFrame(
                {"content_id": self.module_ids}, schema={"content_id": self.content_dtype}
            ).with_row_index("_m"),
        }
        imps = _impressions(impressions.lazy(), maps, self.config).collect()
        by_module = imps.sort("_m", "ts", maintain_order=True)
        self.module_imps = {
            "ts": by_module["ts"].to_numpy(),
            "imp": np.cumsum(by_module["_imp"].to_numpy()),
            "click": np.cumsum(by_module["_click"].to_numpy()),
            "expected": np.cumsum(by_module["_expected"].fill_null(0.0).to_numpy()),
        }
        self.module_segments = _Segments(by_module["_m"].to_numpy().astype(np.int64), n_modules)
        by_user = imps.filter(pl.col("_u").is_not_null()).sort("_u", "ts", maintain_order=True)
        self.user_imps = {
            "ts": by_user["ts"].to_numpy(),
            "module": by_user["_m"].to_numpy().astype(np.int64),
            "click": by_user["_click"].to_numpy(),
        }
        self.user_imp_segments = _Segments(by_user["_u"].to_numpy().astype(np.int64), n_users)

    def _feedback_tables(self, feedback: pl.DataFrame | None) -> None:
        """Per user, in time order: the modules of their feedback actions and whether each was more-like-this or a
        hide (modules the index does not know are left out: they are never candidates)."""
        frame = pl.DataFrame(schema={"u": pl.Int64, "ts": pl.Int64, "module": pl.Int64, "more": pl.Boolean})
        if feedback is not None and not feedback.is_empty():
            frame = (
                feedback.select(
                    pl.col("user_id")
                    .cast(pl.String)
                    .cast(self.user_dtype, strict=False)  # matched by value, as the offline features match them
                    .replace_strict(self.user_index, default=None, return_dtype=pl.Int64)
                    .alias("u"),
                    pl.col("timestamp").dt.epoch("us").alias("ts"),
                    pl.col("content_id")
                    .cast(pl.String)
                    .cast(self.content_dtype, strict=False)
                    .replace_strict(self.module_index, default=None, return_dtype=pl.Int64)
                    .alias("module"),
                    (pl.col("action").cast(pl.String) == "more_like_this").alias("more"),
                )
                .drop_nulls()
                .sort("u", "ts", maintain_order=True)
            )
        self.user_feedback = {c: frame[c].to_numpy() for c in ("ts", "module", "more")}
        self.feedback_segments = _Segments(frame["u"].to_numpy(), len(self.user_index))

    def _user_feedback(self, u: int | None, t_us: int) -> tuple[np.ndarray, np.ndarray]:
        """[modules] the user's more-like-this actions and hides on each module before `t_us`."""
        if u is None:
            return np.zeros(self.n_modules), np.zeros(self.n_modules)
        part = self.feedback_segments.of(u)
        ts, module, more = (self.user_feedback[k][part] for k in ("ts", "module", "more"))
        keep = ts < t_us
        return (
            np.bincount(module[keep & more], minlength=self.n_modules).astype(np.float64),
            np.bincount(module[keep & ~more], minlength=self.n_modules).astype(np.float64),
        )

    # ----------------------------------------------------------------------------------------------- lookups

    def module_of(self, content_id: Any) -> int | None:
        """The module's index, or None for a module the index does not know."""
        index = self.module_index.get(content_id)  # most requests name ids in the index's own type
        return index if index is not None else self.module_index.get(coerce_id(content_id, self.content_dtype))

    def active_modules(self, t_us: int) -> np.ndarray:
        """Indices of the content table's modules live at `t_us`: launched at or before it (or without a launch)
        and not ended."""
        launched = (self.launch == _NO_TIME) | (self.launch <= t_us)
        running = (self.end == _NO_TIME) | (self.end > t_us)
        listed = np.array([kind is not None for kind in self.module_type], dtype=bool)
        return np.flatnonzero(launched & running & listed)

    def module_popularity(self, t_us: int) -> np.ndarray:
        """[modules] each module's COEC (position-corrected CTR, shrunk to 1) over impressions before `t_us`."""
        _, click, expected, _ = self._module_totals(np.arange(self.n_modules), t_us)
        prior = self.config.coec_prior_clicks
        return (click + prior) / (expected + prior)

    def _module_totals(self, modules: np.ndarray, until_us: int):
        """Impressions, clicks, expected clicks and first impression time (or _NO_TIME) of each module before
        `until_us`."""
        start, end = self.module_segments.start[modules], self.module_segments.end[modules]
        ts = self.module_imps["ts"]
        if len(ts) and until_us <= int(ts.max()):  # a time inside the log: count each module's impressions before it
            end = np.array(
                [s + np.searchsorted(ts[s:e], until_us, side="left") for s, e in zip(start, end, strict=True)]
            )
        end = np.asarray(end, np.int64)
        has = end > start
        last = np.where(has, end - 1, 0)

        def total(name: str) -> np.ndarray:
            values = self.module_imps[name]
            if not len(values):
                return np.zeros(len(modules))
            before = np.where(start > 0, values[np.maximum(start - 1, 0)], 0.0)
            return np.where(has, values[last] - before, 0.0)

        first = (
            np.where(has, ts[np.minimum(start, len(ts) - 1)], _NO_TIME) if len(ts) else np.full(len(modules), _NO_TIME)
        )
        return total("imp"), total("click"), total("expected"), first

    # -------------------------------------------------------------------------------------------- the features

    def features(
        self,
        user_id: Any,
        modules: np.ndarray,
        t_us: int,
        device: str | None = None,
        session_id: str | None = None,
        recent: RecentEvents | None = None,
    ) -> RequestFeatures:
        """[len(modules), F] the behaviour features of `user_id` and each module (indices from `module_of`) at
        `t_us`, from the indexed history plus `recent` (events of the request's session `session_id`)."""
        cfg = self.config
        modules = np.asarray(modules, np.int64)
        n = len(modules)
        u = self.user_index.get(coerce_id(user_id, self.user_dtype))
        ev = self._events_of(u, recent, session_id)
        before = ev["ts"] < t_us
        ev = {k: v[before] for k, v in ev.items()}
        is_item, is_content, kind = ev["is_item"], ev["is_content"], ev["kind"]
        session = self.session_index.get(session_id, -2) if session_id is not None else None
        out: dict[str, np.ndarray | float] = {}
        for name_kind, code in _KIND.items():
            mask = is_item & (kind == code)
            for days in cfg.windows_days:
                recent_mask = mask & (ev["ts"] >= t_us - days * DAY_US)
                out[f"user_{_PLURAL[name_kind]}_{days}d"] = float(recent_mask.sum())
        out["user_item_events"] = float(sum((is_item & (kind == code)).sum() for code in _KIND.values()))
        out["user_content_views"] = float((is_content & (kind == _VIEW)).sum())
        out["user_content_clicks"] = float((is_content & (kind == _CLICK)).sum())
        out["user_days_since_first_event"] = _days_since(t_us, int(ev["ts"].min()) if len(ev["ts"]) else None)

        # Weighted item events per category and on each module's main brand.
        w = ev["w"]
        user_weight = float(w[is_item].sum())
        item = np.where(is_item, ev["item"], -1)
        has_item = item >= 0
        category, brand = np.full(len(item), -1, np.int64), np.full(len(item), -1, np.int64)  # -1: no known item
        category[has_item], brand[has_item] = self.item_category[item[has_item]], self.item_brand[item[has_item]]
        by_category = np.bincount(category[category >= 0], weights=w[category >= 0], minlength=self.n_categories)
        category_events = np.asarray(self.categories[modules] @ by_category).ravel()
        categorised = self.categorised[modules].astype(np.float64)
        category_events = np.divide(category_events, categorised, out=np.zeros(n), where=categorised > 0)
        out["user_category_events"] = category_events
        out["user_category_share"] = category_events / user_weight if user_weight > 0 else np.zeros(n)
        by_brand = np.bincount(brand[brand >= 0], weights=w[brand >= 0], minlength=self.n_brands)
        main = self.main_brand[modules]
        brand_weight = np.where(main >= 0, by_brand[np.maximum(main, 0)], 0.0)
        out["user_brand_share"] = self.brand_share[modules] * (brand_weight / user_weight if user_weight > 0 else 0.0)

        # Item events on each module's featured items (through the inverse index), for the user and the session.
        touched = self._module_touches(item[has_item])
        out["user_featured_events"] = touched[modules]
        out["user_featured_any"] = (touched[modules] > 0).astype(np.float64)
        in_session = is_item & (ev["session"] == session) if session is not None else np.zeros(len(w), bool)
        session_events = float(in_session.sum())
        session_category = np.bincount(category[in_session & (category >= 0)], minlength=self.n_categories).astype(
            np.float64
        )
        session_in_category = np.asarray(self.in_category[modules] @ session_category).ravel()
        session_touched = self._module_touches(item[in_session & has_item])[modules]
        out["session_item_events"] = session_events
        out["session_category_share"] = session_in_category / session_events if session_events else np.zeros(n)
        out["session_featured_events"] = session_touched
        out["session_featured_share"] = session_touched / session_events if session_events else np.zeros(n)

        # Content: the user's and the session's profiles, the event-weighted vectors of their item events' items and
        # of their content clicks' modules, against each module's vector.
        item_rows = np.flatnonzero(has_item)
        click_rows = np.flatnonzero(is_content & (kind == _CLICK) & (ev["module"] >= 0))
        same_session = ev["session"] == session if session is not None else np.zeros(len(w), bool)
        profile_session = np.concatenate([same_session[item_rows], same_session[click_rows]])
        for number, name in enumerate(cfg.content_vectors):
            kind_name = _vector_kind(name)
            out[f"user_{kind_name}_similarity"] = out[f"session_{kind_name}_similarity"] = np.zeros(n)
            if number not in self.content_vectors:
                continue
            item_matrix, module_matrix = self.content_vectors[number]
            weighted = np.concatenate(
                [
                    w[item_rows].astype(np.float32)[:, None] * item_matrix[item[item_rows]],
                    np.float32(cfg.event_weights["click"]) * module_matrix[ev["module"][click_rows]],
                ]
            )  # [item events + content clicks, d]
            vectors = module_matrix[modules]  # [n, d]
            out[f"user_{kind_name}_similarity"] = _cosine(weighted, vectors)
            out[f"session_{kind_name}_similarity"] = _cosine(weighted[profile_session], vectors)

        # The modules' impressions (all users) and the user's own, up to the feedback delay.
        until = t_us - cfg.feedback_delay_seconds * SECOND_US
        imp, click, expected, first = self._module_totals(modules, until)
        out["module_impressions"] = imp
        out["module_clicks"] = click
        out["module_coec"] = (click.astype(np.float32) + np.float32(cfg.coec_prior_clicks)) / (
            expected.astype(np.float32) + np.float32(cfg.coec_prior_clicks)
        )
        out["module_days_since_first_impression"] = _days_since_many(t_us, first)
        launch = self.launch[modules]
        out["module_age_days"] = _days_since_many(t_us, np.where(launch != _NO_TIME, launch, first))
        seen, clicked = self._user_exposure(u, until)
        out["user_module_impressions"] = seen[modules]
        out["user_module_clicks"] = clicked[modules]
        views = ev["module"][is_content & (kind == _VIEW) & (ev["module"] >= 0)]
        out["user_module_views"] = np.bincount(views, minlength=self.n_modules)[modules].astype(np.float64)
        if cfg.shopper_feedback:
            more, hidden = self._user_feedback(u, t_us)
            out["user_module_more_like_this"], out["user_module_hidden"] = more[modules], hidden[modules]

        when = _EPOCH + timedelta(microseconds=t_us)
        hour = when.hour + when.minute / 60 + when.second / 3_600
        out["hour_sin"] = math.sin(hour * (2 * math.pi / 24))
        out["hour_cos"] = math.cos(hour * (2 * math.pi / 24))
        out["weekday"] = float(when.weekday())
        for name in cfg.devices:
            out[f"device_{name}"] = 1.0 if device == name else 0.0
        dense = np.empty((n, len(self.names)), np.float32)
        for column, name in enumerate(self.names):
            dense[:, column] = out[name]
        category_events = np.bincount(category[category >= 0], minlength=self.n_categories)
        return RequestFeatures(dense, self.names, u is not None, int(is_item.sum() + is_content.sum()), category_events)

    def top_category(self, module: int, category_events: np.ndarray) -> tuple[str | None, int]:
        """The module's category with most of the user's item events (`RequestFeatures.category_events`): its name
        and the count (None, 0 where the user has none in the module's categories)."""
        row = self.categories[module]
        columns = np.flatnonzero(row) if isinstance(row, np.ndarray) else row.indices
        if not len(columns):
            return None, 0
        counts = category_events[columns]
        best = int(np.argmax(counts))
        if counts[best] <= 0:
            return None, 0
        index = int(columns[best])
        name = self.category_names[index] if index < len(self.category_names) else str(index)
        return name, int(counts[best])

    def _events_of(self, u: int | None, recent: RecentEvents | None, session_id: str | None) -> dict[str, np.ndarray]:
        """The user's indexed events with `recent` appended (those in the request's session)."""
        if u is not None:
            part = self.event_segments.of(u)
            stored = {k: v[part] for k, v in self.events.items()}
        else:
            stored = {k: v[:0] for k, v in self.events.items()}
        if not recent:
            return stored
        session = self.session_index.get(session_id, -2) if session_id is not None else -1
        items = [None if i is None else self.item_index.get(coerce_id(i, self.item_dtype), -1) for i in recent.item_ids]
        added = {
            "ts": np.asarray(recent.timestamps, np.int64),
            "kind": np.asarray([_KIND.get(k, -1) for k in recent.event_types], np.int8),
            "is_item": np.asarray([i is not None for i in recent.item_ids], bool),
            "is_content": np.asarray([c is not None for c in recent.content_ids], bool),
            "item": np.asarray([-1 if i is None else i for i in items], np.int64),
            "module": np.asarray(
                [
                    -1 if c is None else self.module_index.get(coerce_id(c, self.content_dtype), -1)
                    for c in recent.content_ids
                ],
                np.int64,
            ),
            "w": np.asarray(
                [
                    self.config.event_weights.get(k, 0.0) if i is not None else 0.0
                    for k, i in zip(recent.event_types, recent.item_ids, strict=True)
                ],
                np.float32,
            ).astype(np.float64),
            "session": np.full(len(recent), session, np.int64),
        }
        return {k: np.concatenate([stored[k], added[k].astype(stored[k].dtype)]) for k in stored}

    def _module_touches(self, items: np.ndarray) -> np.ndarray:
        """[modules] how many of the item events (item indices) fall on each module's featured items."""
        if not len(items):
            return np.zeros(self.n_modules)
        touched, counts = np.unique(items, return_counts=True)
        indptr, indices = self.item_modules.indptr, self.item_modules.indices
        lengths = indptr[touched + 1] - indptr[touched]
        if not lengths.sum():
            return np.zeros(self.n_modules)
        # The touched items' module lists, concatenated: positions indptr[i] .. indptr[i+1] for each touched i.
        offsets = np.repeat(indptr[touched] - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        return np.bincount(indices[offsets], weights=np.repeat(counts, lengths), minlength=self.n_modules).astype(
            np.float64
        )

    def _user_exposure(self, u: int | None, until_us: int) -> tuple[np.ndarray, np.ndarray]:
        """[modules] times the user was shown each module, and clicked it, before `until_us`."""
        if u is None:
            return np.zeros(self.n_modules), np.zeros(self.n_modules)
        part = self.user_imp_segments.of(u)
        ts, module, click = (self.user_imps[k][part] for k in ("ts", "module", "click"))
        keep = ts < until_us
        return (
            np.bincount(module[keep], minlength=self.n_modules).astype(np.float64),
            np.bincount(module[keep], weights=click[keep], minlength=self.n_modules),
        )


def _days_since(t_us: int, ts: int | None) -> float:
    return 0.0 if ts is None else max(0.0, (t_us - ts) / DAY_US)


def _days_since_many(t_us: int, ts: np.ndarray) -> np.ndarray:
    return np.where(ts == _NO_TIME, 0.0, np.maximum(0.0, (t_us - ts) / DAY_US))


def coerce_id(value: Any, dtype: pl.DataType) -> Any:
    """An id from a request as the index's id type (an integer id may arrive as a string, or the reverse)."""
    if value is None:
        return None
    if dtype.is_integer():
        try:
            return int(value)
        except (TypeError, ValueError):
            return None
    return str(value)


def _cosine(weighted: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """[n] cosine between the sum of `weighted` ([events, d]) and each row of `vectors` ([n, d]), 0 where either is
    zero: the profile summed in float64 and stored in float32, as the offline features store their running totals,
    then the cosine in float64, as they compute it."""
    profile = weighted.astype(np.float64).sum(axis=0).astype(np.float32).astype(np.float64)
    vectors = vectors.astype(np.float64)
    norms = np.sqrt((vectors * vectors).sum(axis=1)) * np.sqrt(profile @ profile)
    return np.divide(vectors @ profile, norms, out=np.zeros(len(vectors)), where=norms > 0)
