from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
import torch

from graphrec.data.validation import validate_events
from graphrec.embed.config import ModelConfig
from graphrec.embed.inference import embeddings_from_model
from graphrec.embed.vectors import EmbeddingSet
from graphrec.graph.split import split_by_days, write_split
from graphrec.store.config import ExportConfig, FeatureStoreConfig
from graphrec.store.feast_repo import FeatureStoreError, historical_embeddings, historical_vectors
from graphrec.store.online import OnlineEmbeddings
from graphrec.store.publish import publish_embeddings, rollback
from graphrec.store.versions import (
    VERSION_PATTERN,
    StoreError,
    latest_version,
    list_versions,
    load_version,
    orphan_versions,
    versions_dir,
)
from tests.store.test_versions import make_set, rotated
from training.config import TrainConfig
from training.export import export_job

SQLITE = FeatureStoreConfig()


def as_bits(vectors) -> np.ndarray:
    return np.stack(vectors).astype(np.float32).view(np.uint32)


def assert_online_equals(reader: OnlineEmbeddings, exported, version: str) -> None:
    for entity, ids in exported.ids.items():
        vectors, versions = reader.get(entity, ids.to_list())
        assert set(versions) == {version}
        assert np.array_equal(as_bits(vectors), exported.vectors[entity].view(np.uint32)), entity


def assert_vectors_as_feast(store, entity: str, requests: pl.DataFrame, config=SQLITE) -> pl.DataFrame:
    """`historical_vectors` (the ranker's point-in-time join) answers each request as Feast's historical
    retrieval does: the same version and the same vector, the zero row where Feast has none."""
    feast = historical_embeddings(store, config, entity, requests)
    rows, table = historical_vectors(store, config, entity, requests)
    assert rows.height == requests.height and rows["model_version"].to_list() == feast["model_version"].to_list()
    assert (rows["vector_row"] == 0).to_list() == feast["embedding"].is_null().to_list()
    assert not table[0].any()
    for row, vector in zip(rows["vector_row"].to_list(), feast["embedding"].to_list(), strict=True):
        if vector is not None:
            assert np.array_equal(table[row], np.asarray(vector, dtype=np.float32))
    return feast


@pytest.mark.parametrize("write", ["materialize", "push"])
def test_sqlite_online_round_trip_is_bit_exact(tmp_path, write):
    config = FeatureStoreConfig(online_write=write)
    manifest, online, _ = publish_embeddings(tmp_path, make_set(), {}, None, config)
    assert online["method"] == ("materialize" if write == "materialize" else "write_to_online_store")
    assert online["rows"] == 133
    reader = OnlineEmbeddings(tmp_path, SQLITE)
    assert_online_equals(reader, load_version(tmp_path), manifest["version"])
    vectors, versions = reader.get("user", ["u001", "nobody"])
    assert vectors[1] is None and versions[1] is None
    assert (tmp_path / "feast" / "feature_store.yaml").exists() and (tmp_path / "feast" / "online.db").exists()


def test_truncated_registry_is_rebuilt(tmp_path):
    publish_embeddings(tmp_path, make_set(), {}, None, SQLITE)
    registry = tmp_path / "feast" / "registry.db"
    registry.write_bytes(registry.read_bytes()[:37])  # as if killed while Feast rewrote it in place
    publish_embeddings(tmp_path, rotated(make_set(), 1, noise=0.3), {}, None, SQLITE)
    assert_online_equals(OnlineEmbeddings(tmp_path, SQLITE), load_version(tmp_path), "v000002")
    assert list((tmp_path / "feast").glob("registry.db.corrupt-*"))


