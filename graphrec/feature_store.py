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
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from graphrec.embedding_store import (
    ENTITIES,
    ID_COLUMN,
    StoreError,
    decode_compact,
    encode_compact,
    fault_point,
    list_versions,
    load_version,
    read_manifest,
    require_latest,
    versions_dir,
)
from graphrec.errors import GraphrecError

log = logging.getLogger("graphrec.feature_store")

ONLINE_DTYPES = ("float32", "float16", "int8")
ENTITY_KEY_SERIALIZATION_VERSION = 3


class FeatureStoreError(GraphrecError):
    """The feature store cannot be written or read (online store unreachable, repo inconsistent)."""


@dataclass
class FeatureStoreConfig:
    """Where and how embeddings are served.

    Args:
        enabled: keep a Feast repo over the embedding store and write the live version to its online store.
        online_store: sqlite (embedded, `<store>/feast/online.db`) or redis.
        redis: Redis connection string in Feast's format, `host:port[,db=0,password=...,ssl=true]`.
        project: the Feast project name (Redis keys are namespaced by it).
        online_dtype: float32 (exact), float16 or int8 (per-vector scale) online vectors.
        online_write: how an export fills the online store: `materialize` (Feast's materialize over the new
            version's cutoff, read back from the offline history) or `push` (`write_to_online_store` with the
            version's rows as exported: about 3.5x faster here, as it skips Feast's dask read of the history).
        ttl_days: how long Feast treats a version as valid after its cutoff in historical joins.
    """

    enabled: bool = True
    online_store: str = "sqlite"
    redis: str = "localhost:6379"
    project: str = "graphrec"
    online_dtype: str = "float32"
    online_write: str = "materialize"
    ttl_days: int = 3650

    def __post_init__(self) -> None:
        if self.online_store not in ("sqlite", "redis"):
            raise ValueError(f"feature_store.online_store must be sqlite or redis, not {self.online_store!r}")
        if self.online_write not in ("materialize", "push"):
            raise ValueError(f"feature_store.online_write must be materialize or push, not {self.online_write!r}")
        if self.online_dtype not in ONLINE_DTYPES:
            raise ValueError(f"feature_store.online_dtype must be one of {ONLINE_DTYPES}, not {self.online_dtype!r}")


def repo_dir(store: str | Path) -> Path:
    return Path(store) / "feast"


