"""Reading embeddings from the online store: the path the ranking API takes on every request.

Imports Feast (and, for the direct path, redis) but neither torch nor Lightning.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from graphrec.embed.vectors import ENTITIES, ID_COLUMN
from graphrec.store.codecs import decode_compact
from graphrec.store.config import FeatureStoreConfig
from graphrec.store.feast_repo import ENTITY_KEY_SERIALIZATION_VERSION, compact_column, open_store
from graphrec.store.versions import StoreError, list_versions, orphan_versions, read_manifest, require_latest

log = logging.getLogger("graphrec.store.online")


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
            self.spaces = _served_spaces(store)
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
        orphans = orphan_versions(store)
        if orphans:
            log.warning(
                "%s: %s never went live (an export was killed before LATEST moved); its rows read as missing "
                "until the next export or `graphrec export sync`",
                store,
                ", ".join(orphans),
            )
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


def _served_spaces(store: str | Path) -> dict[str, str]:
    """Version -> embedding space of every version a reader may serve: published ones with a readable manifest
    (an orphan's rows, written online by an export killed before LATEST moved, read as missing)."""
    orphans = set(orphan_versions(store))
    spaces = {}
    for version in list_versions(store):
        if version in orphans:
            continue
        try:
            spaces[version] = read_manifest(store, version)["space"]
        except StoreError:
            continue
    return spaces
