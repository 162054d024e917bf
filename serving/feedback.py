"""Shoppers' feedback on modules (hide, hide similar, more like this), stored durably and honoured by the next rank.

One SQLite database (WAL, synchronous FULL: a recorded action survives a crash or a power cut) that every worker
reads per request, so feedback posted to one worker is honoured by all of them. The latest action on a module
wins. `feedback_events` exports the actions as signed events for the next graph build.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ACTIONS = {"more_like_this": 1, "hide": -1, "hide_similar": -1}  # the sign each action carries into training


class FeedbackStore:
    """Per-user module feedback in `<directory>/feedback.sqlite`."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / "feedback.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=5.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, "
            "content_id TEXT NOT NULL, action TEXT NOT NULL, timestamp TEXT NOT NULL)"
        )
        self.db.execute("CREATE INDEX IF NOT EXISTS feedback_user ON feedback (user_id, id)")

    def record(self, user_id: Any, content_id: Any, action: str, when: datetime | None = None) -> None:
        """Store one action (committed before this returns)."""
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {sorted(ACTIONS)}, not {action!r}")
        stamp = (when or datetime.now(UTC)).isoformat()
        with self.lock:
            self.db.execute(
                "INSERT INTO feedback (user_id, content_id, action, timestamp) VALUES (?, ?, ?, ?)",
                (str(user_id), str(content_id), action, stamp),
            )

    def actions(self, user_id: Any) -> dict[str, str]:
        """content id -> the user's latest action on it."""
        with self.lock:
            rows = self.db.execute(
                "SELECT content_id, action FROM feedback WHERE user_id = ? ORDER BY id", (str(user_id),)
            ).fetchall()
        return dict(rows)

    def close(self) -> None:
        with self.lock:
            self.db.close()


def adjust_for_feedback(actions: dict[str, str], known, logits, module_vectors, notes, config, state) -> np.ndarray:
    """`logits` of the rows `known` (module indices) with hide_similar's neighbours (embedding cosine at least
    `config.similar_cosine`, and the module itself) suppressed to -inf and more_like_this's lifted by
    `config.boost`; `notes` gets a reason per lifted row."""
    vectors = module_vectors[known]
    norms = np.linalg.norm(vectors, axis=1)
    for content_id, action in actions.items():
        if action == "hide":
            continue
        anchor = state.module_of(content_id)
        if anchor is None:
            continue
        reference = module_vectors[anchor]
        scale = np.linalg.norm(reference) * norms
        cosine = np.divide(vectors @ reference, scale, out=np.zeros(len(known)), where=scale > 0)
        close = (cosine >= config.similar_cosine) | (known == anchor)
        if action == "hide_similar":
            logits = np.where(close, -np.inf, logits)
        else:
            logits = np.where(close & np.isfinite(logits), logits + config.boost, logits)
            title = state.module_title[anchor] or str(content_id)
            for row in np.flatnonzero(close):
                notes.setdefault(int(row), []).append(
                    {"code": "more_like_this", "text": f"you asked for more like {title}", "weight": config.boost}
                )
    return logits


def feedback_events(directory: str | Path):
    """Every recorded action as a polars frame: user_id, content_id, action, sign (+1 more, -1 hide), timestamp."""
    import polars as pl

    path = Path(directory) / "feedback.sqlite"
    if not path.exists():
        return pl.DataFrame(
            schema={
                "user_id": pl.String,
                "content_id": pl.String,
                "action": pl.String,
                "sign": pl.Int8,
                "timestamp": pl.Datetime("us", "UTC"),
            }
        )
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT user_id, content_id, action, timestamp FROM feedback ORDER BY id").fetchall()
    frame = pl.DataFrame(rows, schema=["user_id", "content_id", "action", "timestamp"], orient="row")
    return frame.select(
        "user_id",
        "content_id",
        "action",
        pl.col("action").replace_strict(ACTIONS, return_dtype=pl.Int8).alias("sign"),
        pl.col("timestamp").str.to_datetime(time_zone="UTC", time_unit="us"),
    )
