"""Atomic artifact directories, input fingerprints and code versions recorded in every manifest."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from graphrec import __version__


def file_sha256(path: str | Path, chunk_size: int = 1 << 22) -> str:
    """Return the hex sha256 of a file's bytes (a directory hashes its files in name order)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        with open(file, "rb") as handle:
            while block := handle.read(chunk_size):
                digest.update(block)
    return digest.hexdigest()


def fingerprint_inputs(paths: dict[str, str | Path | None]) -> dict[str, dict[str, Any]]:
    """Describe each named input file by path, size and sha256, so an artifact says what made it."""
    fingerprint = {}
    for name, path in paths.items():
        if path is None:
            continue
        path = Path(path)
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
        fingerprint[name] = {"path": str(path), "bytes": size, "sha256": file_sha256(path)}
    return fingerprint


def code_version() -> dict[str, Any]:
    """Return graphrec's package version and, inside a git checkout, the commit and whether it is dirty."""
    version: dict[str, Any] = {"graphrec": __version__}
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        version["git_commit"] = commit
        version["git_dirty"] = bool(dirty)
    except (OSError, subprocess.SubprocessError):
        pass
    return version


def utc_now_iso() -> str:
    """Return the current UTC time as an ISO-8601 string with seconds precision."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _fsync_tree(path: Path) -> None:
    for file in path.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
    for directory in [path, *[p for p in path.rglob("*") if p.is_dir()]]:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield a staging directory that replaces `target` only when the block completes.

    Files are written beside the target, fsynced, and renamed into place, so a reader never sees a half-written
    artifact: after a kill the target is still the previous complete version (or, in the instant between the two
    renames, absent). A staging directory (`.<name>.tmp-*`) left by a kill is removed by the next write; an
    exception removes it at once.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    retired_before = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if retired_before and not target.exists():  # a kill between the two renames: the previous version comes back
        os.rename(retired_before.pop(), target)
    for stale in retired_before:
        shutil.rmtree(stale, ignore_errors=True)
    staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    retired = None
    try:
        yield staging
        _fsync_tree(staging)
        if target.exists():
            retired = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(target, retired)
        os.rename(staging, target)
        retired_done, retired = retired, None  # from here the new version is in place
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if retired_done is not None:
            shutil.rmtree(retired_done, ignore_errors=True)
    except BaseException:
        # Interrupted between the two renames (a signal): put the previous version back before cleaning up.
        if retired is not None and retired.exists() and not target.exists():
            os.rename(retired, target)
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_json_atomic(path: str | Path, payload: dict[str, Any]) -> None:
    """Write a JSON document through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=False, default=str)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
