"""Readers for contract tables in Parquet and CSV, as polars lazy frames, with clear errors for unreadable files."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from graphrec.errors import InputError

PARQUET_SUFFIXES = {".parquet", ".pq"}
CSV_SUFFIXES = {".csv": ",", ".tsv": "\t", ".txt": ","}
_CANDIDATE_DELIMITERS = (",", "\t", ";", "|")
# A column CSV readers add: per data row, what is wrong with its line (invalid_encoding, wrong_field_count,
# empty_line) or null. The validator quarantines such rows with that reason; it is never a contract column.
LINE_PROBLEM = "__line_problem"
_UNIT_SEPARATOR = "\x1f"  # never in these text files: each line is read as one field
# Files spilled for a later pass only: fast to write and read back beats small.
SPILL_PARQUET = {"compression": "uncompressed"}


def scan_table(path: str | Path, delimiter: str | None = None, spill_dir: str | Path | None = None) -> pl.LazyFrame:
    """Open a Parquet file, a directory of Parquet files, or a CSV/TSV file with a header as a lazy frame.

    CSV columns are read as strings; the validator types them, so a stray value never aborts the read. A line that
    is not valid UTF-8 or has the wrong number of fields does not abort it either: it is read (bad bytes replaced,
    missing fields null, extra ones cut) and flagged in the `LINE_PROBLEM` column, so the validator quarantines it
    with its row number like any other bad row. Raises InputError naming the file when it is missing, empty,
    corrupt or split by another delimiter.

    Args:
        spill_dir: an empty directory for a CSV's rows: the file is converted there to Parquet in streaming passes
            (memory bounded whatever the file's size) and the frame reads that, so row slices of it are cheap.
            Without it a CSV is read into memory. Parquet inputs are read in place either way.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        files = sorted(path.rglob("*.parquet"))
        if not files:
            raise InputError(f"{path}: directory holds no .parquet files")
        for file in files:
            _check_parquet(file)
        return pl.scan_parquet(files)
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty (0 bytes)")
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        _check_parquet(path)
        return pl.scan_parquet(path)
    if suffix in CSV_SUFFIXES:
        separator = delimiter or CSV_SUFFIXES[suffix]
        _check_csv_header(path, separator)
        return _scan_csv(path, separator, None if spill_dir is None else Path(spill_dir))
    raise InputError(f"{path}: unsupported file type {suffix!r}; use Parquet (.parquet) or CSV (.csv/.tsv)")


def _scan_csv(path: Path, separator: str, spill_dir: Path | None) -> pl.LazyFrame:
    strict = pl.scan_csv(path, separator=separator, infer_schema=False, has_header=True)
    spilled = None if spill_dir is None else spill_dir / "rows.parquet"
    try:
        # Read once, strictly: a clean file (the usual case) costs no more than before. Rows with fields missing
        # read as nulls here, and the validator judges the values.
        if spilled is None:
            return strict.collect().lazy()
        strict.sink_parquet(spilled, **SPILL_PARQUET)
        return pl.scan_parquet(spilled)
    except pl.exceptions.PolarsError as exc:
        failure = InputError(f"{path}: cannot read rows ({type(exc).__name__}: {exc})")
        if spilled is not None:
            spilled.unlink(missing_ok=True)
    # Bytes that are not UTF-8 or a line with extra fields failed the strict read. Read the file leniently (bad
    # bytes replaced, extra fields cut) and once more a line per row, to flag exactly the lines the lenient read
    # repaired: polars reports no per-row problems, and this keeps the good rows instead of rejecting the file.
    lenient = pl.scan_csv(
        path,
        separator=separator,
        infer_schema=False,
        has_header=True,
        encoding="utf8-lossy",
        truncate_ragged_lines=True,
    )
    try:
        columns = len(lenient.collect_schema())
        lines = pl.scan_csv(
            path,
            has_header=False,
            new_columns=["line"],
            separator=_UNIT_SEPARATOR,
            quote_char=None,
            infer_schema=False,
            encoding="utf8-lossy",
        ).slice(1)
        sep = re.escape(separator)
        line = pl.col("line")
        # A quote opens a quoted field only at the start of a field (`5" tv` is plain text); quoted fields may hold
        # separators and doubled quotes, which do not split fields.
        unquoted = line.str.replace_all(rf'(^|{sep})"(?:[^"]|"")*"', "${1}")
        checks = lines.select(
            pl.when(line.is_null() | (line.str.strip_chars() == ""))
            .then(pl.lit("empty_line"))
            .when(line.str.contains("\ufffd", literal=True))
            .then(pl.lit("invalid_encoding"))
            .when(unquoted.str.count_matches(separator, literal=True) + 1 > columns)
            .then(pl.lit("wrong_field_count"))
            .otherwise(pl.lit(None, dtype=pl.String))
            .alias(LINE_PROBLEM),
            unquoted.str.contains(rf'(^|{sep})"').alias("open_quote"),  # a quoted field that goes on past the line
        )
        # Streaming aggregates: the lines are counted, never held.
        summary = checks.select(pl.len(), pl.col("open_quote").any()).collect(engine="streaming")
        rows, open_quote = summary.row(0)
        aligned = not open_quote and rows == lenient.select(pl.len()).collect(engine="streaming").item()
    except pl.exceptions.PolarsError:
        raise failure from None
    if not aligned:
        # Quoted fields spanning lines: rows and lines do not align, so problems cannot be placed on rows.
        raise failure
    if spill_dir is None:
        return pl.concat([lenient, checks.select(LINE_PROBLEM)], how="horizontal")
    try:
        # Each read streams into its own file, then the two files are zipped into one: zipping the two CSV scans
        # directly is refused by the streaming engine, and a single Parquet file slices cheaply.
        values, problems = spill_dir / "lenient.parquet", spill_dir / "line_problems.parquet"
        lenient.sink_parquet(values, **SPILL_PARQUET)
        checks.select(LINE_PROBLEM).sink_parquet(problems, **SPILL_PARQUET)
        both = pl.concat([pl.scan_parquet(values), pl.scan_parquet(problems)], how="horizontal")
        both.sink_parquet(spill_dir / "rows.parquet", **SPILL_PARQUET)
        values.unlink()
        problems.unlink()
    except pl.exceptions.PolarsError:
        raise failure from None
    return pl.scan_parquet(spill_dir / "rows.parquet")


def _check_parquet(path: Path) -> None:
    try:
        pl.read_parquet_schema(path)
    except Exception as exc:  # polars raises several types for corrupt files; all mean the same to a user
        raise InputError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None


def _check_csv_header(path: Path, separator: str) -> None:
    with open(path, "rb") as handle:
        raw = handle.readline()
    try:
        header = raw.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file; expected CSV with a header line") from None
    if not header.strip():
        raise InputError(f"{path}: first line is empty; expected a header line with column names")
    if separator not in header:
        others = [d for d in _CANDIDATE_DELIMITERS if d != separator and d in header]
        if others:
            raise InputError(
                f"{path}: header {header[:80]!r} is not separated by {separator!r} but looks {others[0]!r}-separated; "
                f"pass delimiter={others[0]!r}"
            )