def test_historical_retrieval_gives_each_time_the_version_live_then(tmp_path):
    base = make_set()
    cutoffs = [datetime(2026, 1, day, tzinfo=UTC) for day in (10, 17, 24)]
    for seed, cutoff in enumerate(cutoffs):
        shifted = rotated(base, seed, noise=0.3)
        shifted.cutoff = cutoff
        publish_embeddings(tmp_path, shifted, {}, None, SQLITE)
    times = [datetime(2026, 1, d, h, tzinfo=UTC) for d, h in ((5, 0), (10, 0), (12, 9), (20, 0), (24, 0), (31, 23))]
    expected = [None, "v000001", "v000001", "v000002", "v000003", "v000003"]
    requests = pl.DataFrame({"item_id": [14] * len(times), "event_timestamp": times})
    answer = assert_vectors_as_feast(tmp_path, "item", requests)
    assert answer.height == len(times) and answer["model_version"].to_list() == expected
    assert answer["event_timestamp"].to_list() == times  # request order kept
    for row, version in zip(answer.iter_rows(named=True), expected, strict=True):
        if version is None:
            assert row["embedding"] is None
        else:
            exported = load_version(tmp_path, version).vectors["item"][2]  # item id 14 is row 2
            assert np.array_equal(np.asarray(row["embedding"], dtype=np.float32), exported)
    users = historical_embeddings(
        tmp_path, SQLITE, "user", pl.DataFrame({"user_id": ["u007", "u008"], "event_timestamp": times[2:4]})
    )
    assert users["model_version"].to_list() == ["v000001", "v000002"]
    # A homepage request's impressions share the user and the time: every one of them is answered.
    repeated = pl.DataFrame({"item_id": [14, 14, 21, 14, 14], "event_timestamp": [times[2]] * 3 + [times[3]] * 2})
    answer = assert_vectors_as_feast(tmp_path, "item", repeated)
    assert answer["model_version"].to_list() == ["v000001"] * 3 + ["v000002"] * 2
    assert answer["item_id"].to_list() == [14, 14, 21, 14, 14]


def test_historical_retrieval_answers_requests_the_history_cannot(tmp_path):
    """Ids no version holds and times before every version (a new shop's modules, the first days of a log) are
    answered with nulls, also when they are most of the requests (Feast's own join fails on those)."""
    base = make_set()
    for seed, day in enumerate((10, 17, 24)):  # several history files: dask reads them as partitions
        shifted = rotated(base, seed, noise=0.3)
        shifted.cutoff = datetime(2026, 1, day, tzinfo=UTC)
        publish_embeddings(tmp_path, shifted, {}, None, SQLITE)
    base.cutoff = datetime(2026, 1, 10, tzinfo=UTC)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    times = [start + timedelta(hours=h) for h in range(2000)]
    ids = ["u007" if h % 97 == 0 else f"new-{h}" for h in range(2000)]  # almost all unknown
    requests = pl.DataFrame({"user_id": ids, "event_timestamp": times})
    answer = assert_vectors_as_feast(tmp_path, "user", requests)
    short = assert_vectors_as_feast(tmp_path, "user", requests, FeatureStoreConfig(ttl_days=3))  # the TTL binds
    assert 0 < short["model_version"].is_not_null().sum() < answer["model_version"].is_not_null().sum()
    known = [i == "u007" and t >= base.cutoff for i, t in zip(ids, times, strict=True)]
    assert answer.height == 2000
    assert [v is not None for v in answer["model_version"].to_list()] == known
    assert answer["embedding"].is_null().to_list() == [not k for k in known]
    nothing = historical_embeddings(
        tmp_path, SQLITE, "user", pl.DataFrame({"user_id": ["new-1", "new-2"], "event_timestamp": times[:2]})
    )
    assert nothing["model_version"].to_list() == [None, None]


def test_historical_retrieval_of_two_versions_with_one_cutoff_takes_the_newer(tmp_path):
    """A cutoff exported twice (a forced rerun of a day): both versions are in the history with the same
    timestamp, and the ranker's point-in-time join takes the one created last, the one that went live. (Feast's
    file store means to, but sorts by created and then by event time with dask's sort, which does not keep the
    order of ties: here it answers the older one.)"""
    base = make_set()
    for seed in range(2):
        shifted = rotated(base, seed, noise=0.3)
        shifted.cutoff = datetime(2026, 1, 10, tzinfo=UTC)
        publish_embeddings(tmp_path, shifted, {}, None, SQLITE)
    requests = pl.DataFrame({"item_id": [14, 21], "event_timestamp": [datetime(2026, 1, 11, tzinfo=UTC)] * 2})
    rows, table = historical_vectors(tmp_path, SQLITE, "item", requests)
    assert rows["model_version"].to_list() == ["v000002"] * 2
    exported = load_version(tmp_path, "v000002").vectors["item"]  # item ids 14 and 21 are rows 2 and 3
    np.testing.assert_array_equal(table[rows["vector_row"].to_numpy()], exported[[2, 3]])


