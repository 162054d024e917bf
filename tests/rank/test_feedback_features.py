"""The shoppers' feedback as ranker features: the user's more-like-this and hide actions on the module strictly
before the row's time, offline and online alike; and a ranker trained on rows with them learns what they say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from graphrec.rank.config import RankFeatureConfig
from graphrec.rank.features import behaviour_features, feature_descriptions
from graphrec.rank.online import FeatureState

T = datetime(2026, 3, 2, 12, tzinfo=UTC)
US = 1_000_000
CONTENT = pl.DataFrame({"content_id": [1, 2, 3], "module_type": ["banner"] * 3})
EVENTS = pl.DataFrame(
    {
        "user_id": [7, 8],
        "item_id": [None, None],
        "content_id": [1, 1],
        "event_type": ["view", "view"],
        "timestamp": [T - timedelta(days=1)] * 2,
        "session_id": [None, None],
    },
    schema={
        "user_id": pl.Int64,
        "item_id": pl.Int64,
        "content_id": pl.Int64,
        "event_type": pl.String,
        "timestamp": pl.Datetime("us", "UTC"),
        "session_id": pl.String,
    },
)
# User 7: asked for more of module 1 twice (the second at T), hid module 2 (hide_similar), hid module 3 after T.
# User 9 has feedback but no event: still a user the features know.
FEEDBACK = pl.DataFrame(
    {
        "user_id": [7, 7, 7, 7, 9],
        "content_id": [1, 1, 2, 3, 3],
        "action": ["more_like_this", "more_like_this", "hide_similar", "hide", "hide"],
        "timestamp": [T - timedelta(hours=2), T, T - timedelta(hours=1), T + timedelta(hours=1), T - timedelta(1)],
    },
    schema={
        "user_id": pl.Int64,
        "content_id": pl.Int64,
        "action": pl.String,
        "timestamp": pl.Datetime("us", "UTC"),
    },
)
NAMES = ["user_module_more_like_this", "user_module_hidden"]


def _rows(user: int, when: datetime) -> pl.DataFrame:
    return pl.DataFrame({"user_id": user, "content_id": [1, 2, 3], "timestamp": when})


@pytest.mark.parametrize(
    ("user", "when", "more", "hidden"),
    [
        (7, T, [1, 0, 0], [0, 1, 0]),  # the action at T does not count yet
        (7, T + timedelta(hours=2), [2, 0, 0], [0, 1, 1]),
        (9, T, [0, 0, 0], [0, 0, 1]),
        (8, T, [0, 0, 0], [0, 0, 0]),
    ],
)
def test_feedback_before_t_offline_and_online(user, when, more, hidden):
    rows = _rows(user, when)
    offline = behaviour_features(rows, EVENTS.lazy(), None, CONTENT, None, feedback=FEEDBACK)
    assert offline["user_module_more_like_this"].to_list() == more
    assert offline["user_module_hidden"].to_list() == hidden
    state = FeatureState(EVENTS, None, CONTENT, None, feedback=FEEDBACK)
    online = state.features(user, np.array([state.module_of(m) for m in (1, 2, 3)]), int(when.timestamp() * US))
    for name, expected in zip(NAMES, (more, hidden), strict=True):
        assert online.dense[:, online.names.index(name)].tolist() == expected, name


def test_feedback_features_can_be_turned_off_and_are_zero_without_a_table():
    off = RankFeatureConfig(shopper_feedback=False)
    assert not set(NAMES) & set(feature_descriptions(off))
    without = behaviour_features(_rows(7, T), EVENTS.lazy(), None, CONTENT, None)
    assert without["user_module_more_like_this"].to_list() == [0, 0, 0]


def test_a_ranker_learns_what_more_like_this_says_of_clicks():
    """Rows where the user had asked for more of the module are clicked four times as often: the trained ranker
    scores such a row higher than the same row without the feedback."""
    import torch

    from graphrec.rank.model import HomepageRanker, RankerConfig

    names = list(feature_descriptions(RankFeatureConfig()))
    rng = np.random.default_rng(0)
    n = 6_000
    dense = np.zeros((n, len(names)), np.float32)
    asked = rng.random(n) < 0.3
    dense[:, names.index("user_module_more_like_this")] = asked
    dense[:, names.index("module_impressions")] = rng.integers(0, 50, n)
    clicked = rng.random(n) < np.where(asked, 0.2, 0.05)
    torch.manual_seed(0)
    model = HomepageRanker(len(names), 0, 4, 1, RankerConfig(hidden=[8], position_tower=False))
    model.fit_dense_transform(torch.from_numpy(dense))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = torch.from_numpy(dense), torch.from_numpy(clicked.astype(np.float32))
    for _ in range(200):
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        row = np.zeros((2, len(names)), np.float32)
        row[0, names.index("user_module_more_like_this")] = 1.0
        with_feedback, without_feedback = model(torch.from_numpy(row)).tolist()
    assert with_feedback > without_feedback + 0.5
