from __future__ import annotations

import json
from datetime import UTC, datetime

import polars as pl
import pytest

from graphrec.data.validation import validate_events
from graphrec.errors import InputError
from graphrec.graph.snapshot import build_snapshot, load_snapshot
from graphrec.graph.split import TemporalSplit, evaluation_targets, split_by_days, write_split


def day(d: int, hour: int = 12) -> datetime:
    return datetime(2024, 1, d, hour, tzinfo=UTC)


@pytest.fixture()
def events():
    rows = [
        ("u1", 1, "view", day(1)),
        ("u1", 1, "purchase", day(2)),
        ("u1", 2, "view", day(3)),
        ("u1", 2, "purchase", day(5)),  # target, seen_any (viewed before)
        ("u1", 1, "purchase", day(5)),  # target, seen_target
        ("u2", 3, "purchase", day(6)),  # target, not seen
        ("u3", 1, "purchase", day(6)),  # target, new user
        ("u1", 3, "purchase", day(8)),  # after the window
    ]
    frame = pl.DataFrame(rows, schema=["user_id", "item_id", "event_type", "timestamp"], orient="row")
    frame = frame.with_columns(pl.col("timestamp").dt.cast_time_unit("us"))
    extra = pl.DataFrame({"user_id": ["u2"], "item_id": [4], "event_type": ["view"], "timestamp": [day(1)]})
    extra = extra.with_columns(pl.col("timestamp").dt.cast_time_unit("us"))
    return validate_events(pl.concat([frame, extra])).frame


def test_targets_mark_seen_pairs_and_new_users(events):
    snapshot = build_snapshot(events, day(4, 0))
    targets = evaluation_targets(events, snapshot, day(4, 0), day(7, 0))
    rows = {(r["user_id"], r["item_id"]): r for r in targets.iter_rows(named=True)}
    assert set(rows) == {("u1", 2), ("u1", 1), ("u2", 3), ("u3", 1)}
    assert rows["u1", 1]["seen_target"] and rows["u1", 1]["seen_any"]
    assert not rows["u1", 2]["seen_target"] and rows["u1", 2]["seen_any"]
    assert not rows["u2", 3]["seen_any"] and rows["u2", 3]["user_index"] is not None
    assert rows["u3", 1]["user_index"] is None and rows["u3", 1]["item_index"] is not None


def test_split_by_days_places_windows_on_day_boundaries(events):
    split = split_by_days(events, val_days=2, test_days=2)
    assert split.test_end == datetime(2024, 1, 9, tzinfo=UTC)
    assert split.val_end == datetime(2024, 1, 7, tzinfo=UTC)
    assert split.train_end == datetime(2024, 1, 5, tzinfo=UTC)


def test_split_too_short_is_a_clear_error(events):
    with pytest.raises(InputError, match="cannot hold 5 validation and 5 test days"):
        split_by_days(events, val_days=5, test_days=5)


def test_split_boundaries_must_increase():
    with pytest.raises(ValueError, match="must increase"):
        TemporalSplit(day(5), day(4), day(6))


def test_write_split_is_leak_free(tmp_path, small_shop):
    events = validate_events(small_shop.events).frame
    split = split_by_days(events, val_days=3, test_days=3)
    summary = write_split(events, split, tmp_path / "split", small_shop.items, small_shop.content)
    for name, cutoff, end in (("val", split.train_end, split.val_end), ("test", split.val_end, split.test_end)):
        snapshot = load_snapshot(tmp_path / "split" / name / "snapshot")
        for edge_type in [t for t in snapshot.data.edge_types if t[0] == "user"]:
            assert int(snapshot.data[edge_type].last_timestamp.max()) < cutoff.timestamp()
        targets = pl.read_parquet(tmp_path / "split" / name / "purchase_item_targets.parquet")
        assert targets.height > 0
        assert targets["first_timestamp"].min() >= cutoff and targets["first_timestamp"].max() < end
        assert summary["targets"][f"{name}/purchase_item"]["pairs"] == targets.height
    saved = json.loads((tmp_path / "split" / "split.json").read_text())
    assert saved["split"]["val_end"] == split.val_end.isoformat()