def compact_column(dtype: str) -> str:
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
    log.info(
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


def historical_embeddings(
    store: str | Path, config: FeatureStoreConfig, entity: str, requests: pl.DataFrame
) -> pl.DataFrame:
    """Point-in-time join through Feast: for each (id, event_timestamp) row of `requests`, the embedding and
    model_version of the newest version with cutoff <= event_timestamp. Rows before every version get nulls
    (Feast's file store drops them; they are put back here so every request row is answered)."""
    column = ID_COLUMN[entity]
    feast_store = open_store(store, config)
    entity_df = requests.select(column, "event_timestamp").with_row_index("request_row").to_pandas()
    result = feast_store.get_historical_features(
        entity_df=entity_df, features=[f"{entity}_embedding:embedding", f"{entity}_embedding:model_version"]
    ).to_df()
    answered = pl.from_pandas(result[["request_row", "embedding", "model_version"]])
    answered = answered.with_columns(pl.col("request_row").cast(pl.UInt32))
    out = requests.with_row_index("request_row").join(answered, on="request_row", how="left")
    return out.sort("request_row").drop("request_row")


def free_loopback_port() -> int:
    """A TCP port nothing listens on at the moment of the call."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def local_redis_server(workdir: str | Path) -> Iterator[str | None]:
    """A throwaway `redis-server` on a loopback port, without persistence, for trials, tests and benchmarks.
    Yields its `host:port` (Feast's connection string), or None where redis-server is not installed."""
    import shutil
    import subprocess

    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = free_loopback_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen([*command, "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            raise FeatureStoreError(f"redis-server did not answer on 127.0.0.1:{port} within 10 s")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


class OnlineEmbeddings:
    """Reads embeddings from the online store: the path the ranking API uses.

    `backend="feast"` goes through `FeatureStore.get_online_features`; `backend="redis"` reads Feast's Redis layout
    directly (the same keys, built with Feast's own key functions, one pipelined HMGET per request) because Feast's
    client adds milliseconds of per-call overhead that a page-view budget cannot afford.
    Rows whose `model_version` is not `expect_version` (a stale entity left by an older version) read as missing;
    with `expect_space` instead, rows of any kept version in that embedding space are accepted (their vectors are
    aligned to it) and others read as missing. `OnlineEmbeddings.live(...)` expects LATEST's space.
    """

    def __init__(
        self,
        store: str | Path,
        config: FeatureStoreConfig,
        backend: str = "feast",
        expect_version: str | None = None,
        dim: int | None = None,
        expect_space: str | None = None,
    ) -> None:
        self.config = config
        self.backend = backend
        self.expect_version = expect_version
        self.expect_space = expect_space
        self.spaces: dict[str, str] = {}
        if expect_space is not None:
            self.spaces = {v: read_manifest(store, v)["space"] for v in list_versions(store)}
        self.dim = dim
        self.feast = open_store(store, config)
        self.compact = config.online_dtype != "float32"
        self.field = compact_column(config.online_dtype) if self.compact else "embedding"
        self.suffix = "_compact" if self.compact else ""
        self.id_types: dict[str, str] = {}
        if backend == "redis":
            if config.online_store != "redis":
                raise ValueError("backend='redis' needs feature_store.online_store: redis")
            from feast.infra.online_stores.helpers import _mmh3, _redis_key
            from feast.infra.online_stores.redis import RedisOnlineStore
            from feast.protos.feast.types.EntityKey_pb2 import EntityKey
            from feast.protos.feast.types.Value_pb2 import Value

            self._redis_key, self._entity_key, self._value = _redis_key, EntityKey, Value

            # Feast's own client (same connection-string parsing, cluster and sentinel support as its writes).
            self.client = RedisOnlineStore()._get_client(self.feast.config.online_store)
            self.hash_fields = {
                entity: [
                    _mmh3(f"{entity}_embedding{self.suffix}:{self.field}"),
                    _mmh3(f"{entity}_embedding{self.suffix}:model_version"),
                ]
                for entity in ENTITIES
            }
        elif backend != "feast":
            raise ValueError(f"backend must be feast or redis, not {backend!r}")

    @classmethod
    def live(cls, store: str | Path, config: FeatureStoreConfig, backend: str = "feast") -> OnlineEmbeddings:
        """A reader that accepts rows of the live version's embedding space only."""
        version = require_latest(store)
        return cls(store, config, backend, expect_space=read_manifest(store, version)["space"])

    def _decode(self, value) -> np.ndarray | None:
        if value is None:
            return None
        if self.compact:
            return decode_compact(value, self.config.online_dtype)
        return np.asarray(value, dtype=np.float32)

    def get(self, entity: str, ids: list) -> tuple[list[np.ndarray | None], list[str | None]]:
        """Vectors (None where missing or of another version) and their versions for `ids`, in order."""
        if self.backend == "redis":
            return self._get_redis(entity, ids)
        column = ID_COLUMN[entity]
        view = f"{entity}_embedding{self.suffix}"
        response = self.feast.get_online_features(
            features=[f"{view}:{self.field}", f"{view}:model_version"], entity_rows=[{column: i} for i in ids]
        ).to_dict()
        vectors = [self._decode(v) for v in response[self.field]]
        return self._check(vectors, response["model_version"])

    def _check(self, vectors: list, versions: list) -> tuple[list, list]:
        if self.expect_space is not None:
            vectors = [
                v if self.spaces.get(version) == self.expect_space else None
                for v, version in zip(vectors, versions, strict=True)
            ]
        if self.expect_version is not None:
            vectors = [
                v if version == self.expect_version else None for v, version in zip(vectors, versions, strict=True)
            ]
        return vectors, versions

    def _get_redis(self, entity: str, ids: list) -> tuple[list, list]:
        _redis_key, EntityKey, Value = self._redis_key, self._entity_key, self._value
        column = ID_COLUMN[entity]
        pipe = self.client.pipeline(transaction=False)
        for entity_id in ids:
            value = (
                Value(int64_val=int(entity_id))
                if isinstance(entity_id, int | np.integer)
                else Value(string_val=str(entity_id))
            )
            key = _redis_key(
                self.config.project,
                EntityKey(join_keys=[column], entity_values=[value]),
                ENTITY_KEY_SERIALIZATION_VERSION,
            )
            pipe.hmget(key, self.hash_fields[entity])
        vectors, versions = [], []
        for embedding_raw, version_raw in pipe.execute():
            if embedding_raw is None:
                vectors.append(None)
                versions.append(None)
                continue
            embedding, version = Value(), Value()
            embedding.ParseFromString(embedding_raw)
            version.ParseFromString(version_raw)
            raw = embedding.bytes_val if self.compact else embedding.float_list_val.val
            vectors.append(self._decode(raw))
            versions.append(version.string_val)
        return self._check(vectors, versions)
