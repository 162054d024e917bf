from __future__ import annotations

from collections import Counter

import polars as pl
import pytest

from graphrec.data.adapters import (
    TAOBAO_MB_TEST_TIME,
    open_dataset,
    read_ecomm,
    read_gowalla,
    read_interaction_lists,
    read_mind,
    read_taobao_mb,
    read_taobao_userbehavior,
)
from graphrec.data.config import ValidationConfig
from graphrec.data.schema import TABLES
from graphrec.data.validation import validate_table
from graphrec.errors import InputError
from graphrec.graph.snapshot import build_snapshot
from tests.conftest import shared_dataset

STRICT = ValidationConfig(max_bad_fraction=0.0)


def validate(dataset, table: str):
    result = validate_table(dataset.tables()[table], TABLES[table], STRICT, table)
    report = result.report
    assert report.input_rows == report.used + report.deduplicated + report.quarantined
    return result


# Small synthetic files in each format: these run everywhere, with or without the real datasets.


def test_interaction_lists_synthetic(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("0 5 6 7\n1\t8\t9\n2\n")
    events, counts = read_interaction_lists(path, "purchase", TAOBAO_MB_TEST_TIME)
    frame = events.collect()
    assert counts == {"lines": 3, "lines_without_items": 1}
    assert frame.select("user_id", "item_id").rows() == [("0", "5"), ("0", "6"), ("0", "7"), ("1", "8"), ("1", "9")]


def test_empty_auxiliary_split_file_counts_as_zero_events(tmp_path):
    for offset, behaviour in enumerate(("view", "cart", "buy")):
        (tmp_path / behaviour).mkdir()
        for part, item in (("train", 10 * offset), ("test", 10 * offset + 5)):
            (tmp_path / behaviour / f"{part}.txt").write_text(f"0 {item} {item + 1}\n1 {item + 2}\n")
    (tmp_path / "view" / "test.txt").write_text("")  # an auxiliary part with no rows is legitimate
    dataset = read_taobao_mb(tmp_path)
    assert dataset.notes["view/test.txt"] == {"lines": 0, "lines_without_items": 0}
    events = validate(dataset, "events").frame
    assert events.height == 15 and events.filter(pl.col("event_type") == "view").height == 3
    (tmp_path / "buy" / "test.txt").write_text("")  # the target behaviour's held-out part is not optional
    with pytest.raises(InputError, match="file is empty"):
        read_taobao_mb(tmp_path)


def test_taobao_userbehavior_synthetic(tmp_path):
    path = tmp_path / "UserBehavior.csv"
    path.write_text("1,10,100,pv,1511658000\n1,10,100,buy,1511658060\n2,11,101,fav,1511658100\n")
    dataset = read_taobao_userbehavior(path)
    events = validate(dataset, "events").frame
    assert events["event_type"].cast(pl.String).to_list() == ["view", "purchase", "add_to_wishlist"]
    assert events["user_id"].dtype == pl.Int64
    assert validate(dataset, "items").frame.height == 2


def test_wrong_column_count_is_a_clear_error(tmp_path):
    path = tmp_path / "UserBehavior.csv"
    path.write_text("1;10;100;pv;1511658000\n")
    with pytest.raises(InputError, match=r"expected 5 ','-separated columns"):
        read_taobao_userbehavior(path)


def test_mind_synthetic(tmp_path):
    (tmp_path / "behaviors.tsv").write_text(
        "1\tU1\t11/13/2019 8:36:57 AM\tN1 N2\tN3-1 N4-0 N5-0\n2\tU2\t11/13/2019 9:00:00 PM\t\tN4-1 N3-1\n"
    )
    (tmp_path / "news.tsv").write_text("N3\tsports\tsoccer\tTitle 3\tabs\turl\t[]\t[]\n")
    dataset = read_mind(tmp_path)
    impressions = validate(dataset, "impressions").frame
    assert impressions.select("content_id", "slot", "clicked").rows() == [
        ("N3", 0, 1),
        ("N4", 1, 0),
        ("N5", 2, 0),
        ("N4", 0, 1),
        ("N3", 1, 1),
    ]
    assert impressions["timestamp"][3].hour == 21
    events = validate(dataset, "events").frame
    assert events.height == 3 + 2  # three clicks plus U1's two history clicks
    history = events.filter(pl.col("content_id").is_in(["N1", "N2"]))
    assert (history["timestamp"] < impressions["timestamp"].min()).all()  # before the log, so before every cutoff
    assert validate(dataset, "content").frame["module_type"].to_list() == ["sports"]


def test_open_dataset_rejects_unknown_format(tmp_path):
    with pytest.raises(InputError, match="unknown input format 'avro'"):
        open_dataset("avro", tmp_path)


def test_contract_directory_needs_events(tmp_path):
    with pytest.raises(InputError, match=r"no events\.parquet"):
        open_dataset("contract", tmp_path)


# The real public files beside the project: counts must match their SOURCE.txt.


def test_taobao_userbehavior_matches_source():
    dataset = read_taobao_userbehavior(shared_dataset("taobao-userbehavior-slice") / "UserBehavior.csv")
    result = validate(dataset, "events")
    events = result.frame
    assert result.report.input_rows == 110_300
    assert events["user_id"].n_unique() == 66_454 and events["item_id"].n_unique() == 84_793
    counts = dict(events.group_by("event_type").len().with_columns(pl.col("event_type").cast(pl.String)).iter_rows())
    assert counts == {"view": 98_361, "add_to_cart": 6_063, "add_to_wishlist": 3_383, "purchase": 2_493}
    assert validate(dataset, "items").frame["category"].n_unique() == 3_913
    assert events["timestamp"].min().isoformat() == "2017-11-26T01:00:00+00:00"


def test_ecomm_matches_source():
    dataset = read_ecomm(shared_dataset("ecomm"))
    raw = dataset.events.collect()
    assert raw.height == 85_213
    assert Counter(raw["event_type"]) == {
        "click": 57_917,
        "add_to_wishlist": 5_529,
        "add_to_cart": 15_066,
        "purchase": 6_701,
    }
    result = validate(dataset, "events")
    events = result.frame
    assert events["user_id"].n_unique() == 1_476 and events["item_id"].n_unique() == 34_505
    days = events["timestamp"].dt.date().unique().sort()
    assert str(days[0]) == "2019-06-10" and str(days[-1]) == "2019-06-19" and len(days) == 10
    items = validate(dataset, "items").frame
    assert events["item_id"].is_in(items["item_id"].implode()).all()  # every item has features
    assert items["category"].n_unique() == 401


def test_taobao_mb_matches_source():
    root = shared_dataset("taobao-mb")
    dataset = read_taobao_mb(root)
    events = validate(dataset, "events").frame
    counts = dict(events.group_by("event_type").len().with_columns(pl.col("event_type").cast(pl.String)).iter_rows())
    assert counts == {"view": 873_954, "add_to_cart": 195_476, "purchase": 92_180 + 15_449}
    assert events["user_id"].n_unique() == 15_449 and events["item_id"].n_unique() == 11_953
    snapshot = build_snapshot(events, TAOBAO_MB_TEST_TIME)
    assert int(snapshot.data["user", "purchase", "item"]["count"].sum()) == 92_180
    held_out = events.filter(pl.col("timestamp") >= TAOBAO_MB_TEST_TIME)
    assert held_out.height == 15_449 and held_out["user_id"].n_unique() == 15_449


def test_gowalla_matches_source():
    dataset = read_gowalla(shared_dataset("gowalla"))
    events = validate(dataset, "events").frame
    assert events.height == 810_128 + 217_242
    assert events["user_id"].n_unique() == 29_858 and events["item_id"].n_unique() == 40_981
    assert events.filter(pl.col("timestamp") >= TAOBAO_MB_TEST_TIME).height == 217_242


def test_mind_matches_source():
    root = shared_dataset("mind-small")
    lines = (root / "behaviors.tsv").read_text().splitlines()
    tokens = [t for line in lines for t in line.split("\t")[4].split()]
    dataset = read_mind(root)
    impressions = validate(dataset, "impressions").frame
    assert impressions["request_id"].n_unique() == len(lines) == 4_032
    assert impressions.height == len(tokens)
    assert int(impressions["clicked"].sum()) == sum(t.endswith("-1") for t in tokens)
    assert impressions["timestamp"].min().date().isoformat() == "2019-11-09"
    assert validate(dataset, "content").frame.height == 2_000
