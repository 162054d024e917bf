"""Feast as graphrec's feature store: a feature repo over the versioned embedding store, kept by graphrec.

Under `<store>/feast/` graphrec writes `feature_store.yaml` (so the `feast` CLI works there too), the registry,
the SQLite online store (`online.db`, the embedded default) and `data/<entity>/<version>.parquet`: hard links to
each published version's files, the offline history that Feast's point-in-time joins read. Each entity type
(`user`, `item`, `content`) has a feature view `<entity>_embedding` with the fields `embedding`
(`Array(Float32)`) and `model_version` (`String`); its event timestamp is the snapshot cutoff, so a historical
join gives each timestamp the newest version whose data ended before it (leak-free). With `online_dtype`
float16 or int8 the online copy is compact: a view `<entity>_embedding_compact` holds `embedding_<dtype>`
(`Bytes`) online and the float32 view stays offline.

Redis is one setting away: `online_store: redis` and `redis: host:port[,db=0,password=...]` (Feast's connection
string). graphrec is the only writer (under the store lock), so Redis writes skip Feast's read-before-write
timestamp check (`skip_dedup`), which also lets a rollback write an older version over a newer one.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from graphrec.embed.vectors import ENTITIES, ID_COLUMN
from graphrec.errors import GraphrecError
from graphrec.store.codecs import encode_compact
from graphrec.store.config import FeatureStoreConfig
from graphrec.store.versions import (
    StoreError,
    fault_point,
    load_version,
    orphan_versions,
    read_manifest,
    versions_dir,
)

log = logging.getLogger("graphrec.store.feast_repo")

ENTITY_KEY_SERIALIZATION_VERSION = 3


class FeatureStoreError(GraphrecError):
    """The feature store cannot be written or read (online store unreachable, repo inconsistent)."""


def repo_dir(store: str | Path) -> Path:
    """The Feast repo graphrec keeps inside an embedding store."""
    return Path(store) / "feast"


def compact_column(dtype: str) -> str:
    """The online field holding compact vectors of `dtype` (float16 / int8)."""
    return f"embedding_{dtype}"


def _repo_config(store: str | Path, config: FeatureStoreConfig) -> dict[str, Any]:
    root = repo_dir(store).resolve()
    online: dict[str, Any] = {"type": "sqlite", "path": str(root / "online.db")}
    if config.online_store == "redis":
        online = {"type": "redis", "connection_string": config.redis, "skip_dedup": True}
    return {
        "project": config.project,
        "provider": "local",
        "registry": {"registry_type": "file", "path": str(root / "registry.db"), "cache_ttl_seconds": 60},
        "online_store": online,
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": ENTITY_KEY_SERIALIZATION_VERSION,
    }


def _repair_registry(root: Path) -> None:
    """Feast's file registry is rewritten in place, so a kill mid-apply can leave it truncated. It holds nothing
    but graphrec's own definitions, re-applied on every export, so an unreadable one is moved aside."""
    from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto
    from google.protobuf.message import DecodeError

    path = root / "registry.db"
    if not path.exists():
        return
    try:
        RegistryProto().ParseFromString(path.read_bytes())
    except DecodeError:
        aside = root / f"registry.db.corrupt-{int(time.time())}"
        os.replace(path, aside)
        log.warning("Feast registry %s was unreadable (an interrupted apply); moved to %s, re-applying", path, aside)


def open_store(store: str | Path, config: FeatureStoreConfig):
    """A Feast `FeatureStore` over `<store>/feast` (writes `feature_store.yaml` there for the feast CLI)."""
    import logging as _logging

    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    _logging.getLogger("feast").setLevel(_logging.WARNING)
    root = repo_dir(store)
    root.mkdir(parents=True, exist_ok=True)
    _repair_registry(root)
    settings = _repo_config(store, config)
    text = yaml.safe_dump(settings, sort_keys=False)
    target = root / "feature_store.yaml"
    if not target.exists() or target.read_text() != text:
        tmp = root / ".feature_store.yaml.tmp"
        tmp.write_text(text)
        os.replace(tmp, target)
    return FeatureStore(config=RepoConfig(repo_path=str(root), **settings))


