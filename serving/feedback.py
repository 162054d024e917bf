"""Shoppers' feedback on modules (hide, hide similar, more like this), stored durably and honoured by the next rank.

One SQLite database (WAL, synchronous FULL: a recorded action survives a crash or a power cut) that every worker
reads per request, so feedback posted to one worker is honoured by all of them. The latest action on a module
wins. The scheduled job reads the same database (`graphrec.data.feedback.read_feedback_store`, `input.feedback`)
into the next graph build as signed events.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from graphrec.data.config import FEEDBACK_ACTIONS as ACTIONS
from graphrec.data.feedback import STORE_FILE, STORE_SCHEMA


class FeedbackStore:
    """Per-user module feedback in `<directory>/feedback.sqlite`."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / STORE_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=5.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(STORE_SCHEMA)
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
