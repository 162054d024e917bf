"""What makes the main job safe to schedule: exit codes, the run lock, stage records and leftovers.

- **Exit codes** (documented in the README): 0 published or nothing to do, 1 an unexpected failure (a traceback),
  2 bad input or settings (one line), 3 gated (the candidate pair was not published), 75 busy (another run holds
  the workdir or the store: retry later; 75 is sysexits' EX_TEMPFAIL, which schedulers read as "try again").
- **The run lock**: `<dir>/.run.lock`, an exclusive `flock` on the workdir and on the store for the whole run, so two
  runs never overlap; the lock goes with the process, so a killed run never leaves a lock behind.
- **Stage records**: `<workdir>/stages/<stage>.json` holds the key of the inputs a stage's artifact was built from
  (its settings, the keys of the stages it reads, a hash of the code) and what it produced. A stage whose record
  has the same key and whose artifact is there is not run again; any change of input rebuilds it and, through the
  keys, every stage after it. A killed run therefore continues from the last completed stage and never mixes
  artifacts of two generations.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from graphrec.artifacts import file_sha256, utc_now_iso, write_json_atomic
from graphrec.errors import GraphrecError

log = logging.getLogger("graphrec.pipeline")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INPUT_ERROR = 2
EXIT_GATED = 3
EXIT_BUSY = 75
LOCK_FILE = ".run.lock"


class RunBusy(GraphrecError):
    """Another run holds the workdir or the store."""

    exit_code = EXIT_BUSY


class RunGated(GraphrecError):
    """The quality gate kept the candidate pair from being published."""

    exit_code = EXIT_GATED


@contextlib.contextmanager
def run_locks(*directories: str | Path) -> Iterator[None]:
    """Hold the run lock of every directory (in the order given) or raise RunBusy naming the holder."""
    with contextlib.ExitStack() as stack:
        for directory in directories:
            stack.enter_context(_run_lock(Path(directory)))
        yield


@contextlib.contextmanager
def _run_lock(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    handle = open(path, "a+")  # noqa: SIM115 (held for the whole block)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunBusy(f"{directory}: a run is in progress ({holder}); retry later") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {utc_now_iso()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


def source_digest() -> str:
    """A hash of the code the stages run (the `graphrec` and `training` packages' Python files): a change of code
    rebuilds the stages, a commit that changes only docs or tests does not, and it works without git."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for package in ("graphrec", "training"):
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def stage_key(**inputs: Any) -> str:
    """The key of a stage's inputs: a hash of their canonical JSON."""
    text = json.dumps(inputs, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class StageBook:
    """The stage records of a workdir (see the module docstring)."""

    def __init__(self, workdir: str | Path) -> None:
        self.dir = Path(workdir) / "stages"

    def path(self, stage: str) -> Path:
        return self.dir / f"{stage}.json"

    def read(self, stage: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.path(stage).read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def completed(self, stage: str, key: str, *artifacts: str | Path) -> dict[str, Any] | None:
        """The record of `stage` if it was completed with `key` and its `artifacts` exist; else None."""
        record = self.read(stage)
        if record is None or record.get("key") != key:
            return None
        if not all(Path(a).exists() for a in artifacts):
            return None
        return record

    def complete(self, stage: str, key: str, summary: dict[str, Any]) -> dict[str, Any]:
        """Record `stage` as completed with `key` (written after its artifact, atomically)."""
        record = {"stage": stage, "key": key, "completed_at": utc_now_iso(), "summary": summary}
        write_json_atomic(self.path(stage), record)
        return record

    def forget(self, stage: str) -> None:
        self.path(stage).unlink(missing_ok=True)


def clean_leftovers(workdir: str | Path) -> list[str]:
    """Remove what killed runs left in `workdir`: staging (`.*.tmp-*`) and retired (`.*.old-*`) directories and
    files, work directories of killed ranker fits and moved-aside checkpoints (`checkpoints.stale-*`). A retired
    directory whose target is missing (a kill between the two renames of a swap) is put back instead. Returns the
    paths removed or restored."""
    workdir = Path(workdir)
    touched = []
    if not workdir.is_dir():
        return touched
    for path in sorted(workdir.glob(".*.old-*")):
        target = path.parent / path.name[1:].rsplit(".old-", 1)[0]
        if not target.exists():
            os.rename(path, target)
            touched.append(f"restored {target}")
            continue
        _remove(path)
        touched.append(str(path))
    patterns = (".*.tmp-*", ".*.work/checkpoints.stale-*", ".ranker.work")
    for pattern in patterns:
        for path in sorted(workdir.glob(pattern)):
            _remove(path)
            touched.append(str(path))
    for path in sorted((workdir / "stages").glob(".*.tmp*")) if (workdir / "stages").is_dir() else []:
        _remove(path)
        touched.append(str(path))
    if touched:
        log.info("cleaned %d leftovers of killed runs in %s", len(touched), workdir)
    return touched


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def artifact_manifest(root: str | Path, directories: list[str | Path]) -> dict[str, dict[str, Any]]:
    """Every file under `directories` (relative to `root` where inside it) with its size and sha256."""
    root = Path(root)
    files: dict[str, dict[str, Any]] = {}
    for directory in directories:
        directory = Path(directory)
        paths = [directory] if directory.is_file() else sorted(p for p in directory.rglob("*") if p.is_file())
        for path in paths:
            if any(part.startswith(".") for part in path.relative_to(directory.parent).parts):
                continue  # staging, locks and work directories are not artifacts
            try:
                name = str(path.relative_to(root))
            except ValueError:
                name = str(path)
            files[name] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
    return files
