"""Point-in-time behaviour features for the homepage CTR ranker, computed only from what happened before each row.

`behaviour_features` serves training (rows = logged impressions) and serving (rows = one request's candidate
modules; events = the user's history plus the request's fresh events) with the same code, so online and offline
features are equal by construction. Every count is a running total per key (user, module, (user, module),
session, (session, module), (user, category), ...) over the distinct timestamps of its events, read with a
backward as-of join that excludes exact matches: a row at time t sees the totals of the key's last timestamp
strictly before t, never an event of the same instant (the request's own impressions) or a later one. Item events
reach modules through an inverse index (item -> the modules that feature it), so no table is ever the product of
impressions and featured items.

Content similarity: the user's (and the session's) events before t, weighted by event type, sum into a running
profile the content vectors of the items of their item events and of the modules they clicked (content events of
type click; content views are not counted, as they record what the homepage showed, not what the user chose).
The feature is the cosine between that profile and the module's own content vector (image, title), which a module
has from its first day on. A module's vector alone makes the feature: on a news site without items (MIND) the
profile is the clicked news; the items' vectors add to it where the items hold the column with the same size.

The module's position-corrected CTR is COEC, clicks over expected clicks (Zhang & Jones 2007, "Comparing click
logs and editorial labels for training query rewriting"), each impression's expected clicks being the CTR of its
(device, slot) on the days before it.
"""

from __future__ import annotations

import functools
import logging
import math
import operator
import time
import zlib
from collections.abc import Iterable

import numpy as np
import polars as pl

from graphrec.data.config import VECTOR_SUFFIX
from graphrec.data.schema import EVENT_TYPES
from graphrec.errors import SchemaError
from graphrec.rank.config import DEFAULT_EVENT_WEIGHTS, RankFeatureConfig

__all__ = ["DEFAULT_EVENT_WEIGHTS", "RankFeatureConfig", "behaviour_features", "feature_descriptions"]

log = logging.getLogger("graphrec.rank")

SECOND_US = 1_000_000
DAY_US = 86_400 * SECOND_US
# Rows computed at once by `behaviour_features`. A part's query reads the whole event history before it, so its
# cost is mostly the history's, not the part's: on a 10M-event shop, when each part also read the impressions before
# it, the last million rows took 12.7 s and 3.9 GB, half a million 10.2 s and 3.9 GB, two million 16.8 s and 3.8 GB.
# A million rows at a time: 15 parts for the 14.8M rows there, not 30.
CHUNK_ROWS = 1_000_000
_PLURAL = {
    "view": "views",
    "click": "clicks",
    "add_to_cart": "carts",
    "add_to_wishlist": "wishlists",
    "purchase": "purchases",
}


def feature_descriptions(config: RankFeatureConfig | None = None) -> dict[str, str]:
    """Every feature `behaviour_features` computes under `config`: name -> description, in output column order."""
    cfg = config or RankFeatureConfig()
    out = {
        f"user_{_PLURAL[kind]}_{days}d": f"the user's {kind} item events in the {days} days before t"
        for kind in EVENT_TYPES
        for days in cfg.windows_days
    }
    out |= {
        "user_item_events": "the user's item events before t",
        "user_content_views": "the user's content view events (modules examined on the homepage) before t",
        "user_content_clicks": "the user's content click events before t",
        "user_days_since_first_event": "days from the user's first event to t (0 without history)",
        "user_category_events": "the user's weighted item events before t in the module's categories, each "
        "category weighted by its share of the module's featured items",
        "user_category_share": "user_category_events over all the user's weighted item events before t (the "
        "overlap of the user's and the module's category mixes)",
        "user_brand_share": "share of the user's weighted item events before t on the module's main brand, times "
        "that brand's share of the module's featured items",
        "user_featured_events": "the user's item events before t on items the module features",
        "user_featured_any": "1 if the user had an item event before t on an item the module features",
        "session_item_events": "item events of the row's session before t",
        "session_category_share": "share of the session's item events before t in one of the module's categories",
        "session_featured_events": "the session's item events before t on items the module features",
        "session_featured_share": "share of the session's item events before t on items the module features",
        "module_impressions": "the module's impressions (all users) before t",
        "module_clicks": "clicks on the module's impressions before t",
        "module_coec": "(clicks + prior) / (expected clicks + prior) over the module's impressions before t, an "
        "impression's expected clicks being its (device, slot) CTR on the days before it",
        "module_days_since_first_impression": "days from the module's first impression to t (0 without one)",
        "module_age_days": "days from the module's launch (the content table's `launch`, else its first "
        "impression) to t, 0 before it",
        "user_module_impressions": "times the user was shown the module before t",
        "user_module_clicks": "clicks of the user on the module's impressions before t",
        "user_module_views": "the user's content view events (examinations) of the module before t",
        "hour_sin": "sine of t's hour of day (UTC, fractional)",
        "hour_cos": "cosine of t's hour of day (UTC, fractional)",
        "weekday": "t's day of the week (UTC), 0 = Monday",
    }
    out |= {f"device_{device}": f"1 if the row's device is {device}" for device in cfg.devices}
    for name in cfg.content_vectors:
        kind = _vector_kind(name)
        out[f"user_{kind}_similarity"] = (
            f"cosine between the module's {name} and the sum of the {name}s of the items of the user's item events "
            "and of the modules the user clicked before t, weighted by event type (0 without either)"
        )
        out[f"session_{kind}_similarity"] = (
            f"cosine between the module's {name} and the sum of the {name}s of the items of the session's item "
            "events and of the modules clicked in it before t, weighted by event type (0 without either)"
        )
    if cfg.shopper_feedback:
        out["user_module_more_like_this"] = "the user's more-like-this actions on the module before t"
        out["user_module_hidden"] = "the user's hide and hide-similar actions on the module before t"
    return out


