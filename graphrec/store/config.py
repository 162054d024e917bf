"""Settings of the store stage: how embedding versions are published and where they are served from.

Plain dataclasses with no heavy imports, so the command line can show them without loading Feast.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphrec.errors import check_settings, positive


@dataclass
class ExportConfig:
    """How versions are published.

    Args:
        keep: versions kept in `embeddings/` (older ones are deleted after a publish; LATEST is never deleted).
        history_keep: versions kept in the feature store's offline history (the point-in-time record the ranker
            trains on); None keeps every version ever published.
        align: rotate each new version onto the live one (orthogonal Procrustes on shared entities).
        min_cosine: mean cosine of shared entities after alignment at or above which the new version shares the
            previous version's space (a consumer may keep using both); below it the version opens a new space.
        neighbours: k of the top-k neighbour overlap reported in the drift section.
        stability_sample: query entities per type for the neighbour overlap (cosine uses all shared ones).
        stability_pool: shared entities per type sampled as the neighbour candidates of those queries.
        seed: seed of that sample.
    """

    keep: int = 5
    history_keep: int | None = None
    align: bool = True
    min_cosine: float = 0.5
    neighbours: int = 20
    stability_sample: int = 1000
    stability_pool: int = 20000
    seed: int = 0

    def __post_init__(self) -> None:
        check_settings(
            "export.versions",
            self,
            {
                "keep": (positive, "at least 1"),
                "history_keep": (lambda v: v is None or v >= 1, "null or at least 1"),
                "min_cosine": (lambda v: -1 <= v <= 1, "between -1 and 1"),
                "neighbours": (positive, "a positive integer"),
                "stability_sample": (positive, "a positive integer"),
                "stability_pool": (positive, "a positive integer"),
            },
        )


ONLINE_DTYPES = ("float32", "float16", "int8")


@dataclass
class FeatureStoreConfig:
    """Where and how embeddings are served.

    Args:
        enabled: keep a Feast repo over the embedding store and write the live version to its online store.
        online_store: sqlite (embedded, `<store>/feast/online.db`) or redis.
        redis: Redis connection string in Feast's format, `host:port[,db=0,password=...,ssl=true]`.
        project: the Feast project name (Redis keys are namespaced by it).
        online_dtype: float32 (exact), float16 or int8 (per-vector scale) online vectors.
        online_write: how an export fills the online store: `push` (default: `write_to_online_store` with the
            version's rows as exported) or `materialize` (Feast's materialize over the new version's cutoff, read
            back from the offline history through dask): the same rows bit for bit, push about 3.5x faster
            (benchmarks/results/export.md; the main job at 1M events 125 s against 181 s, pipeline-1m.md).
        ttl_days: how long Feast treats a version as valid after its cutoff in historical joins.
    """

    enabled: bool = True
    online_store: str = "sqlite"
    redis: str = "localhost:6379"
    project: str = "graphrec"
    online_dtype: str = "float32"
    online_write: str = "push"
    ttl_days: int = 3650

    def __post_init__(self) -> None:
        check_settings(
            "export.feature_store",
            self,
            {
                "online_store": (lambda v: v in ("sqlite", "redis"), "sqlite or redis"),
                "online_write": (lambda v: v in ("materialize", "push"), "materialize or push"),
                "online_dtype": (lambda v: v in ONLINE_DTYPES, f"one of {', '.join(ONLINE_DTYPES)}"),
                "ttl_days": (positive, "a positive number of days"),
            },
        )
