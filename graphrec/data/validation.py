"""Validation of contract tables: typed columns, quarantined bad rows, and a reconciled row count.

Every input row ends in exactly one place: the validated table (used), or the quarantine table with reason
`duplicate` (deduplicated) or another reason (quarantined). `input_rows == used + deduplicated + quarantined`
holds for every table and is recorded in the report.

A table is validated in chunks of `validation.chunk_rows` rows, so memory follows the chunk, not the table, and
the outputs are the same whatever the chunk size (one chunk larger than the table is the whole-table pass):
1. what depends on a whole column is settled first, in a streaming pre-pass: the `auto` epoch unit (where the
   median falls among the unit thresholds, found from counts, never by holding the column) and whether every id
   in an id-list column is an integer;
2. each chunk is typed and checked row by row; its quarantined rows and its valid rows go to the work directory,
   and every row's 64-bit hash (of the key for catalogs, of all values otherwise) to one of a few hash partitions;
3. the rows whose hash another row has are read again and judged exactly as one pass over the table would judge
   them (the first of equal rows is kept, a valid row whose key an earlier row has conflicts), so a hash collision
   costs a re-read, never a row;
4. `auto` text ids become Int64 at the end when every value, or every kept value, of the column is an integer.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import tempfile
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from graphrec.artifacts import atomic_directory, code_version, utc_now_iso, write_json_atomic
from graphrec.data.config import ValidationConfig
from graphrec.data.readers import LINE_PROBLEM, SPILL_PARQUET, scan_table
from graphrec.data.schema import (
    ACTION_DTYPE,
    CONTENT,
    EVENT_TYPE_DTYPE,
    EVENTS,
    IMPRESSIONS,
    ITEMS,
    KIND_DESCRIPTION,
    TABLES,
    TIMESTAMP_DTYPE,
    Column,
    TableSpec,
)
from graphrec.errors import InputError, RejectedInputError, SchemaError

log = logging.getLogger(__name__)

DUPLICATE = "duplicate"
_DATETIME_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%#z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f%#z",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)
_EPOCH_UNIT_SCALE = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}
# The median of |epoch| at or above a threshold means that unit (checked from the top); below all of them: seconds.
_EPOCH_UNIT_THRESHOLDS = ((1e17, "ns"), (1e14, "us"), (1e11, "ms"))
_NUMERIC_TEXT = r"^-?\d+(\.\d+)?$"
# Notes in the order one pass over a table writes them, whichever chunk saw each first.
_NOTE_ORDER = ("naive_timestamps", "naive_timezone", "ambiguous_local_times", "timestamp_unit", "timestamp_parsing")
_INDEX_DTYPE = np.dtype([("row_number", np.uint64), ("hash", np.uint64)])
_MAX_PARTITIONS = 1024  # files of the hash index, at most
_CHUNK_THREADS = 2  # chunks checked at once (this many chunks in memory)
# A table of one chunk that fills at least half of it (and has at least this many rows) is checked as two halves,
# so both threads work on it; a chunk chosen far larger than the table (the whole-table pass) stays one chunk.
_SPLIT_ONE_CHUNK_ROWS = 200_000


@dataclass
class TableReport:
    """Row accounting of one validated table."""

    table: str
    source: str
    input_rows: int
    used: int
    deduplicated: int
    quarantined: int
    reasons: dict[str, int]
    rejected: bool = False
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def reconciled(self) -> bool:
        return self.input_rows == self.used + self.deduplicated + self.quarantined

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"reconciled": self.reconciled}

    def summary(self) -> str:
        """Return a one-line human summary, reasons included."""
        reasons = ", ".join(f"{k}={v:,}" for k, v in sorted(self.reasons.items())) or "none"
        return (
            f"{self.source}: {self.input_rows:,} rows = {self.used:,} used + {self.deduplicated:,} deduplicated "
            f"+ {self.quarantined:,} quarantined (reasons: {reasons})"
        )


@dataclass
class ValidatedTable:
    """A validated table, its quarantined rows (all columns as strings, with row_number and reason) and report."""

    frame: pl.DataFrame
    quarantine: pl.DataFrame
    report: TableReport


def _is_integer(dtype: pl.DataType) -> bool:
    return dtype.is_integer()


def _is_stringlike(dtype: pl.DataType) -> bool:
    return dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum | pl.Categorical)


def _accepts(kind: str, dtype: pl.DataType) -> bool:
    if dtype == pl.Null:
        return True
    if kind == "id":
        return _is_integer(dtype) or _is_stringlike(dtype)
    if kind == "event_type":
        return _is_integer(dtype) or _is_stringlike(dtype)
    if kind == "action":
        return _is_stringlike(dtype)
    if kind == "timestamp":
        return isinstance(dtype, pl.Datetime) or dtype == pl.Date or dtype.is_numeric() or _is_stringlike(dtype)
    if kind in ("int", "float"):
        return dtype.is_numeric() or _is_stringlike(dtype)
    if kind == "flag":
        return dtype == pl.Boolean or _is_integer(dtype) or _is_stringlike(dtype)
    if kind == "id_list":
        if isinstance(dtype, pl.List):
            return _accepts("id", dtype.inner)
        return _is_stringlike(dtype)
    if kind == "vector":
        if isinstance(dtype, pl.List | pl.Array):
            return dtype.inner.is_numeric() or dtype.inner == pl.Null
        return _is_stringlike(dtype)
    return True  # text: any value has a string form


def check_schema(schema: pl.Schema, spec: TableSpec, source: str) -> list[Column]:
    """Return the spec's columns present in `schema`; raise SchemaError for a missing or mistyped column."""
    present = []
    for column in spec.columns:
        if column.name not in schema:
            if column.required:
                raise SchemaError(
                    f"{source}: missing required column '{column.name}' "
                    f"(expected {KIND_DESCRIPTION[column.kind]}); found columns: {list(schema.names())}"
                )
            continue
        dtype = schema[column.name]
        if not _accepts(column.kind, dtype):
            hint = " (float ids lose precision: write them as Int64 or String)" if dtype.is_float() else ""
            raise SchemaError(
                f"{source}: column '{column.name}' has type {dtype}; expected {KIND_DESCRIPTION[column.kind]}{hint}"
            )
        present.append(column)
    if spec.any_of and not any(name in schema for name in spec.any_of):
        raise SchemaError(
            f"{source}: needs at least one of the columns {list(spec.any_of)}; found columns: {list(schema.names())}"
        )
    return present


def _trimmed(series: pl.Series) -> pl.Series:
    """String ids trimmed, empty ones null."""
    text = series.cast(pl.String).str.strip_chars()
    return pl.select(pl.when(text.str.len_bytes() == 0).then(None).otherwise(text)).to_series().alias(series.name)


def _is_integer_text_expr(text: pl.Expr) -> pl.Expr:
    """Per value: true where a string id is a plain integer (`17`, not `017` or `1.0`) or null."""
    return text.cast(pl.Int64, strict=False).cast(pl.String).eq_missing(text)


def _is_integer_text(text: pl.Series) -> pl.Series:
    return pl.select(_is_integer_text_expr(pl.lit(text))).to_series()


