"""The export job: a trained model's embeddings -> a new version in the embedding store -> Feast online store.

`graphrec export --model artifacts/default/model --export.store artifacts/store` computes user, item and content-module
embeddings on the model's snapshot, stages them as a new version aligned to the live one, registers it with Feast
and writes it to the online store, and only then swaps `LATEST` and applies retention. A failure writing the
online store (say Redis is down) removes the staged version again: the store is left exactly as it was.
Rollback, sync and listing are library calls (`graphrec.store.publish`); the CLI calls them directly.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from graphrec.embed.inference import embeddings_from_model
from graphrec.store.config import ExportConfig, FeatureStoreConfig
from graphrec.store.publish import describe_drift, publish_embeddings

log = logging.getLogger("graphrec.export")


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


def export_job(
    model: str | Path,
    store: str | Path = "artifacts/store",
    snapshot: str | Path | None = None,
    export: ExportConfig | None = None,
    feature_store: FeatureStoreConfig | None = None,
    metrics: dict[str, Any] | None = None,
    ranker: str | Path | None = None,
    ranker_space: str | None = None,
    pair: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Publish a model's embeddings as the store's new live version (with `ranker`: as a pair, see
    `graphrec.store.publish.publish_embeddings`); returns the version's manifest."""
    export = export or ExportConfig()
    feature_store = feature_store or FeatureStoreConfig()
    model, store = Path(model), Path(store)
    started = time.perf_counter()
    embeddings = embeddings_from_model(model, snapshot)
    info = _model_info(model, embeddings.info["model_metadata"], metrics)
    info["content_embeddings"] = embeddings.info.get("content")
    manifest, online, deleted = publish_embeddings(
        store, embeddings, info, export, feature_store, ranker, ranker_space, pair
    )
    log.debug(
        "version %s is live (%s); online: %s; retired: %s; %.1fs",
        manifest["version"],
        describe_drift(manifest),
        online["method"] if online else "disabled",
        ", ".join(deleted) or "none",
        time.perf_counter() - started,
    )
    return manifest
