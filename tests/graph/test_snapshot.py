from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from graphrec.data.validation import validate_events
from graphrec.errors import InputError
from graphrec.graph.config import GraphConfig
from graphrec.graph.snapshot import EDGE_ATTRS, build_snapshot, load_snapshot, reverse_edge_type, save_snapshot

CUTOFF = datetime(2026, 1, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def validated(small_shop):
    return validate_events(small_shop.events).frame


@pytest.fixture(scope="module")
def snapshot(validated, small_shop):
    return build_snapshot(validated, CUTOFF, small_shop.items, small_shop.content)


def user_edge_types(data):
    return [t for t in data.edge_types if t[0] == "user"]


def test_no_edge_at_or_after_cutoff(snapshot):
    cutoff_s = CUTOFF.timestamp()
    for edge_type in user_edge_types(snapshot.data):
        assert int(snapshot.data[edge_type].last_timestamp.max()) < cutoff_s


def test_every_event_before_cutoff_is_in_exactly_one_edge_count(snapshot, validated):
    before = validated.filter(pl.col("timestamp") < CUTOFF)
    total = sum(int(snapshot.data[t]["count"].sum()) for t in user_edge_types(snapshot.data))
    assert total == before.height
    assert snapshot.manifest["events"]["used_before_cutoff"] == before.height
    assert snapshot.manifest["events"]["excluded_at_or_after_cutoff"] == validated.height - before.height


def test_only_users_seen_before_cutoff_are_nodes(snapshot, validated):
    users_before = validated.filter(pl.col("timestamp") < CUTOFF)["user_id"].n_unique()
    assert snapshot.data["user"].num_nodes == users_before


def test_reverse_edges_equal_flipped_forward_edges(snapshot):
    forward = [t for t in snapshot.data.edge_types if not t[1].startswith("rev_")]
    assert forward
    for edge_type in forward:
        reverse = snapshot.data[reverse_edge_type(edge_type)]
        assert torch.equal(reverse.edge_index, snapshot.data[edge_type].edge_index.flip(0))
        for name in EDGE_ATTRS:
            if name in snapshot.data[edge_type]:
                assert torch.equal(reverse[name], snapshot.data[edge_type][name])
    assert len(snapshot.data.edge_types) == 2 * len(forward)


def test_edge_types_per_behaviour_and_target(snapshot):
    types = set(snapshot.data.edge_types)
    for expected in [
        ("user", "view", "item"),
        ("user", "purchase", "item"),
        ("user", "click", "content"),
        ("content", "features", "item"),
        ("item", "in_category", "category"),
        ("item", "of_brand", "brand"),
        ("item", "rev_view", "user"),
    ]:
        assert expected in types


def test_edges_match_events_by_hand(validated, snapshot):
    before = validated.filter(
        pl.col("timestamp") < CUTOFF, pl.col("event_type") == "purchase", pl.col("item_id").is_not_null()
    )
    expected = before.group_by("user_id", "item_id").agg(pl.len().alias("count"), pl.col("timestamp").max())
    data = snapshot.data["user", "purchase", "item"]
    got = pl.DataFrame(
        {
            "user_id": snapshot.ids_of("user", data.edge_index[0]),
            "item_id": snapshot.ids_of("item", data.edge_index[1]),
            "count": data["count"].numpy(),
            "last": data.last_timestamp.numpy(),
        }
    )
    merged = expected.join(got, on=["user_id", "item_id"], how="full", coalesce=True)
    assert merged.height == expected.height == got.height
    assert (merged["count"] == merged["count_right"]).all()
    assert (merged["timestamp"].dt.epoch("s") == merged["last"]).all()


def test_decayed_weight_by_hand():
    events = pl.DataFrame(
        {
            "user_id": ["a", "a", "b"],
            "item_id": [1, 1, 1],
            "event_type": ["view", "view", "view"],
            "timestamp": [
                datetime(2024, 1, 1, tzinfo=UTC),
                datetime(2024, 1, 8, tzinfo=UTC),
                datetime(2024, 1, 15, tzinfo=UTC),
            ],
        }
    )
    events = validate_events(events).frame
    snap = build_snapshot(events, datetime(2024, 1, 15, tzinfo=UTC), config=GraphConfig(half_life_days=7))
    data = snap.data["user", "view", "item"]
    assert data.edge_index.tolist() == [[0], [0]]  # b's event is at the cutoff: excluded
    assert data["count"].tolist() == [2]
    assert math.isclose(float(data.weight[0]), 0.25 + 0.5, rel_tol=1e-6)
    assert data.last_timestamp.tolist() == [int(datetime(2024, 1, 8, tzinfo=UTC).timestamp())]


def test_id_maps_round_trip_with_original_types(snapshot, validated):
    users = validated["user_id"].unique().sort()[:50]
    items = validated["item_id"].drop_nulls().unique().sort()[:50]
    user_index = snapshot.index_of("user", users)
    known = user_index.is_not_null()
    assert snapshot.ids_of("user", user_index.filter(known).to_numpy()).to_list() == users.filter(known).to_list()
    assert snapshot.ids_of("item", snapshot.index_of("item", items).to_numpy()).to_list() == items.to_list()
    assert snapshot.node_ids["user"]["user_id"].dtype == pl.String
    assert snapshot.node_ids["item"]["item_id"].dtype == pl.Int64
    assert snapshot.index_of("user", ["nobody"]).to_list() == [None]


def test_catalog_items_without_events_are_nodes(snapshot, small_shop):
    assert snapshot.data["item"].num_nodes == small_shop.items.height
    launched = small_shop.content.filter(pl.col("launch") < CUTOFF)
    assert snapshot.data["content"].num_nodes == launched.height < small_shop.content.height


def test_modules_launched_at_or_after_the_cutoff_are_not_in_the_snapshot(snapshot, small_shop):
    # Such a module did not exist at the cutoff: no node, so no featured-item edges leak later catalog changes.
    later = set(small_shop.content.filter(pl.col("launch") >= CUTOFF)["content_id"].to_list())
    known = set(snapshot.node_ids["content"]["content_id"].to_list())
    assert later and not later & known
    table = snapshot.node_ids["item"]
    assert table["category_index"].min() >= 0 and "price" in table.columns


def test_save_load_round_trip(tmp_path, snapshot):
    path = save_snapshot(snapshot, tmp_path / "snap")
    loaded = load_snapshot(path)
    assert set(loaded.data.edge_types) == set(snapshot.data.edge_types)
    for edge_type in snapshot.data.edge_types:
        for name, value in snapshot.data[edge_type].items():
            assert torch.equal(loaded.data[edge_type][name], value), (edge_type, name)
    for node_type in snapshot.data.node_types:
        assert loaded.data[node_type].num_nodes == snapshot.data[node_type].num_nodes
        assert loaded.node_ids[node_type].equals(snapshot.node_ids[node_type])
    # Plain tensors: readable without executing code.
    assert all(isinstance(t, torch.Tensor) for t in load_file(path / "graph.safetensors").values())
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["cutoff"] == CUTOFF.isoformat()
    assert manifest["config"]["half_life_days"] == 14.0
    assert "graphrec" in manifest["code_version"]
    assert manifest["stats"]["components"]["count"] >= 1
    assert manifest["num_edges"]["user__view__item"] == snapshot.data["user", "view", "item"].edge_index.shape[1]


def test_failed_save_keeps_previous_snapshot(tmp_path, snapshot, monkeypatch):
    path = save_snapshot(snapshot, tmp_path / "snap")
    before = (path / "graph.safetensors").read_bytes()

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("graphrec.graph.snapshot.write_json_atomic", explode)
    with pytest.raises(OSError, match="disk full"):
        save_snapshot(snapshot, path)
    assert (path / "graph.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["snap"]


def test_load_rejects_non_snapshot(tmp_path):
    with pytest.raises(InputError, match="not a graph snapshot"):
        load_snapshot(tmp_path)


def test_string_and_integer_ids_mix_between_catalog_and_events():
    events = validate_events(
        pl.DataFrame(
            {
                "user_id": [1, 2],
                "item_id": ["A", "B"],
                "event_type": ["view", "purchase"],
                "timestamp": [1_700_000_000, 1_700_000_001],
            }
        )
    ).frame
    items = pl.DataFrame({"item_id": ["A", "B", "C"], "category": ["x", "x", "y"]})
    snap = build_snapshot(events, "2024-01-01T00:00:00+00:00", items)
    assert snap.node_ids["item"]["item_id"].to_list() == ["A", "B", "C"]
    assert snap.node_ids["user"]["user_id"].dtype == pl.Int64
    assert snap.data["category"].num_nodes == 2