def _definitions(store: str | Path, config: FeatureStoreConfig, id_dtypes: dict[str, str]) -> list:
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Array, Bytes, Float32, String

    objects: list = []
    compact = config.online_dtype != "float32"
    for entity in ENTITIES:
        if entity not in id_dtypes:
            continue
        integer = id_dtypes[entity].startswith(("Int", "UInt"))
        value_type = ValueType.INT64 if integer else ValueType.STRING
        feast_entity = Entity(name=entity, join_keys=[ID_COLUMN[entity]], value_type=value_type)
        source = FileSource(
            name=f"{entity}_embedding_history",
            path=str((repo_dir(store) / "data" / entity).resolve()),
            timestamp_field="event_timestamp",
            created_timestamp_column="created_timestamp",
        )
        ttl = timedelta(days=config.ttl_days)
        view = FeatureView(
            name=f"{entity}_embedding",
            entities=[feast_entity],
            schema=[Field(name="embedding", dtype=Array(Float32)), Field(name="model_version", dtype=String)],
            source=source,
            ttl=ttl,
            online=not compact,
            tags={"owner": "graphrec"},
        )
        objects += [feast_entity, view]
        if compact:
            objects.append(
                FeatureView(
                    name=f"{entity}_embedding_compact",
                    entities=[feast_entity],
                    schema=[
                        Field(name=compact_column(config.online_dtype), dtype=Bytes),
                        Field(name="model_version", dtype=String),
                    ],
                    source=source,
                    ttl=ttl,
                    online=True,
                    tags={"owner": "graphrec", "dtype": config.online_dtype},
                )
            )
    return objects


def link_history(store: str | Path, version: str) -> None:
    """Add a version's files to the offline history (hard links: no copy, and they outlive retention)."""
    manifest = read_manifest(store, version)
    for entity in manifest["rows"]:
        target_dir = repo_dir(store) / "data" / entity
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / f"{version}.parquet"
        if target.exists():
            continue
        tmp = target_dir / f".{version}.parquet.tmp"
        tmp.unlink(missing_ok=True)
        source = versions_dir(store) / version / f"{entity}.parquet"
        try:
            os.link(source, tmp)
        except OSError:  # a filesystem without hard links: copy
            import shutil

            shutil.copyfile(source, tmp)
        os.replace(tmp, target)


