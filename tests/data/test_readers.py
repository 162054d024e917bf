from __future__ import annotations

import pytest

from graphrec.data.readers import scan_table
from graphrec.errors import InputError


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InputError, match=r"events\.csv: file not found"):
        scan_table(tmp_path / "events.csv")


def test_empty_file_is_a_clear_error(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("")
    with pytest.raises(InputError, match=r"events.csv: file is empty"):
        scan_table(path)


def test_corrupt_parquet_is_a_clear_error(tmp_path):
    path = tmp_path / "events.parquet"
    path.write_bytes(b"PAR1 this is not parquet at all" * 10)
    with pytest.raises(InputError, match=r"events.parquet: not a readable Parquet file"):
        scan_table(path)


def test_wrong_delimiter_names_the_likely_one(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("user_id;item_id;event_type;timestamp\n1;2;view;1700000000\n")
    with pytest.raises(InputError, match=r"looks ';'-separated; pass delimiter=';'"):
        scan_table(path)


def test_explicit_delimiter_reads(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("user_id;item_id\n1;2\n")
    assert scan_table(path, delimiter=";").collect().columns == ["user_id", "item_id"]


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "events.xlsx"
    path.write_bytes(b"x")
    with pytest.raises(InputError, match=r"unsupported file type '\.xlsx'"):
        scan_table(path)


def test_directory_of_parquet_parts(tmp_path, small_shop):
    (tmp_path / "events").mkdir()
    half = small_shop.events.height // 2
    small_shop.events[:half].write_parquet(tmp_path / "events" / "part-0.parquet")
    small_shop.events[half:].write_parquet(tmp_path / "events" / "part-1.parquet")
    assert scan_table(tmp_path / "events").collect().height == small_shop.events.height
