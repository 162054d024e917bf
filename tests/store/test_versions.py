from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from graphrec.embed.vectors import EmbeddingSet
from graphrec.store.alignment import align_to
from graphrec.store.codecs import decode_compact, encode_compact
from graphrec.store.config import ExportConfig
from graphrec.store.versions import (
    IncompatibleEmbeddingsError,
    StoreError,
    apply_retention,
    check_compatible,
    latest_version,
    list_versions,
    load_version,
    set_latest,
    stage_version,
    store_lock,
    versions_dir,
)

CUTOFF = datetime(2026, 1, 10, tzinfo=UTC)


def make_set(seed: int = 0, dim: int = 16, n_users: int = 50, n_items: int = 80, cutoff=CUTOFF) -> EmbeddingSet:
    rng = np.random.default_rng(seed)
    return EmbeddingSet(
        ids={
            "user": pl.Series("user_id", [f"u{i:03d}" for i in range(n_users)]),
            "item": pl.Series("item_id", np.arange(n_items, dtype=np.int64) * 7),
            "content": pl.Series("content_id", ["banner", "carousel", "teaser"]),
        },
        vectors={
            "user": rng.normal(size=(n_users, dim)).astype(np.float32),
            "item": rng.normal(size=(n_items, dim)).astype(np.float32),
            "content": rng.normal(size=(3, dim)).astype(np.float32),
        },
        cutoff=cutoff,
    )


def rotated(source: EmbeddingSet, seed: int, noise: float = 0.0) -> EmbeddingSet:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(source.dim, source.dim)))
    vectors = {e: (v @ q + noise * rng.normal(size=v.shape)).astype(np.float32) for e, v in source.vectors.items()}
    return EmbeddingSet(source.ids, vectors, source.cutoff)


def publish(store, embeddings, config=None):
    with store_lock(store):
        manifest = stage_version(store, embeddings, config or ExportConfig(), {"metrics": {"ndcg@20": 0.1}})
        set_latest(store, manifest["version"])
        apply_retention(store, (config or ExportConfig()).keep)
    return manifest


def test_version_files_follow_the_contract(tmp_path):
    manifest = publish(tmp_path, make_set())
    directory = versions_dir(tmp_path) / "v000001"
    assert latest_version(tmp_path) == "v000001" and manifest["rows"] == {"user": 50, "item": 80, "content": 3}
    table = pq.read_table(directory / "item.parquet")
    assert table.schema.field("item_id").type == "int64"  # original id type kept
    embedding = table.schema.field("embedding").type
    assert embedding.list_size == 16 and str(embedding.value_type) == "float"
    assert table.column("event_timestamp").to_pylist()[0] == CUTOFF
    assert set(table.column("model_version").to_pylist()) == {"v000001"}
    assert pq.read_table(directory / "user.parquet").schema.field("user_id").type == "string"
    assert set(manifest["sha256"]) == {"user.parquet", "item.parquet", "content.parquet"}
    for key in ("version", "created_at", "cutoff", "dim", "rows", "metrics", "code_version", "drift", "space"):
        assert key in manifest
    loaded = load_version(tmp_path)
    assert np.array_equal(loaded.vectors["item"], make_set().vectors["item"])
    assert loaded.ids["user"].to_list() == make_set().ids["user"].to_list()


def test_checksum_mismatch_is_refused(tmp_path):
    publish(tmp_path, make_set())
    path = versions_dir(tmp_path) / "v000001" / "user.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"user.parquet: sha256 .* does not match .* refused"):
        load_version(tmp_path)


def test_retention_keeps_the_newest_and_latest(tmp_path):
    config = ExportConfig(keep=2)
    for seed in range(4):
        publish(tmp_path, rotated(make_set(), seed, noise=0.01), config)
    assert list_versions(tmp_path) == ["v000003", "v000004"] and latest_version(tmp_path) == "v000004"
    set_latest(tmp_path, "v000003")  # a rollback; the next publish must not delete the live version's successor
    publish(tmp_path, make_set(), config)
    assert list_versions(tmp_path) == ["v000004", "v000005"]
    assert not [p for p in versions_dir(tmp_path).iterdir() if p.name.startswith(".v")]


def test_alignment_recovers_a_rotation_and_keeps_dot_products(tmp_path):
    first = make_set()
    publish(tmp_path, first)
    second = rotated(first, seed=3, noise=0.05)
    manifest = publish(tmp_path, second)
    drift = manifest["drift"]
    assert drift["aligned"] and drift["compatible"] and drift["mean_cosine"] > 0.99
    assert drift["entities"]["item"]["mean_cosine_before"] < 0.5
    assert drift["entities"]["item"]["top20_overlap"] > 0.8
    assert manifest["space"] == "v000001"
    aligned = load_version(tmp_path, "v000002")
    np.testing.assert_allclose(aligned.vectors["item"], first.vectors["item"], atol=0.2)
    # One rotation for every entity type: user . item scores within the version are unchanged.
    np.testing.assert_allclose(
        aligned.vectors["user"] @ aligned.vectors["item"].T,
        second.vectors["user"] @ second.vectors["item"].T,
        rtol=1e-4,
        atol=1e-3,
    )
    assert check_compatible(tmp_path, "v000001")["version"] == "v000002"


def test_unrelated_retrain_opens_a_new_space(tmp_path):
    publish(tmp_path, make_set(seed=0))
    manifest = publish(tmp_path, make_set(seed=1))
    assert manifest["drift"]["compatible"] is False and manifest["space"] == "v000002"
    assert "below min_cosine" in manifest["drift"]["reason"]
    with pytest.raises(IncompatibleEmbeddingsError, match="trained on v000001"):
        check_compatible(tmp_path, "v000001")


def test_dimension_change_is_incompatible():
    _, report = align_to(make_set(dim=16), make_set(dim=8), ExportConfig())
    assert report["compatible"] is False and "dimension" in report["reason"]


def test_partial_overlap_aligns_on_shared_entities(tmp_path):
    first = make_set(n_items=80)
    publish(tmp_path, first)
    second = rotated(first, seed=5, noise=0.01)
    keep = np.arange(20, 80)  # 20 items retired, 30 new ones
    new_ids = pl.concat([second.ids["item"].gather(keep), pl.Series("item_id", np.arange(1000, 1030))])
    new_vectors = np.concatenate([second.vectors["item"][keep], np.ones((30, 16), np.float32)])
    third = EmbeddingSet({**second.ids, "item": new_ids}, {**second.vectors, "item": new_vectors}, CUTOFF)
    manifest = publish(tmp_path, third)
    assert manifest["drift"]["entities"]["item"]["shared"] == 60 and manifest["drift"]["compatible"]


def test_second_writer_is_refused(tmp_path):
    with store_lock(tmp_path), pytest.raises(StoreError, match="holds the store's lock"), store_lock(tmp_path):
        pass


@pytest.mark.parametrize(("dtype", "tolerance"), [("float16", 1e-2), ("int8", 3e-2)])
def test_compact_encodings_round_trip_within_quantisation_error(dtype, tolerance):
    vectors = np.random.default_rng(0).normal(size=(100, 64)).astype(np.float32)
    vectors[0] = 0  # an all-zero vector must not divide by zero
    decoded = np.stack([decode_compact(blob, dtype) for blob in encode_compact(vectors, dtype)])
    scale = np.abs(vectors).max(axis=1, keepdims=True)
    assert np.all(np.abs(decoded - vectors) <= tolerance * np.maximum(scale, 1e-6))
    assert len(encode_compact(vectors[:1], dtype)[0]) == (128 if dtype == "float16" else 68)
