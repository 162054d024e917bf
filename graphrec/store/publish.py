"""Publishing embedding versions: stage, write online, swap LATEST, retire; and rollback and sync.

The order is what makes a kill harmless: a version is complete on disk and held by the online store before
`LATEST` moves, and a failure writing the online store (say Redis is down) removes the staged version again, so
the store is left exactly as it was. One writer at a time holds the store lock.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from graphrec.artifacts import file_sha256
from graphrec.embed.vectors import EmbeddingSet
from graphrec.store.config import ExportConfig, FeatureStoreConfig
from graphrec.store.feast_repo import prune_history, publish_online, repo_dir
from graphrec.store.pairs import paired_ranker, retire_rankers, stage_ranker
from graphrec.store.versions import (
    IncompatibleEmbeddingsError,
    StoreError,
    apply_retention,
    describe,
    fault_point,
    latest_version,
    list_versions,
    orphan_versions,
    previous_version,
    read_manifest,
    require_latest,
    set_latest,
    stage_version,
    store_lock,
    verify_version,
    versions_dir,
)

log = logging.getLogger("graphrec.store")


def _discard(store: Path, version: str) -> None:
    """Remove a staged version that never went live (and its offline history links)."""
    for link in (repo_dir(store) / "data").glob(f"*/{version}.parquet"):
        link.unlink(missing_ok=True)
    retire_rankers(store, [version])
    directory = versions_dir(store) / version
    if directory.exists():
        trash = versions_dir(store) / f".{version}.deleted-{uuid.uuid4().hex[:8]}"
        os.rename(directory, trash)
        shutil.rmtree(trash, ignore_errors=True)


def describe_drift(manifest: dict[str, Any]) -> str:
    """One line on a version's drift against the one before it (for logs and reports)."""
    drift = manifest["drift"]
    if not drift.get("previous_version"):
        return f"space {manifest['space']}, first version"
    text = f"space {manifest['space']}, mean cosine to {drift['previous_version']} {drift.get('mean_cosine')}"
    return text if drift.get("compatible") else f"{text}; new space: {drift.get('reason')}"


def publish_embeddings(
    store: str | Path,
    embeddings: EmbeddingSet,
    info: dict[str, Any],
    export: ExportConfig | None = None,
    feature_store: FeatureStoreConfig | None = None,
    ranker: str | Path | None = None,
    ranker_space: str | None = None,
    pair: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None, list[str]]:
    """Stage `embeddings` as a new version, write it online, then make it LATEST and apply retention.

    With `ranker` (a ranker artifact directory) the version is published as a pair: the ranker is copied to
    `<store>/rankers/<version>` before the swap (`pair` as its pair.json), so `LATEST` moves to both at once.
    `ranker_space` is the embedding space the ranker was trained on: a version that opens another space is discarded
    (IncompatibleEmbeddingsError) before anything goes live.

    Returns the manifest, the online write's summary (None when the feature store is disabled) and the versions
    retired. On an online-store failure the staged version is removed and LATEST is untouched.
    """
    export = export or ExportConfig()
    feature_store = feature_store or FeatureStoreConfig()
    store = Path(store)
    compact = feature_store.online_dtype if feature_store.online_dtype != "float32" else None
    with store_lock(store):
        forget_orphans(store)
        manifest = stage_version(store, embeddings, export, info, compact)
        version = manifest["version"]
        if ranker is not None:
            if ranker_space is not None and manifest["space"] != ranker_space:
                _discard(store, version)
                raise IncompatibleEmbeddingsError(
                    f"the new embedding version opens space {manifest['space']} ({describe_drift(manifest)}), but the "
                    f"ranker was trained on space {ranker_space}: the pair is not published and LATEST is unchanged"
                )
            stage_ranker(store, version, ranker, pair)
            fault_point("ranker_staged")
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
        retire_rankers(store, deleted)
        if feature_store.enabled:
            prune_history(store, export.history_keep)
    return manifest, online, deleted


