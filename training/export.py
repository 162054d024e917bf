"""The export job: a trained model's embeddings -> a new version in the embedding store -> Feast online store.

`graphrec export --model artifacts/default/model --store artifacts/store` computes user, item and content-module
embeddings on the model's snapshot, stages them as a new version aligned to the live one, registers it with Feast
and writes it to the online store, and only then swaps `LATEST` and applies retention. A failure writing the
online store (say Redis is down) removes the staged version again: the store is left exactly as it was.
`graphrec export rollback --store ...` makes an older kept version live again (online store included).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphrec.embedding_store import (
    EmbeddingSet,
    ExportConfig,
    StoreError,
    apply_retention,
    fault_point,
    list_versions,
    previous_version,
    require_latest,
    set_latest,
    stage_version,
    store_lock,
    verify_version,
    versions_dir,
)
from graphrec.feature_store import FeatureStoreConfig, prune_history, publish_online, repo_dir
from graphrec.graph import Snapshot, load_snapshot
from graphrec.tasks import task_from_snapshot
from training.train import load_model

log = logging.getLogger("graphrec.export")


@torch.no_grad()
def embeddings_from_model(model_dir: str | Path, snapshot: str | Path | None = None) -> EmbeddingSet:
    """User, item and content embeddings of a trained model on its snapshot (default: the one it was trained on).

    Users and items get their propagated embeddings. Content modules are not a training target of the item
    model; they are embedded inductively in the same space (`embed_items` over the users who viewed or clicked
    them, with the training degrees), so `user . content` is a meaningful score. A module without interactions
    gets the mean embedding of the items it features, and one with neither a zero vector (counted in `info`).
    """
    model, metadata = load_model(model_dir)
    snapshot = snapshot or metadata["snapshot"]["path"]
    loaded = load_snapshot(snapshot)
    target = metadata["target"]
    task = task_from_snapshot(loaded, None, target["event"], target["node"])
    if (task.num_users, task.num_items) != (model.num_users, model.num_items):
        raise StoreError(
            f"{snapshot}: {task.num_users:,} users and {task.num_items:,} {target['node']}s, but the model in "
            f"{model_dir} was trained on {model.num_users:,} and {model.num_items:,}; export with its own snapshot"
        )
    model.set_graph(task.edges, task.item_features)
    model.eval()
    users, items, _ = model.propagate()
    user_layers, _ = model.propagate_layers()
    node = target["node"]
    ids = {
        "user": loaded.ids_of("user", np.arange(task.num_users)),
        node: loaded.ids_of(node, np.arange(task.num_items)),
    }
    vectors = {"user": users.numpy().astype(np.float32), node: items.numpy().astype(np.float32)}
    info: dict[str, Any] = {}
    if node == "item" and "content" in loaded.data.node_types and loaded.data["content"].num_nodes:
        vectors["content"], info["content"] = _content_vectors(model, loaded, user_layers, items)
        ids["content"] = loaded.ids_of("content", np.arange(loaded.data["content"].num_nodes))
    cutoff = loaded.manifest["cutoff"]
    info["snapshot"] = {"path": str(snapshot), "input_fingerprint": loaded.manifest.get("input_fingerprint", {})}
    info["model_metadata"] = metadata
    return EmbeddingSet(ids, vectors, datetime.fromisoformat(cutoff), info)


def _content_vectors(model, snapshot: Snapshot, user_layers: list[torch.Tensor], items: torch.Tensor):
    data = snapshot.data
    count = data["content"].num_nodes
    edges = {}
    for behaviour in model.behaviours:
        if ("user", behaviour, "content") in data.edge_types:
            users, modules = data["user", behaviour, "content"].edge_index
            edges[behaviour] = (modules, users)
    vectors = model.embed_items(edges, count, user_layers)
    touched = torch.zeros(count, dtype=torch.bool)
    for modules, _ in edges.values():
        touched[modules] = True
    from_items = torch.zeros(count, dtype=torch.bool)
    if ("content", "features", "item") in data.edge_types:
        modules, featured = data["content", "features", "item"].edge_index
        sums = torch.zeros(count, items.shape[1]).index_add(0, modules, items[featured])
        counts = torch.bincount(modules, minlength=count).float()
        from_items = ~touched & (counts > 0)
        vectors[from_items] = sums[from_items] / counts[from_items, None]
    stats = {
        "method": "inductive from user interactions; featured-item mean where none",
        "from_interactions": int(touched.sum()),
        "from_featured_items": int(from_items.sum()),
        "zero_vector": int((~touched & ~from_items).sum()),
    }
    return vectors.numpy().astype(np.float32), stats


def _model_info(model_dir: Path, metadata: dict[str, Any], metrics: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "model": {
            "path": str(model_dir),
            "created_at": metadata.get("created_at"),
            "hyperparameters": metadata.get("hyperparameters"),
            "target": metadata.get("target"),
            "code_version": metadata.get("code_version"),
        },
        "data_fingerprint": metadata.get("snapshot", {}).get("input_fingerprint", {}),
        "metrics": {"training": metadata.get("training", {}), **(metrics or {})},
    }


def _discard(store: Path, version: str) -> None:
    """Remove a staged version that never went live (and its offline history links)."""
    for link in (repo_dir(store) / "data").glob(f"*/{version}.parquet"):
        link.unlink(missing_ok=True)
    directory = versions_dir(store) / version
    if directory.exists():
        trash = versions_dir(store) / f".{version}.deleted-{uuid.uuid4().hex[:8]}"
        os.rename(directory, trash)
        shutil.rmtree(trash, ignore_errors=True)


def export_job(
    model: str | Path,
    store: str | Path = "artifacts/store",
    snapshot: str | Path | None = None,
    export: ExportConfig | None = None,
    feature_store: FeatureStoreConfig | None = None,
    metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Publish a model's embeddings as the store's new live version; returns the version's manifest."""
    export = export or ExportConfig()
    feature_store = feature_store or FeatureStoreConfig()
    model, store = Path(model), Path(store)
    started = time.perf_counter()
    embeddings = embeddings_from_model(model, snapshot)
    info = _model_info(model, embeddings.info["model_metadata"], metrics)
    info["content_embeddings"] = embeddings.info.get("content")
    manifest, online, deleted = publish_embeddings(store, embeddings, info, export, feature_store)
    drift = manifest["drift"]
    log.info(
        "version %s is live (space %s, %s); online: %s; retired: %s; %.1fs",
        manifest["version"],
        manifest["space"],
        (
            f"mean cosine to {drift['previous_version']} {drift.get('mean_cosine')}"
            + ("" if drift.get("compatible") else f"; incompatible: {drift.get('reason')}")
        )
        if drift.get("previous_version")
        else "first version",
        online["method"] if online else "disabled",
        ", ".join(deleted) or "none",
        time.perf_counter() - started,
    )
    return manifest


