"""Temporal splits: train / validation / test windows, their leak-free snapshots and evaluation targets.

The validation snapshot holds events before `train_end`; validation targets are the target-behaviour pairs in
[train_end, val_end). The test snapshot holds events before `val_end` (train and validation periods), and test
targets are the pairs in [val_end, test_end). Each target row says whether the pair was already seen in its
snapshot, so evaluation can mask it or report it separately.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import torch

from graphrec.artifacts import atomic_directory, fingerprint_inputs, write_json_atomic
from graphrec.data.schema import EVENT_TYPES
from graphrec.errors import InputError
from graphrec.graph.config import GraphConfig, SplitConfig
from graphrec.graph.snapshot import NODE_ID_COLUMN, Snapshot, build_snapshot, save_snapshot


@dataclass
class TemporalSplit:
    """Window boundaries (UTC): train [start, train_end), validation [train_end, val_end), test [val_end, test_end)."""

    train_end: datetime
    val_end: datetime
    test_end: datetime

    def __post_init__(self) -> None:
        if not self.train_end < self.val_end <= self.test_end:
            raise ValueError(f"split boundaries must increase: {self.train_end} < {self.val_end} <= {self.test_end}")

    def as_dict(self) -> dict[str, str]:
        return {k: v.isoformat() for k, v in asdict(self).items()}


def split_by_days(events: pl.LazyFrame | pl.DataFrame, val_days: int = 7, test_days: int = 7) -> TemporalSplit:
    """Place the test window on the last `test_days` whole days of the log and validation on the days before it."""
    bounds = events.lazy().select(pl.col("timestamp").min().alias("first"), pl.col("timestamp").max().alias("last"))
    bounds = bounds.collect()
    first, last = bounds["first"][0], bounds["last"][0]
    if first is None:
        raise InputError("cannot split an empty event log")
    end = (last.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)) + timedelta(days=1)
    val_end = end - timedelta(days=test_days)
    train_end = val_end - timedelta(days=val_days)
    if train_end <= first:
        span = (end - first).days
        raise InputError(
            f"the log spans {span} days ({first} .. {last}); it cannot hold {val_days} validation and "
            f"{test_days} test days after a training period"
        )
    return TemporalSplit(train_end, val_end, end)


def evaluation_targets(
    events: pl.LazyFrame | pl.DataFrame,
    snapshot: Snapshot,
    start: datetime,
    end: datetime,
    target_event: str = "purchase",
    target_node: str = "item",
) -> pl.DataFrame:
    """Target-behaviour pairs in [start, end) as evaluation truth, one row per (user, target).

    Columns: the original ids, `user_index` / `<target>_index` in the snapshot (null when the node is new),
    `first_timestamp`, `seen_target` (the pair already had the target behaviour in the snapshot) and
    `seen_any` (it had any behaviour).
    """
    if target_event not in EVENT_TYPES:
        raise ValueError(f"target_event {target_event!r} is not one of {list(EVENT_TYPES)}")
    column = NODE_ID_COLUMN[target_node]
    index_column = f"{target_node}_index"
    pairs = (
        events.lazy()
        .filter(
            (pl.col("timestamp") >= start)
            & (pl.col("timestamp") < end)
            & (pl.col("event_type").cast(pl.String) == target_event)
            & pl.col(column).is_not_null()
        )
        .group_by("user_id", column)
        .agg(pl.col("timestamp").min().alias("first_timestamp"))
        .collect()
    )
    users = snapshot.node_ids["user"].select("user_id", pl.col("index").alias("user_index"))
    targets = snapshot.node_ids[target_node].select(column, pl.col("index").alias(index_column))
    pairs = pairs.with_columns(
        pl.col("user_id").cast(users["user_id"].dtype), pl.col(column).cast(targets[column].dtype)
    )
    pairs = pairs.join(users, on="user_id", how="left").join(targets, on=column, how="left")
    seen_target = _edge_pairs(snapshot, [("user", target_event, target_node)])
    seen_any = _edge_pairs(snapshot, [t for t in snapshot.data.edge_types if t[0] == "user" and t[2] == target_node])
    pairs = (
        pairs.join(
            seen_target.with_columns(pl.lit(True).alias("seen_target")),
            on=["user_index", index_column],
            how="left",
        )
        .join(seen_any.with_columns(pl.lit(True).alias("seen_any")), on=["user_index", index_column], how="left")
        .with_columns(pl.col("seen_target").fill_null(False), pl.col("seen_any").fill_null(False))
    )
    return pairs.sort("user_index", index_column, "user_id", column, nulls_last=True)


def _edge_pairs(snapshot: Snapshot, edge_types: list[tuple[str, str, str]]) -> pl.DataFrame:
    target = edge_types[0][2] if edge_types else "item"
    index_column = f"{target}_index"
    present = [t for t in edge_types if t in snapshot.data.edge_types]
    if not present:
        return pl.DataFrame(schema={"user_index": pl.Int64, index_column: pl.Int64})
    index = torch.cat([snapshot.data[t].edge_index for t in present], dim=1).numpy()
    return pl.DataFrame({"user_index": index[0], index_column: index[1]}).unique()


def targets_path(window_dir: str | Path, target_event: str, target_node: str) -> Path:
    """The target table of one split window (`<window>/<event>_<node>_targets.parquet`)."""
    return Path(window_dir) / f"{target_event}_{target_node}_targets.parquet"


def read_targets(window_dir: str | Path, target_event: str, target_node: str) -> pl.DataFrame:
    """A split window's target pairs; a clear error naming the file when the window lacks that target."""
    path = targets_path(window_dir, target_event, target_node)
    if not Path(window_dir).is_dir():
        raise InputError(f"{window_dir}: not a split window (written by `graphrec split` or `graphrec run`)")
    if not path.exists():
        found = sorted(p.name for p in Path(window_dir).glob("*_targets.parquet"))
        raise InputError(f"{path}: no such target table (found: {', '.join(found) or 'none'})")
    return pl.read_parquet(path)


