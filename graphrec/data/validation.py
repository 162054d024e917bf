"""Validation of contract tables: typed columns, quarantined bad rows, and a reconciled row count.

Every input row ends in exactly one place: the validated table (used), or the quarantine table with reason
`duplicate` (deduplicated) or another reason (quarantined). `input_rows == used + deduplicated + quarantined`
holds for every table and is recorded in the report.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from graphrec.artifacts import atomic_directory, code_version, utc_now_iso, write_json_atomic
from graphrec.data.config import ValidationConfig
from graphrec.data.readers import LINE_PROBLEM, scan_table
from graphrec.data.schema import (
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


def _normalise_id(series: pl.Series, id_type: str) -> pl.Series:
    """Trim string ids (empty -> null) and, for `auto`, turn all-integer string columns into Int64."""
    if _is_integer(series.dtype):
        return series.cast(pl.Int64) if series.dtype != pl.UInt64 else series
    if series.dtype == pl.Null:
        return series.cast(pl.String)
    text = series.cast(pl.String).str.strip_chars()
    text = pl.select(pl.when(text.str.len_bytes() == 0).then(None).otherwise(text)).to_series().alias(series.name)
    if id_type == "str":
        return text
    as_int = text.cast(pl.Int64, strict=False)
    if id_type == "int" or bool(as_int.cast(pl.String).eq_missing(text).all()):
        return as_int
    return text


def _epoch_unit(values: pl.Series, configured: str) -> str:
    if configured != "auto":
        return configured
    # The median, not the maximum, so that a few rows in another unit are quarantined, not the whole column.
    largest = values.abs().median()
    if largest is None:
        return "s"
    largest = float(largest)
    if largest >= 1e17:
        return "ns"
    if largest >= 1e14:
        return "us"
    if largest >= 1e11:
        return "ms"
    return "s"


def _normalise_timestamp(series: pl.Series, config: ValidationConfig, notes: dict[str, Any]) -> pl.Series:
    """Return the column as Datetime(us, UTC); values that cannot be read become null."""
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
        numeric = text.str.contains(r"^-?\d+(\.\d+)?$").fill_null(False)
        formats = ([config.timestamp_format] if config.timestamp_format else []) + list(_DATETIME_FORMATS)
        with_offset = [f for f in formats if "%z" in f or "%#z" in f]
        naive_formats = [f for f in formats if f not in with_offset]
        exact = pl.select(
            pl.coalesce(
                [text.str.to_datetime(format=f, strict=False, time_zone="UTC", time_unit="us") for f in with_offset]
                or [pl.lit(None, dtype=TIMESTAMP_DTYPE)]
            )
        ).to_series()
        local = pl.select(
            pl.coalesce([text.str.to_datetime(format=f, strict=False, time_unit="us") for f in naive_formats])
        ).to_series()
        local = pl.select(pl.when(exact.is_null()).then(local)).to_series()
        parsed = pl.select(pl.coalesce(exact, _localise(local, config, notes))).to_series()
        epochs = pl.select(pl.when(numeric).then(text)).to_series().cast(pl.Float64).alias(name)
        if bool(numeric.any()):
            from_epoch = _epoch_to_datetime(epochs, config, notes)
            parsed = pl.select(pl.when(numeric).then(from_epoch).otherwise(parsed)).to_series()
        if not bool(numeric.all()):
            notes["timestamp_parsing"] = "strings"
        return parsed.alias(name).cast(TIMESTAMP_DTYPE)
    return _epoch_to_datetime(series, config, notes)


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


def _epoch_to_datetime(series: pl.Series, config: ValidationConfig, notes: dict[str, Any]) -> pl.Series:
    name = series.name
    unit = _epoch_unit(series, config.timestamp_unit)
    notes["timestamp_unit"] = unit
    micros = series.cast(pl.Float64) * _EPOCH_UNIT_SCALE[unit]
    in_range = micros.abs() < 8e18
    micros = pl.select(pl.when(in_range).then(micros).otherwise(None)).to_series()
    return micros.round(0).cast(pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone("UTC").alias(name)


def _normalise_flag(series: pl.Series) -> pl.Series:
    if series.dtype == pl.Boolean:
        return series.cast(pl.Int8)
    if _is_stringlike(series.dtype):
        text = series.cast(pl.String).str.strip_chars().str.to_lowercase()
        mapped = text.replace_strict({"0": 0, "1": 1, "true": 1, "false": 0}, default=None, return_dtype=pl.Int8)
        return mapped.alias(series.name)
    return pl.select(pl.when(series.is_in([0, 1])).then(series).otherwise(None)).to_series().cast(pl.Int8)


def _normalise_id_list(series: pl.Series, id_type: str) -> pl.Series:
    if isinstance(series.dtype, pl.List):
        inner = series.explode()
        if _is_integer(inner.dtype):
            return series.cast(pl.List(pl.Int64))
        lists = series.cast(pl.List(pl.String))
    else:
        text = series.cast(pl.String).str.strip_chars().str.strip_chars("[]")
        text = text.str.replace_all(r"[|,;\s]+", " ").str.replace_all(r"[\"']", "").str.strip_chars()
        lists = pl.select(
            pl.when(text.str.len_bytes() == 0).then(pl.lit([], dtype=pl.List(pl.String))).otherwise(text.str.split(" "))
        ).to_series()
    flat = lists.explode()
    typed = _normalise_id(flat.alias("ids"), id_type)
    if typed.dtype == pl.Int64:
        return lists.cast(pl.List(pl.Int64)).alias(series.name)
    return lists.alias(series.name)


def _normalise(df: pl.DataFrame, columns: list[Column], config: ValidationConfig, notes: dict[str, Any]) -> dict:
    normalised: dict[str, pl.Series] = {}
    for column in columns:
        raw = df[column.name]
        if column.kind == "id":
            normalised[column.name] = _normalise_id(raw, config.id_type)
        elif column.kind == "event_type":
            text = raw.cast(pl.String).str.strip_chars().str.to_lowercase()
            normalised[column.name] = text.replace_strict(config.aliases(), default=None, return_dtype=pl.String).cast(
                EVENT_TYPE_DTYPE
            )
        elif column.kind == "timestamp":
            normalised[column.name] = _normalise_timestamp(raw, config, notes)
        elif column.kind == "int":
            normalised[column.name] = raw.cast(pl.Int64, strict=False)
        elif column.kind == "float":
            normalised[column.name] = raw.cast(pl.Float64, strict=False)
        elif column.kind == "flag":
            normalised[column.name] = _normalise_flag(raw)
        elif column.kind == "id_list":
            normalised[column.name] = _normalise_id_list(raw, config.id_type)
        else:
            text = raw.cast(pl.String)
            normalised[column.name] = text
    return normalised


def _reason_expression(
    spec: TableSpec, columns: list[Column], config: ValidationConfig, dtypes: dict[str, pl.DataType]
) -> pl.Expr:
    """One `when` chain: the first problem of a row names its reason; valid rows get null. `dtypes` are the
    normalised columns' types."""
    reference = datetime.fromisoformat(config.reference_time) if config.reference_time else datetime.now(UTC)
    if reference.tzinfo is None:
        reference = reference.replace(tzinfo=UTC)
    latest = reference + timedelta(seconds=config.max_future_seconds)
    earliest = datetime.fromisoformat(config.min_timestamp)
    if earliest.tzinfo is None:
        earliest = earliest.replace(tzinfo=UTC)
    checks: list[tuple[pl.Expr, str]] = []
    for column in columns:
        raw, value = pl.col(f"raw__{column.name}"), pl.col(column.name)
        if column.kind == "id" and column.required:
            checks.append((value.is_null(), f"null_{column.name}"))
        elif column.kind == "event_type":
            checks.append((raw.is_null(), f"null_{column.name}"))
            checks.append((value.is_null(), f"unknown_{column.name}"))
        elif column.kind == "timestamp":
            checks.append((raw.is_null(), f"null_{column.name}"))
            checks.append((value.is_null(), f"unparsable_{column.name}"))
            checks.append((value > pl.lit(latest), f"future_{column.name}"))
            checks.append((value < pl.lit(earliest), f"{column.name}_before_min"))
        elif column.kind in ("int", "float", "flag"):
            if column.required:
                checks.append((raw.is_null(), f"null_{column.name}"))
            invalid = (value.is_null() & raw.is_not_null()) | (value < 0)
            if dtypes.get(column.name, pl.Null).is_float():
                invalid = invalid | value.is_nan() | value.is_infinite()  # NaN < 0 is false: checked on its own
            checks.append((invalid, f"invalid_{column.name}"))
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


