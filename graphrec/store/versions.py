"""Versioned embedding store: every export is a complete, checksummed, immutable version directory.

Layout under a store directory:

    embeddings/<version>/user.parquet      user_id, embedding FixedSizeList<float32, dim>, event_timestamp,
    embeddings/<version>/item.parquet      model_version (and item_id / content_id in the other files)
    embeddings/<version>/content.parquet
    embeddings/<version>/manifest.json     version, created_at, cutoff, dim, row counts, model config, data
                                           fingerprint, metrics, drift report, sha256 of every file
    embeddings/LATEST                      the live version's name

Versions are `v000001`, `v000002`, ... A version is written beside its final place, fsynced and renamed in
(`atomic_directory`); `LATEST` is swapped with an atomic rename. Readers verify every file's sha256 against the
manifest and refuse a version that does not match. One writer at a time holds `embeddings/.lock` (flock).

Drift control: embeddings retrained from scratch live in a different basis each time. A new version is rotated
onto the live one by orthogonal Procrustes over the entities both share (one rotation for users, items and
modules, so every dot product within the version is unchanged), and its stability (mean cosine of the same entity,
top-k neighbour overlap) is recorded. Versions whose aligned stability reaches `min_cosine` share the previous
version's `space`; otherwise the version opens a new space, and a consumer trained on an older space must not mix
them (`check_compatible`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from graphrec.artifacts import atomic_directory, code_version, file_sha256, write_json_atomic
from graphrec.embed.vectors import ENTITIES, ID_COLUMN, EmbeddingSet
from graphrec.errors import GraphrecError
from graphrec.store.codecs import encode_compact
from graphrec.store.config import ExportConfig

log = logging.getLogger("graphrec.store.versions")

VERSION_PATTERN = re.compile(r"^v(\d{6,})$")
STORE_FORMAT = 1
INDUCTIVE_FILE = "inductive.safetensors"  # the users' inductive state (graphrec.embed.fresh), optional
# Fault injection for the kill tests: the process SIGKILLs itself when it reaches the named step.
FAULT_ENV = "GRAPHREC_FAULT_AT"


class StoreError(GraphrecError):
    """The embedding store is missing, corrupt (checksum mismatch) or asked for a version it does not hold."""


class StoreBusy(StoreError):
    """Another writer holds the store's lock: retry later (exit 75, like a busy run)."""

    exit_code = 75


class IncompatibleEmbeddingsError(GraphrecError):
    """A consumer was trained on an embedding space that the requested version does not share."""


_fault_stage = ""


def fault_stage(stage: str) -> None:
    """Name the job stage now running, so `GRAPHREC_FAULT_AT=<stage>:<step>` targets a step in that stage only."""
    global _fault_stage
    _fault_stage = stage


def fault_point(name: str) -> None:
    """Kill this process (SIGKILL, no cleanup) if `GRAPHREC_FAULT_AT` names this step (or `<stage>:<step>` with
    the stage now running); for crash tests."""
    wanted = os.environ.get(FAULT_ENV)
    if wanted and wanted in (name, f"{_fault_stage}:{name}"):
        os.kill(os.getpid(), signal.SIGKILL)


def versions_dir(store: str | Path) -> Path:
    """The directory of a store's versions (and its LATEST pointer and lock)."""
    return Path(store) / "embeddings"


def list_versions(store: str | Path) -> list[str]:
    """Complete versions in the store, oldest first (staging directories are not versions)."""
    root = versions_dir(store)
    if not root.is_dir():
        return []
    found = [p.name for p in root.iterdir() if p.is_dir() and VERSION_PATTERN.match(p.name)]
    return sorted(found, key=lambda name: int(name[1:]))


def latest_version(store: str | Path) -> str | None:
    """The live version named by `LATEST`, or None for an empty store."""
    pointer = versions_dir(store) / "LATEST"
    if not pointer.exists():
        return None
    name = pointer.read_text().strip()
    if not VERSION_PATTERN.match(name):
        raise StoreError(f"{pointer}: does not name a version ({name!r})")
    return name


def require_latest(store: str | Path) -> str:
    """The live version, or a StoreError saying why there is none."""
    if not versions_dir(store).is_dir():
        raise StoreError(f"{store}: not an embedding store (no embeddings/ directory)")
    version = latest_version(store)
    if version is None:
        raise StoreError(f"{versions_dir(store)}: the store holds no published version")
    return version


COUNTER_FILE = "LAST_NUMBER"