def _vector_kind(name: str) -> str:
    return name.removesuffix(VECTOR_SUFFIX)


FEATURES: dict[str, str] = feature_descriptions()
"""The features under the default config, name -> description, in output column order."""


def behaviour_features(
    rows: pl.LazyFrame | pl.DataFrame,
    events: pl.LazyFrame | pl.DataFrame,
    impressions: pl.LazyFrame | pl.DataFrame | None,
    content: pl.DataFrame,
    items: pl.DataFrame | None,
    config: RankFeatureConfig | None = None,
    feedback: pl.LazyFrame | pl.DataFrame | None = None,
    chunk_rows: int | None = CHUNK_ROWS,
) -> pl.DataFrame:
    """One row per input row, in input order: `row_id`, `slot` where the rows have it, then the Float32 columns of
    `feature_descriptions(config)` without nulls, each computed only from events and impressions strictly before
    the row's timestamp.

    Args:
        rows: `user_id`, `content_id`, `timestamp`, and optionally `row_id` (default: the row's position),
            `session_id`, `device` and `slot` (passed through, not a feature); other columns are ignored.
        events: contract events (`user_id`, `item_id`, `content_id`, `event_type`, `timestamp`, `session_id`);
            for serving, the user's history with the request's fresh events appended.
        impressions: contract impressions (`user_id`, `content_id`, `slot`, `timestamp`, `clicked`, `device`);
            None makes the impression features 0.
        content: the content table (`content_id`, `item_ids`, optionally `launch` and content vectors).
        items: the items table (`item_id`, `category`, `brand`); None makes category and brand features 0.
        config: the feature settings; defaults to `RankFeatureConfig()`.
        feedback: the validated feedback table (`user_id`, `content_id`, `action`, `timestamp`); None makes the
            feedback features 0.
        chunk_rows: more rows than this are computed in time order, this many at a time, each part from the events
            up to its last row and from the impressions' running totals computed once for every row (the same
            values; the query's memory grows with the rows it holds, 3 GB for the 1.8M impressions of a 1M-event
            shop at once). None: all at once.
    """
    frame = rows.collect() if isinstance(rows, pl.LazyFrame) else rows
    if chunk_rows and frame.height > chunk_rows:
        return _in_time_chunks(frame, events, impressions, content, items, config, feedback, chunk_rows)
    plan = _feature_plan(frame, events, impressions, content, items, config or RankFeatureConfig(), feedback)
    out = plan.collect(
        engine="in-memory"  # about twice as fast as the streaming engine on these sorts and joins
    )
    if not (out["_pos"] == out["_pos_check"]).all():  # the per-category sums are aligned by order, not by a join
        raise AssertionError("behaviour_features: per-category sums out of step with the rows")
    return out.drop("_pos", "_pos_check")


def _in_time_chunks(
    rows: pl.DataFrame, events, impressions, content, items, config, feedback, chunk_rows: int
) -> pl.DataFrame:
    """`behaviour_features` of `rows` in parts of `chunk_rows` rows in time order. Ids are read as codes
    (`encode_ids`). The features read from the impressions are computed once for every row
    (`_impression_features`), straight into the output, so no part reads the impressions: that halved the time of
    a 10M-event shop's last parts and took a third off their memory. A part's other features read only what
    happened before its rows, so the events and feedback after its last row are left out of its query. Each part's
    values are written straight to their input positions (one array per column, allocated once): no list of parts,
    no concatenation and no reordering copy, so the features are held once (3 GB for a 10M-event shop's 14.8M
    impression rows; three copies at the peak otherwise)."""
    if "row_id" not in rows.columns:
        rows = rows.with_row_index("row_id").with_columns(pl.col("row_id").cast(pl.Int64))
    rows, events, impressions, feedback = (
        None if table is None else encode_ids(table) for table in (rows, events, impressions, feedback)
    )
    precomputed: dict[str, np.ndarray] = {}
    if impressions is not None:
        started = time.perf_counter()
        precomputed = _impression_features(rows, impressions, content, items, config or RankFeatureConfig())
        impressions = None
        log.info(
            "ranker features: impression features of %s rows (%.0fs)", f"{rows.height:,}", time.perf_counter() - started
        )
    from_impressions = set(precomputed)  # their arrays are the output's; the parts' own values of them are left out
    n = rows.height
    # Rows already in time order (the logged impressions are) are taken as slices: no order array, no gathered copy.
    order = (
        None
        if rows["timestamp"].is_sorted()
        else np.argsort(rows["timestamp"].dt.epoch("us").to_numpy(), kind="stable")
    )
    filled: dict[str, np.ndarray] = {}  # numeric columns without nulls (all features): one array each
    other: dict[str, list[pl.Series]] = {}  # the rest, kept by part
    schema = None
    for start in range(0, n, chunk_rows):
        at = slice(start, min(start + chunk_rows, n)) if order is None else order[start : start + chunk_rows]
        part = rows[at]
        until = pl.col("timestamp") <= part["timestamp"].max()
        cut = [None if table is None else table.lazy().filter(until) for table in (events, impressions, feedback)]
        out = behaviour_features(part, cut[0], cut[1], content, items, config, cut[2], chunk_rows=None)
        if schema is None:
            schema = out.schema
            for name, values in out.to_dict().items():
                if name in precomputed:
                    filled[name] = precomputed.pop(name)
                elif values.dtype.is_numeric() and not values.null_count():
                    filled[name] = np.empty(n, values.to_numpy().dtype)
                else:
                    other[name] = []
        for name in filled:
            if name in from_impressions:
                continue
            if out[name].null_count():  # features never are; `slot` and `row_id` come from validated impressions
                raise AssertionError(f"behaviour_features: nulls in {name} after a first part without")
            filled[name][at] = out[name].to_numpy()
        for name, parts in other.items():
            parts.append(out[name])
        del out, part
        log.info("ranker features: %s of %s rows", f"{min(start + chunk_rows, n):,}", f"{n:,}")
    back = np.argsort(order, kind="stable") if other and order is not None else None
    columns = []
    for name, dtype in schema.items():
        if name in filled:
            filled[name].flags.writeable = False  # the series below shares the buffer
            columns.append(pl.Series(name, filled[name], dtype=dtype))
        else:
            column = pl.concat(other[name], how="vertical_relaxed")
            columns.append(column if back is None else column.gather(back))
    return pl.DataFrame(columns)


