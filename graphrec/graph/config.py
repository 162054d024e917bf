"""Settings of the graph stage: how snapshots are built and how the log is split by time.

Plain dataclasses with no heavy imports, so the command line can show them without loading PyG.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphrec.errors import check_settings, positive


@dataclass
class GraphConfig:
    """How a snapshot is built.

    Args:
        half_life_days: half-life of the time-decayed edge weight.
        catalog_nodes: add catalog items and modules without events as nodes (cold-start candidates).
        components: compute connected components for the manifest (scipy; about a second at 10M events).
    """

    half_life_days: float = 14.0
    catalog_nodes: bool = True
    components: bool = True

    def __post_init__(self) -> None:
        check_settings("graph", self, {"half_life_days": (positive, "positive")})


@dataclass
class SplitConfig:
    """The temporal split: the last `test_days` whole days test, the `val_days` before them validate.

    Args:
        enabled: run the split (and the stages that need it) in `graphrec run`.
        val_days: whole days in the validation window.
        test_days: whole days in the test window (the last days of the log).
    """

    enabled: bool = True
    val_days: int = 7
    test_days: int = 7

    def __post_init__(self) -> None:
        check_settings(
            "split", self, {"val_days": (positive, "a positive integer"), "test_days": (positive, "a positive integer")}
        )