def write_split(
    events: pl.LazyFrame | pl.DataFrame,
    split: TemporalSplit,
    out_dir: str | Path,
    items: pl.DataFrame | None = None,
    content: pl.DataFrame | None = None,
    config: GraphConfig | None = None,
    targets: tuple[tuple[str, str], ...] = (("purchase", "item"), ("click", "content")),
    fingerprint: dict[str, Any] | None = None,
    text_encoder: dict[str, Any] | None = None,
    feedback: pl.LazyFrame | None = None,
) -> dict[str, Any]:
    """Write `val/` and `test/` snapshots and their targets (`<event>_<node>_targets.parquet`) atomically.

    Returns the summary also written to `split.json`: the windows and, per target table, pair and user counts.
    """
    out_dir = Path(out_dir)
    summary: dict[str, Any] = {"split": split.as_dict(), "targets": {}}
    with atomic_directory(out_dir) as staging:
        for name, cutoff, end in (
            ("val", split.train_end, split.val_end),
            ("test", split.val_end, split.test_end),
        ):
            snapshot = build_snapshot(events, cutoff, items, content, config, fingerprint, text_encoder, feedback)
            save_snapshot(snapshot, staging / name / "snapshot")
            for target_event, target_node in targets:
                table = evaluation_targets(events, snapshot, cutoff, end, target_event, target_node)
                table.write_parquet(targets_path(staging / name, target_event, target_node))
                summary["targets"][f"{name}/{target_event}_{target_node}"] = {
                    "pairs": table.height,
                    "users": table["user_id"].n_unique(),
                    "seen_target": int(table["seen_target"].sum()),
                    "seen_any": int(table["seen_any"].sum()),
                    "new_users": int(table["user_index"].null_count()),
                    f"new_{target_node}s": int(table[f"{target_node}_index"].null_count()),
                }
        write_json_atomic(staging / "split.json", summary)
    return summary


def split_validated(
    validated_dir: str | Path,
    out_dir: str | Path,
    split: SplitConfig | None = None,
    graph: GraphConfig | None = None,
    targets: tuple[tuple[str, str], ...] = (("purchase", "item"), ("click", "content")),
    fingerprint: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Split a validated dataset (from `validate_dataset`) by days and write it with `write_split`."""
    from graphrec.data.validation import read_feedback, read_validated, text_encoder_of

    split = split or SplitConfig()
    events, items, content, paths = read_validated(validated_dir)
    if fingerprint is None:
        fingerprint = fingerprint_inputs(paths)
    windows = split_by_days(events, split.val_days, split.test_days)
    text_encoder = text_encoder_of(validated_dir)
    feedback = read_feedback(validated_dir)
    return write_split(events, windows, out_dir, items, content, graph, targets, fingerprint, text_encoder, feedback)
