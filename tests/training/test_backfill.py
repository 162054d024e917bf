"""The backfill job: versions at past cutoffs, joined point-in-time to the impressions that follow them."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl
import pytest

from graphrec.data.config import ValidationConfig
from graphrec.data.validation import validate_dataset
from graphrec.embed.config import ModelConfig
from graphrec.store import FeatureStoreConfig
from graphrec.store.feast_repo import historical_embeddings
from graphrec.store.versions import list_versions, read_manifest
from training.backfill import backfill_cutoffs, backfill_job
from training.config import BackfillConfig, EmbeddingStageConfig, ExportStageConfig, TrainConfig


@pytest.fixture(scope="module")
def backfilled(small_shop, tmp_path_factory):
    root = tmp_path_factory.mktemp("backfill")
    tables = {name: getattr(small_shop, name) for name in ("events", "items", "content", "impressions")}
    validate_dataset(tables, root / "validated", ValidationConfig(reference_time="2026-06-01"))
    embeddings = EmbeddingStageConfig(model=ModelConfig(dim=8, num_layers=1), train=TrainConfig(epochs=1))
    export = ExportStageConfig(store=str(root / "store"))
    config = BackfillConfig(every_days=4, first_after_days=4)
    summaries = backfill_job(root / "validated", root / "work", config, embeddings=embeddings, export=export)
    return root, summaries, embeddings, export, config


def test_every_cutoff_gets_a_version_whose_snapshot_ends_there(backfilled):
    root, summaries, *_ = backfilled
    assert [s["cutoff"][:10] for s in summaries] == ["2026-01-09", "2026-01-13", "2026-01-17"]
    store = root / "store"
    cutoffs = [read_manifest(store, v)["cutoff"] for v in list_versions(store)]
    assert cutoffs == [s["cutoff"] for s in summaries]
    assert not (root / "work" / "snapshot").exists()  # scratch removed


def test_a_rerun_publishes_nothing(backfilled):
    root, _, embeddings, export, config = backfilled
    again = backfill_job(root / "validated", root / "work", config, embeddings=embeddings, export=export)
    assert all(s["skipped"] for s in again)
    assert len(list_versions(root / "store")) == 3


def test_impressions_meet_the_newest_version_cut_before_them(backfilled, small_shop):
    root, summaries, *_ = backfilled
    impressions = small_shop.impressions.select("user_id", pl.col("timestamp").alias("event_timestamp"))
    joined = historical_embeddings(root / "store", FeatureStoreConfig(), "user", impressions)
    cutoff_of = {
        read_manifest(root / "store", v)["version"]: read_manifest(root / "store", v)["cutoff"]
        for v in list_versions(root / "store")
    }
    answered = joined.filter(pl.col("model_version").is_not_null())
    assert answered.height > 0.5 * joined.height
    cutoff = answered["model_version"].replace_strict(cutoff_of).str.to_datetime(time_zone="UTC")
    assert (cutoff <= answered["event_timestamp"]).all()  # never a version that saw the impression's time
    # and the newest such version: no later cutoff also precedes the impression
    later = [datetime.fromisoformat(s["cutoff"]) for s in summaries]
    for version_cutoff, at in zip(cutoff.to_list()[:200], answered["event_timestamp"].to_list()[:200], strict=True):
        assert not [c for c in later if version_cutoff < c <= at]
    before_first = joined.filter(pl.col("event_timestamp") < datetime.fromisoformat(summaries[0]["cutoff"]))
    assert before_first["model_version"].null_count() == before_first.height


def test_cutoffs_from_settings(small_shop):
    events = small_shop.events.lazy()
    assert backfill_cutoffs(events, BackfillConfig(cutoffs=["2026-01-10", "2026-01-08T12:00:00+01:00"])) == [
        datetime.fromisoformat("2026-01-08T11:00:00+00:00"),
        datetime.fromisoformat("2026-01-10T00:00:00+00:00"),
    ]
    regular = backfill_cutoffs(events, BackfillConfig(every_days=7, first_after_days=1))
    assert [c.isoformat() for c in regular] == ["2026-01-06T00:00:00+00:00", "2026-01-13T00:00:00+00:00"]


def test_ranker_rows_carry_point_in_time_embeddings_and_features(backfilled, small_shop):
    from graphrec.rank.features import feature_descriptions
    from graphrec.rank.rows import EMBEDDING_FLAGS, impression_rows

    root, summaries, *_ = backfilled
    rows = impression_rows(root / "validated", root / "store")
    frame = rows.frame
    assert frame.height == small_shop.impressions.height
    assert rows.feature_names == [*feature_descriptions(), *EMBEDDING_FLAGS] and rows.embedding_dim == 8
    first_cutoff = datetime.fromisoformat(summaries[0]["cutoff"])
    early = frame.filter(pl.col("timestamp") < first_cutoff)
    assert early["has_user_embedding"].sum() == 0 and early["user_embedding_version"].null_count() == early.height
    late = frame.filter(pl.col("timestamp") >= first_cutoff)
    assert late["has_user_embedding"].mean() > 0.5 and late["has_module_embedding"].mean() > 0.5
    arrays = rows.arrays(np.flatnonzero((frame["timestamp"] >= first_cutoff).to_numpy()))
    assert arrays["user"].shape == (late.height, 8) and arrays["dense"].shape[1] == len(rows.feature_names)
    missing = arrays["dense"][:, rows.feature_names.index("has_user_embedding")] == 0
    assert (arrays["user"][missing] == 0).all()  # a user the version lacks gets the zero vector
