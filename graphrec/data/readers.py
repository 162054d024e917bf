"""Readers for contract tables in Parquet and CSV, as polars lazy frames, with clear errors for unreadable files."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from graphrec.errors import InputError

PARQUET_SUFFIXES = {".parquet", ".pq"}
CSV_SUFFIXES = {".csv": ",", ".tsv": "\t", ".txt": ","}
_CANDIDATE_DELIMITERS = (",", "\t", ";", "|")


def scan_table(path: str | Path, delimiter: str | None = None) -> pl.LazyFrame:
    """Open a Parquet file, a directory of Parquet files, or a CSV/TSV file with a header as a lazy frame.

    CSV columns are read as strings; the validator types them, so a stray value never aborts the read.
    Raises InputError naming the file when it is missing, empty, corrupt or split by another delimiter.
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
        return pl.scan_csv(path, separator=separator, infer_schema=False, has_header=True)
    raise InputError(f"{path}: unsupported file type {suffix!r}; use Parquet (.parquet) or CSV (.csv/.tsv)")


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