def validate_table(
    source: str | Path | pl.LazyFrame | pl.DataFrame,
    spec: TableSpec,
    config: ValidationConfig | None = None,
    source_name: str | None = None,
) -> ValidatedTable:
    """Type, check and deduplicate one table; raise RejectedInputError when too many rows are bad."""
    config = config or ValidationConfig()
    if isinstance(source, str | Path):
        name = source_name or str(source)
        frame = scan_table(source, delimiter=config.delimiter)
    else:
        name = source_name or f"<{spec.name}>"
        frame = source.lazy()
    try:
        schema = frame.collect_schema()
    except Exception as exc:
        raise InputError(f"{name}: cannot read columns ({type(exc).__name__}: {exc})") from None
    columns = check_schema(schema, spec, name)
    line_problems = LINE_PROBLEM in schema.names()
    try:
        df = frame.select([c.name for c in columns] + ([LINE_PROBLEM] if line_problems else [])).collect()
    except Exception as exc:
        raise InputError(f"{name}: cannot read rows ({type(exc).__name__}: {exc})") from None
    if df.height == 0:
        raise InputError(f"{name}: no data rows (the {spec.name} table is empty)")

    notes: dict[str, Any] = {}
    normalised = _normalise(df, columns, config, notes)
    work = pl.DataFrame(
        [df[c.name].alias(f"raw__{c.name}") for c in columns] + list(normalised.values())
    ).with_row_index("row_number", offset=1)
    dtypes = {name: series.dtype for name, series in normalised.items()}
    reason = _reason_expression(spec, columns, config, dtypes)
    if line_problems:  # a line the reader had to repair is quarantined for that, whatever its values look like
        work = work.with_columns(df[LINE_PROBLEM])
        reason = pl.coalesce(pl.col(LINE_PROBLEM), reason)
    work = work.with_columns(reason.alias("reason"))
    value_columns = [c.name for c in columns]
    duplicate = pl.col("reason").is_null() & ~pl.struct(value_columns).is_first_distinct()
    work = work.with_columns(pl.when(duplicate).then(pl.lit(DUPLICATE)).otherwise(pl.col("reason")).alias("reason"))
    if spec.key:
        conflict = pl.col("reason").is_null() & ~pl.struct(list(spec.key)).is_first_distinct()
        reason = f"conflicting_duplicate_{'_'.join(spec.key)}"
        work = work.with_columns(pl.when(conflict).then(pl.lit(reason)).otherwise(pl.col("reason")).alias("reason"))

    good = work.filter(pl.col("reason").is_null()).select(value_columns)
    for column in spec.columns:
        if column.name not in good.columns:
            good = good.with_columns(pl.lit(None, dtype=pl.String).alias(column.name))
    good = good.select(spec.names)
    if config.id_type == "auto":
        good = _integer_ids_where_every_kept_one_is(good, columns)
    quarantine = work.filter(pl.col("reason").is_not_null()).select(
        "row_number",
        "reason",
        *[_as_text(pl.col(f"raw__{c.name}"), df[c.name].dtype).alias(c.name) for c in columns],
    )
    reasons = dict(quarantine.group_by("reason").len().sort("reason").iter_rows())
    deduplicated = reasons.get(DUPLICATE, 0)
    report = TableReport(
        table=spec.name,
        source=name,
        input_rows=df.height,
        used=good.height,
        deduplicated=deduplicated,
        quarantined=quarantine.height - deduplicated,
        reasons=reasons,
        notes=notes,
    )
    if not report.reconciled:  # a bug, never bad input: every row must land in exactly one place
        raise AssertionError(f"row accounting broken for {name}: {report.as_dict()}")
    if report.quarantined > config.max_bad_fraction * report.input_rows:
        report.rejected = True
        share = report.quarantined / report.input_rows
        raise RejectedInputError(
            f"{name}: rejected, {share:.1%} of rows are bad (threshold {config.max_bad_fraction:.1%}). "
            f"{report.summary()}",
            report.as_dict(),
            quarantine,
        )
    return ValidatedTable(good, quarantine, report)