def _next_version(store: str | Path) -> str:
    """A number never used before, and recorded as used (call under the store lock). A discarded version (its
    online write failed) may have left rows online under its number, so numbers are never reused."""
    counter = versions_dir(store) / COUNTER_FILE
    existing = [int(v[1:]) for v in list_versions(store)]
    if counter.exists():
        existing.append(int(counter.read_text().strip() or 0))
    number = (max(existing) if existing else 0) + 1
    tmp = counter.parent / f".{COUNTER_FILE}.tmp"
    with open(tmp, "w") as handle:
        handle.write(f"{number}\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, counter)
    return f"v{number:06d}"


@contextlib.contextmanager
def store_lock(store: str | Path) -> Iterator[None]:
    """Hold the store's writer lock (one export or rollback at a time); fails fast if another holds it."""
    root = versions_dir(store)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise StoreBusy(f"{root}: another export, rollback or run holds the store's lock; retry later") from exc
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _timestamps(value: datetime, n: int) -> pa.Array:
    micros = int(value.timestamp()) * 1_000_000 + value.microsecond
    return pa.array(np.full(n, micros, dtype=np.int64)).cast(pa.timestamp("us", tz="UTC"))


def _embedding_table(
    entity: str,
    ids: pl.Series,
    vectors: np.ndarray,
    cutoff: datetime,
    created: datetime,
    version: str,
    compact: str | None = None,
) -> pa.Table:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    id_values = ids.to_arrow()
    if pa.types.is_large_string(id_values.type):  # polars' default; plain string is what other readers expect
        id_values = id_values.cast(pa.string())
    columns = {
        ID_COLUMN[entity]: id_values,
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
        "event_timestamp": _timestamps(cutoff, n),
        "created_timestamp": _timestamps(created, n),
        "model_version": pa.array([version] * n, pa.string()),
    }
    if compact:
        columns[f"embedding_{compact}"] = pa.array(encode_compact(vectors, compact), pa.binary())
    return pa.table(columns)


def _read_vectors(path: Path, entity: str) -> tuple[pl.Series, np.ndarray]:
    table = pq.read_table(path)
    column = table.column("embedding").combine_chunks()
    dim = column.type.list_size
    vectors = column.values.to_numpy(zero_copy_only=False).reshape(-1, dim)
    ids = pl.from_arrow(table.column(ID_COLUMN[entity]).combine_chunks())
    return ids.rename(ID_COLUMN[entity]), vectors


PUBLISHED_FILE = "PUBLISHED"


def published_versions(store: str | Path) -> set[str] | None:
    """Every version that has ever been LATEST (the `embeddings/PUBLISHED` journal), or None for a store written
    before the journal existed."""
    path = versions_dir(store) / PUBLISHED_FILE
    if not path.exists():
        return None
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def orphan_versions(store: str | Path) -> list[str]:
    """Versions that never went live: staged (and perhaps written online) by an export killed before it moved
    LATEST, whatever exports came after. They are the versions missing from the journal; readers never serve them,
    rollback never picks them, the next export takes them out of the offline history and retention deletes them
    first. A version rolled back from was live, so it is no orphan."""
    live = latest_version(store)
    published = published_versions(store)
    if published is None:
        # A store without a journal: before any LATEST nothing was published; after one, it predates the journal
        # and its versions count as published (the journal starts at the next swap).
        return list_versions(store) if live is None else []
    return [v for v in list_versions(store) if v not in published and v != live]


def _record_published(store: str | Path, version: str, previous: str | None) -> None:
    """Append `version` to the journal (fsynced). A store that had none starts it with the versions up to the one
    that was LATEST before (`previous`): none on a fresh store, so an export killed before the first swap leaves
    an orphan, not a published version."""
    path = versions_dir(store) / PUBLISHED_FILE
    names = [version]
    if not path.exists() and previous is not None:
        names = [v for v in list_versions(store) if int(v[1:]) <= int(previous[1:]) and v != version] + names
    with open(path, "a") as handle:
        handle.write("".join(f"{name}\n" for name in names))
        handle.flush()
        os.fsync(handle.fileno())


def set_latest(store: str | Path, version: str) -> None:
    """Point `LATEST` at `version` with an atomic rename (the version must be complete and verified), then record
    it in the journal of published versions."""
    root = versions_dir(store)
    previous = latest_version(store)
    for stale in root.glob(".LATEST.tmp-*"):  # left by a killed writer (callers hold the store lock)
        stale.unlink(missing_ok=True)
    tmp = root / f".LATEST.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as handle:
        handle.write(version + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    fault_point("latest_staged")
    os.replace(tmp, root / "LATEST")
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    # After the swap: a kill between the two leaves LATEST on the version, which is never taken for an orphan.
    _record_published(store, version, previous)


def read_manifest(store: str | Path, version: str) -> dict[str, Any]:
    """A version's manifest (not verified against its files: see `verify_version`)."""
    path = versions_dir(store) / version / "manifest.json"
    if not path.exists():
        raise StoreError(f"{versions_dir(store)}: no version {version!r} (have: {', '.join(list_versions(store))})")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"{path}: unreadable ({exc}); version {version} is corrupt and is refused") from None
    if not isinstance(manifest, dict) or not {"version", "sha256", "rows", "space"} <= set(manifest):
        raise StoreError(f"{path}: not a version manifest; version {version} is corrupt and is refused")
    return manifest


def verify_version(store: str | Path, version: str) -> dict[str, Any]:
    """Check every file of `version` against the sha256 in its manifest; returns the manifest."""
    manifest = read_manifest(store, version)
    directory = versions_dir(store) / version
    for name, expected in manifest["sha256"].items():
        path = directory / name
        if not path.exists():
            raise StoreError(f"{path}: missing; version {version} is incomplete and is refused")
        actual = file_sha256(path)
        if actual != expected:
            raise StoreError(
                f"{path}: sha256 {actual[:12]}... does not match the manifest's {expected[:12]}...; "
                f"version {version} is corrupt and is refused"
            )
    return manifest


def load_version(store: str | Path, version: str | None = None, verify: bool = True) -> EmbeddingSet:
    """Read a version (default: LATEST) after verifying its checksums."""
    version = version or require_latest(store)
    manifest = verify_version(store, version) if verify else read_manifest(store, version)
    directory = versions_dir(store) / version
    ids, vectors = {}, {}
    for entity in manifest["rows"]:
        ids[entity], vectors[entity] = _read_vectors(directory / f"{entity}.parquet", entity)
    return EmbeddingSet(ids, vectors, datetime.fromisoformat(manifest["cutoff"]), {"manifest": manifest})


def load_inductive(store: str | Path, version: str | None = None):
    """The version's `graphrec.embed.fresh.InductiveUsers` (what the API needs to embed a user with fresh events),
    or None for a version published without one."""
    version = version or require_latest(store)
    manifest = read_manifest(store, version)
    path = versions_dir(store) / version / INDUCTIVE_FILE
    if not manifest.get("inductive") or not path.exists():
        return None
    from safetensors.numpy import load_file

    from graphrec.embed.fresh import InductiveUsers

    return InductiveUsers(**load_file(str(path)), **manifest["inductive"])


def check_compatible(store: str | Path, consumer_version: str, version: str | None = None) -> dict[str, Any]:
    """Raise unless `version` (default LATEST) shares the embedding space of `consumer_version`, the version a
    consumer (the ranker, the API) was trained on; returns the version's manifest."""
    version = version or require_latest(store)
    manifest = read_manifest(store, version)
    consumer = read_manifest(store, consumer_version) if (versions_dir(store) / consumer_version).exists() else None
    consumer_space = consumer["space"] if consumer else consumer_version
    if manifest["space"] != consumer_space:
        raise IncompatibleEmbeddingsError(
            f"embedding version {version} is in space {manifest['space']}, but the consumer was trained on "
            f"{consumer_version} (space {consumer_space}); retrain the consumer or roll the store back"
        )
    return manifest


def stage_version(
    store: str | Path,
    embeddings: EmbeddingSet,
    config: ExportConfig,
    info: dict[str, Any],
    compact: str | None = None,
) -> dict:
    """Write a new complete version beside LATEST (not yet live) and return its manifest. Call under `store_lock`.

    The new vectors are aligned to the live version first (see `align_to`); `info` goes into the manifest
    (model config, data fingerprint, metrics, ...); `compact` (float16 / int8) adds `embedding_<dtype>` copies.
    """
    for stale in versions_dir(store).glob(".v*.tmp-*"):  # a killed writer's staging (numbers are not reused)
        shutil.rmtree(stale, ignore_errors=True)
    version = _next_version(store)
    live = latest_version(store)
    drift: dict[str, Any] = {"previous_version": None, "compatible": None, "reason": "first version"}
    space = version
    previous, corrupt = _newest_intact(store, live)
    if previous is not None:
        from graphrec.store.alignment import align_to  # scipy and torch: only a writer needs them

        embeddings, drift = align_to(previous, embeddings, config)
        if drift["compatible"]:
            space = previous.info["manifest"]["space"]
    if corrupt:
        drift["skipped_corrupt"] = corrupt
    fault_point("before_stage")
    created = datetime.now(UTC).replace(microsecond=0)
    with atomic_directory(versions_dir(store) / version) as staging:
        sha = {}
        for entity in ENTITIES:
            if entity not in embeddings.ids:
                continue
            table = _embedding_table(
                entity,
                embeddings.ids[entity],
                embeddings.vectors[entity],
                embeddings.cutoff,
                created,
                version,
                compact,
            )
            pq.write_table(table, staging / f"{entity}.parquet", compression="zstd")
            sha[f"{entity}.parquet"] = file_sha256(staging / f"{entity}.parquet")
            fault_point(f"staged_{entity}")
        inductive = None
        if embeddings.inductive is not None:
            from safetensors.numpy import save_file

            save_file(embeddings.inductive.arrays(), str(staging / INDUCTIVE_FILE))
            sha[INDUCTIVE_FILE] = file_sha256(staging / INDUCTIVE_FILE)
            inductive = embeddings.inductive.meta()
        manifest = {
            "kind": "embedding_version",
            "format": STORE_FORMAT,
            "version": version,
            "space": space,
            "created_at": created.isoformat(),
            "online_dtype": compact or "float32",
            "cutoff": embeddings.cutoff.isoformat(),
            "dim": embeddings.dim,
            "rows": embeddings.rows(),
            "id_dtypes": {e: str(embeddings.ids[e].dtype) for e in embeddings.ids},
            "drift": drift,
            "inductive": inductive,
            **info,
            "code_version": code_version(),
            "sha256": sha,
        }
        write_json_atomic(staging / "manifest.json", manifest)
        fault_point("before_rename")
    fault_point("after_rename")
    log.debug(
        "staged embedding version %s (%s rows, dim %d, space %s)",
        version,
        ", ".join(f"{e} {n:,}" for e, n in embeddings.rows().items()),
        embeddings.dim,
        space,
    )
    return manifest


def _newest_intact(store: str | Path, live: str | None) -> tuple[EmbeddingSet | None, dict[str, str]]:
    """The version a new one is aligned to: LATEST, or where it is corrupt the newest intact published version
    before it (a corrupt live version must not block every later export); with the corrupt ones and why."""
    if live is None:
        return None, {}
    published = published_versions(store)
    candidates = [
        v
        for v in reversed(list_versions(store))
        if int(v[1:]) <= int(live[1:]) and (published is None or v in published or v == live)
    ]
    corrupt: dict[str, str] = {}
    for version in candidates:
        try:
            previous = load_version(store, version)
        except StoreError as exc:
            corrupt[version] = str(exc)
            log.warning("%s; aligning the new version to an older intact one", exc)
            continue
        previous.info["version"] = version
        if corrupt:
            log.warning("aligned to %s, the newest intact published version (corrupt: %s)", version, ", ".join(corrupt))
        return previous, corrupt
    return None, corrupt


def apply_retention(store: str | Path, keep: int) -> list[str]:
    """Delete orphans, then the oldest published versions beyond `keep` (never the LATEST one); returns the
    deleted names. Orphans go first: they never count among the versions kept for rollback."""
    live = latest_version(store)
    orphans = orphan_versions(store)
    versions = [v for v in list_versions(store) if v not in orphans]
    doomed = orphans + [v for v in versions[: max(len(versions) - keep, 0)] if v != live]
    for version in doomed:
        # Rename first so a kill mid-delete never leaves a half-deleted directory that looks like a version.
        trash = versions_dir(store) / f".{version}.deleted-{uuid.uuid4().hex[:8]}"
        os.rename(versions_dir(store) / version, trash)
        shutil.rmtree(trash, ignore_errors=True)
    for stale in versions_dir(store).glob(".*.deleted-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return doomed


def previous_version(store: str | Path, version: str | None = None) -> str | None:
    """The published version before `version` (default LATEST) among those kept (orphans are never a target)."""
    version = version or latest_version(store)
    orphans = orphan_versions(store)
    older = [v for v in list_versions(store) if v not in orphans and (version is None or int(v[1:]) < int(version[1:]))]
    return older[-1] if older else None


def version_health(store: str | Path, version: str, orphans: list[str] | None = None) -> str:
    """`ok`, `orphan` (never went live) or `corrupt: <why>` (checksums verified)."""
    try:
        verify_version(store, version)
    except StoreError as exc:
        return f"corrupt: {exc}"
    return "orphan" if version in (orphan_versions(store) if orphans is None else orphans) else "ok"


def describe(store: str | Path, verify: bool = True) -> list[dict[str, Any]]:
    """One line per kept version: name, whether it is LATEST, its health (`ok`, `orphan`, `corrupt: ...`; with
    `verify` every checksum is read), created, cutoff, rows, space and drift. A corrupt manifest is a line too."""
    live = latest_version(store)
    orphans = orphan_versions(store)
    lines = []
    for version in list_versions(store):
        line: dict[str, Any] = {"version": version, "latest": version == live}
        try:
            manifest = read_manifest(store, version)
        except StoreError as exc:
            lines.append(line | {"health": f"corrupt: {exc}"})
            continue
        health = version_health(store, version, orphans) if verify else ("orphan" if version in orphans else "ok")
        lines.append(
            line
            | {
                "health": health,
                "created_at": manifest.get("created_at"),
                "cutoff": manifest.get("cutoff"),
                "rows": manifest["rows"],
                "space": manifest["space"],
                "mean_cosine": manifest.get("drift", {}).get("mean_cosine"),
            }
        )
    return lines