def publish_embeddings(
    store: str | Path,
    embeddings: EmbeddingSet,
    info: dict[str, Any],
    export: ExportConfig | None = None,
    feature_store: FeatureStoreConfig | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None, list[str]]:
    """Stage `embeddings` as a new version, write it online, then make it LATEST and apply retention.

    Returns the manifest, the online write's summary (None when the feature store is disabled) and the versions
    retired. On an online-store failure the staged version is removed and LATEST is untouched.
    """
    export = export or ExportConfig()
    feature_store = feature_store or FeatureStoreConfig()
    store = Path(store)
    compact = feature_store.online_dtype if feature_store.online_dtype != "float32" else None
    with store_lock(store):
        manifest = stage_version(store, embeddings, export, info, compact)
        version = manifest["version"]
        online = None
        if feature_store.enabled:
            try:
                online = publish_online(store, feature_store, version)
            except BaseException:
                _discard(store, version)
                raise
        fault_point("before_latest")
        set_latest(store, version)
        fault_point("after_latest")
        deleted = apply_retention(store, export.keep)
        if feature_store.enabled:
            prune_history(store, export.history_keep)
    return manifest, online, deleted


def rollback_job(
    store: str | Path = "artifacts/store", to: str | None = None, feature_store: FeatureStoreConfig | None = None
) -> str:
    """Make `to` (default: the version before LATEST) live again: verified, written online, then LATEST."""
    feature_store = feature_store or FeatureStoreConfig()
    store = Path(store)
    require_latest(store)
    with store_lock(store):
        current = require_latest(store)
        target = to or previous_version(store, current)
        if target is None:
            raise StoreError(f"{versions_dir(store)}: no version older than {current} to roll back to")
        if target not in list_versions(store):
            raise StoreError(f"{versions_dir(store)}: no version {target!r} (have: {', '.join(list_versions(store))})")
        verify_version(store, target)
        if feature_store.enabled:
            publish_online(store, feature_store, target, exact=True)
        set_latest(store, target)
    log.info("rolled back from %s to %s", current, target)
    return target


def sync_job(store: str | Path = "artifacts/store", feature_store: FeatureStoreConfig | None = None) -> str:
    """Write the LATEST version to the online store again (after an online-store outage or a config change)."""
    feature_store = feature_store or FeatureStoreConfig()
    require_latest(store)  # before the lock, which would create the directory
    with store_lock(store):
        version = require_latest(store)
        verify_version(store, version)
        publish_online(store, feature_store, version, exact=True)
    return version


def store_summary(store: str | Path) -> dict[str, Any]:
    """The store's versions and the live one (for `graphrec export list`)."""
    from graphrec.embedding_store import describe, latest_version

    return {"store": str(store), "latest": latest_version(store), "versions": describe(store)}