def test_history_outlives_retention_unless_capped(tmp_path):
    base = make_set()
    for seed in range(3):
        publish_embeddings(tmp_path, rotated(base, seed, noise=0.3), {}, ExportConfig(keep=1), SQLITE)
    assert list_versions(tmp_path) == ["v000003"]
    assert sorted(p.stem for p in (tmp_path / "feast" / "data" / "user").iterdir()) == ["v000001", "v000002", "v000003"]
    publish_embeddings(tmp_path, base, {}, ExportConfig(keep=1, history_keep=2), SQLITE)
    assert sorted(p.stem for p in (tmp_path / "feast" / "data" / "user").iterdir()) == ["v000003", "v000004"]


def test_rollback_rewrites_the_online_store(tmp_path):
    base = make_set()
    publish_embeddings(tmp_path, base, {}, None, SQLITE)
    publish_embeddings(tmp_path, rotated(base, 1, noise=0.3), {}, None, SQLITE)
    assert rollback(tmp_path, None, SQLITE) == "v000001" and latest_version(tmp_path) == "v000001"
    assert_online_equals(OnlineEmbeddings(tmp_path, SQLITE), load_version(tmp_path, "v000001"), "v000001")
    with pytest.raises(Exception, match="no version 'v000009'"):
        rollback(tmp_path, "v000009", SQLITE)


def test_rows_of_another_version_read_as_missing(tmp_path):
    base = make_set()
    publish_embeddings(tmp_path, base, {}, None, SQLITE)
    smaller = EmbeddingSet(
        {**base.ids, "user": base.ids["user"].head(10)},
        {**{e: v + 0.01 for e, v in base.vectors.items()}, "user": base.vectors["user"][:10] + 0.01},
        datetime(2026, 2, 1, tzinfo=UTC),
    )
    publish_embeddings(tmp_path, smaller, {}, None, SQLITE)
    vectors, versions = OnlineEmbeddings(tmp_path, SQLITE, expect_version="v000002").get("user", ["u001", "u040"])
    assert versions == ["v000002", "v000001"] and vectors[0] is not None and vectors[1] is None
    # v000002 was aligned to v000001 (same space), so a space-aware reader keeps the older row ...
    vectors, _ = OnlineEmbeddings.live(tmp_path, SQLITE).get("user", ["u001", "u040"])
    assert vectors[0] is not None and vectors[1] is not None
    # ... and drops it once the live version is in a new space.
    unrelated = make_set(seed=9, n_users=10)
    unrelated.cutoff = datetime(2026, 3, 1, tzinfo=UTC)
    assert publish_embeddings(tmp_path, unrelated, {}, None, SQLITE)[0]["space"] == "v000003"
    vectors, _ = OnlineEmbeddings.live(tmp_path, SQLITE).get("user", ["u001", "u040"])
    assert vectors[0] is not None and vectors[1] is None


def test_redis_round_trip_through_feast_and_direct(tmp_path, redis_server):
    config = FeatureStoreConfig(online_store="redis", redis=redis_server, project=f"t{uuid.uuid4().hex[:8]}")
    base = make_set()
    publish_embeddings(tmp_path, base, {}, None, config)
    publish_embeddings(tmp_path, rotated(base, 1, noise=0.3), {}, None, config)
    for backend in ("feast", "redis"):
        assert_online_equals(OnlineEmbeddings(tmp_path, config, backend=backend), load_version(tmp_path), "v000002")
    # An older version written over a newer one: graphrec is the only writer, so Feast's timestamp check is off.
    rollback(tmp_path, "v000001", config)
    for backend in ("feast", "redis"):
        assert_online_equals(OnlineEmbeddings(tmp_path, config, backend=backend), load_version(tmp_path), "v000001")