ID_COLUMNS = ("user_id", "content_id", "session_id", "item_id")
# The features read from the impressions: `_impression_features` computes them for many rows at once.
IMPRESSION_FEATURES = (
    "module_impressions",
    "module_clicks",
    "module_coec",
    "module_days_since_first_impression",
    "module_age_days",
    "user_module_impressions",
    "user_module_clicks",
)


def encode_ids(table: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame | pl.LazyFrame:
    """`table` with its String id columns (`ID_COLUMNS`) as Categorical: the same features (the query only joins
    and groups on ids), read from 4-byte codes instead of strings. Each part of a large log joins its whole history
    to the id maps; on codes, the last part of a 10M-event shop's impressions peaks 2.2 GB above its inputs, not
    3.1 GB, and runs about 6% faster."""
    schema = table.collect_schema() if isinstance(table, pl.LazyFrame) else table.schema
    strings = [c for c in ID_COLUMNS if schema.get(c) == pl.String]
    return table.with_columns(pl.col(strings).cast(pl.Categorical)) if strings else table


def _feature_plan(
    rows: pl.LazyFrame | pl.DataFrame,
    events: pl.LazyFrame | pl.DataFrame,
    impressions: pl.LazyFrame | pl.DataFrame | None,
    content: pl.DataFrame,
    items: pl.DataFrame | None,
    cfg: RankFeatureConfig,
    shopper_feedback: pl.LazyFrame | pl.DataFrame | None = None,
) -> pl.LazyFrame:
    """The lazy query behind `behaviour_features` (the rows and the small catalog tables are read eagerly)."""
    events = events.lazy()
    base, maps = _base(rows)
    catalog = _catalog(items, events.collect_schema().get("item_id", pl.Int64))
    modules = _module_tables(content, catalog, maps["_m"])
    n_modules, n_categories, n_brands = maps["_m"].height, max(1, modules["n_categories"]), max(1, modules["n_brands"])
    devices = {device: index for index, device in enumerate(cfg.devices)}
    base = (
        base.join(modules["per_module"], on="_m", how="left", maintain_order="left")
        .with_columns(
            _key("_u", "_m", n_modules, "_um"),
            _key("_s", "_m", n_modules, "_sm"),
            _key("_u", "_b", n_brands, "_ub"),
            pl.col("device").replace_strict(devices, default=None, return_dtype=pl.UInt8),
        )
        .drop("_b")
        .sort("t", maintain_order=True)  # the left side of every as-of join below, which keeps its order
    )
    features = base.lazy()
    feedback = pl.col("t") - cfg.feedback_delay_seconds * SECOND_US
    looked_up = {key: base.select(pl.col(key).drop_nulls().unique()).lazy() for key in ("_um", "_sm")}

    ev = _events(events, maps, catalog, cfg).cache()  # read once: projections differ between its uses
    item_events = ev.filter(pl.col("item_id").is_not_null())
    # Item events reaching the modules that feature their item: the inverse index, not impressions x items.
    touches = item_events.select("item_id", "_u", "_s", "ts").join(modules["featured"].lazy(), on="item_id").cache()

    # The user: item events per type (over all time and per window), content events, weighted item events.
    kinds = [f"_n_{kind}" for kind in EVENT_TYPES]
    is_item, is_content = pl.col("item_id").is_not_null(), pl.col("_content")
    user_stream = ev.select(
        "_u",
        "ts",
        *[(is_item & (pl.col("_kind") == code)).alias(name) for code, name in enumerate(kinds)],
        (is_content & (pl.col("_kind") == EVENT_TYPES.index("view"))).alias("_n_cview"),
        (is_content & (pl.col("_kind") == EVENT_TYPES.index("click"))).alias("_n_cclick"),
        pl.when(is_item).then(pl.col("_w")).otherwise(0.0).alias("_w_user"),
    )
    user_totals = _running_totals(user_stream, "_u", [*kinds, "_n_cview", "_n_cclick", "_w_user"], "_first_ts")
    user_totals = user_totals.cache()
    features = _as_of(features, user_totals, "_u", pl.col("t"))
    for days in cfg.windows_days:
        window = user_totals.select("_u", "ts", *kinds).rename({k: f"{k}_{days}d" for k in kinds})
        features = _as_of(features, window, "_u", pl.col("t") - days * DAY_US).with_columns(
            (pl.col(k).fill_null(0.0) - pl.col(f"{k}_{days}d").fill_null(0.0)).alias(f"{k}_{days}d") for k in kinds
        )

    # The user and the module: item events on its featured items, its examinations and, from impressions, how
    # often it was shown to and clicked by the user.
    user_module = [
        touches.select(_key("_u", "_m", n_modules, "_um"), "ts", pl.lit(1).alias("_feat")),
        ev.filter(pl.col("_m").is_not_null() & (pl.col("_kind") == EVENT_TYPES.index("view"))).select(
            _key("_u", "_m", n_modules, "_um"), "ts", pl.lit(1).alias("_cview_um")
        ),
    ]
    if cfg.shopper_feedback and shopper_feedback is not None:
        user_module.append(_feedback(shopper_feedback.lazy(), maps, n_modules))
    exposure = []
    if impressions is not None:
        imps = _impressions(impressions.lazy(), maps, cfg).cache()
        features = _as_of(features, _module_totals(imps), "_m", feedback)
        exposure = [_exposure(imps, n_modules)]
    if cfg.feedback_delay_seconds == 0:  # one stream for both, read at t
        user_module, exposure = user_module + exposure, []
    for streams, on in ((user_module, pl.col("t")), (exposure, feedback)):
        if streams:
            stream = pl.concat(streams, how="diagonal").join(looked_up["_um"], on="_um", how="semi")
            names = ("_feat", "_cview_um", "_imp_um", "_click_um", "_more_um", "_hide_um")
            values = [c for c in names if c in stream.collect_schema()]
            features = _as_of(features, _running_totals(stream, "_um", values), "_um", on)

    # Content: the user's and the session's running content profiles against the module's content vectors. A
    # profile sums, weighted by event type, the vectors of the items of their item events and of the modules of
    # their content clicks (content views are examinations, what the homepage showed, not a choice).
    clicks = ev.filter(pl.col("_content") & (pl.col("_kind") == EVENT_TYPES.index("click")))
    click_weight = pl.lit(cfg.event_weights["click"], pl.Float32).alias("_w")
    for number, (item_vectors, module_vectors) in _content_vectors(items, content, maps["_m"], catalog, cfg).items():
        dims = [c for c in module_vectors.columns if c != "content_id"]
        touched = [clicks.join(module_vectors.lazy(), on="content_id").with_columns(click_weight)]
        if item_vectors is not None:
            touched.append(item_events.join(item_vectors.lazy(), on="item_id"))
        rated = pl.concat([frame.select("_u", "_s", "ts", pl.col("_w").cast(pl.Float32), *dims) for frame in touched])
        for owner, key in (("user", "_u"), ("session", "_s")):
            names = [f"_p{owner[0]}{number}_{d}" for d in dims]
            stream = rated.filter(pl.col(key).is_not_null()).select(
                key, "ts", *[(pl.col("_w") * pl.col(d)).alias(n) for d, n in zip(dims, names, strict=True)]
            )
            features = _as_of(features, _running_totals(stream, key, names), key, pl.col("t"))
        module = module_vectors.join(maps["_m"], on="content_id", how="inner").drop("content_id")
        features = features.join(
            module.rename({d: f"_m{number}_{d}" for d in dims}).lazy(), on="_m", how="left", maintain_order="left"
        )
        for owner in ("user", "session"):
            profile = [pl.col(f"_p{owner[0]}{number}_{d}").fill_null(0.0).cast(pl.Float64) for d in dims]
            vector = [pl.col(f"_m{number}_{d}").fill_null(0.0).cast(pl.Float64) for d in dims]
            norm = _fold_sum(p * p for p in profile).sqrt() * _fold_sum(v * v for v in vector).sqrt()
            similarity = pl.when(norm > 0).then(_fold_sum(p * v for p, v in zip(profile, vector, strict=True)) / norm)
            features = features.with_columns(similarity.otherwise(0.0).alias(f"_similarity_{owner}_{number}"))

    # The session: its item events, and those on the module's featured items.
    sessions = item_events.filter(pl.col("_s").is_not_null()).select("_s", "ts", pl.lit(1).alias("_n_session"))
    features = _as_of(features, _running_totals(sessions, "_s", ["_n_session"]), "_s", pl.col("t"))
    session_module = touches.select(_key("_s", "_m", n_modules, "_sm"), "ts", pl.lit(1).alias("_feat_session"))
    session_module = session_module.join(looked_up["_sm"], on="_sm", how="semi")
    features = _as_of(features, _running_totals(session_module, "_sm", ["_feat_session"]), "_sm", pl.col("t"))

    # The user's weighted item events on the module's main brand.
    user_brand = item_events.filter(pl.col("_b").is_not_null()).select(
        _key("_u", "_b", n_brands, "_ub"), "ts", pl.col("_w").alias("_w_brand")
    )
    features = _as_of(features, _running_totals(user_brand, "_ub", ["_w_brand"]), "_ub", pl.col("t"))

    # Categories: each row times its module's categories (a few; one null for a module without), in the rows'
    # time order, looked up per (user, category) and (session, category), then summed back per row.
    per_category = (
        base.lazy()
        .select("_pos", "t", "_u", "_s", "_m")
        .join(modules["categories"].lazy(), on="_m", how="left", maintain_order="left")
        .select(
            "_pos",
            "t",
            "_n_in_category",
            _key("_u", "_c", n_categories, "_uc"),
            _key("_s", "_c", n_categories, "_sc"),
        )
    )
    user_category = item_events.filter(pl.col("_c").is_not_null()).select(
        _key("_u", "_c", n_categories, "_uc"), "ts", pl.col("_w").alias("_w_category")
    )
    session_category = item_events.filter(pl.col("_c").is_not_null() & pl.col("_s").is_not_null()).select(
        _key("_s", "_c", n_categories, "_sc"), "ts", pl.lit(1).alias("_n_session_category")
    )
    per_category = _as_of(per_category, _running_totals(user_category, "_uc", ["_w_category"]), "_uc", pl.col("t"))
    per_category = _as_of(
        per_category, _running_totals(session_category, "_sc", ["_n_session_category"]), "_sc", pl.col("t")
    )
    per_row = _sum_per_row(
        per_category,
        {
            "_w_category_sum": pl.col("_n_in_category") * pl.col("_w_category"),
            "_n_session_category": pl.col("_n_session_category"),
        },
    )
    features = pl.concat([features, per_row], how="horizontal")

    keep = ["row_id", "slot"] if "slot" in base.columns else ["row_id"]
    available = set(features.collect_schema().names())
    expressions = _feature_expressions(cfg, available)
    return features.select("_pos", "_pos_check", *keep, *expressions).sort("_pos")


def _module_totals(imps: pl.LazyFrame) -> pl.LazyFrame:
    """Running totals per module of `_impressions`' impressions, clicks and expected clicks, with its first one."""
    return _running_totals(imps, "_m", ["_imp", "_click", "_expected"], "_first_imp_ts")


def _exposure(imps: pl.LazyFrame, n_modules: int) -> pl.LazyFrame:
    """`_impressions`' impressions of known users as (user, module) events: `_um`, `ts`, `_imp_um`, `_click_um`."""
    return imps.filter(pl.col("_u").is_not_null()).select(
        _key("_u", "_m", n_modules, "_um"), "ts", pl.col("_imp").alias("_imp_um"), pl.col("_click").alias("_click_um")
    )


def _impression_features(
    rows: pl.DataFrame, impressions, content: pl.DataFrame, items: pl.DataFrame | None, cfg: RankFeatureConfig
) -> dict[str, np.ndarray]:
    """`IMPRESSION_FEATURES` of every row, in input order (float32 arrays), computed in one pass over the
    impressions with the same totals and expressions as `_feature_plan`. The parts of `_in_time_chunks` then leave
    the impressions out of their queries: each part re-reading the whole log before it took most of the time and
    memory of the last parts (on a 10M-event shop's last million impressions, 3.1 of 3.9 GB and half of 12.7 s)."""
    base, maps = _base(rows)
    n_modules = maps["_m"].height
    item_dtype = items.schema["item_id"] if items is not None else pl.Int64
    per_module = _module_tables(content, _catalog(items, item_dtype), maps["_m"])["per_module"]
    frame = (
        base.lazy()
        .select("_pos", "t", "_m", _key("_u", "_m", n_modules, "_um"))
        .join(per_module.lazy().select("_m", "_launch"), on="_m", how="left", maintain_order="left")
        .sort("t", maintain_order=True)
    )
    until = pl.col("timestamp") <= rows["timestamp"].max()
    imps = _impressions(impressions.lazy().filter(until), maps, cfg).cache()
    looked_up = base.lazy().select(_key("_u", "_m", n_modules, "_um").drop_nulls().unique())
    exposure = _exposure(imps, n_modules).join(looked_up, on="_um", how="semi")
    on = pl.col("t") - cfg.feedback_delay_seconds * SECOND_US
    frame = _as_of(frame, _module_totals(imps), "_m", on)
    frame = _as_of(frame, _running_totals(exposure, "_um", ["_imp_um", "_click_um"]), "_um", on)
    expressions = _feature_expressions(cfg, set(frame.collect_schema().names()))
    wanted = [e for e in expressions if e.meta.output_name() in IMPRESSION_FEATURES]
    out = frame.sort("_pos").select(wanted).collect(engine="in-memory")
    return {name: out[name].to_numpy() for name in IMPRESSION_FEATURES}


def _sum_per_row(frame: pl.LazyFrame, sums: dict[str, pl.Expr]) -> pl.LazyFrame:
    """One row per `_pos`, in the order of their first rows: the sums of `sums` (nulls as 0), and the `_pos` as
    `_pos_check`."""
    return (
        frame.group_by("_pos", maintain_order=True)
        .agg(*[expr.cast(pl.Float64).fill_null(0.0).sum().alias(name) for name, expr in sums.items()])
        .rename({"_pos": "_pos_check"})
    )


def _fold_sum(terms: Iterable[pl.Expr]) -> pl.Expr:
    """The sum of `terms` added left to right: unlike `pl.sum_horizontal`, whose order of additions may vary
    between runs, the same floats every time."""
    return functools.reduce(operator.add, terms)


def _key(major: str, minor: str, n_minor: int, name: str) -> pl.Expr:
    """One Int64 key for a pair of indices (null where either is null)."""
    return (pl.col(major).cast(pl.Int64) * n_minor + pl.col(minor)).alias(name)


def _running_totals(stream: pl.LazyFrame, key: str, values: list[str], first_ts: str | None = None) -> pl.LazyFrame:
    """Per key and distinct timestamp `ts`, the totals of `values` over the key's events up to and including it
    (and, as `first_ts`, the key's first timestamp), in time order; one row per (key, ts), so an as-of join reads
    the whole total of an instant.

    Sort-based (stable single-column sorts, running sums over key segments): cheaper than hashing on (key, ts)
    and a windowed cumulative sum. Sums run in Float64 and are stored as Float32 (counts exact up to 2^24).
    """
    first_of_key = (pl.col(key) != pl.col(key).shift(1)).fill_null(True)
    next_differs = (pl.col(key) != pl.col(key).shift(-1)) | (pl.col("ts") != pl.col("ts").shift(-1))
    running = []
    for value in values:
        total = pl.col(value).cum_sum()
        running.append(
            (total - pl.when(first_of_key).then(total - pl.col(value)).forward_fill()).cast(pl.Float32).alias(value)
        )
    if first_ts is not None:
        running.append(pl.when(first_of_key).then(pl.col("ts")).forward_fill().alias(first_ts))
    return (
        stream.select(key, "ts", pl.col(values).cast(pl.Float64).fill_null(0.0))
        .sort("ts")
        .sort(key, maintain_order=True)  # (key, ts) order
        .with_columns(running)
        .filter(next_differs.fill_null(True))
        .sort("ts", maintain_order=True)
    )


def _as_of(left: pl.LazyFrame, totals: pl.LazyFrame, key: str, on: pl.Expr) -> pl.LazyFrame:
    """`left` (sorted by `on`) with the totals of each row's key at its last timestamp strictly before `on`."""
    joined = left.join_asof(
        totals,
        left_on=on,
        right_on="ts",
        by=key,
        strategy="backward",
        allow_exact_matches=False,
        check_sortedness=False,  # both sides are sorted by time above; polars cannot check it with `by`
        coalesce=False,
    )
    return joined.drop("ts")


def _base(rows: pl.LazyFrame | pl.DataFrame) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    """The rows with integer user, module and session indices (`_u`, `_m`, `_s`), epoch-microsecond times `t`
    and their input position `_pos`; and the id maps (sorted ids -> index)."""
    rows = rows.lazy()
    schema = rows.collect_schema()
    missing = [c for c in ("user_id", "content_id", "timestamp") if c not in schema]
    if missing:
        raise SchemaError(f"behaviour_features: the rows lack the column(s) {missing}")
    rows = rows.with_columns(
        pl.lit(None, dtype=pl.String).alias(c) for c in ("session_id", "device") if c not in schema
    )
    rows = rows.with_row_index("_pos")
    frame = rows.select(
        "_pos",
        pl.col("row_id") if "row_id" in schema else pl.col("_pos").alias("row_id"),
        *(["slot"] if "slot" in schema else []),
        "user_id",
        "content_id",
        "session_id",
        pl.col("device").cast(pl.String),
        pl.col("timestamp").dt.epoch("us").alias("t"),
    ).collect()
    maps = {}
    for index, column in (("_u", "user_id"), ("_m", "content_id"), ("_s", "session_id")):
        ids = frame.select(pl.col(column).drop_nulls().unique().sort())
        maps[index] = ids.with_row_index(index)
        frame = frame.join(maps[index], on=column, how="left", maintain_order="left").drop(column)
    return frame, maps


def _catalog(items: pl.DataFrame | None, item_dtype: pl.DataType) -> pl.DataFrame:
    """Items with dense category and brand indices `_c`, `_b` (null where unknown)."""
    if items is None:
        return pl.DataFrame(schema={"item_id": item_dtype, "_c": pl.UInt32, "_b": pl.UInt32})
    dense = {
        index: pl.col(column).rank("dense").cast(pl.UInt32) - 1 if column in items.columns else pl.lit(None, pl.UInt32)
        for index, column in (("_c", "category"), ("_b", "brand"))
    }
    return items.select(pl.col("item_id").cast(item_dtype), **dense).unique("item_id", keep="first")


def _module_tables(content: pl.DataFrame, catalog: pl.DataFrame, module_map: pl.DataFrame) -> dict:
    """The inverse index (item -> the modules featuring it), each module's featured items per category, and per
    module its main brand, the number of featured items with a category and its launch."""
    item_dtype = catalog.schema["item_id"]
    content = content.with_columns(pl.col("content_id").cast(module_map.schema["content_id"]))  # ids as the rows'
    modules = content.join(module_map, on="content_id", how="inner")
    if "item_ids" in content.columns:
        featured = modules.select("_m", pl.col("item_ids").alias("item_id")).explode("item_id")
        featured = featured.drop_nulls().with_columns(pl.col("item_id").cast(item_dtype)).unique()
    else:
        featured = pl.DataFrame(schema={"_m": pl.UInt32, "item_id": item_dtype})
    known = featured.join(catalog, on="item_id", how="inner")
    categories = (
        known.filter(pl.col("_c").is_not_null())
        .group_by("_m", "_c")
        .agg(pl.len().cast(pl.Float64).alias("_n_in_category"))
    )
    brands = (
        known.filter(pl.col("_b").is_not_null())
        .group_by("_m", "_b")
        .agg(pl.len().alias("_n"))
        .with_columns((pl.col("_n") / pl.col("_n").sum().over("_m")).cast(pl.Float32).alias("_brand_share"))
        .sort("_m", "_n", "_b", descending=[False, True, False])  # the most featured brand, the first on a tie
        .group_by("_m", maintain_order=True)
        .first()
    )
    launch = pl.col("launch").dt.epoch("us") if "launch" in content.columns else pl.lit(None, pl.Int64)
    per_module = (
        module_map.select("_m")
        .join(
            categories.group_by("_m").agg(pl.col("_n_in_category").sum().cast(pl.Float32).alias("_n_categorised")),
            on="_m",
            how="left",
        )
        .join(brands.select("_m", "_b", "_brand_share"), on="_m", how="left")
        .join(modules.select("_m", launch.alias("_launch")), on="_m", how="left")
    )
    return {
        "featured": featured,
        "categories": categories,
        "per_module": per_module,
        "n_categories": int(catalog["_c"].max() or 0) + 1,
        "n_brands": int(catalog["_b"].max() or 0) + 1,
    }


def _events(
    events: pl.LazyFrame, maps: dict[str, pl.DataFrame], catalog: pl.DataFrame, cfg: RankFeatureConfig
) -> pl.LazyFrame:
    """The events of the rows' users: user index `_u`, `_s` and `_m` where the rows have the session or module,
    `item_id`, `content_id`, `_content` (a content event), the event type's index `_kind` in EVENT_TYPES,
    epoch-microsecond time `ts`, the item's category and brand indices `_c`, `_b` and the item event's weight `_w`."""
    schema = events.collect_schema()
    column = {
        name: pl.col(name).cast(dtype) if name in schema else pl.lit(None, dtype).alias(name)
        for name, dtype in (
            ("user_id", maps["_u"].schema["user_id"]),
            ("item_id", catalog.schema["item_id"]),
            ("content_id", maps["_m"].schema["content_id"]),
            ("session_id", maps["_s"].schema["session_id"]),
        )
    }
    kind = pl.col("event_type").cast(pl.String)
    weights = kind.replace_strict(cfg.event_weights, default=0.0, return_dtype=pl.Float32)
    return (
        events.select(
            *column.values(),
            kind.replace_strict({k: i for i, k in enumerate(EVENT_TYPES)}, default=None, return_dtype=pl.UInt8).alias(
                "_kind"
            ),
            pl.when(pl.col("item_id").is_not_null()).then(weights).otherwise(0.0).alias("_w"),
            pl.col("timestamp").dt.epoch("us").alias("ts"),
        )
        .filter(pl.col("ts").is_not_null())
        .join(maps["_u"].lazy(), on="user_id", how="inner")
        .join(maps["_s"].lazy(), on="session_id", how="left")
        .join(maps["_m"].lazy(), on="content_id", how="left")
        .join(catalog.lazy(), on="item_id", how="left")
        .select(
            "_u",
            "_s",
            "_m",
            "item_id",
            "content_id",
            pl.col("content_id").is_not_null().alias("_content"),
            "_kind",
            "ts",
            "_c",
            "_b",
            "_w",
        )
    )


def _feedback(feedback: pl.LazyFrame, maps: dict[str, pl.DataFrame], n_modules: int) -> pl.LazyFrame:
    """The rows' users' feedback on the rows' modules: (user, module) key `_um`, time `ts`, and 1 in `_more_um`
    (more like this) or `_hide_um` (hide, hide similar)."""
    action = pl.col("action").cast(pl.String)
    return (
        feedback.select(
            pl.col("user_id").cast(pl.String).cast(maps["_u"].schema["user_id"], strict=False),  # by value
            pl.col("content_id").cast(pl.String).cast(maps["_m"].schema["content_id"], strict=False),
            (action == "more_like_this").cast(pl.Int32).alias("_more_um"),
            action.is_in(["hide", "hide_similar"]).cast(pl.Int32).alias("_hide_um"),
            pl.col("timestamp").dt.epoch("us").alias("ts"),
        )
        .join(maps["_u"].lazy(), on="user_id", how="inner")
        .join(maps["_m"].lazy(), on="content_id", how="inner")
        .select(_key("_u", "_m", n_modules, "_um"), "ts", "_more_um", "_hide_um")
    )


def _impressions(impressions: pl.LazyFrame, maps: dict[str, pl.DataFrame], cfg: RankFeatureConfig) -> pl.LazyFrame:
    """Impressions of the rows' modules with their expected clicks `_expected`: the CTR of their (device, slot) on
    the days before theirs (all impressions), shrunk to the overall CTR of those days and that to the prior."""
    schema = impressions.collect_schema()
    prior, strength = cfg.prior_ctr, cfg.slot_prior_impressions
    imps = (
        impressions.select(
            pl.col("user_id").cast(maps["_u"].schema["user_id"]),
            pl.col("content_id").cast(maps["_m"].schema["content_id"]),
            pl.col("slot").cast(pl.Int64).fill_null(-1) if "slot" in schema else pl.lit(-1, pl.Int64).alias("slot"),
            pl.col("device").cast(pl.String).fill_null("") if "device" in schema else pl.lit("").alias("device"),
            pl.col("clicked").cast(pl.Float64).fill_null(0.0).alias("_click"),
            pl.col("timestamp").dt.epoch("us").alias("ts"),
        )
        .filter(pl.col("ts").is_not_null())
        .with_columns((pl.col("ts") // DAY_US).alias("_day"))
    )
    per_day = (
        imps.group_by("_day")
        .agg(pl.col("_click").sum().alias("_c"), pl.len().cast(pl.Float64).alias("_n"))
        .sort("_day")
        .select(
            "_day",
            (
                (pl.col("_c").cum_sum() - pl.col("_c") + strength * prior)
                / (pl.col("_n").cum_sum() - pl.col("_n") + strength)
            ).alias("_day_ctr"),
        )
    )
    per_slot = (
        imps.group_by("_day", "device", "slot")
        .agg(pl.col("_click").sum().alias("_c"), pl.len().cast(pl.Float64).alias("_n"))
        .join(per_day, on="_day", how="inner")
        .sort("_day")
        .select(
            "_day",
            "device",
            "slot",
            (
                (pl.col("_c").cum_sum().over("device", "slot") - pl.col("_c") + strength * pl.col("_day_ctr"))
                / (pl.col("_n").cum_sum().over("device", "slot") - pl.col("_n") + strength)
            ).alias("_expected"),
        )
    )
    return (
        imps.join(per_slot, on=["_day", "device", "slot"], how="left")
        .join(maps["_m"].lazy(), on="content_id", how="inner")
        .join(maps["_u"].lazy(), on="user_id", how="left")
        .select("_u", "_m", "ts", pl.lit(1.0).alias("_imp"), "_click", "_expected")
    )


def _feature_expressions(cfg: RankFeatureConfig, available: set[str]) -> list[pl.Expr]:
    """The features from the looked-up totals (0 where a total is missing or absent), Float32, in order."""

    def total(name: str) -> pl.Expr:
        return pl.col(name).fill_null(0.0) if name in available else pl.lit(0.0)

    def ratio(numerator: pl.Expr, denominator: pl.Expr) -> pl.Expr:
        return pl.when(denominator > 0).then(numerator / denominator).otherwise(0.0)

    def days_since(ts: pl.Expr) -> pl.Expr:
        return ((pl.col("t") - ts) / DAY_US).clip(lower_bound=0.0).fill_null(0.0)

    out: dict[str, pl.Expr] = {}
    for kind in EVENT_TYPES:
        for days in cfg.windows_days:
            out[f"user_{_PLURAL[kind]}_{days}d"] = total(f"_n_{kind}_{days}d")
    when = pl.from_epoch("t", time_unit="us")
    hour = when.dt.hour() + when.dt.minute() / 60 + when.dt.second() / 3_600
    user_weight = total("_w_user")
    category_events = ratio(total("_w_category_sum"), pl.col("_n_categorised").fill_null(0.0))
    session_events = total("_n_session")
    first_impression = pl.col("_first_imp_ts") if "_first_imp_ts" in available else pl.lit(None, pl.Int64)
    out |= {
        "user_item_events": pl.sum_horizontal(total(f"_n_{kind}") for kind in EVENT_TYPES),
        "user_content_views": total("_n_cview"),
        "user_content_clicks": total("_n_cclick"),
        "user_days_since_first_event": days_since(pl.col("_first_ts")),
        "user_category_events": category_events,
        "user_category_share": ratio(category_events, user_weight),
        "user_brand_share": pl.col("_brand_share").fill_null(0.0) * ratio(total("_w_brand"), user_weight),
        "user_featured_events": total("_feat"),
        "user_featured_any": (total("_feat") > 0).cast(pl.Float64),
        "session_item_events": session_events,
        "session_category_share": ratio(total("_n_session_category"), session_events),
        "session_featured_events": total("_feat_session"),
        "session_featured_share": ratio(total("_feat_session"), session_events),
        "module_impressions": total("_imp"),
        "module_clicks": total("_click"),
        "module_coec": (total("_click") + cfg.coec_prior_clicks) / (total("_expected") + cfg.coec_prior_clicks),
        "module_days_since_first_impression": days_since(first_impression),
        "module_age_days": days_since(pl.coalesce(pl.col("_launch"), first_impression)),
        "user_module_impressions": total("_imp_um"),
        "user_module_clicks": total("_click_um"),
        "user_module_views": total("_cview_um"),
        "hour_sin": (hour * (2 * math.pi / 24)).sin(),
        "hour_cos": (hour * (2 * math.pi / 24)).cos(),
        "weekday": when.dt.weekday() - 1,
    }
    out |= {f"device_{d}": (pl.col("device") == i).fill_null(False) for i, d in enumerate(cfg.devices)}
    for number, name in enumerate(cfg.content_vectors):
        for owner in ("user", "session"):
            out[f"{owner}_{_vector_kind(name)}_similarity"] = total(f"_similarity_{owner}_{number}")
    if cfg.shopper_feedback:
        out["user_module_more_like_this"] = total("_more_um")
        out["user_module_hidden"] = total("_hide_um")
    return [expr.cast(pl.Float32).alias(name) for name, expr in out.items()]


def _reduced(vectors: np.ndarray, name: str, dims: int) -> np.ndarray:
    """Rows L2-normalised, after a fixed Gaussian random projection to `dims` where they are longer (seeded by the
    column's name and size: items and modules of a column get the same one). Cosines survive a random projection
    up to a small error (Johnson-Lindenstrauss); the profiles then sum `dims` numbers per event, not hundreds."""
    if vectors.shape[1] > dims:
        seed = zlib.crc32(f"{name}:{vectors.shape[1]}".encode())
        projection = np.random.default_rng(seed).normal(size=(vectors.shape[1], dims)) / math.sqrt(dims)
        vectors = vectors @ projection
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def reduced_vectors(
    table: pl.DataFrame, key: str, name: str, size: int, cfg: RankFeatureConfig
) -> tuple[pl.Series, np.ndarray]:
    """The `key`s of `table`'s rows with a `name` vector (the first row of a key) and their vectors, reduced and
    normalised by `_reduced` ([rows, min(size, content_dims)]): what the offline and the online features share."""
    rows = table.filter(pl.col(name).is_not_null()).unique(key, keep="first", maintain_order=True)
    return rows[key], _reduced(rows[name].to_numpy().reshape(rows.height, size), name, cfg.content_dims)


def content_vector_columns(
    items: pl.DataFrame | None, content: pl.DataFrame, cfg: RankFeatureConfig
) -> list[tuple[int, str, int, bool]]:
    """(number in `cfg.content_vectors`, name, size, whether the items' vectors count) of each configured vector
    column that the content table holds as arrays of one size: the modules' vectors alone make the features (from
    content clicks, as on a news site without items), the items' join them where the items hold the column as
    arrays of the same size. The other columns give 0 features."""
    out = []
    for number, name in enumerate(cfg.content_vectors):
        module_type = content.schema.get(name)
        if not isinstance(module_type, pl.Array):
            continue
        item_type = items.schema.get(name) if items is not None else None
        with_items = isinstance(item_type, pl.Array) and item_type.size == module_type.size
        out.append((number, name, module_type.size, with_items))
    return out


def _content_vectors(
    items: pl.DataFrame | None,
    content: pl.DataFrame,
    module_map: pl.DataFrame,
    catalog: pl.DataFrame,
    cfg: RankFeatureConfig,
) -> dict[int, tuple[pl.DataFrame | None, pl.DataFrame]]:
    """Per vector column of `content_vector_columns` (by its number): the items' reduced vectors (`item_id`,
    `_v0`...; None where they do not count) and every module's of the content table (`content_id`, `_v0`...)."""
    out: dict[int, tuple[pl.DataFrame | None, pl.DataFrame]] = {}
    for number, name, size, with_items in content_vector_columns(items, content, cfg):
        sources = {"content_id": content.select(pl.col("content_id").cast(module_map.schema["content_id"]), name)}
        if with_items:
            sources["item_id"] = items.select(pl.col("item_id").cast(catalog.schema["item_id"]), name)
        tables = {}
        for key, table in sources.items():
            keys, values = reduced_vectors(table, key, name, size, cfg)
            tables[key] = pl.DataFrame({key: keys, **{f"_v{d}": values[:, d] for d in range(values.shape[1])}})
        out[number] = (tables.get("item_id"), tables["content_id"])
    return out
