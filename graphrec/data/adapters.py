"""Adapters from public dataset formats to the input contract.

Each adapter returns a `Dataset` of lazy frames with contract column names, still untyped where the source is
text; `graphrec.data.validation` types and checks them like any other input. Adapters never drop rows silently:
rows they cannot turn into contract rows (such as a user line without items) are counted in `notes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from graphrec.errors import InputError

_LINE = "line"
_NO_SEPARATOR = "\x1f"  # unit separator: never in these text files, so each line is read as one field


@dataclass
class Dataset:
    """Contract tables produced by an adapter, the source files they came from, and adapter notes."""

    events: pl.LazyFrame
    items: pl.LazyFrame | None = None
    content: pl.LazyFrame | None = None
    impressions: pl.LazyFrame | None = None
    sources: dict[str, Path] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def tables(self) -> dict[str, pl.LazyFrame]:
        """Return the tables that are present, by contract table name."""
        named = {
            "events": self.events,
            "items": self.items,
            "content": self.content,
            "impressions": self.impressions,
        }
        return {name: frame for name, frame in named.items() if frame is not None}


# The columns of MIND's headerless news.tsv, in file order.
MIND_NEWS_COLUMNS = (
    "news_id", "category", "subcategory", "title", "abstract", "url", "title_entities", "abstract_entities",
)  # fmt: skip


def _require(path: Path) -> Path:
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty (0 bytes)")
    return path


def _scan_headerless(path: Path, columns: list[str], separator: str) -> pl.LazyFrame:
    _require(path)
    with open(path, encoding="utf-8", errors="replace") as handle:
        first = handle.readline().rstrip("\r\n")
    fields = first.split(separator)
    if len(fields) != len(columns):
        raise InputError(
            f"{path}: expected {len(columns)} {separator!r}-separated columns ({', '.join(columns)}), "
            f"first line has {len(fields)}: {first[:80]!r}"
        )
    return pl.scan_csv(
        path, has_header=False, new_columns=columns, separator=separator, infer_schema=False, quote_char=None
    )


def read_taobao_userbehavior(path: str | Path) -> Dataset:
    """Read the Taobao UserBehavior CSV (`user_id,item_id,category_id,behavior_type,timestamp`, no header).

    Behaviour names pv / cart / fav / buy map through the standard aliases; the item catalog (item -> category)
    is derived from the log.
    """
    path = Path(path)
    raw = _scan_headerless(path, ["user_id", "item_id", "category", "event_type", "timestamp"], ",")
    events = raw.select("user_id", "item_id", "event_type", "timestamp")
    items = raw.select("item_id", "category").unique(maintain_order=True)
    return Dataset(events=events, items=items, sources={"events": path}, notes={"items": "derived from the log"})


ECOMM_EDGE_TYPES = {"1": "click", "2": "add_to_wishlist", "3": "add_to_cart", "4": "purchase"}


def read_ecomm(root: str | Path) -> Dataset:
    """Read Alibaba EComm (DyHATR): dated edges of 4 behaviours and item features (leaf category, brand, price).

    Dates (YYYYMMDD) become midnight UTC of that day, so a cutoff at a day boundary splits days cleanly.
    """
    root = Path(root)
    edges = _scan_headerless(root / "ecomm_edge_train.txt", ["user_id", "item_id", "edge_type", "date"], "\t")
    events = edges.select(
        "user_id",
        "item_id",
        pl.col("edge_type").replace_strict(ECOMM_EDGE_TYPES, default=pl.col("edge_type")).alias("event_type"),
        pl.col("date").str.to_datetime("%Y%m%d", strict=False, time_zone="UTC").alias("timestamp"),
    )
    features = _scan_headerless(
        root / "ecomm_item_feature.txt", ["item_id", "top_category", "category", "brand", "price"], "\t"
    )
    items = features.select("item_id", "category", "brand", "price")
    return Dataset(
        events=events,
        items=items,
        sources={"events": root / "ecomm_edge_train.txt", "items": root / "ecomm_item_feature.txt"},
    )


def read_interaction_lists(
    path: str | Path, event_type: str, timestamp: datetime, optional: bool = False
) -> tuple[pl.LazyFrame, dict]:
    """Read a `user item item ...` file (space or tab separated, one line per user) as events at one timestamp.

    These split files carry no time; `timestamp` places them so that a cutoff reproduces the published split.
    Returns the events and counts of lines and of lines that hold a user but no item. An `optional` file (an
    auxiliary behaviour) may be empty: it then contributes zero events; a missing file is an error either way.
    """
    path = Path(path)
    ts = timestamp.replace(tzinfo=UTC) if timestamp.tzinfo is None else timestamp
    if optional and path.exists() and path.stat().st_size == 0:
        empty = pl.LazyFrame(
            schema={
                "user_id": pl.String,
                "item_id": pl.String,
                "event_type": pl.String,
                "timestamp": pl.Datetime("us", "UTC"),
            }
        )
        return empty, {"lines": 0, "lines_without_items": 0}
    path = _require(path)
    lines = pl.scan_csv(
        path,
        has_header=False,
        new_columns=[_LINE],
        separator=_NO_SEPARATOR,
        infer_schema=False,
        quote_char=None,
    )
    tokens = lines.select(pl.col(_LINE).str.extract_all(r"\S+").alias("tokens")).filter(pl.col("tokens").list.len() > 0)
    stats = tokens.select(pl.len().alias("lines"), (pl.col("tokens").list.len() == 1).sum().alias("no_items")).collect()
    events = (
        tokens.select(pl.col("tokens").list.first().alias("user_id"), pl.col("tokens").list.slice(1).alias("item_id"))
        .explode("item_id")
        .drop_nulls("item_id")
        .with_columns(pl.lit(event_type).alias("event_type"), pl.lit(ts).alias("timestamp"))
    )
    return events, {"lines": int(stats["lines"][0]), "lines_without_items": int(stats["no_items"][0])}


TAOBAO_MB_TRAIN_TIME = datetime(2020, 1, 1, tzinfo=UTC)
TAOBAO_MB_TEST_TIME = datetime(2020, 1, 2, tzinfo=UTC)


def read_taobao_mb(root: str | Path) -> Dataset:
    """Read the Taobao multi-behaviour benchmark (MB-CGCN / MuLe split) as events.

    Views and carts (train and test files) and training buys are stamped TAOBAO_MB_TRAIN_TIME; the held-out buys
    TAOBAO_MB_TEST_TIME. A snapshot with cutoff TAOBAO_MB_TEST_TIME is the MuLe training graph and the buys at
    TAOBAO_MB_TEST_TIME are its test targets.
    """
    root = Path(root)
    view_train = root / "view" / "train_reconstructed_from_s_adj_mat.txt"
    if not view_train.exists():
        view_train = root / "view" / "train.txt"
    # The auxiliary behaviours' files may be empty (zero events); the target behaviour's may not.
    parts = [
        (view_train, "view", TAOBAO_MB_TRAIN_TIME, True),
        (root / "view" / "test.txt", "view", TAOBAO_MB_TRAIN_TIME, True),
        (root / "cart" / "train.txt", "add_to_cart", TAOBAO_MB_TRAIN_TIME, True),
        (root / "cart" / "test.txt", "add_to_cart", TAOBAO_MB_TRAIN_TIME, True),
        (root / "buy" / "train.txt", "purchase", TAOBAO_MB_TRAIN_TIME, False),
        (root / "buy" / "test.txt", "purchase", TAOBAO_MB_TEST_TIME, False),
    ]
    frames, notes, sources = [], {}, {}
    for path, event_type, ts, optional in parts:
        frame, counts = read_interaction_lists(path, event_type, ts, optional)
        frames.append(frame)
        name = f"{path.parent.name}/{path.name}"
        notes[name] = counts
        sources[name] = path
    return Dataset(events=pl.concat(frames), sources=sources, notes=notes)


def read_gowalla(root: str | Path, event_type: str = "purchase") -> Dataset:
    """Read the LightGCN Gowalla split: train check-ins at TAOBAO_MB_TRAIN_TIME, test at TAOBAO_MB_TEST_TIME."""
    root = Path(root)
    train, train_counts = read_interaction_lists(root / "train.txt", event_type, TAOBAO_MB_TRAIN_TIME)
    test, test_counts = read_interaction_lists(root / "test.txt", event_type, TAOBAO_MB_TEST_TIME)
    return Dataset(
        events=pl.concat([train, test]),
        sources={"train.txt": root / "train.txt", "test.txt": root / "test.txt"},
        notes={"train.txt": train_counts, "test.txt": test_counts},
    )


MIND_TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"


def read_mind(root: str | Path, include_history: bool = True) -> Dataset:
    """Read MIND `behaviors.tsv` as impressions plus click events, and `news.tsv` as content modules.

    Each shown news id is one impression row (slot = display position, clicked from its `-1`/`-0` suffix) and
    each click also a `click` event at the impression time. With `include_history`, a user's history clicks
    become click events one second before the log's first impression, deduplicated per (user, news): MIND's
    history is the user's clicks before the log's period (the same list in each of the user's impressions), so
    every cutoff inside the period has seen it. News category plays the module type.
    """
    root = Path(root)
    behaviors = _scan_headerless(
        root / "behaviors.tsv", ["impression_id", "user_id", "time", "history", "impressions"], "\t"
    ).with_columns(pl.col("time").str.to_datetime(MIND_TIME_FORMAT, strict=False, time_zone="UTC").alias("timestamp"))
    impressions = (
        behaviors.select(
            pl.col("impression_id").alias("request_id"),
            "user_id",
            "timestamp",
            pl.col("impressions").str.split(" ").alias("shown"),
        )
        .with_columns(pl.int_ranges(0, pl.col("shown").list.len()).alias("slot"))
        .explode("shown", "slot")
        .with_columns(
            pl.col("shown").str.extract(r"^(.*)-[01]$").alias("content_id"),
            pl.col("shown").str.extract(r"-([01])$").alias("clicked"),
        )
        .select("request_id", "user_id", "content_id", "slot", "timestamp", "clicked")
    )
    clicks = impressions.filter(pl.col("clicked") == "1").select(
        "user_id", "content_id", pl.lit("click").alias("event_type"), "timestamp"
    )
    frames = [clicks]
    if include_history:
        log_start = behaviors.select(pl.col("timestamp").min().alias("first"))
        history = (
            behaviors.select("user_id", pl.col("history").str.split(" ").alias("content_id"))
            .explode("content_id")
            .filter(pl.col("content_id").is_not_null() & (pl.col("content_id") != ""))
            .unique(["user_id", "content_id"])
            .join(log_start, how="cross")
            .select(
                "user_id",
                "content_id",
                pl.lit("click").alias("event_type"),
                (pl.col("first") - pl.duration(seconds=1)).alias("timestamp"),
            )
        )
        frames.append(history)
    news = _scan_headerless(
        root / "news.tsv",
        ["content_id", *MIND_NEWS_COLUMNS[1:]],
        "\t",
    )
    content = news.select("content_id", pl.col("category").alias("module_type"), "title")
    return Dataset(
        events=pl.concat(frames, how="vertical_relaxed"),
        content=content,
        impressions=impressions,
        sources={"behaviors.tsv": root / "behaviors.tsv", "news.tsv": root / "news.tsv"},
        notes={"history": "history clicks stamped 1 s before the log's first impression" if include_history else "off"},
    )


ADAPTERS = {
    "taobao-userbehavior": read_taobao_userbehavior,
    "ecomm": read_ecomm,
    "taobao-mb": read_taobao_mb,
    "gowalla": read_gowalla,
    "mind": read_mind,
}


CONTRACT_TABLES = ("events", "items", "content", "impressions", "feedback")
_CONTRACT_SUFFIXES = (".parquet", ".csv", ".tsv")


def read_contract_dir(root: str | Path) -> dict[str, Path]:
    """Find contract tables in a directory (`events.*` required; `items.*`, `content.*`, `impressions.*`,
    `feedback.*`), or take a single file as the events table."""
    root = Path(root)
    if root.is_file():
        return {"events": root}
    if not root.is_dir():
        raise InputError(f"{root}: not found; expected an events file or a directory with events.parquet (or .csv)")
    found: dict[str, Path] = {}
    for table in CONTRACT_TABLES:
        for suffix in _CONTRACT_SUFFIXES:
            candidate = root / f"{table}{suffix}"
            if candidate.exists():
                found[table] = candidate
                break
    if "events" not in found:
        raise InputError(f"{root}: no events.parquet / events.csv / events.tsv found")
    return found


def open_dataset(format: str, path: str | Path) -> tuple[dict[str, Path | pl.LazyFrame], dict[str, Path], dict]:
    """Open an input of a named format: `contract` (a directory of contract tables) or one of ADAPTERS.

    Returns the tables to validate, the source files to fingerprint, and adapter notes.
    """
    if format == "contract":
        found = read_contract_dir(path)
        return dict(found), dict(found), {}
    if format not in ADAPTERS:
        raise InputError(f"unknown input format {format!r}; use 'contract' or one of {sorted(ADAPTERS)}")
    dataset = ADAPTERS[format](path)
    return dict(dataset.tables()), dataset.sources, dataset.notes
