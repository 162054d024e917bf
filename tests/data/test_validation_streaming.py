"""Chunked validation (`validation.chunk_rows`) gives exactly the outputs of one pass over the whole table."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from graphrec.data import validation
from graphrec.data.config import ValidationConfig
from graphrec.data.readers import LINE_PROBLEM, scan_table
from graphrec.data.schema import CONTENT, EVENTS, IMPRESSIONS, ITEMS
from graphrec.data.validation import validate_dataset, validate_table
from graphrec.errors import ConfigError, RejectedInputError

LENIENT = ValidationConfig(max_bad_fraction=1.0, reference_time="2024-06-01T00:00:00+00:00")
WHOLE = 10**12  # a chunk larger than any table (and than polars' 32-bit lengths): the whole-table pass


def validate_both(source, spec, config=LENIENT, chunks=(1, 3, 7)):
    """Validate in every chunk size and as one chunk; assert the outputs are identical and return the latter."""
    whole = validate_table(source, spec, replace(config, chunk_rows=WHOLE))
    for chunk_rows in chunks:
        chunked = validate_table(source, spec, replace(config, chunk_rows=chunk_rows))
        assert_frame_equal(chunked.frame, whole.frame)
        assert_frame_equal(chunked.quarantine, whole.quarantine)
        assert json.dumps(chunked.report.as_dict()) == json.dumps(whole.report.as_dict())  # notes' order too
    return whole


def reasons(result) -> dict[int, str]:
    return dict(zip(result.quarantine["row_number"], result.quarantine["reason"], strict=True))


def assert_reconciled(result, input_rows: int) -> None:
    report = result.report
    assert report.input_rows == input_rows and report.reconciled
    assert result.frame.height == report.used
    assert result.quarantine.height == report.deduplicated + report.quarantined


EVENT_ROWS = [
    # user_id, item_id, content_id, event_type, timestamp, device
    ("u1", "i10", None, "view", "2024-01-01T00:00:00Z", "app"),  # 1 used
    ("u2", "i11", None, "click", "2024-01-01 10:00:00", "app"),  # 2 used, a naive local time
    ("", "i12", None, "view", "2024-01-01T00:00:00Z", "app"),  # 3 null_user_id
    ("u1", "i10", None, "view", "2024-01-01T00:00:00Z", "app"),  # 4 duplicate of 1, in the next chunk of 3
    ("u3", None, None, "view", "2024-01-01T00:00:00Z", "app"),  # 5 no_item_id_or_content_id
    ("u4", "i13", None, "scroll", "2024-01-01T00:00:00Z", "app"),  # 6 unknown_event_type
    ("u5", "i14", None, None, "2024-01-01T00:00:00Z", "app"),  # 7 null_event_type
    ("u6", "i15", None, "view", None, "app"),  # 8 null_timestamp
    ("u7", "i16", None, "view", "not-a-time", "app"),  # 9 unparsable_timestamp
    ("u8", "i17", None, "view", "2100-01-01T00:00:00Z", "app"),  # 10 future_timestamp
    ("u9", "i18", None, "view", "1990-01-01T00:00:00Z", "app"),  # 11 timestamp_before_min
    ("u\x00", "i19", None, "view", "2024-01-01T00:00:00Z", "app"),  # 12 null_byte_user_id
    ("u2", "i11", None, "click", "2024-01-01 10:00:00", "app"),  # 13 duplicate of 2
    ("u1", "i10", None, "view", "2024-01-01T00:00:00Z", "app"),  # 14 duplicate of 1 again
    ("u10", None, "c1", "click", "2024-01-02T00:00:00Z", "app"),  # 15 used, a content event
    ("u11", "i20", None, "PV", "2024-01-02T00:00:00Z", "app"),  # 16 used (alias)
    (" u1 ", "i10", None, " VIEW ", "2024-01-01T01:00:00+01:00", "app"),  # 17 duplicate of 1 once typed
    ("u12", "i21", None, "view", "2023-11-05 01:30:00", "web"),  # 18 used, an ambiguous local time in New York
    (None, "i22", None, "scroll", "2024-01-01T00:00:00Z", "app"),  # 19 null_user_id comes first
    ("u13", "i23", None, "view", "2024-01-03T00:00:00Z", "web\x00"),  # 20 null_byte_device
]
EVENT_REASONS = {
    3: "null_user_id",
    4: "duplicate",
    5: "no_item_id_or_content_id",
    6: "unknown_event_type",
    7: "null_event_type",
    8: "null_timestamp",
    9: "unparsable_timestamp",
    10: "future_timestamp",
    11: "timestamp_before_min",
    12: "null_byte_user_id",
    13: "duplicate",
    14: "duplicate",
    17: "duplicate",
    19: "null_user_id",
    20: "null_byte_device",
}


def event_frame() -> pl.DataFrame:
    names = ["user_id", "item_id", "content_id", "event_type", "timestamp", "device"]
    return pl.DataFrame(EVENT_ROWS, schema=dict.fromkeys(names, pl.String), orient="row")


def test_events_in_chunks_equal_one_pass_with_every_reason_and_duplicates_across_chunks():
    config = replace(LENIENT, timezone="America/New_York")
    result = validate_both(event_frame(), EVENTS, config)
    assert_reconciled(result, len(EVENT_ROWS))
    assert reasons(result) == EVENT_REASONS
    assert result.report.deduplicated == 4
    assert result.frame["user_id"].to_list() == ["u1", "u2", "u10", "u11", "u12"]
    notes = result.report.notes
    # Every naive time is counted (quarantined rows too, as in one pass), and the notes keep one pass's order.
    assert notes["naive_timestamps"] == 3 and notes["ambiguous_local_times"] == 1
    assert list(notes) == ["naive_timestamps", "naive_timezone", "ambiguous_local_times", "timestamp_parsing"]
    quarantine_columns = ["row_number", "reason", "user_id", "item_id", "content_id", "event_type", "timestamp"]
    assert result.quarantine.columns == [*quarantine_columns, "device"]


def test_a_forced_hash_collision_keeps_every_distinct_row(monkeypatch):
    expected_events = validate_table(event_frame(), EVENTS, replace(LENIENT, chunk_rows=WHOLE))
    expected_items = validate_table(item_frame(), ITEMS, replace(LENIENT, chunk_rows=WHOLE))
    # Every row hashes alike: all rows land in one partition and all are judged on their values.
    monkeypatch.setattr(validation, "_row_hash", lambda frame: pl.zeros(frame.height, pl.UInt64, eager=True))
    for chunk_rows in (2, WHOLE):
        events = validate_table(event_frame(), EVENTS, replace(LENIENT, chunk_rows=chunk_rows))
        assert_frame_equal(events.frame, expected_events.frame)
        assert_frame_equal(events.quarantine, expected_events.quarantine)
        items = validate_table(item_frame(), ITEMS, replace(LENIENT, chunk_rows=chunk_rows))
        assert_frame_equal(items.frame, expected_items.frame)
        assert_frame_equal(items.quarantine, expected_items.quarantine)
    assert events.report.used == 5 and items.report.used == 3


def item_frame() -> pl.DataFrame:
    rows = [
        (1, "a", "1.0", None),  # 1 used
        (2, "b", "-3", None),  # 2 invalid_price
        (1, "a", "1.0", None),  # 3 duplicate of 1
        (2, "b", "5.0", None),  # 4 conflicting: row 2 had item 2 first, quarantined or not
        (1, "c", "2.0", None),  # 5 conflicting with 1
        (3, "c", "NaN", None),  # 6 invalid_price
        (4, "d", "1.0", "bad\x00title"),  # 7 null_byte_title
        (5, "d", None, None),  # 8 used
        (3, "c", "NaN", None),  # 9 invalid_price (a bad row stays bad, duplicate or not)
        (6, "d", "2.0", None),  # 10 used
        (6, "d", "2.0", None),  # 11 duplicate of 10
        (7, "e", "abc", None),  # 12 invalid_price
        (7, "e", None, None),  # 13 duplicate: once typed it equals row 12, and an earlier row counts whatever it is
    ]
    schema = {"item_id": pl.Int64, "category": pl.String, "price": pl.String, "title": pl.String}
    return pl.DataFrame(rows, schema=schema, orient="row")


def test_item_key_conflicts_and_duplicates_across_chunks():
    result = validate_both(item_frame(), ITEMS, chunks=(1, 2, 3, 5))
    assert_reconciled(result, 13)
    assert reasons(result) == {
        2: "invalid_price",
        3: "duplicate",
        4: "conflicting_duplicate_item_id",
        5: "conflicting_duplicate_item_id",
        6: "invalid_price",
        7: "null_byte_title",
        9: "invalid_price",
        11: "duplicate",
        12: "invalid_price",
        13: "duplicate",
    }
    assert result.frame["item_id"].to_list() == [1, 5, 6]


def test_content_lists_and_key_conflicts_across_chunks():
    frame = pl.DataFrame(
        {
            "content_id": ["c1", "c2", "c3", "c1", "c2", "c4"],
            "module_type": ["carousel", "banner", "teaser", "carousel", "banner", "editorial"],
            "item_ids": ["1|2|3", "[4, 5]", "", "1|2|3", "4|6", "7|8"],
        }
    )
    result = validate_both(frame, CONTENT, chunks=(1, 2, 4))
    assert reasons(result) == {4: "duplicate", 5: "conflicting_duplicate_content_id"}
    assert result.frame["item_ids"].dtype == pl.List(pl.Int64)
    assert result.frame["item_ids"].to_list() == [[1, 2, 3], [4, 5], [], [7, 8]]
    # A text id in the last chunk only makes the whole list column text, as one pass over the column does (id
    # lists are typed on every row, quarantined or not).
    text = frame.with_columns(pl.Series("item_ids", ["1|2|3", "[4, 5]", "", "1|2|3", "4|6", "7|x8"]))
    assert validate_both(text, CONTENT, chunks=(1, 2, 4)).frame["item_ids"].dtype == pl.List(pl.String)
    unknown = text.with_columns(pl.Series("module_type", [None] * 5 + ["editorial"]))
    assert validate_both(unknown, CONTENT, chunks=(2,)).frame["item_ids"].dtype == pl.List(pl.String)


def test_impression_flags_and_slots_in_chunks():
    frame = pl.DataFrame(
        {
            "request_id": ["r1", "r1", "r1", "r2", "r2", "r2", "r3"],
            "user_id": ["u", "u", "u", "v", "v", "v", "w"],
            "content_id": ["a", "b", "c", "a", "b", "a", "a"],
            "slot": ["0", "1", "-1", "x", None, "2", "0"],
            "timestamp": ["2024-01-01T00:00:00Z"] * 7,
            "clicked": ["1", "0", "0", "2", "1", "true", "1"],
        }
    )
    result = validate_both(frame, IMPRESSIONS, chunks=(1, 2, 3))
    assert reasons(result) == {3: "invalid_slot", 4: "invalid_slot", 5: "null_slot"}
    assert result.frame["clicked"].to_list() == [1, 0, 1, 1]


def test_auto_id_typing_is_decided_on_the_kept_rows_of_the_whole_table():
    users = [str(i) for i in range(1, 9)] + ["abc"]
    frame = pl.DataFrame(
        {
            "user_id": users,
            "item_id": [str(100 + i) for i in range(9)],
            "event_type": ["view"] * 9,
            "timestamp": [str(1_700_000_000 + i) for i in range(9)],
        }
    )
    # A text id kept in the last chunk only: the whole column is text.
    kept = validate_both(frame, EVENTS, chunks=(3, 4))
    assert kept.frame["user_id"].dtype == pl.String and kept.frame["user_id"].to_list() == users
    assert kept.frame["item_id"].dtype == pl.Int64
    # The same id on a quarantined row: the kept ids are all integers, and so is the column.
    quarantined = validate_both(frame.with_columns(pl.Series("event_type", ["view"] * 8 + ["scroll"])), EVENTS)
    assert quarantined.frame["user_id"].dtype == pl.Int64
    assert quarantined.frame["user_id"].to_list() == list(range(1, 9))
    # No id kept at all: integer only where every row's id is (then null ids are Int64 too).
    nothing_kept = frame.with_columns(pl.lit("scroll").alias("event_type"))
    assert validate_both(nothing_kept, EVENTS).frame.schema["user_id"] == pl.String
    assert validate_both(nothing_kept, EVENTS).frame.schema["item_id"] == pl.Int64


def test_the_epoch_unit_comes_from_the_median_of_the_whole_column():
    # The first chunks hold seconds, most of the column milliseconds: a chunk's own median would say seconds.
    stamps = [1_700_000_000 + i for i in range(4)] + [1_700_000_000_000 + i for i in range(6)]
    frame = pl.DataFrame(
        {"user_id": list(range(10)), "item_id": list(range(10)), "event_type": ["view"] * 10, "timestamp": stamps}
    )
    result = validate_both(frame, EVENTS, chunks=(1, 3, 4))
    assert result.report.notes == {"timestamp_unit": "ms"}
    assert reasons(result) == dict.fromkeys(range(1, 5), "timestamp_before_min")
    # Strings: numbers in some chunks, date-times in others; the unit comes from the numbers only.
    text = frame.with_columns(
        pl.Series("timestamp", [str(s) for s in stamps[:8]] + ["2024-01-01 10:00", "2024-01-01T10:00:00Z"])
    )
    result = validate_both(text, EVENTS, chunks=(1, 3, 4))
    assert result.report.notes["timestamp_unit"] == "ms" and result.report.notes["naive_timestamps"] == 1
    assert list(result.report.notes) == ["naive_timestamps", "naive_timezone", "timestamp_unit", "timestamp_parsing"]


def reference_unit(values: list) -> str:
    median = pl.Series(values, dtype=pl.Float64).abs().median()
    if median is None:
        return "s"
    for threshold, unit in ((1e17, "ns"), (1e14, "us"), (1e11, "ms")):
        if median >= threshold:
            return unit
    return "s"


def test_the_median_unit_from_counts_equals_the_median():
    rng = np.random.default_rng(0)
    cases = [[], [None], [float("nan")], [1.0, float("nan"), float("nan")], [1e9, 1e9, 1e12, 1e12]]
    cases += [[1e9, 1e9, 1.5e11, 1.5e11], [1e10, 1.9e11], [5e10, 1.5e11], [1e17, 1e17 - 16], [-2e14, 1e9]]
    for _ in range(400):
        n = int(rng.integers(1, 12))
        values = list(10.0 ** rng.choice([9, 10.5, 11, 12, 14, 15, 17, 18], size=n) * rng.choice([1, -1, 0.6], size=n))
        for _ in range(int(rng.integers(0, 3))):
            values[int(rng.integers(0, n))] = rng.choice([float("nan"), None, 1e11, 1e14])
        cases.append(values)
    for values in cases:
        frame = pl.LazyFrame({"t": pl.Series(values, dtype=pl.Float64)})
        assert validation._median_unit(frame, pl.col("t").abs()) == reference_unit(values), values


def write_bad_csv(path):
    path.write_bytes(
        b"user_id,item_id,event_type,timestamp\n"
        b"1,2,view,1700000000\n"  # 1
        b"3,4,view,1700000001,extra\n"  # 2 wrong_field_count
        b"5,6\n"  # 3 null_event_type (fields missing read as nulls)
        b"7,\xff8,view,1700000002\n"  # 4 invalid_encoding
        b'9,"1,0",view,1700000003\n'  # 5 a quoted separator is no extra field
        b"\n"  # 6 empty_line
        b"11,12,click,1700000004\n"  # 7
        b"3,4,view,1700000001\n"  # 8 duplicate of line 2 as read, though line 2 is quarantined
        b"1,2,view,1700000000\n"  # 9 duplicate of 1
        b"13,14,view,1700000005\n"  # 10
    )
    return path


def test_csv_bad_lines_in_different_chunks_keep_their_row_numbers(tmp_path):
    path = write_bad_csv(tmp_path / "events.csv")
    result = validate_both(path, EVENTS, chunks=(1, 2, 3, 7))
    assert_reconciled(result, 10)
    assert reasons(result) == {
        2: "wrong_field_count",
        3: "null_event_type",
        4: "invalid_encoding",
        6: "empty_line",
        8: "duplicate",
        9: "duplicate",
    }
    assert result.frame["user_id"].to_list() == [1, 9, 11, 13]  # the garbage id of line 4 does not make it text
    assert result.frame["item_id"].to_list() == ["2", "1,0", "12", "14"]
    # A clean file takes the strict read; the same rows, chunked or not.
    clean = tmp_path / "clean.csv"
    clean.write_text(
        "user_id,item_id,event_type,timestamp\n1,2,view,1700000000\n3,4,pv,1700000001\n1,2,view,1700000000\n"
    )
    assert reasons(validate_both(clean, EVENTS, chunks=(1, 2))) == {3: "duplicate"}


def test_a_spilled_csv_reads_as_the_in_memory_one(tmp_path):
    path = write_bad_csv(tmp_path / "events.csv")
    (tmp_path / "spill").mkdir()
    spilled = scan_table(path, spill_dir=tmp_path / "spill")
    assert_frame_equal(spilled.collect(), scan_table(path).collect())
    assert LINE_PROBLEM in spilled.collect_schema().names()
    assert [p.name for p in (tmp_path / "spill").iterdir()] == ["rows.parquet"]


def test_parquet_lazy_and_in_memory_sources_give_the_same_outputs(tmp_path):
    frame = event_frame()
    path = tmp_path / "events.parquet"
    frame.write_parquet(path, row_group_size=4)
    expected = validate_table(frame, EVENTS, replace(LENIENT, chunk_rows=WHOLE))
    for source in (path, frame.lazy()):
        result = validate_both(source, EVENTS, chunks=(3,))
        assert_frame_equal(result.frame, expected.frame)
        assert_frame_equal(result.quarantine, expected.quarantine)


def test_the_rejection_threshold_applies_to_the_whole_table(tmp_path):
    rows = "".join(f"{i},{i},view,1700000000\n" for i in range(90)) + "".join(
        f",{i},view,1700000000\n" for i in range(10)
    )
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id,event_type,timestamp\n" + rows)
    errors = {}
    for chunk_rows in (7, WHOLE):
        # Every bad row in the last chunks: no chunk alone decides.
        with pytest.raises(RejectedInputError) as info:
            validate_table(path, EVENTS, ValidationConfig(max_bad_fraction=0.05, chunk_rows=chunk_rows))
        errors[chunk_rows] = info.value
        assert "10.0% of rows are bad" in str(info.value) and info.value.report["rejected"]
        assert info.value.quarantine["row_number"].to_list() == list(range(91, 101))
        out = tmp_path / f"out-{chunk_rows}"
        with pytest.raises(RejectedInputError, match=r"rejected"):
            validate_dataset({"events": path}, out, ValidationConfig(max_bad_fraction=0.05, chunk_rows=chunk_rows))
        assert not out.exists()
    assert errors[7].report == errors[WHOLE].report and str(errors[7]) == str(errors[WHOLE])
    assert_frame_equal(errors[7].quarantine, errors[WHOLE].quarantine)
    rejected = [pl.read_parquet(tmp_path / f"out-{c}.rejected" / "quarantine" / "events.parquet") for c in (7, WHOLE)]
    assert_frame_equal(rejected[0], rejected[1])
    reports = [json.loads((tmp_path / f"out-{c}.rejected" / "report.json").read_text()) for c in (7, WHOLE)]
    assert reports[0] == reports[1] and reports[0]["report"]["quarantined"] == 10
    assert validate_table(path, EVENTS, ValidationConfig(max_bad_fraction=0.2, chunk_rows=7)).report.used == 90


def test_validate_dataset_writes_the_same_files_in_chunks(tmp_path):
    events = write_bad_csv(tmp_path / "events.csv")
    items = pl.DataFrame({"item_id": ["2", "12", "x14", "12"], "category": ["a", "b", "c", "d"]})
    content = pl.DataFrame(
        {"content_id": ["m1", "m2"], "module_type": ["carousel", "banner"], "item_ids": ["2|12", "x14|99"]}
    )
    tables = {"events": events, "items": items, "content": content}
    outputs = {}
    for chunk_rows in (2, WHOLE):
        out = tmp_path / f"validated-{chunk_rows}"
        report = validate_dataset(tables, out, replace(LENIENT, chunk_rows=chunk_rows))
        # Nothing but the dataset: the work files lived in the staging directory and are gone.
        files = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
        assert files == [
            "content.parquet",
            "events.parquet",
            "items.parquet",
            "quarantine",
            "quarantine/content.parquet",
            "quarantine/events.parquet",
            "quarantine/items.parquet",
            "report.json",
        ]
        written = json.loads((out / "report.json").read_text())
        assert written == json.loads(json.dumps(report))
        del written["created_at"], written["config"]["chunk_rows"]
        outputs[chunk_rows] = (out, written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.csv", f"validated-{WHOLE}", "validated-2"]
    (chunked, chunked_report), (whole, whole_report) = outputs[2], outputs[WHOLE]
    assert json.dumps(chunked_report) == json.dumps(whole_report)
    for name in ("events", "items", "content"):
        assert_frame_equal(pl.read_parquet(chunked / f"{name}.parquet"), pl.read_parquet(whole / f"{name}.parquet"))
        assert_frame_equal(
            pl.read_parquet(chunked / "quarantine" / f"{name}.parquet"),
            pl.read_parquet(whole / "quarantine" / f"{name}.parquet"),
        )
    assert whole_report["cross_checks"] == {
        "event_items_not_in_catalog": 2,
        "event_content_not_in_catalog": 0,
        "featured_items_not_in_catalog": 1,
    }
    assert whole_report["tables"]["items"]["reasons"] == {"conflicting_duplicate_item_id": 1}


def test_chunk_rows_must_be_a_positive_integer():
    for value in (0, -1, 1.5, True, None):
        with pytest.raises(ConfigError, match=r"validation\.chunk_rows must be a positive integer"):
            ValidationConfig(chunk_rows=value)
    assert ValidationConfig().chunk_rows == 1_000_000


def test_rows_are_read_a_chunk_at_a_time(monkeypatch):
    # Memory follows the chunk: no step reads the table whole (rows sharing a hash are read again by number).
    sizes = []
    read = validation._Source.read

    def spy(self, start, length, names=None):
        frame = read(self, start, length, names)
        sizes.append(frame.height)
        return frame

    monkeypatch.setattr(validation._Source, "read", spy)
    validate_table(event_frame(), EVENTS, replace(LENIENT, chunk_rows=3))
    # Two chunks are read at once, so the reads may finish in either order.
    assert sorted(sizes, reverse=True) == [3] * 6 + [2] and sum(sizes) == len(EVENT_ROWS)


def test_chunks_checked_at_once_are_merged_in_file_order(monkeypatch):
    # Chunks are checked two at a time; the first chunk finishing last must change nothing in the outputs.
    import threading
    import time

    check = validation._ChunkedValidation.check_chunk
    at_least_one_later_chunk_done = threading.Event()
    finished = []

    def slow_first(self, chunk, partitions):
        if chunk == 0:
            at_least_one_later_chunk_done.wait(timeout=10)
            time.sleep(0.05)
        result = check(self, chunk, partitions)
        finished.append(chunk)
        if chunk > 0:
            at_least_one_later_chunk_done.set()
        return result

    whole = validate_table(event_frame(), EVENTS, replace(LENIENT, chunk_rows=WHOLE))
    monkeypatch.setattr(validation._ChunkedValidation, "check_chunk", slow_first)
    chunked = validate_table(event_frame(), EVENTS, replace(LENIENT, chunk_rows=3))
    assert finished[0] == 1  # the second chunk was checked before the first
    assert_frame_equal(chunked.frame, whole.frame)
    assert_frame_equal(chunked.quarantine, whole.quarantine)
    assert json.dumps(chunked.report.as_dict()) == json.dumps(whole.report.as_dict())


def test_a_table_of_one_full_chunk_is_checked_as_two_halves_with_the_same_outputs(monkeypatch):
    # A table that fills a chunk is split in two, so both threads work on it; the outputs are those of one chunk.
    checked = []
    check = validation._ChunkedValidation.check_chunk

    def record(self, chunk, partitions):
        checked.append((chunk, self.config.chunk_rows))
        return check(self, chunk, partitions)

    frame = event_frame()
    whole = validate_table(frame, EVENTS, replace(LENIENT, chunk_rows=WHOLE))
    monkeypatch.setattr(validation, "_SPLIT_ONE_CHUNK_ROWS", 2)
    monkeypatch.setattr(validation._ChunkedValidation, "check_chunk", record)
    split = validate_table(frame, EVENTS, replace(LENIENT, chunk_rows=len(frame)))
    assert sorted(chunk for chunk, _ in checked) == [0, 1]
    assert {rows for _, rows in checked} == {-(-len(frame) // 2)}
    assert_frame_equal(split.frame, whole.frame)
    assert_frame_equal(split.quarantine, whole.quarantine)
    assert json.dumps(split.report.as_dict()) == json.dumps(whole.report.as_dict())
