"""Point-in-time training rows of the ranker: each logged impression with what was knowable at its time.

A row joins the impression to (a) the behaviour features of `graphrec.rank.features` (events and impressions
strictly before it), (b) the user's and the module's embeddings of the version live at its time, through the
feature store's historical retrieval (the newest version whose cutoff is <= the impression: learned only from
events before it; `graphrec backfill` publishes such versions), and (c) its context (hour, weekday, device) and
slot. Users and modules a version lacks get zero vectors and a 0 in `has_user_embedding` / `has_module_embedding`;
`embedding_cutoff` is the cutoff of the version joined to the row (null where none is older than the row), and
`module_launch` the module's launch where the content table has one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from graphrec.data.config import DEVICES
from graphrec.data.validation import read_feedback, read_validated
from graphrec.errors import InputError
from graphrec.rank.features import RankFeatureConfig, behaviour_features, feature_descriptions

KEYS = ("row_id", "request_id", "user_id", "content_id", "slot", "timestamp", "device", "clicked")
EMBEDDING_FLAGS = ("has_user_embedding", "has_module_embedding")


@dataclass
class RankRows:
    """Training rows: `frame` holds keys, label, features and (optionally) the two embeddings as array columns."""

    frame: pl.DataFrame
    feature_names: list[str]
    embedding_dim: int

    def arrays(self, rows: np.ndarray | None = None, embeddings: bool = True, features: list[str] | None = None):
        """Model inputs of the selected rows: dense [n, F], user and module vectors [n, d] (or None), slot,
        device index, clicked, and the request and user keys for per-request and per-user metrics."""
        frame = self.frame if rows is None else self.frame[rows]
        names = features if features is not None else self.feature_names
        dense = frame.select(names).to_numpy().astype(np.float32) if names else np.zeros((frame.height, 0), np.float32)
        user = module = None
        if embeddings and self.embedding_dim:
            user = frame["user_embedding"].to_numpy().astype(np.float32)
            module = frame["module_embedding"].to_numpy().astype(np.float32)
        device = frame["device"].replace_strict({d: i for i, d in enumerate(DEVICES)}, default=0).to_numpy()
        return {
            "dense": dense,
            "user": user,
            "module": module,
            "slot": frame["slot"].to_numpy().astype(np.int64),
            "device": device.astype(np.int64),
            "clicked": frame["clicked"].to_numpy().astype(np.float32),
            "request": frame["request_id"].to_numpy(),
            "user_id": frame["user_id"].to_numpy(),
        }


def read_impressions(validated: str | Path) -> pl.DataFrame:
    """The validated impressions, in time order."""
    path = Path(validated) / "impressions.parquet"
    if not path.exists():
        raise InputError(f"{validated}: no impressions.parquet; the ranker trains on homepage impression logs")
    return pl.read_parquet(path).sort("timestamp", "request_id", "slot")


def impression_rows(
    validated: str | Path,
    store: str | Path | None = None,
    feature_store=None,
    features: RankFeatureConfig | None = None,
) -> RankRows:
    """Training rows for every validated impression; embeddings from `store`'s history where given."""
    features = features or RankFeatureConfig()
    events, items, content, _ = read_validated(validated)
    if content is None:
        raise InputError(f"{validated}: no content.parquet; the ranker needs the content modules' catalog")
    impressions = read_impressions(validated)
    rows = impressions.with_row_index("row_id").with_columns(pl.col("row_id").cast(pl.Int64))
    feedback = read_feedback(validated)
    computed = behaviour_features(rows, events, impressions.lazy(), content, items, features, feedback)
    names = list(feature_descriptions(features))
    frame = rows.select(*KEYS).join(computed.select("row_id", *names), on="row_id", how="left", maintain_order="left")
    if "launch" in content.columns:
        launch = content.select("content_id", pl.col("launch").alias("module_launch"))
        frame = frame.join(launch, on="content_id", how="left", maintain_order="left")
    dim = 0
    if store is not None:
        frame, dim = with_embeddings(frame, store, feature_store)
        names += list(EMBEDDING_FLAGS)
    return RankRows(frame, names, dim)


def with_embeddings(frame: pl.DataFrame, store: str | Path, feature_store) -> tuple[pl.DataFrame, int]:
    """`frame` (rows with `user_id`, `content_id`, `timestamp`) with the point-in-time user and module embeddings
    of `store`, their flags, versions and `embedding_cutoff`; and the embeddings' dimension. Training rows and
    the policy value's candidate rows share it, so both meet the same versions."""
    from graphrec.store.config import FeatureStoreConfig
    from graphrec.store.feast_repo import historical_embeddings

    feature_store = feature_store or FeatureStoreConfig()
    vectors = {}
    for entity, column, name in (("user", "user_id", "user"), ("content", "content_id", "module")):
        requests = frame.select(column, pl.col("timestamp").alias("event_timestamp"))
        answer = historical_embeddings(store, feature_store, entity, requests)
        present = answer["embedding"].is_not_null()
        values = answer["embedding"]
        if values.dtype == pl.Object or isinstance(values.dtype, pl.List):
            values = values.cast(pl.List(pl.Float32))
        vectors[name] = (values, present, answer["model_version"])
    dims = [v.drop_nulls().head(1).to_list() for v, _, _ in vectors.values()]
    dim = next((len(d[0]) for d in dims if d), 0)
    if dim == 0:
        raise InputError(f"{store}: no embedding version is older than any impression; run `graphrec backfill`")
    zero = [0.0] * dim
    columns = []
    for name, (values, present, version) in vectors.items():
        filled = pl.select(pl.when(present).then(values).otherwise(pl.lit(zero))).to_series()
        columns += [
            filled.cast(pl.Array(pl.Float32, dim)).alias(f"{name}_embedding"),
            present.cast(pl.Float32).alias(f"has_{name}_embedding"),
            version.alias(f"{name}_embedding_version"),
        ]
    cutoffs = _version_cutoffs(store)
    live = vectors["user"][2].fill_null(vectors["module"][2])
    columns.append(
        live.replace_strict(cutoffs, default=None, return_dtype=pl.String)
        .str.to_datetime(time_zone="UTC")
        .alias("embedding_cutoff")
    )
    return frame.with_columns(columns), dim


def _version_cutoffs(store: str | Path) -> dict[str, str]:
    """Each version's snapshot cutoff, from its manifest."""
    from graphrec.store.versions import list_versions, read_manifest

    return {version: read_manifest(store, version)["cutoff"] for version in list_versions(store)}
