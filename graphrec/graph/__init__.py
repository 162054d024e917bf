"""The graph stage: leak-free heterogeneous snapshots (PyG `HeteroData`), temporal splits, training tasks and
neighbour sampling."""

from graphrec.exports import lazy_exports

# Public names and the module that defines each, imported on first use.
__getattr__, __all__ = lazy_exports(
    __name__,
    {
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
    },
)
