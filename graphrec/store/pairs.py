"""(embedding version, ranker) pairs: a ranker published with the embedding version it serves beside.

A pair's ranker lives at `<store>/rankers/<version>/` (a ranker artifact, see `graphrec.rank.artifact`). It is copied
there before the version's `LATEST` swap, under the store lock, so the one atomic rename that makes the version live
publishes the pair: a reader that follows `LATEST` finds the ranker that was trained for it, or (for a version
published without one) none. A rollback to a version brings its ranker back with it; retention deletes a version's
ranker with the version.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from graphrec.artifacts import atomic_directory, utc_now_iso, write_json_atomic
from graphrec.store.versions import StoreError, latest_version

RANKERS_DIR = "rankers"


def rankers_dir(store: str | Path) -> Path:
    """The directory of a store's paired rankers."""
    return Path(store) / RANKERS_DIR


PAIR_FILE = "pair.json"


def stage_ranker(store: str | Path, version: str, source: str | Path, info: dict[str, Any] | None = None) -> Path:
    """Copy the ranker artifact at `source` to `<store>/rankers/<version>` (atomically), with `info` (what the pair
    was gated on, the run that made it) as its `pair.json`; call under the store lock, before `version` goes live."""
    source = Path(source)
    if not (source / "ranker.json").exists():
        raise StoreError(f"{source}: not a ranker artifact (no ranker.json); nothing to pair with {version}")
    target = rankers_dir(store) / version
    with atomic_directory(target) as staging:
        for path in sorted(source.iterdir()):
            if path.is_file() and path.name != PAIR_FILE:
                shutil.copyfile(path, staging / path.name)
        write_json_atomic(staging / PAIR_FILE, {"version": version, "published_at": utc_now_iso(), **(info or {})})
    return target


def pair_info(store: str | Path, version: str | None = None) -> dict[str, Any] | None:
    """The `pair.json` of `version`'s ranker (default: LATEST's), or None where it has no paired ranker."""
    path = paired_ranker(store, version)
    if path is None or not (path / PAIR_FILE).exists():
        return None
    return json.loads((path / PAIR_FILE).read_text())


def paired_ranker(store: str | Path, version: str | None = None) -> Path | None:
    """The ranker published with `version` (default: LATEST), or None where it was published without one."""
    version = version or latest_version(store)
    if version is None:
        return None
    path = rankers_dir(store) / version
    return path if (path / "ranker.json").exists() else None


def require_paired_ranker(store: str | Path) -> tuple[str, Path]:
    """(LATEST, its ranker), or a one-line StoreError saying what is missing."""
    version = latest_version(store)
    if version is None:
        raise StoreError(f"{store}: no live embedding version; publish a pair with `graphrec run`")
    path = paired_ranker(store, version)
    if path is None:
        raise StoreError(
            f"{store}: the live version {version} was published without a ranker; publish a pair with `graphrec run` "
            "(or serve a ranker directory with --serve.ranker)"
        )
    return version, path


def retire_rankers(store: str | Path, versions: list[str]) -> None:
    """Delete the rankers of `versions` (retired by retention), of versions the store no longer holds (a kill
    between retention and this call) and leftovers of killed copies."""
    from graphrec.store.versions import list_versions

    root = rankers_dir(store)
    if not root.is_dir():
        return
    kept = set(list_versions(store))
    versions = set(versions) | {p.name for p in root.iterdir() if not p.name.startswith(".") and p.name not in kept}
    for stale in root.glob(".*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for version in sorted(versions):
        path = root / version
        if path.exists():
            trash = root / f".{version}.deleted-{uuid.uuid4().hex[:8]}"
            os.rename(path, trash)
            shutil.rmtree(trash, ignore_errors=True)
    for stale in root.glob(".*.deleted-*"):
        shutil.rmtree(stale, ignore_errors=True)