def _integer_ids_where_every_kept_one_is(good: pl.DataFrame, columns: list[Column]) -> pl.DataFrame:
    """`auto` id typing decided on the rows kept: a quarantined line's garbage id (`10\ufffd3`, `N/A`) must not
    turn a column of integer ids into text, which would then clash with the catalog's integer ids."""
    for column in columns:
        values = good[column.name]
        if column.kind != "id" or values.dtype != pl.String or values.null_count() == values.len():
            continue
        as_int = values.cast(pl.Int64, strict=False)
        if bool(as_int.cast(pl.String).eq_missing(values).all()):
            good = good.with_columns(as_int)
    return good


def _as_text(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Raw values as strings for the quarantine file (lists joined with '|')."""
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
    Returns the report.
    """
    config = config or ValidationConfig()
    out_dir = Path(out_dir)
    source_names = source_names or {}
    validated: dict[str, ValidatedTable] = {}
    for name, source in tables.items():
        spec = TABLES[name]
        label = source_names.get(name) or (str(source) if isinstance(source, str | Path) else f"<{name}>")
        log.debug("validating %s from %s", name, label)
        try:
            validated[name] = validate_table(source, spec, config, label)
        except RejectedInputError as exc:
            rejected_dir = out_dir.parent / f"{out_dir.name}.rejected"
            with atomic_directory(rejected_dir) as staging:
                if exc.quarantine is not None:
                    (staging / "quarantine").mkdir()
                    exc.quarantine.write_parquet(staging / "quarantine" / f"{name}.parquet")
                write_json_atomic(staging / "report.json", {"status": "rejected", "table": name, "report": exc.report})
            raise RejectedInputError(f"{exc} Quarantined rows and report: {rejected_dir}", exc.report) from None
        log.debug("%s", validated[name].report.summary())
    check_id_types(validated)
    report: dict[str, Any] = {
        "kind": "validated_dataset",
        "status": "ok",
        "created_at": utc_now_iso(),
        "tables": {name: v.report.as_dict() for name, v in validated.items()},
        "cross_checks": _cross_checks(validated),
        "input_fingerprint": fingerprint or {},
        "config": asdict(config),
        "code_version": code_version(),
    }
    with atomic_directory(out_dir) as staging:
        (staging / "quarantine").mkdir()
        for name, table in validated.items():
            table.frame.write_parquet(staging / f"{name}.parquet")
            table.quarantine.write_parquet(staging / "quarantine" / f"{name}.parquet")
        write_json_atomic(staging / "report.json", report)
    return report


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


# Where each kind of id appears: (table, column); `item_ids` is the content table's list of featured items.
ID_REFERENCES = {
    "user_id": (("events", "user_id"), ("impressions", "user_id")),
    "item_id": (("events", "item_id"), ("items", "item_id"), ("content", "item_ids")),
    "content_id": (("events", "content_id"), ("content", "content_id"), ("impressions", "content_id")),
}


def _id_values(validated: dict[str, ValidatedTable], table: str, column: str) -> pl.Series | None:
    """The non-null ids of one column (lists flattened), or None where the table or column is absent or empty."""
    if table not in validated or column not in validated[table].frame.columns:
        return None
    values = validated[table].frame[column]
    if isinstance(values.dtype, pl.List):
        values = values.explode()
    values = values.drop_nulls()
    return values if values.len() else None


def check_id_types(validated: dict[str, ValidatedTable]) -> None:
    """The one id-typing rule: an id (user, item, content) has one type, integer or text, in every table that
    holds it. Otherwise the same id written `1007` in one file and `1007.0` in another would silently become two
    nodes, so validation stops and names both files."""
    for id_name, references in ID_REFERENCES.items():
        seen: dict[str, tuple[str, str, pl.Series]] = {}
        for table, column in references:
            values = _id_values(validated, table, column)
            if values is None:
                continue
            kind = "integer" if values.dtype.is_integer() else "text"
            seen.setdefault(kind, (validated[table].report.source, column, values))
        if len(seen) > 1:
            (int_source, int_column, _), (text_source, text_column, text) = seen["integer"], seen["text"]
            example = text.filter(~text.str.contains(r"^\s*-?\d+\s*$")).head(1).to_list() or text.head(1).to_list()
            raise SchemaError(
                f"{id_name}: integer in {int_source} (column {int_column}) but text in {text_source} (column "
                f"{text_column}, e.g. {example[0]!r}); an id must be written the same way in every table, or set "
                "validation.id_type: str to read every id as text"
            )


def _cross_checks(validated: dict[str, ValidatedTable]) -> dict[str, int]:
    """Counts of distinct ids a catalog does not cover (reported, not quarantined: catalogs lag behind logs).
    Ids have one type across tables (`check_id_types`), so every miss is counted."""
    checks: dict[str, int] = {}
    pairs = (
        ("events", "item_id", "items", "item_id", "event_items_not_in_catalog"),
        ("events", "content_id", "content", "content_id", "event_content_not_in_catalog"),
        ("impressions", "content_id", "content", "content_id", "impression_content_not_in_catalog"),
        ("content", "item_ids", "items", "item_id", "featured_items_not_in_catalog"),
    )
    for table, column, catalog, catalog_column, name in pairs:
        if table in validated and catalog in validated:
            ids = _id_values(validated, table, column)
            known = _id_values(validated, catalog, catalog_column)
            if ids is None:
                checks[name] = 0
            elif known is None:
                checks[name] = ids.n_unique()
            else:
                if ids.dtype != known.dtype:  # both integer (Int64 / UInt64) or both text
                    ids, known = ids.cast(pl.String), known.cast(pl.String)
                checks[name] = int((~ids.unique().is_in(known.implode())).sum())
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
