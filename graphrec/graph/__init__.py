"""The graph stage: leak-free heterogeneous snapshots (PyG `HeteroData`), temporal splits, training tasks and
neighbour sampling."""

from __future__ import annotations

import importlib
from typing import Any

# Public names and the module that defines each, imported on first use: importing the package (or its light
# config module) stays cheap, e.g. for the command line's help.
_EXPORTS = {
    "Snapshot": "snapshot",
    "build_snapshot": "snapshot",
    "save_snapshot": "snapshot",
    "load_snapshot": "snapshot",
    "default_cutoff": "snapshot",
    "TemporalSplit": "split",
    "split_by_days": "split",
    "write_split": "split",
    "evaluation_targets": "split",
    "targets_path": "split",
    "split_validated": "split",
    "read_targets": "split",
    "RecTask": "tasks",
    "task_from_snapshot": "tasks",
    "holdout_task": "tasks",
    "window_task": "tasks",
    "NeighbourSampler": "sampling",
    "Subgraph": "sampling",
    "GraphConfig": "config",
    "SplitConfig": "config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
