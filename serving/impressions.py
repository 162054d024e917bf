"""The served-page log: every page the API returns, appended in the impressions contract so served pages flow back
into training (`graphrec validate` reads the directory) and into off-policy evaluation (the propensities).

Rows are buffered and written as Parquet parts (`part-<host>-<pid>-<n>.parquet`, written to a temporary name and
renamed, so a reader never sees half a part) when `flush_rows` are waiting or `flush_seconds` have passed, and on
shutdown. A kill loses at most the buffer; each worker process writes its own parts. `clicked` is 0: the page's
clicks arrive later as content click events, joined to the impressions by request id before training.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl

log = logging.getLogger("graphrec.serving.impressions")

SCHEMA = {
    "request_id": pl.String,
    "session_id": pl.String,
    "user_id": pl.String,
    "content_id": pl.String,
    "slot": pl.Int64,
    "timestamp": pl.Datetime("us", "UTC"),
    "clicked": pl.Int8,
    "device": pl.String,
    "propensity": pl.Float64,
    "arm": pl.String,
    "model_version": pl.String,
    "embedding_version": pl.String,
    "score": pl.Float64,
    "fallback": pl.String,
}


class ImpressionLog:
    """Appends served pages to `directory` as Parquet parts."""

    def __init__(
        self,
        directory: str | Path,
        flush_rows: int = 5000,
        flush_seconds: float = 5.0,
        id_types: dict[str, pl.DataType] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self.schema = dict(SCHEMA) | (id_types or {})  # ids in the type of the tables they join
        self.rows: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.written = 0
        self.parts = 0
        self.prefix = f"part-{socket.gethostname()}-{os.getpid()}-{int(time.time())}"
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="impression-log", daemon=True)
        self.thread.start()

    def append(self, page) -> None:
        """Buffer one served page (one row per module)."""
        rows = [
            {
                "request_id": page.request_id,
                "session_id": page.session_id,
                "user_id": page.user_id,
                "content_id": module["content_id"],
                "slot": module["rank"] - 1,
                "timestamp": page.timestamp,
                "clicked": 0,
                "device": page.device,
                "propensity": module["propensity"],
                "arm": page.arm,
                "model_version": page.model_version,
                "embedding_version": page.embedding_version,
                "score": module["score"],
                "fallback": page.fallback,
            }
            for module in page.modules
        ]
        with self.lock:
            self.rows.extend(rows)
            full = len(self.rows) >= self.flush_rows
        if full:
            self.flush()

    def flush(self) -> int:
        """Write the buffered rows as one part; returns how many."""
        with self.lock:
            rows, self.rows = self.rows, []
            if not rows:
                return 0
            self.parts += 1
            name = f"{self.prefix}-{self.parts:06d}.parquet"
        frame = _frame(rows, self.schema)
        temporary = self.directory / f".{name}.tmp"
        frame.write_parquet(temporary)
        os.replace(temporary, self.directory / name)
        self.written += len(rows)
        return len(rows)

    def _loop(self) -> None:
        while not self.stopping.wait(self.flush_seconds):
            try:
                self.flush()
            except Exception:  # a full disk must not take the API down; the rows stay counted as lost
                log.exception("could not write served impressions to %s", self.directory)

    def close(self) -> None:
        """Stop the flusher and write what is buffered."""
        self.stopping.set()
        self.thread.join(timeout=self.flush_seconds + 1)
        self.flush()


def _frame(rows: list[dict[str, Any]], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    columns = {name: [row[name] for row in rows] for name in SCHEMA}
    out = {}
    for name, dtype in schema.items():
        values = columns[name]
        if name in ("user_id", "content_id") and dtype.is_integer():
            values = [_as_int(v) for v in values]
        elif dtype == pl.String:
            values = [None if v is None else str(v) for v in values]
        out[name] = pl.Series(name, values, dtype=dtype, strict=False)
    return pl.DataFrame(out)


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