def rollback(
    store: str | Path = "artifacts/store", to: str | None = None, feature_store: FeatureStoreConfig | None = None
) -> str:
    """Make `to` (default: the version before LATEST) live again: verified, written online, then LATEST."""
    feature_store = feature_store or FeatureStoreConfig()
    store = Path(store)
    require_latest(store)
    with store_lock(store):
        current = require_latest(store)
        target = to or previous_version(store, current)
        paired = [v for v in list_versions(store) if paired_ranker(store, v) is not None]
        if paired and to is None:  # a store of pairs rolls back to the previous pair, not to a backfilled version
            older = [v for v in paired if int(v[1:]) < int(current[1:]) and v not in orphan_versions(store)]
            target = older[-1] if older else None
        if target is None:
            raise StoreError(f"{versions_dir(store)}: no version older than {current} to roll back to")
        if paired and paired_ranker(store, target) is None:
            raise StoreError(
                f"{versions_dir(store)}: {target} was published without a ranker, so the ranking API would refuse "
                f"it; roll back to a pair ({', '.join(paired)})"
            )
        if target not in list_versions(store):
            raise StoreError(f"{versions_dir(store)}: no version {target!r} (have: {', '.join(list_versions(store))})")
        if target in orphan_versions(store):
            raise StoreError(
                f"{versions_dir(store)}: {target} was never published (its export was killed before it went "
                "live); roll back to a published version or export again"
            )
        verify_version(store, target)
        if feature_store.enabled:
            publish_online(store, feature_store, target, exact=True)
        set_latest(store, target)
    log.info("rolled back from %s to %s", current, target)
    return target


def sync_online(store: str | Path = "artifacts/store", feature_store: FeatureStoreConfig | None = None) -> str:
    """Write the LATEST version to the online store again (after an online-store outage or a config change)."""
    feature_store = feature_store or FeatureStoreConfig()
    require_latest(store)  # before the lock, which would create the directory
    with store_lock(store):
        version = require_latest(store)
        verify_version(store, version)
        publish_online(store, feature_store, version, exact=True)
    return version


def forget_orphans(store: str | Path) -> list[str]:
    """Take versions that never went live out of the offline history (their directories stay, listed as orphans,
    so version numbers are never reused while their rows may linger online). Call under the store lock."""
    orphans = orphan_versions(store)
    for version in orphans:
        links = list((repo_dir(store) / "data").glob(f"*/{version}.parquet"))
        for link in links:
            link.unlink(missing_ok=True)
        if links:
            log.warning(
                "%s never went live (an export was killed before LATEST moved); removed from the history", version
            )
    return orphans


def store_summary(store: str | Path) -> dict[str, Any]:
    """The store's versions with their health and the live one (for `graphrec export list`)."""
    if not versions_dir(store).is_dir():
        raise StoreError(f"{store}: not an embedding store (no embeddings/ directory)")
    return {"store": str(store), "latest": latest_version(store), "versions": describe(store)}


def verify_store(store: str | Path) -> dict[str, Any]:
    """Check every kept version's files against its manifest, and the offline history's files against the
    manifests of the versions they belong to. Returns the summary with `problems` (empty when all is well)."""
    summary = store_summary(store)
    # Orphans are listed (health `orphan`) but are no damage: they are never served.
    problems = [
        f"{line['version']}: {line['health']}" for line in summary["versions"] if line["health"].startswith("corrupt")
    ]
    if summary["latest"] is not None and summary["latest"] not in {line["version"] for line in summary["versions"]}:
        problems.append(f"LATEST names {summary['latest']}, which the store does not hold")
    health = {line["version"]: line["health"] for line in summary["versions"] if "rows" in line}  # readable manifest
    manifests = {version: read_manifest(store, version) for version in health}
    for link in sorted((repo_dir(store) / "data").glob("*/v*.parquet")):
        version, entity = link.stem, link.parent.name
        if version not in manifests:
            continue  # retired from embeddings/ (history outlives retention) or its manifest is already reported
        own = versions_dir(store) / version / f"{entity}.parquet"
        if health[version] == "ok" and own.exists() and os.path.samefile(link, own):
            continue  # a hard link to a file the version check just hashed and found intact: same bytes
        expected = manifests[version]["sha256"].get(f"{entity}.parquet")
        if expected is not None and file_sha256(link) != expected:
            # The history files are hard links to the version's own: a corrupt one is corrupt in both.
            problems.append(f"{link}: does not match {version}'s manifest")
    summary["problems"] = problems
    return summary
