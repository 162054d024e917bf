"""A shopper who just viewed a module's featured items sees that module rise on the next call.

Whether a page follows fresh views depends on what the ranker learned from its shop. The small test shop's clicks
follow hidden tastes that its few events barely reveal, so its 3-epoch ranker gives fresh views no consistent
weight. Here the same shop's impressions are relabelled so that, as in a shop where the premise holds, shoppers
click the modules whose featured items they had viewed before the impression. The real ranker job trains on
those rows, the API serves the result, and a call with three fresh views must lift the module.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from graphrec.store.versions import load_version, require_latest
from serving.app import create_app
from serving.config import ServeConfig
from tests.support import RANKER
from training.rank_job import build_rows, rank_job


@pytest.fixture(scope="module")
def follows_views(published_pair, tmp_path_factory):
    """A ranker trained by `rank_job` on the published pair's impressions relabelled so that clicks follow the
    user's and the session's earlier views of the module's featured items; its directory."""
    root, _ = published_pair
    world = tmp_path_factory.mktemp("follows-views")
    shutil.copytree(root / "validated", world / "validated")
    every_day = replace(RANKER, split=replace(RANKER.split, skip_days=0))  # the first days' impressions too
    frame = build_rows(world / "validated", every_day, root / "store").frame
    seen = np.log1p(frame["user_featured_events"].to_numpy()) + np.log1p(frame["session_featured_events"].to_numpy())
    rng = np.random.default_rng(0)
    clicked = rng.random(frame.height) < 1.0 / (1.0 + np.exp(4.0 - 1.5 * seen))
    labels = frame.select("request_id", "slot").with_columns(pl.Series("relabelled", clicked.astype(np.int8)))
    path = world / "validated" / "impressions.parquet"
    impressions = pl.read_parquet(path).join(labels, on=["request_id", "slot"], how="left")
    assert impressions["relabelled"].null_count() == 0  # every impression is a ranker row
    impressions.with_columns(pl.col("relabelled").alias("clicked")).drop("relabelled").write_parquet(path)
    rank_job(world / "validated", world / "ranker", RANKER, root / "store")
    return world / "ranker"


def test_three_fresh_views_lift_the_module_on_the_next_call(published_pair, follows_views, tmp_path):
    root, _ = published_pair
    config = ServeConfig(
        ranker=str(follows_views),
        store=str(root / "store"),
        feedback=str(tmp_path / "feedback"),
        impression_log=None,
        clock="data_end",
    )
    embedded = set(load_version(root / "store", require_latest(root / "store")).ids["user"].to_list())
    with TestClient(create_app(config)) as client:
        state = client.app.state.service.generation.state
        now = datetime.fromtimestamp(state.data_end_us / 1e6, tz=UTC)
        item_ids, user_ids = list(state.item_index), list(state.user_index)
        counts = state.event_segments.end - state.event_segments.start
        heavy = [user_ids[u] for u in np.argsort(-counts, kind="stable") if user_ids[u] in embedded][:8]
        body = {"slots": 200, "reasons": False, "context": {"device": "mobile_web", "session_id": "s-fresh"}}
        gains = []
        for user in heavy:
            before = client.post("/v1/rank", json=body | {"user_id": user})
            assert before.status_code == 200, before.text
            order = [m["content_id"] for m in before.json()["modules"]]
            lower = [c for c in order[len(order) // 2 :] if len(state.featured_items[state.module_of(c)]) >= 3]
            for content_id in lower[:3]:
                viewed = state.featured_items[state.module_of(content_id)][:3]
                recent = [
                    {
                        "item_id": item_ids[i],
                        "event_type": "view",
                        "timestamp": (now - timedelta(minutes=5) + timedelta(seconds=k)).isoformat(),
                    }
                    for k, i in enumerate(viewed)
                ]
                after = client.post("/v1/rank", json=body | {"user_id": user, "recent_events": recent})
                assert after.status_code == 200, after.text
                moved = [m["content_id"] for m in after.json()["modules"]]
                gains.append(order.index(content_id) - moved.index(content_id))
    gains = np.array(gains)
    assert len(gains) >= 12, gains
    # Every trial's module starts in the lower half, so a page that ignored the views would gain nothing.
    assert (gains > 0).mean() >= 0.8 and np.median(gains) > 0, gains
