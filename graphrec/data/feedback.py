"""Shoppers' feedback on homepage modules (hide, hide similar, more like this), as the ranking API stores it.

The API appends every action to `<serve.feedback>/feedback.sqlite` (`serving.feedback.FeedbackStore`); the
scheduled job reads that database into the contract's `feedback` table (`read_feedback_store`), so the next
validation counts it and the next graph snapshot holds it as signed user -> module edges.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import polars as pl

from graphrec.errors import InputError

STORE_FILE = "feedback.sqlite"
STORE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, "
    "content_id TEXT NOT NULL, action TEXT NOT NULL, timestamp TEXT NOT NULL)"
)
CONTRACT_SCHEMA = {"user_id": pl.String, "content_id": pl.String, "action": pl.String, "timestamp": pl.String}


def read_feedback_store(directory: str | Path) -> pl.DataFrame:
    """Every recorded action, oldest first, as the contract's feedback table (ids and times as the API wrote them:
    validation types them); an empty table where the API has recorded nothing yet."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: feedback directory not found (the ranking API's serve.feedback)")
    path = directory / STORE_FILE
    if not path.exists():
        return pl.DataFrame(schema=CONTRACT_SCHEMA)
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:  # read-only: the API may be writing
            rows = db.execute("SELECT user_id, content_id, action, timestamp FROM feedback ORDER BY id").fetchall()
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{path}: not a readable feedback database ({exc})") from None
    return pl.DataFrame(rows, schema=CONTRACT_SCHEMA, orient="row")
