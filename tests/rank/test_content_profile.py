"""Content profiles from module clicks: on a news site without item vectors (or without items) the vectors of the
modules a user (a session) clicked strictly before the row's time make the profile, offline and online alike;
content views do not count."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from graphrec.rank.features import behaviour_features
from graphrec.rank.online import FeatureState

T = datetime(2026, 3, 2, 12, tzinfo=UTC)
US = 1_000_000
CONTENT = pl.DataFrame(
    {
        "content_id": ["clicked", "similar", "dissimilar", "clicked_at_t", "viewed"],
        "module_type": ["news"] * 5,
        "title_embedding": [[1, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0], [0, 0, 0.9, 0.1]],
    },
    schema={"content_id": pl.String, "module_type": pl.String, "title_embedding": pl.Array(pl.Float32, 4)},
)
# The reader clicked `clicked` a minute before T and `clicked_at_t` at T, and viewed `viewed` (examined it on the
# homepage) before T; all in the session "visit".
EVENTS = pl.DataFrame(
    {
        "user_id": ["reader"] * 3,
        "item_id": [None] * 3,
        "content_id": ["clicked", "clicked_at_t", "viewed"],
        "event_type": ["click", "click", "view"],
        "timestamp": [T - timedelta(minutes=1), T, T - timedelta(seconds=30)],
        "session_id": ["visit"] * 3,
    },
    schema={
        "user_id": pl.String,
        "item_id": pl.Int64,
        "content_id": pl.String,
        "event_type": pl.String,
        "timestamp": pl.Datetime("us", "UTC"),
        "session_id": pl.String,
    },
)
ITEMS = {
    "no_items": None,
    "items_without_vectors": pl.DataFrame({"item_id": [1, 2], "category": ["world", "sports"]}),
    "items_with_other_vectors": pl.DataFrame(
        {"item_id": [1, 2], "title_embedding": [[1.0, 0.0], [0.0, 1.0]]},
        schema={"item_id": pl.Int64, "title_embedding": pl.Array(pl.Float32, 2)},
    ),
}
FEATURES = ["user_title_similarity", "session_title_similarity", "user_image_similarity"]


def _rows(when: datetime, session: str = "visit", user: str = "reader") -> pl.DataFrame:
    return pl.DataFrame(
        {"user_id": user, "content_id": ["similar", "dissimilar"], "timestamp": when, "session_id": session}
    )


def _offline(rows: pl.DataFrame, items: pl.DataFrame | None) -> dict[str, list[float]]:
    out = behaviour_features(rows, EVENTS.lazy(), None, CONTENT, items)
    return {name: out[name].to_list() for name in FEATURES}


def _online(state: FeatureState, rows: pl.DataFrame) -> dict[str, list[float]]:
    modules = np.array([state.module_of(m) for m in rows["content_id"]])
    when = int(rows["timestamp"][0].timestamp() * US)
    out = state.features(rows["user_id"][0], modules, when, session_id=rows["session_id"][0])
    return {name: out.dense[:, out.names.index(name)].tolist() for name in FEATURES}


@pytest.mark.parametrize("items", list(ITEMS.values()), ids=list(ITEMS))
def test_module_clicks_before_t_make_the_content_profile(items):
    state = FeatureState(EVENTS, None, CONTENT, items)
    similar = 0.9 / math.sqrt(0.82)
    # At T: the click a minute before counts; the click at T and the view do not.
    cases = {
        "at_t": (_rows(T), [similar, 0.0], [similar, 0.0]),
        # Just after T the click at T counts too: profile 2 x clicked + 2 x clicked_at_t (the view still not).
        "after_t": (_rows(T + timedelta(microseconds=1)), [similar / math.sqrt(2), 1 / math.sqrt(2)], None),
        # Another session of the reader: the user's profile, not the session's.
        "next_session": (_rows(T, session="next-visit"), [similar, 0.0], [0.0, 0.0]),
        "stranger": (_rows(T, user="stranger"), [0.0, 0.0], [0.0, 0.0]),
    }
    for case, (rows, user, session) in cases.items():
        offline = _offline(rows, items)
        np.testing.assert_allclose(offline["user_title_similarity"], user, rtol=1e-6, atol=1e-7, err_msg=case)
        np.testing.assert_allclose(offline["session_title_similarity"], session or user, atol=1e-7, err_msg=case)
        assert offline["user_image_similarity"] == [0.0, 0.0]  # no module holds image vectors
        online = _online(state, rows)
        for name in FEATURES:
            np.testing.assert_allclose(online[name], offline[name], rtol=2e-6, atol=2e-6, err_msg=f"{case} {name}")
    at_t = _offline(_rows(T), items)["user_title_similarity"]
    assert at_t[0] > 0.99 and at_t[1] == 0.0  # exactly 0: neither the click at T nor the view reached the profile