def prune_history(store: str | Path, keep: int | None) -> list[str]:
    """Drop the offline history of all but the newest `keep` versions (None keeps all); returns those dropped.
    Point-in-time joins for times before the oldest kept version then find no embedding."""
    if keep is None:
        return []
    files = list((repo_dir(store) / "data").glob("*/v*.parquet"))
    versions = sorted({f.stem for f in files}, key=lambda v: int(v[1:]))
    dropped = versions[: max(len(versions) - keep, 0)]
    for file in files:
        if file.stem in dropped:
            file.unlink()
    return dropped


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@contextlib.contextmanager
def _feast_output_to_log() -> Iterator[None]:
    """Feast prints materialisation progress to stdout in ANSI colours; a library must not write to stdout
    (it is the ranking API's and the CLI's), so the text goes to this module's debug log, colours removed."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:  # also when materialize raises: what Feast printed helps explain why
        text = _ANSI.sub("", buffer.getvalue()).strip()
        if text:
            log.debug("feast: %s", " ".join(text.split()))


def _versions_with_cutoff(store: str | Path, cutoff: str) -> list[str]:
    history = sorted({p.stem for p in (repo_dir(store) / "data").glob("*/v*.parquet")})
    found = []
    for version in history:
        try:
            if read_manifest(store, version)["cutoff"] == cutoff:
                found.append(version)
        except StoreError:
            continue  # retired from embeddings/, still in the history
    return found


def _online_error(config: FeatureStoreConfig, exc: Exception, version: str) -> FeatureStoreError:
    where = f"redis at {config.redis}" if config.online_store == "redis" else "the SQLite online store"
    return FeatureStoreError(
        f"writing version {version} to {where} failed ({type(exc).__name__}: {exc}); the embedding store and its "
        f"LATEST are unchanged; fix the online store and rerun the export (or `graphrec export sync`)"
    )


def publish_online(store: str | Path, config: FeatureStoreConfig, version: str, exact: bool = False) -> dict[str, Any]:
    """Register `version` with Feast (apply) and write it to the online store; returns timings and row counts.

    By default Feast's `materialize` runs over the window [cutoff, cutoff + 1 s), which holds only this
    version's rows unless another version has the same cutoff. With `exact` (rollbacks), such a collision, or
    `online_write: push`, the version's rows are pushed with `write_to_online_store` instead, so the online store
    holds exactly them.
    """
    manifest = read_manifest(store, version)
    link_history(store, version)
    feast_store = open_store(store, config)
    objects = _definitions(store, config, manifest["id_dtypes"])
    started = time.perf_counter()
    cutoff = datetime.fromisoformat(manifest["cutoff"])
    online_views = [v.name for v in objects if hasattr(v, "online") and getattr(v, "online", False)]
    try:
        feast_store.apply(objects)
        collision = len(_versions_with_cutoff(store, manifest["cutoff"])) > 1
        if exact or collision or config.online_write == "push":
            # Callers have verified the version (export just wrote it; rollback and sync verify first).
            loaded = load_version(store, version, verify=False)
            for entity in manifest["rows"]:
                frame = _online_frame(entity, loaded.ids[entity], loaded.vectors[entity], manifest, config)
                name = f"{entity}_embedding" + ("_compact" if config.online_dtype != "float32" else "")
                feast_store.write_to_online_store(name, frame.to_pandas())
            method = "write_to_online_store"
        else:
            with _feast_output_to_log():
                feast_store.materialize(cutoff, cutoff + timedelta(seconds=1), feature_views=online_views)
            method = "materialize"
    except (ConnectionError, OSError) as exc:
        raise _online_error(config, exc, version) from exc
    except Exception as exc:
        if type(exc).__module__.startswith("redis"):
            raise _online_error(config, exc, version) from exc
        raise
    fault_point("online_written")
    seconds = time.perf_counter() - started
    rows = sum(manifest["rows"].values())
    log.debug(
        "online store (%s) holds version %s: %s rows via %s in %.1fs",
        config.online_store,
        version,
        f"{rows:,}",
        method,
        seconds,
    )
    return {"online_store": config.online_store, "method": method, "rows": rows, "seconds": round(seconds, 3)}


def _online_frame(entity: str, ids: pl.Series, vectors: np.ndarray, manifest: dict, config: FeatureStoreConfig):
    created = datetime.fromisoformat(manifest["created_at"])
    cutoff = datetime.fromisoformat(manifest["cutoff"])
    columns: dict[str, Any] = {ID_COLUMN[entity]: ids}
    if config.online_dtype == "float32":
        columns["embedding"] = pl.Series([row for row in vectors], dtype=pl.List(pl.Float32))
    else:
        columns[compact_column(config.online_dtype)] = pl.Series(encode_compact(vectors, config.online_dtype))
    columns["model_version"] = [manifest["version"]] * len(ids)
    frame = pl.DataFrame(columns)
    return frame.with_columns(
        event_timestamp=pl.lit(cutoff).dt.convert_time_zone("UTC"),
        created_timestamp=pl.lit(created).dt.convert_time_zone("UTC"),
    )


def _newest_version_before(requests: pl.DataFrame, history: pl.DataFrame, column: str) -> pl.DataFrame:
    """Each request (sorted by `event_timestamp`) with the history row (sorted by `version_time`) of its id that
    is the newest at or before it; nulls where there is none."""
    return requests.join_asof(
        history, left_on="event_timestamp", right_on="version_time", by=column, strategy="backward",
        check_sortedness=False,  # the callers sort both sides by time
    )  # fmt: skip


def historical_vectors(
    store: str | Path, config: FeatureStoreConfig, entity: str, requests: pl.DataFrame
) -> tuple[pl.DataFrame, np.ndarray]:
    """The point-in-time join of `historical_embeddings`, answered from the offline history's files and returned
    compactly: for each (id, event_timestamp) row of `requests`, `vector_row` (Int32; 0 where no version answers)
    into one table of the history's vectors (row 0 all zeros) and `model_version`; and that table.

    The same join as Feast's file offline store: the entity's newest history row with event_timestamp <= the
    request's and within the TTL, ties going to the newest created_timestamp; rows of a version that never went
    live answer nulls. It is done here with polars' `join_asof` because Feast's file store answers through pandas
    rows holding a vector object each: 34 s and about 1 GB for the 1.8M impressions of a 1M-event shop, growing
    with the log, where this takes a second and 4 bytes a row. `historical_embeddings` stays Feast's own answer;
    the tests hold the two equal."""
    column = ID_COLUMN[entity]
    files = sorted((repo_dir(store) / "data" / entity).glob("v*.parquet"))
    request_rows = requests.select(column, "event_timestamp").with_row_index("request_row")
    empty = request_rows.select(
        pl.lit(0, pl.Int32).alias("vector_row"), pl.lit(None, pl.String).cast(pl.Categorical).alias("model_version")
    )
    if not files:
        return empty, np.zeros((1, 0), dtype=np.float32)
    history = pl.concat(
        [
            pl.read_parquet(f, columns=[column, "event_timestamp", "created_timestamp", "model_version", "embedding"])
            for f in files
        ],
        how="vertical_relaxed",
    ).sort("event_timestamp", "created_timestamp", maintain_order=True)
    vectors = history["embedding"]
    if not isinstance(vectors.dtype, pl.Array):  # a history file written as lists
        vectors = vectors.cast(pl.List(pl.Float32)).list.to_array(len(vectors[0]))
    dim = vectors.dtype.size
    table = np.concatenate([np.zeros((1, dim), np.float32), vectors.cast(pl.Array(pl.Float32, dim)).to_numpy()])
    history = history.select(
        pl.col(column),
        pl.col("event_timestamp").cast(requests.schema["event_timestamp"]).alias("version_time"),
        # Categorical: the answer holds a handful of versions over every request (4 bytes each, not a string).
        pl.col("model_version").cast(pl.Categorical),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int32).alias("vector_row"),
        ~pl.col("model_version").is_in(orphan_versions(store)).alias("went_live"),
    )
    if history.schema[column] != requests.schema[column]:
        raise FeatureStoreError(
            f"{entity} ids are {requests.schema[column]} in the requests but {history.schema[column]} in the "
            "embedding history"
        )
    if not request_rows["event_timestamp"].is_sorted():  # a ranker's impressions are in time order already
        request_rows = request_rows.sort("event_timestamp", maintain_order=True)
    found = _newest_version_before(request_rows, history, column)
    answered = (
        pl.col("version_time").is_not_null()
        & (pl.col("event_timestamp") - pl.col("version_time") <= timedelta(days=config.ttl_days))
        & pl.col("went_live")
    )
    # The two answer columns alone are put back in request order (sorting every joined column copied the ids).
    found = found.select(
        "request_row",
        pl.when(answered).then(pl.col("vector_row")).otherwise(0).cast(pl.Int32).alias("vector_row"),
        pl.when(answered).then(pl.col("model_version")).alias("model_version"),
    )
    if not found["request_row"].is_sorted():
        found = found.sort("request_row")
    return found.drop("request_row"), table


def _answerable(store: str | Path, entity: str, column: str, pairs: pl.DataFrame, ttl: timedelta) -> pl.DataFrame:
    """The (id, event_timestamp) pairs the offline history holds a row for: a version with that id whose
    timestamp is at or before the pair's and within the TTL. Only these are sent to Feast: its file store's
    point-in-time join sorts on the joined rows' `created_timestamp`, and where a dask partition holds only
    unanswered pairs (nulls there) the sort fails (NotImplementedError: divisions of a non-numeric column). The
    others are answered with nulls, as Feast would."""
    files = sorted((repo_dir(store) / "data" / entity).glob("v*.parquet"))
    if not files or pairs.height == 0:
        return pairs.head(0)
    history = (
        pl.concat([pl.scan_parquet(f).select(column, "event_timestamp") for f in files])
        .unique()
        .collect()
        .rename({"event_timestamp": "version_time"})
    )
    if history.schema[column] != pairs.schema[column]:
        return pairs  # ids typed differently: let Feast decide (it reports the mismatch)
    times = pairs.schema["event_timestamp"]
    history = history.with_columns(pl.col("version_time").cast(times)).sort("version_time")
    found = _newest_version_before(pairs.sort("event_timestamp"), history, column)
    keep = pl.col("version_time").is_not_null() & (pl.col("event_timestamp") - pl.col("version_time") <= ttl)
    return found.filter(keep).drop("version_time").sort("pair_row")


def historical_embeddings(
    store: str | Path, config: FeatureStoreConfig, entity: str, requests: pl.DataFrame
) -> pl.DataFrame:
    """Point-in-time join through Feast: for each (id, event_timestamp) row of `requests`, the embedding and
    model_version of the newest version with cutoff <= event_timestamp. Rows before every version get nulls
    (Feast's file store drops them; they are put back here so every request row is answered)."""
    column = ID_COLUMN[entity]
    feast_store = open_store(store, config)
    # Feast answers one row per (id, timestamp): a request's impressions share both, so ask for each pair once.
    pairs = requests.select(column, "event_timestamp").unique(maintain_order=True).with_row_index("pair_row")
    asked = _answerable(store, entity, column, pairs, timedelta(days=config.ttl_days))
    if asked.height:
        result = feast_store.get_historical_features(
            entity_df=asked.to_pandas(),
            features=[f"{entity}_embedding:embedding", f"{entity}_embedding:model_version"],
        ).to_df()
        answered = pl.from_pandas(result[["pair_row", "embedding", "model_version"]])
        answered = answered.with_columns(pl.col("pair_row").cast(pl.UInt32))
    else:
        answered = pl.DataFrame(
            {"pair_row": [], "embedding": [], "model_version": []},
            schema={"pair_row": pl.UInt32, "embedding": pl.List(pl.Float32), "model_version": pl.String},
        )
    answered = (
        requests.select(column, "event_timestamp")
        .with_row_index("request_row")
        .join(pairs, on=[column, "event_timestamp"], how="left", nulls_equal=True)
        .join(answered, on="pair_row", how="inner")
        .select("request_row", "embedding", "model_version")
    )
    # Rows of a version that never went live (an export killed before LATEST moved) are not history: nulls.
    orphans = orphan_versions(store)
    if orphans:
        answered = answered.with_columns(
            [
                pl.when(pl.col("model_version").is_in(orphans)).then(None).otherwise(pl.col(c)).alias(c)
                for c in ("embedding", "model_version")
            ]
        )
    out = requests.with_row_index("request_row").join(answered, on="request_row", how="left")
    return out.sort("request_row").drop("request_row")