def test_redis_down_leaves_the_store_intact(tmp_path, redis_server, free_port):
    live = FeatureStoreConfig(online_store="redis", redis=redis_server, project=f"t{uuid.uuid4().hex[:8]}")
    publish_embeddings(tmp_path, make_set(), {}, None, live)
    down = FeatureStoreConfig(online_store="redis", redis=f"127.0.0.1:{free_port}", project=live.project)
    with pytest.raises(FeatureStoreError, match=rf"redis at 127.0.0.1:{free_port} failed .* LATEST are unchanged"):
        publish_embeddings(tmp_path, rotated(make_set(), 1, noise=0.3), {}, None, down)
    assert list_versions(tmp_path) == ["v000001"] and latest_version(tmp_path) == "v000001"
    assert not list((tmp_path / "feast" / "data").glob("*/v000002.parquet"))
    assert_online_equals(OnlineEmbeddings(tmp_path, live, backend="redis"), load_version(tmp_path), "v000001")
    # The failed version's number is never reused: rows it may have half-written online keep a dead label.
    manifest, _, _ = publish_embeddings(tmp_path, rotated(make_set(), 1, noise=0.3), {}, None, live)
    assert manifest["version"] == "v000003"


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_compact_online_vectors(tmp_path, dtype):
    config = FeatureStoreConfig(online_dtype=dtype)
    publish_embeddings(tmp_path, make_set(), {}, None, config)
    exported = load_version(tmp_path)
    vectors, versions = OnlineEmbeddings(tmp_path, config).get("item", exported.ids["item"].to_list())
    error = np.abs(np.stack(vectors) - exported.vectors["item"]).max()
    assert versions[0] == "v000001" and 0 < error < 0.05


# --- the export job on a trained model -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, small_shop):
    from training.train import train_job

    events = validate_events(small_shop.events).frame
    root = tmp_path_factory.mktemp("export")
    write_split(events, split_by_days(events, 3, 3), root / "split", small_shop.items, small_shop.content)
    train_job(
        root / "split" / "test" / "snapshot",
        root / "model",
        model=ModelConfig(dim=16, num_layers=2),
        train=TrainConfig(epochs=2, batch_size=1024),
    )
    return root / "model"


def test_export_job_publishes_users_items_and_modules(tmp_path, model_dir):
    from graphrec.embed.artifact import load_model
    from graphrec.graph.snapshot import load_snapshot
    from graphrec.graph.tasks import task_from_snapshot

    manifest = export_job(model_dir, tmp_path, metrics={"evaluation": {"ndcg@20": 0.2}})
    model, metadata = load_model(model_dir)
    snapshot = load_snapshot(metadata["snapshot"]["path"])
    task = task_from_snapshot(snapshot)
    model.set_graph(task.edges, task.item_features)
    with torch.no_grad():
        users, items, _ = model.propagate()
    exported = load_version(tmp_path)
    np.testing.assert_allclose(exported.vectors["user"], users.numpy(), atol=1e-6)
    np.testing.assert_allclose(exported.vectors["item"], items.numpy(), atol=1e-6)
    assert exported.ids["item"].to_list() == snapshot.ids_of("item", np.arange(task.num_items)).to_list()
    content = manifest["content_embeddings"]
    n_content = snapshot.data["content"].num_nodes
    assert manifest["rows"]["content"] == n_content
    parts = ("from_interactions", "from_featured_items", "from_content", "zero_vector")
    assert sum(content[part] for part in parts) == n_content
    assert content["from_interactions"] > 0 and np.abs(exported.vectors["content"]).sum() > 0
    assert manifest["metrics"]["evaluation"]["ndcg@20"] == 0.2 and manifest["model"]["hyperparameters"]
    assert manifest["data_fingerprint"] == metadata["snapshot"]["input_fingerprint"]
    # Retraining-free re-export of the same model is the same space, aligned to itself.
    again = export_job(model_dir, tmp_path)
    assert again["drift"]["mean_cosine"] > 0.999 and again["space"] == manifest["space"]


def test_export_refuses_a_snapshot_of_another_size(tmp_path, model_dir, small_shop):
    with pytest.raises(Exception, match="export with its own snapshot"):
        embeddings_from_model(model_dir, model_dir.parent / "split" / "val" / "snapshot")