def _normalise_id(series: pl.Series, id_type: str) -> pl.Series:
    """Trim string ids (empty -> null); `int` reads them as Int64. `auto` keeps them as text here: whether the
    column becomes Int64 is decided at the end, on the whole table (`_integer_id_columns`)."""
    if _is_integer(series.dtype):
        return series.cast(pl.Int64) if series.dtype != pl.UInt64 else series
    if series.dtype == pl.Null:
        return series.cast(pl.String)
    text = _trimmed(series)
    return text.cast(pl.Int64, strict=False) if id_type == "int" else text


def _median_unit(frame: pl.LazyFrame, values: pl.Expr) -> str:
    """The epoch unit implied by the median of `values` (absolute epochs), in one streaming pass that never holds
    the column: per threshold it counts the values below and keeps the largest below and the smallest above, which
    is all it takes to know on which side the median falls (polars sorts NaN last; a NaN median is no unit)."""
    v = pl.col("v")
    aggregates = [v.count().alias("n"), v.is_nan().sum().alias("nan")]
    for i, (threshold, _) in enumerate(_EPOCH_UNIT_THRESHOLDS):
        below = v < threshold
        aggregates += [
            below.sum().alias(f"below{i}"),
            v.filter(below).max().alias(f"low{i}"),
            v.filter(~below & ~v.is_nan()).min().alias(f"high{i}"),
        ]
    epochs = frame.select(values.cast(pl.Float64).alias("v"))  # computed once, then aggregated
    stats = epochs.select(aggregates).collect(engine="streaming").row(0, named=True)
    n = stats["n"]
    lower, upper = (n - 1) // 2, n // 2  # sorted positions of the middle values (one value when n is odd)
    if n == 0 or upper >= n - stats["nan"]:
        return "s"
    for i, (threshold, unit) in enumerate(_EPOCH_UNIT_THRESHOLDS):
        below = stats[f"below{i}"]
        if below <= lower:  # both middle values at or above the threshold
            return unit
        if below == upper and lower < upper:  # the threshold lies between the two middle values
            median = pl.Series([stats[f"low{i}"], stats[f"high{i}"]], dtype=pl.Float64).median()
            if median >= threshold:
                return unit
    return "s"


def _epoch_units(source: _Source, config: ValidationConfig) -> dict[str, str]:
    """The epoch unit of each timestamp column that may hold numbers, chosen on the whole column: with `auto`, from
    the median (not the maximum, so that a few rows in another unit are quarantined, not the whole column)."""
    units = {}
    for column in source.columns:
        dtype = source.dtypes[column.name]
        if column.kind != "timestamp" or isinstance(dtype, pl.Datetime) or dtype == pl.Date:
            continue
        if config.timestamp_unit != "auto" or dtype == pl.Null:
            units[column.name] = config.timestamp_unit if config.timestamp_unit != "auto" else "s"
        elif _is_stringlike(dtype):
            text = pl.col(column.name).cast(pl.String).str.strip_chars()
            epochs = pl.when(text.str.contains(_NUMERIC_TEXT)).then(text).cast(pl.Float64)
            units[column.name] = _median_unit(source.frame, epochs.abs())
        else:
            units[column.name] = _median_unit(source.frame, pl.col(column.name).abs())
    return units


def _normalise_timestamp(series: pl.Series, config: ValidationConfig, notes: dict[str, Any], unit: str) -> pl.Series:
    """Return the column as Datetime(us, UTC); values that cannot be read become null. `unit` is the epoch unit
    of numbers, chosen on the whole column (`_epoch_units`)."""
    name = series.name
    dtype = series.dtype
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            return _localise(series.cast(pl.Datetime("us")), config, notes)
        return series.dt.convert_time_zone("UTC").cast(TIMESTAMP_DTYPE)
    if dtype == pl.Date:
        return _localise(series.cast(pl.Datetime("us")), config, notes)
    if _is_stringlike(dtype):
        # Each string is read as an epoch number when it is one and as a date-time otherwise; a date-time with an
        # offset is exact, one without is a local time in `validation.timezone`.
        text = series.cast(pl.String).str.strip_chars()
        numeric = text.str.contains(_NUMERIC_TEXT).fill_null(False)
        formats = ([config.timestamp_format] if config.timestamp_format else []) + list(_DATETIME_FORMATS)
        with_offset = [f for f in formats if "%z" in f or "%#z" in f]
        naive_formats = [f for f in formats if f not in with_offset]
        exact = _first_parse(text, with_offset, TIMESTAMP_DTYPE, time_zone="UTC")
        local = _first_parse(text.set(exact.is_not_null(), None), naive_formats, pl.Datetime("us"))
        parsed = pl.select(pl.coalesce(exact, _localise(local, config, notes))).to_series()
        epochs = pl.select(pl.when(numeric).then(text)).to_series().cast(pl.Float64).alias(name)
        if bool(numeric.any()):
            from_epoch = _epoch_to_datetime(epochs, notes, unit)
            parsed = pl.select(pl.when(numeric).then(from_epoch).otherwise(parsed)).to_series()
        if not bool(numeric.all()):
            notes["timestamp_parsing"] = "strings"
        return parsed.alias(name).cast(TIMESTAMP_DTYPE)
    return _epoch_to_datetime(series, notes, unit)


def _first_parse(text: pl.Series, formats: list[str], dtype: pl.DataType, **options: Any) -> pl.Series:
    """Each value read with the first of `formats` that reads it (null when none does), as
    `pl.coalesce(text.str.to_datetime(f) for f in formats)` but each format only reads what the ones before could
    not: a column in one format is parsed once."""
    parsed = pl.repeat(None, text.len(), dtype=dtype, eager=True).alias(text.name)
    for format in formats:
        unread = parsed.is_null() & text.is_not_null()
        if not unread.any():
            break
        attempt = text.filter(unread).str.to_datetime(format=format, strict=False, time_unit="us", **options)
        parsed = parsed.scatter(unread.arg_true(), attempt)
    return parsed


def _localise(naive: pl.Series, config: ValidationConfig, notes: dict[str, Any]) -> pl.Series:
    """Read naive date-times as local times in `validation.timezone` and convert them to UTC; counts them in the
    notes (the report says how many rows carried no offset). A local time that does not exist (skipped by a
    daylight-saving change) becomes null and is quarantined; an ambiguous one takes the earlier instant."""
    count = naive.len() - naive.null_count()
    if count:
        notes["naive_timestamps"] = notes.get("naive_timestamps", 0) + count
        notes["naive_timezone"] = config.timezone
    local = naive.dt.replace_time_zone(config.timezone, ambiguous="earliest", non_existent="null")
    latest = naive.dt.replace_time_zone(config.timezone, ambiguous="latest", non_existent="null")
    ambiguous = int((local != latest).sum())  # the repeated hour when clocks go back: two instants, one text
    if ambiguous:
        notes["ambiguous_local_times"] = notes.get("ambiguous_local_times", 0) + ambiguous
    return local.dt.convert_time_zone("UTC").cast(TIMESTAMP_DTYPE)


