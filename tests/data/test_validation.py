from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import polars as pl
import pytest

from graphrec.data.config import ValidationConfig
from graphrec.data.schema import EVENT_TYPES
from graphrec.data.validation import (
    validate_content,
    validate_dataset,
    validate_events,
    validate_impressions,
    validate_items,
)
from graphrec.errors import ConfigError, InputError, RejectedInputError, SchemaError

LENIENT = ValidationConfig(max_bad_fraction=1.0, reference_time="2024-06-01T00:00:00+00:00")


def write_csv(tmp_path, text: str, name: str = "events.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_reconciled(result, input_rows: int):
    report = result.report
    assert report.input_rows == input_rows
    assert report.used + report.deduplicated + report.quarantined == input_rows
    assert result.frame.height == report.used
    assert result.quarantine.height == report.deduplicated + report.quarantined


def test_missing_required_column_names_file_column_and_type(tmp_path):
    path = write_csv(tmp_path, "user_id,item_id,timestamp\n1,2,1700000000\n")
    with pytest.raises(SchemaError) as info:
        validate_events(path)
    message = str(info.value)
    assert "events.csv" in message and "'event_type'" in message and "string event names" in message


def test_events_need_item_or_content_column(tmp_path):
    path = write_csv(tmp_path, "user_id,event_type,timestamp\n1,view,1700000000\n")
    with pytest.raises(SchemaError, match=r"at least one of the columns \['item_id', 'content_id'\]"):
        validate_events(path)


def test_mistyped_column_names_expected_type(tmp_path):
    frame = pl.DataFrame(
        {"user_id": [1.0, 2.0], "item_id": [1, 2], "event_type": ["view"] * 2, "timestamp": [1_700_000_000] * 2}
    )
    path = tmp_path / "events.parquet"
    frame.write_parquet(path)
    with pytest.raises(SchemaError, match=r"events.parquet: column 'user_id' has type Float64; expected integer or"):
        validate_events(path)


def test_boolean_timestamp_is_mistyped():
    frame = pl.DataFrame({"user_id": [1], "item_id": [1], "event_type": ["view"], "timestamp": [True]})
    with pytest.raises(SchemaError, match="column 'timestamp' has type Boolean"):
        validate_events(frame)


def test_header_only_file_is_a_clear_error(tmp_path):
    path = write_csv(tmp_path, "user_id,item_id,event_type,timestamp\n")
    with pytest.raises(InputError, match=r"events\.csv: no data rows"):
        validate_events(path)


def test_row_problems_are_quarantined_with_reasons_and_reconciled(tmp_path):
    path = write_csv(
        tmp_path,
        "user_id,item_id,content_id,event_type,timestamp\n"
        "1,10,,pv,1700000000\n"  # used (alias pv -> view)
        "1,10,,pv,1700000000\n"  # exact duplicate
        ",11,,buy,1700000100\n"  # null user
        "2,,,buy,1700000100\n"  # neither item nor content
        "3,12,,scroll,1700000100\n"  # unknown event type
        "4,13,,fav,not-a-time\n"  # unparsable timestamp
        "5,14,,cart,4102444800\n"  # 2100-01-01: far future
        "6,,m1,click,1700000200\n",  # used, content event
    )
    result = validate_events(path, LENIENT)
    assert_reconciled(result, 8)
    assert result.report.used == 2 and result.report.deduplicated == 1 and result.report.quarantined == 5
    reasons = dict(zip(result.quarantine["row_number"], result.quarantine["reason"], strict=True))
    assert reasons == {
        2: "duplicate",
        3: "null_user_id",
        4: "no_item_id_or_content_id",
        5: "unknown_event_type",
        6: "unparsable_timestamp",
        7: "future_timestamp",
    }
    assert result.frame["event_type"].cast(pl.String).to_list() == ["view", "click"]
    # Quarantined rows keep their raw values.
    assert result.quarantine.filter(pl.col("reason") == "unknown_event_type")["event_type"].item() == "scroll"


def test_rejects_file_over_bad_share_threshold(tmp_path):
    rows = "".join(f"{i},{i},view,1700000000\n" for i in range(90)) + "".join(
        f",{i},view,1700000000\n" for i in range(10)
    )
    path = write_csv(tmp_path, "user_id,item_id,event_type,timestamp\n" + rows)
    with pytest.raises(RejectedInputError) as info:
        validate_events(path, ValidationConfig(max_bad_fraction=0.05))
    assert "10.0% of rows are bad" in str(info.value) and "null_user_id=10" in str(info.value)
    assert info.value.report["input_rows"] == 100 and info.value.report["rejected"]
    assert validate_events(path, ValidationConfig(max_bad_fraction=0.2)).report.used == 90


def test_duplicates_do_not_count_as_bad():
    frame = pl.DataFrame(
        {"user_id": [1] * 10, "item_id": [1] * 10, "event_type": ["view"] * 10, "timestamp": [1_700_000_000] * 10}
    )
    result = validate_events(frame, ValidationConfig(max_bad_fraction=0.0))
    assert result.report.used == 1 and result.report.deduplicated == 9


def test_ids_keep_their_type_and_value(tmp_path):
    path = write_csv(
        tmp_path,
        "user_id,item_id,event_type,timestamp\n007,100,view,1700000000\nabc,200,view,1700000001\n",
    )
    frame = validate_events(path).frame
    assert frame["user_id"].dtype == pl.String and frame["user_id"].to_list() == ["007", "abc"]
    assert frame["item_id"].dtype == pl.Int64 and frame["item_id"].to_list() == [100, 200]


def test_leading_zero_ids_stay_strings(tmp_path):
    path = write_csv(tmp_path, "user_id,item_id,event_type,timestamp\n007,1,view,1700000000\n008,2,view,1700000000\n")
    assert validate_events(path).frame["user_id"].to_list() == ["007", "008"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1_700_000_000, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        (1_700_000_000_000, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        ("2023-11-14T23:13:20+01:00", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        ("2023-11-14T22:13:20Z", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        ("2023-11-14 22:13:20", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
    ],
)
def test_timestamps_normalise_to_utc(raw, expected):
    frame = pl.DataFrame({"user_id": [1], "item_id": [1], "event_type": ["view"], "timestamp": [raw]})
    result = validate_events(frame)
    assert result.frame["timestamp"].dtype == pl.Datetime("us", "UTC")
    assert result.frame["timestamp"].item() == expected


def test_timezone_aware_datetimes_convert_to_utc():
    stamp = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    frame = pl.DataFrame({"user_id": [1], "item_id": [1], "event_type": ["view"], "timestamp": [stamp]}).with_columns(
        pl.col("timestamp").dt.convert_time_zone("Europe/Berlin")
    )
    assert validate_events(frame).frame["timestamp"].item() == stamp


def test_epoch_seconds_misread_as_too_old_are_quarantined():
    # Mostly milliseconds, one value in seconds: the seconds value lands in 1970 and is quarantined, not the file.
    frame = pl.DataFrame(
        {
            "user_id": [1, 2, 3],
            "item_id": [1, 2, 3],
            "event_type": ["view"] * 3,
            "timestamp": [1_700_000_000_000, 1_700_000_001_000, 1_700_000_002],
        }
    )
    result = validate_events(frame, LENIENT)
    assert result.report.notes["timestamp_unit"] == "ms"
    assert result.quarantine["reason"].to_list() == ["timestamp_before_min"]


def test_event_aliases_from_config():
    frame = pl.DataFrame(
        {"user_id": [1, 2], "item_id": [1, 2], "event_type": ["Checkout", "PV"], "timestamp": [1_700_000_000] * 2}
    )
    config = ValidationConfig(event_aliases={"checkout": "purchase"})
    assert validate_events(frame, config).frame["event_type"].cast(pl.String).to_list() == ["purchase", "view"]


def test_alias_to_unknown_canonical_type_is_an_error():
    with pytest.raises(SchemaError, match="'checkout' maps to 'bought'"):
        ValidationConfig(event_aliases={"checkout": "bought"}).aliases()


def test_all_canonical_types_pass():
    frame = pl.DataFrame(
        {
            "user_id": list(range(5)),
            "item_id": list(range(5)),
            "event_type": list(EVENT_TYPES),
            "timestamp": [1_700_000_000] * 5,
        }
    )
    assert validate_events(frame).report.used == 5


def test_impressions_flags_and_slots():
    frame = pl.DataFrame(
        {
            "request_id": ["r1", "r1", "r1", "r2"],
            "user_id": ["u", "u", "u", "v"],
            "content_id": ["a", "b", "c", "a"],
            "slot": ["0", "1", "-1", "x"],
            "timestamp": ["2024-01-01T00:00:00Z"] * 4,
            "clicked": ["1", "0", "0", "2"],
        }
    )
    result = validate_impressions(frame, LENIENT)
    assert_reconciled(result, 4)
    assert result.frame["clicked"].to_list() == [1, 0]
    assert result.quarantine["reason"].to_list() == ["invalid_slot", "invalid_slot"]


def test_invalid_click_flag_is_quarantined():
    frame = pl.DataFrame(
        {
            "request_id": [1, 1],
            "user_id": [1, 1],
            "content_id": [1, 2],
            "slot": [0, 1],
            "timestamp": [1_700_000_000] * 2,
            "clicked": [1, 5],
        }
    )
    assert validate_impressions(frame, LENIENT).quarantine["reason"].to_list() == ["invalid_clicked"]


def test_items_conflicting_duplicates_are_quarantined():
    frame = pl.DataFrame({"item_id": [1, 1, 1, 2], "category": ["a", "a", "b", "c"], "price": [1.0, 1.0, 2.0, -3.0]})
    result = validate_items(frame, LENIENT)
    assert_reconciled(result, 4)
    assert dict(zip(result.quarantine["row_number"], result.quarantine["reason"], strict=True)) == {
        2: "duplicate",
        3: "conflicting_duplicate_item_id",
        4: "invalid_price",
    }


def test_nan_and_infinite_prices_are_quarantined():
    prices = [1.0, float("nan"), float("inf"), -float("inf"), 0.0]
    frame = pl.DataFrame({"item_id": [1, 2, 3, 4, 5], "category": ["a"] * 5, "price": prices})
    result = validate_items(frame, LENIENT)
    assert_reconciled(result, 5)
    assert dict(zip(result.quarantine["row_number"], result.quarantine["reason"], strict=True)) == {
        2: "invalid_price",
        3: "invalid_price",
        4: "invalid_price",
    }
    assert result.frame["item_id"].to_list() == [1, 5]


def test_null_bytes_in_ids_and_strings_are_quarantined():
    events = pl.DataFrame(
        {
            "user_id": ["u1", "u\x002", "u3"],
            "item_id": ["i1", "i2", "i\x003"],
            "event_type": ["view"] * 3,
            "timestamp": ["2024-01-01T00:00:00Z"] * 3,
        }
    )
    result = validate_events(events, LENIENT)
    assert_reconciled(result, 3)
    assert dict(zip(result.quarantine["row_number"], result.quarantine["reason"], strict=True)) == {
        2: "null_byte_user_id",
        3: "null_byte_item_id",
    }
    items = pl.DataFrame({"item_id": [1, 2], "title": ["shoe", "bad\x00title"]})
    assert validate_items(items, LENIENT).quarantine["reason"].to_list() == ["null_byte_title"]


def test_nonsense_settings_are_refused_when_read():
    with pytest.raises(ConfigError, match=r"validation\.max_bad_fraction"):
        ValidationConfig(max_bad_fraction=-0.5)
    with pytest.raises(ConfigError, match=r"validation\.reference_time"):
        ValidationConfig(reference_time="yesterday")


def test_content_item_lists_parse_from_strings():
    frame = pl.DataFrame(
        {
            "content_id": ["a", "b", "c"],
            "module_type": ["carousel", "banner", "teaser"],
            "item_ids": ["1|2|3", "[4, 5]", ""],
        }
    )
    result = validate_content(frame)
    assert result.frame["item_ids"].dtype == pl.List(pl.Int64)
    assert result.frame["item_ids"].to_list() == [[1, 2, 3], [4, 5], []]


def test_validate_dataset_writes_tables_quarantine_and_report(tmp_path, small_shop):
    out = tmp_path / "validated"
    report = validate_dataset({"events": small_shop.events, "items": small_shop.items}, out)
    assert report["tables"]["events"]["reconciled"]
    assert json.loads((out / "report.json").read_text())["status"] == "ok"
    assert pl.read_parquet(out / "events.parquet").height == report["tables"]["events"]["used"]
    assert (out / "quarantine" / "events.parquet").exists()
    assert report["cross_checks"]["event_items_not_in_catalog"] == 0


def test_rejected_dataset_leaves_previous_version_intact(tmp_path, small_shop):
    out = tmp_path / "validated"
    validate_dataset({"events": small_shop.events}, out)
    before = (out / "events.parquet").read_bytes()
    bad = small_shop.events.with_columns(pl.lit(None, dtype=pl.String).alias("user_id"))
    with pytest.raises(RejectedInputError, match=r"validated\.rejected"):
        validate_dataset({"events": bad}, out)
    assert (out / "events.parquet").read_bytes() == before
    rejected = json.loads((tmp_path / "validated.rejected" / "report.json").read_text())
    assert rejected["status"] == "rejected" and rejected["report"]["quarantined"] == bad.height
    assert pl.read_parquet(tmp_path / "validated.rejected" / "quarantine" / "events.parquet").height == bad.height


def test_an_id_typed_differently_across_tables_stops_naming_both_files(tmp_path):
    (tmp_path / "events.csv").write_text(
        "user_id,item_id,event_type,timestamp\n1,1007.0,view,1700000000\n2,1008.0,purchase,1700000100\n"
    )
    (tmp_path / "items.csv").write_text("item_id,category\n1007,a\n1008,b\n")
    tables = {"events": tmp_path / "events.csv", "items": tmp_path / "items.csv"}
    with pytest.raises(SchemaError) as error:
        validate_dataset(tables, tmp_path / "out", LENIENT)
    message = str(error.value)
    assert "events.csv" in message and "items.csv" in message and "'1007.0'" in message
    assert not (tmp_path / "out").exists()
    # Read as text everywhere, the ids are consistent, and every event item missing from the catalog is counted.
    report = validate_dataset(tables, tmp_path / "out", replace(LENIENT, id_type="str"))
    assert report["cross_checks"]["event_items_not_in_catalog"] == 2


def test_cross_checks_count_featured_items_missing_from_the_catalog(tmp_path):
    events = pl.DataFrame(
        {"user_id": [1], "item_id": [1], "event_type": ["view"], "timestamp": ["2024-01-01T00:00:00Z"]}
    )
    items = pl.DataFrame({"item_id": [1, 2], "category": ["a", "b"]})
    content = pl.DataFrame({"content_id": ["c1"], "module_type": ["carousel"], "item_ids": ["1|2|3|4"]})
    report = validate_dataset({"events": events, "items": items, "content": content}, tmp_path / "out", LENIENT)
    assert report["cross_checks"]["featured_items_not_in_catalog"] == 2
    assert report["cross_checks"]["event_items_not_in_catalog"] == 0


def test_naive_timestamps_are_local_times_in_the_configured_zone_and_counted():
    events = pl.DataFrame(
        {
            "user_id": [1, 2, 3, 4],
            "item_id": [1, 2, 3, 4],
            "event_type": ["view"] * 4,
            # naive (winter, CET = UTC+1), with an offset, naive (summer, CEST = UTC+2), naive and skipped by DST
            "timestamp": ["2024-01-15 12:00:00", "2024-01-15T12:00:00+00:00", "2024-05-15 12:00", "2024-03-31 02:30"],
        }
    )
    result = validate_events(events, replace(LENIENT, timezone="Europe/Berlin"))
    assert_reconciled(result, 4)
    times = dict(zip(result.frame["user_id"], result.frame["timestamp"], strict=True))
    assert times[1] == datetime(2024, 1, 15, 11, tzinfo=UTC)
    assert times[2] == datetime(2024, 1, 15, 12, tzinfo=UTC)
    assert times[3] == datetime(2024, 5, 15, 10, tzinfo=UTC)
    assert result.quarantine["reason"].to_list() == ["unparsable_timestamp"]  # 02:30 did not exist that night
    assert result.report.notes["naive_timestamps"] == 3 and result.report.notes["naive_timezone"] == "Europe/Berlin"
    utc = validate_events(events.head(2), LENIENT)
    assert utc.frame["timestamp"].to_list() == [datetime(2024, 1, 15, 12, tzinfo=UTC)] * 2
    assert utc.report.notes["naive_timestamps"] == 1


def test_naive_datetime_columns_follow_the_zone_too():
    events = pl.DataFrame(
        {"user_id": [1], "item_id": [1], "event_type": ["view"], "timestamp": [datetime(2024, 1, 15, 12)]}
    )
    result = validate_events(events, replace(LENIENT, timezone="America/New_York"))
    assert result.frame["timestamp"].to_list() == [datetime(2024, 1, 15, 17, tzinfo=UTC)]
    assert result.report.notes["naive_timestamps"] == 1 and "ambiguous_local_times" not in result.report.notes
    # 01:30 on 2023-11-05 happened twice in New York: the earlier instant is taken, and the report counts it.
    events = events.with_columns(timestamp=pl.lit(datetime(2023, 11, 5, 1, 30)))
    result = validate_events(events, replace(LENIENT, timezone="America/New_York"))
    assert result.frame["timestamp"].to_list() == [datetime(2023, 11, 5, 5, 30, tzinfo=UTC)]
    assert result.report.notes["ambiguous_local_times"] == 1
    with pytest.raises(ConfigError, match="IANA time zone"):
        ValidationConfig(timezone="Mars/Olympus")


def test_bad_csv_lines_are_quarantined_with_their_row_and_reason(tmp_path):
    path = tmp_path / "events.csv"
    path.write_bytes(
        b"user_id,item_id,event_type,timestamp\n"
        b"1,2,view,1700000000\n"
        b"3,4,view,1700000001,extra\n"  # a field too many
        b"5,6\n"  # too few: read with nulls, as any reader does, and judged by its values
        b"7,\xff8,view,1700000002\n"  # not UTF-8
        b'9,"1,0",view,1700000003\n'  # a quoted separator is no extra field
        b"\n"
        b"11,12,click,1700000004\n"
    )
    result = validate_events(path, LENIENT)
    assert_reconciled(result, 7)
    assert dict(zip(result.quarantine["row_number"], result.quarantine["reason"], strict=True)) == {
        2: "wrong_field_count",
        3: "null_event_type",
        4: "invalid_encoding",
        6: "empty_line",
    }
    assert result.frame["user_id"].to_list() == [1, 9, 11] and result.frame["item_id"].to_list() == ["2", "1,0", "12"]
    assert "__line_problem" not in result.frame.columns


def test_valid_csv_details_are_not_taken_for_bad_lines(tmp_path):
    # Inch marks inside plain fields, a real U+FFFD character and the unit separator in a value are all valid.
    path = tmp_path / "items.csv"
    path.write_text('item_id,category,title\n1,5" tv,7" tab\n2,tv,"caf\ufffd"\n3,tv,a\x1fb\n', encoding="utf-8")
    result = validate_items(path, LENIENT)
    assert result.quarantine.height == 0 and result.frame["category"].to_list() == ['5" tv', "tv", "tv"]
    # With a bad line elsewhere (the lenient path), the inch marks still do not count as quoted fields.
    path.write_bytes(b'item_id,category,title\n1,5" tv,7" tab\n2,tv,caf\xff\n')
    result = validate_items(path, LENIENT)
    assert result.quarantine["reason"].to_list() == ["invalid_encoding"] and result.frame["item_id"].to_list() == [1]


def test_a_mostly_broken_csv_is_still_rejected(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id,event_type,timestamp\n1,2,view,1700000000\n3\n4\n5\n")
    with pytest.raises(RejectedInputError, match="rejected"):
        validate_events(path, ValidationConfig(reference_time="2024-06-01T00:00:00+00:00"))


def test_a_quarantined_line_does_not_decide_the_id_type(tmp_path):
    (tmp_path / "events.csv").write_bytes(
        b"user_id,item_id,event_type,timestamp\n1,1007,view,1700000000\n2,10\xff3,view,1700000001\n"
        b"3,1008,view,1700000002\n"
    )
    (tmp_path / "items.csv").write_text("item_id,category\n1007,a\n1008,b\n")
    tables = {"events": tmp_path / "events.csv", "items": tmp_path / "items.csv"}
    report = validate_dataset(tables, tmp_path / "out", LENIENT)
    assert report["tables"]["events"]["reasons"] == {"invalid_encoding": 1}
    assert pl.read_parquet(tmp_path / "out" / "events.parquet")["item_id"].dtype == pl.Int64
    assert report["cross_checks"]["event_items_not_in_catalog"] == 0


def test_absent_optional_columns_keep_their_type():
    # A content table without featured items (news, say) must still give the snapshot a list column to explode.
    content = pl.DataFrame({"content_id": ["n1", "n2"], "module_type": ["news", "sports"]})
    result = validate_content(content, LENIENT)
    assert result.frame.schema["item_ids"] == pl.List(pl.String)
    assert result.frame["item_ids"].null_count() == 2
    impressions = pl.DataFrame(
        {
            "request_id": [1, 1],
            "user_id": [5, 5],
            "content_id": ["n1", "n2"],
            "slot": [0, 1],
            "timestamp": [1_700_000_000, 1_700_000_000],
            "clicked": [1, 0],
        }
    )
    typed = validate_impressions(impressions, LENIENT).frame.schema
    assert typed["propensity"] == pl.Float64 and typed["device"] == pl.String


def test_module_schedule_may_be_absent_or_ahead_but_not_garbage():
    content = pl.DataFrame(
        {
            "content_id": ["a", "b", "c"],
            "module_type": ["banner"] * 3,
            "launch": ["2024-05-01", None, "2031-01-01"],  # c is scheduled: a launch ahead of now is not an error
            "end": ["2024-06-01", None, "not a date"],
        }
    )
    result = validate_content(content, LENIENT)
    assert result.frame["content_id"].to_list() == ["a", "b"]
    assert result.frame.schema["launch"] == pl.Datetime("us", "UTC")
    assert result.quarantine["reason"].to_list() == ["unparsable_end"]


def test_vector_columns_are_quarantined_for_wrong_dimension_nan_or_text_with_counts():
    items = pl.DataFrame(
        {
            "item_id": [1, 2, 3, 4, 5, 6, 7],
            "image_embedding": [[0.1, 0.2, 0.3], [1, 2, 3], [1.0, float("nan"), 2], [1, 2], None, [4, 5, 6], [1, 1, 1]],
            "video_embedding": ["[1 2]", "1,2", "x,3", "", "3|4", "1 2 3", "x 4"],
        }
    )
    result = validate_items(items, LENIENT)
    assert_reconciled(result, 7)
    assert result.report.reasons == {
        "invalid_image_embedding": 1,
        "wrong_dimension_image_embedding": 1,
        "wrong_dimension_video_embedding": 1,
        "invalid_video_embedding": 1,
    }
    assert result.report.notes["vector_dims"] == {"image_embedding": 3, "video_embedding": 2}
    assert result.frame["item_id"].to_list() == [1, 2, 5]
    assert result.frame.schema["image_embedding"] == pl.Array(pl.Float32, 3)
    assert result.frame.schema["video_embedding"] == pl.Array(pl.Float32, 2)
    assert result.frame["image_embedding"][2] is None  # a missing vector is allowed: the item just has none
    assert result.frame["video_embedding"].to_list()[2] == [3.0, 4.0]
    quarantined = dict(zip(result.quarantine["row_number"], result.quarantine["reason"], strict=True))
    assert quarantined == {
        3: "invalid_image_embedding",
        4: "wrong_dimension_image_embedding",
        6: "wrong_dimension_video_embedding",
        7: "invalid_video_embedding",
    }
    assert result.quarantine.filter(pl.col("row_number") == 3)["image_embedding"].item() == "1.0|NaN|2.0"


def test_vector_columns_from_csv_and_content_and_only_named_embedding(tmp_path):
    path = write_csv(
        tmp_path,
        "content_id,module_type,image_embedding,score_list\nm1,banner,0.5 0.5,1\nm2,teaser,[0.1;0.2],2\n"
        "m3,teaser,0.1 inf,3\n",
        "content.csv",
    )
    result = validate_content(path, LENIENT)
    assert_reconciled(result, 3)
    assert "score_list" not in result.frame.columns  # not a contract column, not a vector column: not read
    assert result.frame["image_embedding"].to_list() == [[0.5, 0.5], [pytest.approx(0.1), pytest.approx(0.2)]]
    assert result.report.reasons == {"invalid_image_embedding": 1}
    with pytest.raises(SchemaError, match=r"image_embedding.*fixed-size list of numbers"):
        validate_items(pl.DataFrame({"item_id": [1], "image_embedding": [True]}), LENIENT)
    # Events carry no content vectors: an `*_embedding` column there is not part of the contract.
    events = pl.DataFrame(
        {"user_id": [1], "item_id": [2], "event_type": ["view"], "timestamp": ["2024-01-01"], "x_embedding": [[1.0]]}
    )
    assert "x_embedding" not in validate_events(events, LENIENT).frame.columns


def test_vector_columns_chunked_equal_whole_and_written_by_validate_dataset(tmp_path):
    vectors = [[float(i), 1.0] for i in range(50)] + [[1.0, 2.0, 3.0]] * 3 + [[float("nan"), 0.0]]
    items = pl.DataFrame({"item_id": list(range(len(vectors))), "image_embedding": vectors})
    whole = validate_items(items, LENIENT)
    chunked = validate_items(items, replace(LENIENT, chunk_rows=7))
    assert whole.frame.equals(chunked.frame) and whole.quarantine.equals(chunked.quarantine)
    assert whole.report.reasons == {"wrong_dimension_image_embedding": 3, "invalid_image_embedding": 1}
    events = pl.DataFrame(
        {"user_id": [1], "item_id": [2], "event_type": ["view"], "timestamp": [datetime(2024, 1, 1, tzinfo=UTC)]}
    )
    report = validate_dataset({"events": events, "items": items}, tmp_path / "valid", LENIENT)
    assert report["tables"]["items"]["reasons"]["wrong_dimension_image_embedding"] == 3
    written = pl.read_parquet(tmp_path / "valid" / "items.parquet")
    assert written.schema["image_embedding"] == pl.Array(pl.Float32, 2) and written.height == 50
    quarantine = pl.read_parquet(tmp_path / "valid" / "quarantine" / "items.parquet")
    assert quarantine.height == 4