@pytest.fixture(scope="module")
def store_with_one_version(tmp_path_factory, model_dir):
    store = tmp_path_factory.mktemp("store") / "store"
    export_job(model_dir, store, export=ExportConfig())
    return store


FAULT_POINTS = [
    "before_stage",
    "staged_user",
    "staged_content",
    "before_rename",
    "after_rename",
    "online_written",
    "latest_staged",
    "before_latest",
    "after_latest",
]


@pytest.mark.slow
@pytest.mark.parametrize("point", FAULT_POINTS)
def test_sigkill_at_any_point_leaves_a_valid_store(tmp_path, model_dir, store_with_one_version, point):
    store = tmp_path / "store"
    shutil.copytree(store_with_one_version, store)
    command = [sys.executable, "-m", "training.cli", "export", "--model", str(model_dir), "--export.store", str(store)]
    result = subprocess.run(command, env={**os.environ, "GRAPHREC_FAULT_AT": point}, capture_output=True, timeout=300)
    assert result.returncode == -9, result.stderr.decode()[-2000:]
    live = latest_version(store)
    assert live == ("v000002" if point == "after_latest" else "v000001")
    load_version(store, live)  # checksums verified
    load_version(store, "v000001")
    for directory in versions_dir(store).iterdir():
        if VERSION_PATTERN.match(directory.name):
            assert (directory / "manifest.json").exists()
    # The next run cleans up and publishes normally.
    manifest = export_job(model_dir, store)
    assert latest_version(store) == manifest["version"] and load_version(store).rows() == manifest["rows"]
    assert not [p for p in versions_dir(store).iterdir() if ".tmp-" in p.name]
    assert_online_equals(OnlineEmbeddings(store, SQLITE), load_version(store), manifest["version"])


def test_cli_export_list_and_bad_rollback(tmp_path, store_with_one_version):
    from training.cli import main

    assert main(["export", "rollback", "--export.store", str(store_with_one_version)]) == 2
    assert main(["export", "list", "--export.store", str(store_with_one_version)]) == 0