def _epoch_to_datetime(series: pl.Series, notes: dict[str, Any], unit: str) -> pl.Series:
    name = series.name
    notes["timestamp_unit"] = unit
    micros = series.cast(pl.Float64) * _EPOCH_UNIT_SCALE[unit]
    in_range = micros.abs() < 8e18
    micros = pl.select(pl.when(in_range).then(micros).otherwise(None)).to_series()
    return micros.round(0).cast(pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone("UTC").alias(name)


def _normalise_event_type(series: pl.Series, config: ValidationConfig) -> pl.Series:
    """Canonical event types (aliases resolved; unknown names null). An Enum column is mapped per category, not
    per row: the same result, without spelling out every row."""
    if isinstance(series.dtype, pl.Enum):
        categories = _normalise_event_type(series.dtype.categories, config)
        return categories.gather(series.to_physical()).alias(series.name)
    text = series.cast(pl.String).str.strip_chars().str.to_lowercase()
    return text.replace_strict(config.aliases(), default=None, return_dtype=pl.String).cast(EVENT_TYPE_DTYPE)


def _normalise_action(series: pl.Series) -> pl.Series:
    """Feedback actions, trimmed and lower-cased ('-' and spaces read as '_'); unknown names null."""
    text = series.cast(pl.String).str.strip_chars().str.to_lowercase().str.replace_all(r"[-\s]+", "_")
    known = {action: action for action in ACTION_DTYPE.categories}
    return text.replace_strict(known, default=None, return_dtype=pl.String).cast(ACTION_DTYPE).alias(series.name)


def _normalise_flag(series: pl.Series) -> pl.Series:
    if series.dtype == pl.Boolean:
        return series.cast(pl.Int8)
    if _is_stringlike(series.dtype):
        text = series.cast(pl.String).str.strip_chars().str.to_lowercase()
        mapped = text.replace_strict({"0": 0, "1": 1, "true": 1, "false": 0}, default=None, return_dtype=pl.Int8)
        return mapped.alias(series.name)
    return pl.select(pl.when(series.is_in([0, 1])).then(series).otherwise(None)).to_series().cast(pl.Int8)


def _id_lists_as_text(series: pl.Series) -> pl.Series:
    """A column of id lists (lists, or strings of ids separated by '|', ',', ';' or spaces) as List(String)."""
    if isinstance(series.dtype, pl.List):
        return series.cast(pl.List(pl.String))
    text = series.cast(pl.String).str.strip_chars().str.strip_chars("[]")
    text = text.str.replace_all(r"[|,;\s]+", " ").str.replace_all(r"[\"']", "").str.strip_chars()
    return pl.select(
        pl.when(text.str.len_bytes() == 0).then(pl.lit([], dtype=pl.List(pl.String))).otherwise(text.str.split(" "))
    ).to_series()


def _id_lists_are_integers(series: pl.Series, id_type: str) -> bool:
    """Whether these id lists are read as List(Int64): lists of integers are; with `auto`, lists whose every id is
    a plain integer are (the whole column must be: `_integer_id_lists`)."""
    if isinstance(series.dtype, pl.List) and _is_integer(series.dtype.inner):
        return True
    if id_type != "auto":
        return id_type == "int"
    return bool(_is_integer_text(_trimmed(_id_lists_as_text(series).explode())).all())


def _integer_id_lists(source: _Source, config: ValidationConfig) -> dict[str, bool]:
    """Per id-list column, whether every id in the whole column is an integer (the column is then List(Int64))."""
    decided = {}
    for column in source.columns:
        if column.kind == "id_list":
            starts = range(0, source.rows, config.chunk_rows)
            decided[column.name] = all(
                _id_lists_are_integers(
                    source.read(start, config.chunk_rows, [column.name])[column.name], config.id_type
                )
                for start in starts
            )
    return decided


def _normalise_id_list(series: pl.Series, integer: bool) -> pl.Series:
    """Parse a column of id lists; `integer`, decided on the whole column, reads the ids as Int64."""
    if isinstance(series.dtype, pl.List) and _is_integer(series.dtype.inner):
        return series.cast(pl.List(pl.Int64))
    lists = _id_lists_as_text(series)
    return (lists.cast(pl.List(pl.Int64)) if integer else lists).alias(series.name)


@dataclass
class _WholeTable:
    """What a chunk cannot see but the whole column decides, settled before the chunks are validated."""

    epoch_units: dict[str, str]  # per timestamp column that may hold epoch numbers
    integer_id_lists: dict[str, bool]  # per id-list column
    vector_dims: dict[str, int] = field(default_factory=dict)  # per vector column: its one dimension (0: no values)


def _normalise(
    df: pl.DataFrame, columns: list[Column], config: ValidationConfig, notes: dict[str, Any], whole: _WholeTable
) -> dict[str, pl.Series]:
    normalised: dict[str, pl.Series] = {}
    for column in columns:
        raw = df[column.name]
        if column.kind == "id":
            normalised[column.name] = _normalise_id(raw, config.id_type)
        elif column.kind == "event_type":
            normalised[column.name] = _normalise_event_type(raw, config)
        elif column.kind == "action":
            normalised[column.name] = _normalise_action(raw)
        elif column.kind == "timestamp":
            unit = whole.epoch_units.get(column.name, "s")
            normalised[column.name] = _normalise_timestamp(raw, config, notes, unit)
        elif column.kind == "int":
            normalised[column.name] = raw.cast(pl.Int64, strict=False)
        elif column.kind == "float":
            normalised[column.name] = raw.cast(pl.Float64, strict=False)
        elif column.kind == "flag":
            normalised[column.name] = _normalise_flag(raw)
        elif column.kind == "id_list":
            normalised[column.name] = _normalise_id_list(raw, whole.integer_id_lists[column.name])
        elif column.kind == "vector":
            normalised[column.name] = pl.select(_vector_values(pl.lit(raw), raw.dtype)).to_series().alias(column.name)
        else:
            text = raw.cast(pl.String)
            normalised[column.name] = text
    return normalised


def _vector_values(raw: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """A vector column's values as List(Float64): lists and arrays cast (a value that is not a number becomes a
    null element), text split on spaces, ',', ';' or '|' after dropping brackets; empty text is null."""
    if isinstance(dtype, pl.Array):
        return raw.arr.to_list().cast(pl.List(pl.Float64), strict=False)
    if isinstance(dtype, pl.List):
        return raw.cast(pl.List(pl.Float64), strict=False)
    text = raw.cast(pl.String).str.strip_chars().str.strip_chars("[]()").str.replace_all(r"[\s,;|]+", " ")
    text = text.str.strip_chars()
    values = text.str.split(" ").list.eval(pl.element().cast(pl.Float64, strict=False))
    return pl.when(text.str.len_bytes() > 0).then(values)


def _vector_dims(source: _Source) -> dict[str, int]:
    """Each vector column's dimension: the most common length of its values (ties: the smaller), so that a few
    rows of another length are quarantined, not the whole column; 0 for a column without values."""
    dims: dict[str, int] = {}
    for column in source.columns:
        if column.kind != "vector":
            continue
        lengths = source.frame.select(
            _vector_values(pl.col(column.name), source.dtypes[column.name]).list.len().alias("length")
        )
        counts = source._collect(
            lengths.drop_nulls().group_by("length").len().sort(["len", "length"], descending=[True, False])
        )
        dims[column.name] = int(counts["length"][0]) if counts.height else 0
    return dims


def _reference_time(config: ValidationConfig) -> datetime:
    """The "now" of the future check, taken once per table so that every chunk is judged against the same one."""
    reference = datetime.fromisoformat(config.reference_time) if config.reference_time else datetime.now(UTC)
    return reference.replace(tzinfo=UTC) if reference.tzinfo is None else reference


def _reason_expression(
    spec: TableSpec,
    columns: list[Column],
    config: ValidationConfig,
    dtypes: dict[str, pl.DataType],
    reference: datetime,
    vector_dims: dict[str, int] | None = None,
) -> pl.Expr:
    """One `when` chain: the first problem of a row names its reason; valid rows get null. `dtypes` are the
    normalised columns' types."""
    latest = reference + timedelta(seconds=config.max_future_seconds)
    earliest = datetime.fromisoformat(config.min_timestamp)
    if earliest.tzinfo is None:
        earliest = earliest.replace(tzinfo=UTC)
    checks: list[tuple[pl.Expr, str]] = []
    for column in columns:
        raw, value = pl.col(f"raw__{column.name}"), pl.col(column.name)
        if column.kind == "id" and column.required:
            checks.append((value.is_null(), f"null_{column.name}"))
        elif column.kind in ("event_type", "action"):
            checks.append((raw.is_null(), f"null_{column.name}"))
            checks.append((value.is_null(), f"unknown_{column.name}"))
        elif column.kind == "timestamp" and column.required:
            checks.append((raw.is_null(), f"null_{column.name}"))
            checks.append((value.is_null(), f"unparsable_{column.name}"))
            checks.append((value > pl.lit(latest), f"future_{column.name}"))
            checks.append((value < pl.lit(earliest), f"{column.name}_before_min"))
        elif column.kind == "timestamp":  # a module's launch or end: may be absent, and may lie ahead (scheduled)
            checks.append((value.is_null() & raw.is_not_null(), f"unparsable_{column.name}"))
            checks.append((value < pl.lit(earliest), f"{column.name}_before_min"))
        elif column.kind in ("int", "float", "flag"):
            if column.required:
                checks.append((raw.is_null(), f"null_{column.name}"))
            invalid = (value.is_null() & raw.is_not_null()) | (value < 0)
            if dtypes.get(column.name, pl.Null).is_float():
                invalid = invalid | value.is_nan() | value.is_infinite()  # NaN < 0 is false: checked on its own
            checks.append((invalid, f"invalid_{column.name}"))
        elif column.kind == "vector":
            checks.append((value.is_null() & raw.is_not_null(), f"invalid_{column.name}"))
            dim = (vector_dims or {}).get(column.name, 0)
            checks.append((value.list.len() != dim, f"wrong_dimension_{column.name}"))
            bad = pl.element().is_null() | pl.element().is_nan() | pl.element().is_infinite()
            checks.append((value.list.eval(bad).list.any(), f"invalid_{column.name}"))
        if dtypes.get(column.name) == pl.String:
            # A NUL byte in an id or a name breaks joins with systems that read C strings (Redis keys, SQL).
            checks.append((value.str.contains("\x00", literal=True).fill_null(False), f"null_byte_{column.name}"))
    present_any = [c.name for c in columns if c.name in spec.any_of]
    if present_any:
        checks.append((pl.all_horizontal([pl.col(n).is_null() for n in present_any]), "no_" + "_or_".join(spec.any_of)))
    expr = pl.when(checks[0][0]).then(pl.lit(checks[0][1]))
    for condition, reason in checks[1:]:
        expr = expr.when(condition).then(pl.lit(reason))
    return expr.otherwise(pl.lit(None, dtype=pl.String))


@dataclass
class _Source:
    """One table's raw rows, read in slices: Parquet read in place, a frame in memory, or a CSV or lazy plan first
    spilled to Parquet in the work directory (read once, however many passes follow)."""

    frame: pl.LazyFrame  # the contract columns present, and LINE_PROBLEM where a CSV reader flagged lines
    columns: list[Column]
    dtypes: dict[str, pl.DataType]
    name: str
    rows: int = 0

    @property
    def line_problems(self) -> bool:
        return LINE_PROBLEM in self.dtypes

    def read(self, start: int, length: int, names: list[str] | None = None) -> pl.DataFrame:
        """Rows `start` to `start + length` (0-based, file order), all columns or `names`."""
        frame = self.frame if names is None else self.frame.select(names)
        return self._collect(frame.slice(start, min(length, self.rows - start)))  # polars lengths are 32-bit

    def read_rows(self, row_numbers: pl.Series) -> pl.DataFrame:
        """The rows with these 1-based row numbers, in file order, with a `row_number` column."""
        numbered = self.frame.with_row_index("row_number", offset=1)
        wanted = row_numbers.cast(pl.get_index_type()).implode()
        return self._collect(numbered.filter(pl.col("row_number").is_in(wanted)))

    def _collect(self, frame: pl.LazyFrame) -> pl.DataFrame:
        try:
            return frame.collect()
        except Exception as exc:  # polars raises several types for unreadable rows; all mean the same to a user
            raise InputError(f"{self.name}: cannot read rows ({type(exc).__name__}: {exc})") from None


def _open_source(
    source: str | Path | pl.LazyFrame | pl.DataFrame, spec: TableSpec, config: ValidationConfig, name: str, work: Path
) -> _Source:
    """Check the columns of `source` against the contract and open its rows for slicing."""
    if isinstance(source, str | Path):
        (work / "input").mkdir()
        frame = scan_table(source, delimiter=config.delimiter, spill_dir=work / "input")
    else:
        frame = source.lazy()
    try:
        schema = frame.collect_schema()
    except Exception as exc:
        raise InputError(f"{name}: cannot read columns ({type(exc).__name__}: {exc})") from None
    columns = check_schema(schema, spec, name)
    for vector in spec.vector_columns(schema.names()):
        if not _accepts("vector", schema[vector]):
            raise SchemaError(
                f"{name}: column '{vector}' has type {schema[vector]}; expected {KIND_DESCRIPTION['vector']}"
            )
        columns.append(Column(vector, "vector", required=False))
    frame = frame.select([c.name for c in columns] + ([LINE_PROBLEM] if LINE_PROBLEM in schema.names() else []))
    if isinstance(source, pl.LazyFrame):
        # A lazy plan (an adapter's parsing) runs once, streaming into Parquet, rather than once per slice.
        try:
            frame.sink_parquet(work / "input.parquet", **SPILL_PARQUET)
        except Exception as exc:
            raise InputError(f"{name}: cannot read rows ({type(exc).__name__}: {exc})") from None
        frame = pl.scan_parquet(work / "input.parquet")
    opened = _Source(frame, columns, dict(frame.collect_schema()), name)
    opened.rows = opened._collect(frame.select(pl.len())).item()
    if opened.rows == 0:
        raise InputError(f"{name}: no data rows (the {spec.name} table is empty)")
    return opened


def _check_rows(
    raw: pl.DataFrame,
    row_numbers: pl.Series,
    source: _Source,
    spec: TableSpec,
    config: ValidationConfig,
    notes: dict[str, Any],
    whole: _WholeTable,
    reference: datetime,
) -> pl.DataFrame:
    """Type rows and name each row's first problem (`reason`, null when valid): row_number, the raw columns as
    `raw__<name>`, the typed columns and reason. Duplicates are judged later, across chunks."""
    normalised = _normalise(raw, source.columns, config, notes, whole)
    work = pl.DataFrame(
        [row_numbers.alias("row_number")]
        + [raw[c.name].alias(f"raw__{c.name}") for c in source.columns]
        + list(normalised.values())
    )
    dtypes = {name: series.dtype for name, series in normalised.items()}
    reason = _reason_expression(spec, source.columns, config, dtypes, reference, whole.vector_dims)
    if source.line_problems:  # a line the reader had to repair is quarantined for that, whatever its values look like
        work = work.with_columns(raw[LINE_PROBLEM])
        reason = pl.coalesce(pl.col(LINE_PROBLEM), reason)
    return work.with_columns(reason.alias("reason"))


def _judge_duplicates(checked: pl.DataFrame, spec: TableSpec, value_columns: list[str]) -> pl.DataFrame:
    """Give valid rows (null reason, file order) equal to an earlier row the reason `duplicate`, then those whose
    key an earlier row has `conflicting_duplicate_<key>`. Earlier rows count whatever their own reason."""
    duplicate = pl.col("reason").is_null() & ~pl.struct(value_columns).is_first_distinct()
    checked = checked.with_columns(
        pl.when(duplicate).then(pl.lit(DUPLICATE)).otherwise(pl.col("reason")).alias("reason")
    )
    if spec.key:
        conflict = pl.col("reason").is_null() & ~pl.struct(list(spec.key)).is_first_distinct()
        reason = f"conflicting_duplicate_{'_'.join(spec.key)}"
        checked = checked.with_columns(
            pl.when(conflict).then(pl.lit(reason)).otherwise(pl.col("reason")).alias("reason")
        )
    return checked


def _row_hash(frame: pl.DataFrame) -> pl.Series:
    """A 64-bit hash of each row's typed values, the same for equal rows in any chunk (unequal rows may collide:
    that costs a re-read, never a row)."""
    return frame.hash_rows()


def _index_parts(row_numbers: pl.Series, hashes: pl.Series, partitions: int) -> dict[int, np.ndarray]:
    """(row_number, hash) pairs grouped by their hash partition (`hash % partitions`), in row order in each."""
    index = np.empty(len(hashes), dtype=_INDEX_DTYPE)
    index["row_number"] = row_numbers.to_numpy()
    index["hash"] = hashes.to_numpy()
    partition = (index["hash"] % partitions).astype(np.uint16)  # small integers: a radix sort
    order = np.argsort(partition, kind="stable")
    present, starts = np.unique(partition[order], return_index=True)
    ends = [*starts[1:], len(order)]
    return {int(p): index[order[a:b]] for p, a, b in zip(present, starts, ends, strict=True)}


def _add_to_index(directory: Path, parts: dict[int, np.ndarray]) -> None:
    """Append `_index_parts` to the files of their hash partitions."""
    for part, pairs in parts.items():
        with open(directory / f"{part}.bin", "ab") as handle:
            pairs.tofile(handle)


def _rows_sharing_a_hash(directory: Path, partitions: int, batch_rows: int) -> Iterator[pl.Series]:
    """Row numbers (sorted) whose hash another row has, a hash partition at a time, in batches of about
    `batch_rows` rows or one partition. Equal rows share a hash, so each batch holds every copy of its rows."""
    batch: list[pl.Series] = []
    size = 0
    for partition in range(partitions):
        path = directory / f"{partition}.bin"
        if not path.exists():
            continue
        index = np.fromfile(path, dtype=_INDEX_DTYPE)
        order = np.argsort(index["hash"])
        hashes = index["hash"][order]
        same_as_next = hashes[1:] == hashes[:-1]
        if not same_as_next.any():
            continue
        shared_sorted = np.zeros(len(hashes), dtype=bool)  # both rows of every equal neighbour pair
        shared_sorted[1:] |= same_as_next
        shared_sorted[:-1] |= same_as_next
        shared = index["row_number"][order[shared_sorted]]
        batch.append(pl.Series("row_number", shared))
        size += len(shared)
        if size >= batch_rows:
            yield pl.concat(batch).sort()
            batch, size = [], 0
    if batch:
        yield pl.concat(batch).sort()


def _integer_id_columns(kept: pl.LazyFrame, not_all_integer: dict[str, bool]) -> list[str]:
    """The `auto` text id columns that become Int64: those whose every value in the table is a plain integer (or
    null), and those whose kept rows hold ids and only plain integers. A quarantined line's garbage id (`10\ufffd3`,
    `N/A`) must not turn a column of integer ids into text, which would then clash with the catalog's integer ids.
    `kept` are the kept rows; a search for one id, or one non-integer id, mostly stops at the first rows."""
    integer = []
    for column, mixed in not_all_integer.items():
        values = kept.select(pl.col(column).drop_nulls())
        if not mixed:
            integer.append(column)
        elif values.head(1).collect(engine="streaming").height:
            odd = values.filter(~_is_integer_text_expr(pl.col(column))).head(1)
            if odd.collect(engine="streaming").height == 0:
                integer.append(column)
    return integer


@dataclass
class _ChunkedResult:
    """A table validated into a work directory: its valid rows and quarantine as lazy frames over the work files
    (read them before the directory goes), and its report."""

    frame: pl.LazyFrame
    quarantine: pl.LazyFrame
    report: TableReport


@dataclass
class _Tally:
    """What the chunks add up to: rows read and kept, reasons, notes, and which `auto` text id columns hold a value
    that is not a plain integer somewhere in the table (kept or not)."""

    not_all_integer: dict[str, bool]
    input_rows: int = 0
    used: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class _CheckedChunk:
    """What checking one chunk adds to the tally and the hash index."""

    start: int  # 0-based index of its first row
    rows: int
    used: int
    reasons: Counter[str]
    notes: dict[str, Any]
    not_integer: set[str]  # `auto` text id columns holding a value that is not a plain integer
    index: dict[int, np.ndarray]  # its rows' (row_number, hash) pairs by hash partition


def _merge_notes(into: dict[str, Any], notes: dict[str, Any]) -> None:
    """Fold one chunk's notes into the table's: counts add up, settings (the same in every chunk) are kept."""
    for key, value in notes.items():
        if isinstance(value, int) and not isinstance(value, bool):
            into[key] = into.get(key, 0) + value
        else:
            into[key] = value


def _in_order_with_lookahead(pool: ThreadPoolExecutor, work, count: int, ahead: int) -> Iterator[Any]:
    """`work(i)` for i in range(count), run on `pool` with at most `ahead` in flight, results in order; the first
    failure is raised (the ones in flight finish first)."""
    pending: deque[Future] = deque()
    for i in range(count):
        pending.append(pool.submit(work, i))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _validate_in_chunks(
    source: str | Path | pl.LazyFrame | pl.DataFrame,
    spec: TableSpec,
    config: ValidationConfig,
    name: str,
    work: Path,
) -> _ChunkedResult:
    """Validate one table a chunk of `config.chunk_rows` rows at a time, with the outputs of one pass over the
    whole table (see the module docstring), using `work` (an empty directory) for the intermediate files."""
    source = _open_source(source, spec, config, name, work)
    if max(_SPLIT_ONE_CHUNK_ROWS, config.chunk_rows // 2) <= source.rows <= config.chunk_rows:
        config = replace(config, chunk_rows=-(-source.rows // _CHUNK_THREADS))
    spec = spec.with_vectors([c.name for c in source.columns if c.kind == "vector"])
    whole = _WholeTable(_epoch_units(source, config), _integer_id_lists(source, config), _vector_dims(source))
    chunks = len(range(0, source.rows, config.chunk_rows))
    partitions = min(chunks, _MAX_PARTITIONS)  # about a chunk's worth of rows in each hash partition
    tally = _Tally(
        {
            c.name: False
            for c in source.columns
            if c.kind == "id" and config.id_type == "auto" and _is_stringlike(source.dtypes[c.name])
        }
    )
    if whole.vector_dims:
        tally.notes["vector_dims"] = dict(whole.vector_dims)
    (work / "index").mkdir()
    steps = _ChunkedValidation(
        source,
        spec,
        config,
        whole,
        _reference_time(config),
        work,
        logging.INFO if chunks > 1 else logging.DEBUG,
        list(tally.not_all_integer),
    )
    # Chunks are checked two at a time: polars releases the GIL in its kernels, and one chunk's reads, typing and
    # writes use little more than one core. Each chunk's result is merged in file order, so the index files, the
    # tally and the notes are the same as one chunk at a time would write them; memory holds two chunks.
    with ThreadPoolExecutor(max_workers=min(_CHUNK_THREADS, chunks)) as pool:
        check = functools.partial(steps.check_chunk, partitions=partitions)
        for checked in _in_order_with_lookahead(pool, check, chunks, _CHUNK_THREADS):
            steps.merge(checked, tally)
    if tally.input_rows != source.rows:
        raise AssertionError(f"{name}: read {tally.input_rows:,} rows of {source.rows:,}")
    for batch, row_numbers in enumerate(_rows_sharing_a_hash(work / "index", partitions, config.chunk_rows)):
        steps.judge_duplicates(batch, row_numbers, tally)
    frame, quarantine = steps.assemble(chunks, tally)
    deduplicated = tally.reasons.get(DUPLICATE, 0)
    notes = tally.notes
    report = TableReport(
        table=spec.name,
        source=name,
        input_rows=tally.input_rows,
        used=tally.used,
        deduplicated=deduplicated,
        quarantined=sum(tally.reasons.values()) - deduplicated,
        reasons=dict(sorted(tally.reasons.items())),
        notes={k: notes[k] for k in _NOTE_ORDER if k in notes}
        | {k: v for k, v in notes.items() if k not in _NOTE_ORDER},
    )
    if not report.reconciled:  # a bug, never bad input: every row must land in exactly one place
        raise AssertionError(f"row accounting broken for {name}: {report.as_dict()}")
    return _ChunkedResult(frame, quarantine, report)


@dataclass
class _ChunkedValidation:
    """The three steps of chunked validation over one table's rows, writing to `work`."""

    source: _Source
    spec: TableSpec
    config: ValidationConfig
    whole: _WholeTable
    reference: datetime
    work: Path
    level: int  # of the progress log lines

    text_id_columns: list[str]  # the `auto` text id columns, which become Int64 when their values allow

    @property
    def value_columns(self) -> list[str]:
        return [c.name for c in self.source.columns]

    def raw_as_text(self) -> list[pl.Expr]:
        return [
            _as_text(pl.col(f"raw__{c.name}"), self.source.dtypes[c.name]).alias(c.name) for c in self.source.columns
        ]

    def check_chunk(self, chunk: int, partitions: int) -> _CheckedChunk:
        """Type and check one chunk: its quarantined and valid rows to its own files; what the tally needs back."""
        start = chunk * self.config.chunk_rows
        raw = self.source.read(start, self.config.chunk_rows)
        row_numbers = pl.int_range(start + 1, start + 1 + raw.height, dtype=pl.get_index_type(), eager=True)
        notes: dict[str, Any] = {}
        checked = _check_rows(raw, row_numbers, self.source, self.spec, self.config, notes, self.whole, self.reference)
        valid = checked.filter(pl.col("reason").is_null())
        bad = checked.filter(pl.col("reason").is_not_null()).select("row_number", "reason", *self.raw_as_text())
        valid.select("row_number", *self.value_columns).write_ipc(self.work / f"valid-{chunk}.arrow")
        bad.write_ipc(self.work / f"quarantine-{chunk}.arrow")
        return _CheckedChunk(
            start=start,
            rows=raw.height,
            used=valid.height,
            reasons=Counter(dict(bad["reason"].value_counts().iter_rows())),
            notes=notes,
            not_integer={c for c in self.text_id_columns if not bool(_is_integer_text(checked[c]).all())},
            index=_index_parts(
                checked["row_number"], _row_hash(checked.select(list(self.spec.key) or self.value_columns)), partitions
            ),
        )

    def merge(self, checked: _CheckedChunk, tally: _Tally) -> None:
        """Add one checked chunk (in file order) to the hash index and the tally."""
        _add_to_index(self.work / "index", checked.index)
        tally.reasons.update(checked.reasons)
        _merge_notes(tally.notes, checked.notes)
        for column in checked.not_integer:
            tally.not_all_integer[column] = True
        tally.input_rows += checked.rows
        tally.used += checked.used
        log.log(
            self.level,
            "%s: checked rows %s-%s of %s",
            self.source.name,
            f"{checked.start + 1:,}",
            f"{checked.start + checked.rows:,}",
            f"{self.source.rows:,}",
        )

    def judge_duplicates(self, batch: int, row_numbers: pl.Series, tally: _Tally) -> None:
        """Read rows that share a hash again, type them again (the same way), and judge them on their values in
        file order; the rows dropped as duplicates or key conflicts go to files by chunk."""
        raw = self.source.read_rows(row_numbers)
        checked = _check_rows(
            raw, raw["row_number"], self.source, self.spec, self.config, {}, self.whole, self.reference
        )
        judged = _judge_duplicates(checked, self.spec, self.value_columns)
        dropped = judged.filter(checked["reason"].is_null() & judged["reason"].is_not_null())
        tally.reasons.update(dict(dropped["reason"].value_counts().iter_rows()))
        tally.used -= dropped.height
        chunk_of = ((pl.col("row_number") - 1) // self.config.chunk_rows).alias("chunk")
        dropped = dropped.select("row_number", "reason", *self.raw_as_text(), chunk_of)
        for (chunk,), part in dropped.partition_by("chunk", as_dict=True).items():
            part.drop("chunk").write_ipc(self.work / f"dropped-{chunk}-{batch}.arrow")
        log.log(
            self.level,
            "%s: %s rows sharing a hash judged, %s dropped",
            self.source.name,
            f"{raw.height:,}",
            f"{dropped.height:,}",
        )

    def assemble(self, chunks: int, tally: _Tally) -> tuple[pl.LazyFrame, pl.LazyFrame]:
        """The validated table and the quarantine as lazy frames over the chunks' files, in file order."""
        valid_parts, quarantine_parts = [], []
        for chunk in range(chunks):
            valid = pl.scan_ipc(self.work / f"valid-{chunk}.arrow")
            quarantine = self.work / f"quarantine-{chunk}.arrow"
            dropped_files = sorted(self.work.glob(f"dropped-{chunk}-*.arrow"))
            if dropped_files:
                dropped = pl.scan_ipc(dropped_files).collect()
                valid = valid.filter(~pl.col("row_number").is_in(dropped["row_number"].implode()))
                merged = pl.concat([pl.read_ipc(quarantine), dropped]).sort("row_number")
                quarantine = self.work / f"quarantine-{chunk}-merged.arrow"
                merged.write_ipc(quarantine)
            valid_parts.append(valid)
            quarantine_parts.append(pl.scan_ipc(quarantine))
        frame = pl.concat(valid_parts).drop("row_number")
        missing = [
            pl.lit(None, dtype=_ABSENT_DTYPES.get(self.spec.column(n).kind, pl.String)).alias(n)
            for n in self.spec.names
            if n not in self.value_columns
        ]
        integer_ids = [
            pl.col(n).cast(pl.Int64, strict=False) for n in _integer_id_columns(frame, tally.not_all_integer)
        ]
        # Every kept vector has its column's dimension, so the column becomes a fixed-size array.
        vectors = [
            pl.col(n).cast(pl.Array(pl.Float32, dim) if dim else pl.List(pl.Float32))
            for n, dim in self.whole.vector_dims.items()
        ]
        return frame.with_columns(missing + integer_ids + vectors).select(self.spec.names), pl.concat(quarantine_parts)


# The type of an optional column a table lacks (all nulls), so readers see the type the column has when present.
_ABSENT_DTYPES: dict[str, pl.DataType] = {
    "timestamp": TIMESTAMP_DTYPE,
    "int": pl.Int64(),
    "float": pl.Float64(),
    "flag": pl.Int8(),
    "id_list": pl.List(pl.String),
}


def _rejection(report: TableReport, config: ValidationConfig) -> str | None:
    """The message rejecting a table whose share of bad rows exceeds the threshold (marking its report), or None."""
    if report.quarantined <= config.max_bad_fraction * report.input_rows:
        return None
    report.rejected = True
    share = report.quarantined / report.input_rows
    return (
        f"{report.source}: rejected, {share:.1%} of rows are bad (threshold {config.max_bad_fraction:.1%}). "
        f"{report.summary()}"
    )


def validate_table(
    source: str | Path | pl.LazyFrame | pl.DataFrame,
    spec: TableSpec,
    config: ValidationConfig | None = None,
    source_name: str | None = None,
) -> ValidatedTable:
    """Type, check and deduplicate one table into frames in memory, validating `config.chunk_rows` rows at a time
    (the result does not depend on it); raise RejectedInputError when too many rows are bad. `validate_dataset`
    writes the tables to disk instead, in bounded memory."""
    config = config or ValidationConfig()
    name = source_name or (str(source) if isinstance(source, str | Path) else f"<{spec.name}>")
    with tempfile.TemporaryDirectory(prefix="graphrec-validate-") as work:
        table = _validate_in_chunks(source, spec, config, name, Path(work))
        quarantine = table.quarantine.collect()
        rejection = _rejection(table.report, config)
        if rejection:
            raise RejectedInputError(rejection, table.report.as_dict(), quarantine)
        return ValidatedTable(table.frame.collect(), quarantine, table.report)


def _as_text(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Raw values as strings for the quarantine file (lists joined with '|')."""
    if isinstance(dtype, pl.Array):
        return expr.arr.to_list().list.eval(pl.element().cast(pl.String)).list.join("|")
    if isinstance(dtype, pl.List):
        return expr.list.eval(pl.element().cast(pl.String)).list.join("|")
    return expr.cast(pl.String)


def validate_dataset(
    tables: dict[str, str | Path | pl.LazyFrame | pl.DataFrame],
    out_dir: str | Path,
    config: ValidationConfig | None = None,
    fingerprint: dict[str, Any] | None = None,
    source_names: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Validate contract tables (events, items, content, impressions) into `out_dir`, atomically.

    Writes `<table>.parquet`, `quarantine/<table>.parquet` and `report.json`. When a table is rejected, the
    previous `out_dir` is left untouched and the report and quarantined rows go to `<out_dir>.rejected/`.
    Tables stream through `config.chunk_rows` rows at a time, their work files inside the staging directory, so
    memory is bounded by the chunk, not the table. Returns the report.
    """
    config = config or ValidationConfig()
    out_dir = Path(out_dir)
    source_names = source_names or {}
    reports: dict[str, TableReport] = {}
    with atomic_directory(out_dir) as staging:
        (staging / "quarantine").mkdir()
        for name, source in tables.items():
            spec = TABLES[name]
            label = source_names.get(name) or (str(source) if isinstance(source, str | Path) else f"<{name}>")
            log.debug("validating %s from %s", name, label)
            work = Path(tempfile.mkdtemp(prefix=f".work-{name}-", dir=staging))
            try:
                table = _validate_in_chunks(source, spec, config, label, work)
                rejection = _rejection(table.report, config)
                if rejection:
                    rejected_dir = out_dir.parent / f"{out_dir.name}.rejected"
                    with atomic_directory(rejected_dir) as rejected:
                        (rejected / "quarantine").mkdir()
                        table.quarantine.sink_parquet(rejected / "quarantine" / f"{name}.parquet")
                        report = {"status": "rejected", "table": name, "report": table.report.as_dict()}
                        write_json_atomic(rejected / "report.json", report)
                    raise RejectedInputError(
                        f"{rejection} Quarantined rows and report: {rejected_dir}", table.report.as_dict()
                    )
                table.frame.sink_parquet(staging / f"{name}.parquet")
                table.quarantine.sink_parquet(staging / "quarantine" / f"{name}.parquet")
            finally:
                shutil.rmtree(work, ignore_errors=True)
            reports[name] = table.report
            log.debug("%s", table.report.summary())
        written = {name: pl.scan_parquet(staging / f"{name}.parquet") for name in reports}
        sources = {name: table_report.source for name, table_report in reports.items()}
        check_id_types(written, sources)
        text = (
            _encode_texts(staging, [n for n in ("items", "content") if n in reports], config)
            if config.text.enabled
            else None
        )
        report = {
            "kind": "validated_dataset",
            "status": "ok",
            "created_at": utc_now_iso(),
            "tables": {name: table_report.as_dict() for name, table_report in reports.items()},
            "cross_checks": _cross_checks(written),
            "input_fingerprint": fingerprint or {},
            "config": asdict(config),
            "code_version": code_version(),
        }
        if text is not None:
            report["text"] = text
        write_json_atomic(staging / "report.json", report)
    return report


def _encode_texts(staging: Path, tables: list[str], config: ValidationConfig) -> dict[str, Any]:
    """Add `<column>_embedding` vectors of the configured text columns to the validated catalog tables in
    `staging`; return what was encoded, by which encoder (recorded in the report and the snapshots' manifests)."""
    from graphrec.data.text import TextEmbeddingCache, encode_text_columns, load_text_encoder

    settings = config.text
    encoder = load_text_encoder(settings)
    cache = TextEmbeddingCache(settings.cache_dir, encoder.identity) if settings.cache_dir else None
    stats: dict[str, Any] = {"encoder": encoder.identity.as_dict(), "tables": {}}
    for name in tables:
        path = staging / f"{name}.parquet"
        table = pl.read_parquet(path)
        # A contract column the input lacked is all null here: it has no text to encode.
        columns = [c for c in settings.columns if c in table.columns and table[c].null_count() < table.height]
        if not columns:
            continue
        encoded, table_stats = encode_text_columns(table, columns, encoder, cache)
        encoded.write_parquet(path)  # inside the staging directory: readers see the dataset whole or not at all
        stats["tables"][name] = table_stats["columns"]
    if cache is not None:
        stats["cache"] = cache.stats()
    return stats


def text_encoder_of(validated_dir: str | Path) -> dict[str, Any] | None:
    """The text encoder that made a validated dataset's text vectors (name, version, dim), or None."""
    report = Path(validated_dir) / "report.json"
    if not report.exists():
        return None
    return json.loads(report.read_text()).get("text", {}).get("encoder")


def read_validated(path: str | Path) -> tuple[pl.LazyFrame, pl.DataFrame | None, pl.DataFrame | None, dict]:
    """Open a validated dataset directory: events (lazy), items and content (or None), and the files' paths."""
    root = Path(path)
    if not (root / "events.parquet").exists():
        raise InputError(f"{root}: not a validated dataset (no events.parquet); run `graphrec validate` first")
    paths = {
        name: root / f"{name}.parquet" for name in ("events", "items", "content") if (root / f"{name}.parquet").exists()
    }
    items = pl.read_parquet(paths["items"]) if "items" in paths else None
    content = pl.read_parquet(paths["content"]) if "content" in paths else None
    return pl.scan_parquet(paths["events"]), items, content, paths


def read_feedback(path: str | Path) -> pl.LazyFrame | None:
    """The validated feedback table of a validated dataset directory (lazy), or None where it has none."""
    table = Path(path) / "feedback.parquet"
    return pl.scan_parquet(table) if table.exists() else None


# Where each kind of id appears: (table, column); `item_ids` is the content table's list of featured items.
# The feedback table is not among them: the ranking API records whatever ids its callers send, as text, so its
# ids are matched to the others' by value where they are used, and an id that matches none is counted there.
ID_REFERENCES = {
    "user_id": (("events", "user_id"), ("impressions", "user_id")),
    "item_id": (("events", "item_id"), ("items", "item_id"), ("content", "item_ids")),
    "content_id": (("events", "content_id"), ("content", "content_id"), ("impressions", "content_id")),
}


def _id_values(tables: dict[str, pl.LazyFrame], table: str, column: str) -> pl.LazyFrame | None:
    """The non-null ids of one column (lists flattened) as a lazy frame with one column, `id`, or None where the
    table or column is absent or holds no id."""
    if table not in tables or column not in tables[table].collect_schema().names():
        return None
    values = tables[table].select(pl.col(column).alias("id"))
    if isinstance(values.collect_schema()["id"], pl.List):
        values = values.explode("id")
    values = values.drop_nulls()
    return values if values.head(1).collect(engine="streaming").height else None


def check_id_types(tables: dict[str, pl.LazyFrame], sources: dict[str, str]) -> None:
    """The one id-typing rule: an id (user, item, content) has one type, integer or text, in every table that
    holds it. Otherwise the same id written `1007` in one file and `1007.0` in another would silently become two
    nodes, so validation stops and names both files. `tables` are validated tables (lazy: only their id columns
    are read), `sources` the inputs they came from."""
    for id_name, references in ID_REFERENCES.items():
        seen: dict[str, tuple[str, str, pl.LazyFrame]] = {}
        for table, column in references:
            values = _id_values(tables, table, column)
            if values is None:
                continue
            kind = "integer" if values.collect_schema()["id"].is_integer() else "text"
            seen.setdefault(kind, (sources[table], column, values))
        if len(seen) > 1:
            (int_source, int_column, _), (text_source, text_column, text) = seen["integer"], seen["text"]
            odd = text.filter(~pl.col("id").str.contains(r"^\s*-?\d+\s*$")).head(1)
            example = odd.collect(engine="streaming")["id"].to_list() or (
                text.head(1).collect(engine="streaming")["id"].to_list()
            )
            raise SchemaError(
                f"{id_name}: integer in {int_source} (column {int_column}) but text in {text_source} (column "
                f"{text_column}, e.g. {example[0]!r}); an id must be written the same way in every table, or set "
                "validation.id_type: str to read every id as text"
            )


def _cross_checks(tables: dict[str, pl.LazyFrame]) -> dict[str, int]:
    """Counts of distinct ids a catalog does not cover (reported, not quarantined: catalogs lag behind logs).
    Ids have one type across tables (`check_id_types`), so every miss is counted. Only distinct ids are held."""
    checks: dict[str, int] = {}
    pairs = (
        ("events", "item_id", "items", "item_id", "event_items_not_in_catalog"),
        ("events", "content_id", "content", "content_id", "event_content_not_in_catalog"),
        ("impressions", "content_id", "content", "content_id", "impression_content_not_in_catalog"),
        ("feedback", "content_id", "content", "content_id", "feedback_content_not_in_catalog"),
        ("content", "item_ids", "items", "item_id", "featured_items_not_in_catalog"),
    )
    for table, column, catalog, catalog_column, name in pairs:
        if table in tables and catalog in tables:
            ids = _id_values(tables, table, column)
            known = _id_values(tables, catalog, catalog_column)
            if ids is None:
                checks[name] = 0
            elif known is None:
                checks[name] = ids.select(pl.col("id").n_unique()).collect(engine="streaming").item()
            else:
                if ids.collect_schema()["id"] != known.collect_schema()["id"]:  # Int64 / UInt64, or both text
                    ids, known = ids.cast(pl.String), known.cast(pl.String)
                missing = ids.unique().join(known.unique(), on="id", how="anti")
                checks[name] = missing.select(pl.len()).collect(engine="streaming").item()
    return checks


def validate_events(source, config: ValidationConfig | None = None, source_name: str | None = None) -> ValidatedTable:
    """Validate an events table against the contract."""
    return validate_table(source, EVENTS, config, source_name)


def validate_impressions(source, config: ValidationConfig | None = None, source_name: str | None = None):
    """Validate an impressions table against the contract."""
    return validate_table(source, IMPRESSIONS, config, source_name)


def validate_items(source, config: ValidationConfig | None = None, source_name: str | None = None):
    """Validate an item catalog against the contract."""
    return validate_table(source, ITEMS, config, source_name)


def validate_content(source, config: ValidationConfig | None = None, source_name: str | None = None):
    """Validate a content-module catalog against the contract."""
    return validate_table(source, CONTENT, config, source_name)