def test_reading_the_online_store_imports_neither_lightning_nor_the_jobs(tmp_path):
    exported = make_set()
    publish_embeddings(tmp_path, exported, {}, ExportConfig(), SQLITE)
    code = textwrap.dedent(
        f"""
        import sys
        from graphrec.store.config import FeatureStoreConfig
        from graphrec.store.online import OnlineEmbeddings
        vectors, versions = OnlineEmbeddings.live({str(tmp_path)!r}, FeatureStoreConfig()).get("user", ["u000"])
        assert vectors[0] is not None and versions == ["v000001"]
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("lightning", "pytorch_lightning", "training")))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout


def publish_killed_at(store, point: str, seed: int = 1) -> None:
    """Publish a rotated set in a child process that SIGKILLs itself at `point` (as `GRAPHREC_FAULT_AT` says)."""
    code = textwrap.dedent(
        f"""
        from graphrec.store.config import FeatureStoreConfig
        from graphrec.store.publish import publish_embeddings
        from tests.store.test_versions import make_set, rotated
        publish_embeddings({str(store)!r}, rotated(make_set(), {seed}, noise=0.05), {{}}, None, FeatureStoreConfig())
        """
    )
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, "GRAPHREC_FAULT_AT": point})
    assert result.returncode == -9


@pytest.mark.parametrize("point", ["online_written", "before_latest", "latest_staged"])
def test_a_version_killed_before_it_went_live_is_never_served(tmp_path, point):
    from graphrec.store.publish import store_summary

    publish_embeddings(tmp_path, make_set(), {}, None, SQLITE)
    publish_killed_at(tmp_path, point)  # v000002 staged and written online, LATEST still v000001
    assert latest_version(tmp_path) == "v000001" and "v000002" in list_versions(tmp_path)
    health = {line["version"]: line["health"] for line in store_summary(tmp_path)["versions"]}
    assert health == {"v000001": "ok", "v000002": "orphan"}
    vectors, versions = OnlineEmbeddings.live(tmp_path, SQLITE).get("user", ["u001"])
    assert versions == ["v000002"] and vectors == [None]  # its row is online, and read as missing
    requests = pl.DataFrame({"user_id": ["u001"], "event_timestamp": [datetime(2026, 2, 1, tzinfo=UTC)]})
    history = assert_vectors_as_feast(tmp_path, "user", requests)
    assert history["model_version"].to_list() == [None]  # not taken for history either
    with pytest.raises(StoreError, match="never published"):
        rollback(tmp_path, "v000002", SQLITE)
    # The next export takes the orphan out of the history and publishes a fresh number.
    manifest, _, _ = publish_embeddings(tmp_path, rotated(make_set(), 2, noise=0.05), {}, None, SQLITE)
    assert manifest["version"] == "v000003" and manifest["drift"]["previous_version"] == "v000001"
    assert not list((tmp_path / "feast" / "data").glob("*/v000002.parquet"))
    vectors, versions = OnlineEmbeddings.live(tmp_path, SQLITE).get("user", ["u001"])
    assert versions == ["v000003"] and vectors[0] is not None
    # Retention deletes the orphan first, and it never becomes a rollback target.
    assert list_versions(tmp_path) == ["v000001", "v000003"] and orphan_versions(tmp_path) == []
    assert rollback(tmp_path, None, SQLITE) == "v000001"


def test_the_first_export_killed_before_it_went_live_stays_an_orphan(tmp_path):
    publish_killed_at(tmp_path, "before_latest")
    assert latest_version(tmp_path) is None and orphan_versions(tmp_path) == ["v000001"]
    publish_embeddings(tmp_path, make_set(), {}, ExportConfig(keep=3), SQLITE)
    assert latest_version(tmp_path) == "v000002" and list_versions(tmp_path) == ["v000002"]
    with pytest.raises(StoreError, match="no version older"):
        rollback(tmp_path, None, SQLITE)


def test_a_rolled_back_version_is_no_orphan(tmp_path):
    publish_embeddings(tmp_path, make_set(), {}, None, SQLITE)
    publish_embeddings(tmp_path, rotated(make_set(), 1, noise=0.05), {}, None, SQLITE)
    rollback(tmp_path, "v000001", SQLITE)
    assert orphan_versions(tmp_path) == []


def corrupt(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_corrupt_live_version_does_not_block_the_next_export(tmp_path):
    from graphrec.store.publish import store_summary, verify_store

    publish_embeddings(tmp_path, make_set(), {}, None, SQLITE)
    publish_embeddings(tmp_path, rotated(make_set(), 1, noise=0.05), {}, None, SQLITE)
    corrupt(versions_dir(tmp_path) / "v000002" / "user.parquet")
    health = {line["version"]: line["health"] for line in store_summary(tmp_path)["versions"]}
    assert health["v000001"] == "ok" and health["v000002"].startswith("corrupt: ")
    problems = verify_store(tmp_path)["problems"]
    assert any(p.startswith("v000002: corrupt") for p in problems)
    assert any("feast/data/user/v000002.parquet" in p for p in problems)  # the history's hard link shares it
    # The export aligns to the newest intact published version and says so in the drift report.
    manifest, _, _ = publish_embeddings(tmp_path, rotated(make_set(), 2, noise=0.05), {}, None, SQLITE)
    assert manifest["version"] == "v000003" and latest_version(tmp_path) == "v000003"
    assert manifest["drift"]["previous_version"] == "v000001" and "v000002" in manifest["drift"]["skipped_corrupt"]
    assert manifest["drift"]["compatible"] is True


def test_a_corrupt_manifest_is_listed_and_refused_in_one_line(tmp_path):
    from training.cli import main

    publish_embeddings(tmp_path, make_set(), {}, None, SQLITE)
    publish_embeddings(tmp_path, rotated(make_set(), 1, noise=0.05), {}, None, SQLITE)
    (versions_dir(tmp_path) / "v000001" / "manifest.json").write_text('{"version": "v0000')
    assert main(["export", "list", "--export.store", str(tmp_path)]) == 0
    assert main(["export", "rollback", "--export.store", str(tmp_path)]) == 2
    assert main(["export", "verify", "--export.store", str(tmp_path)]) == 2
    assert latest_version(tmp_path) == "v000002"
    (versions_dir(tmp_path) / "v000001").rename(tmp_path / "aside")
    assert main(["export", "verify", "--export.store", str(tmp_path)]) == 0
