"""Embeddings of one model run as plain arrays: what the embedding stage hands the feature store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl

ENTITIES = ("user", "item", "content")
# The id column of each entity, as in the snapshot's node tables and the input contract.
ID_COLUMN = {"user": "user_id", "item": "item_id", "content": "content_id"}


@dataclass
class EmbeddingSet:
    """Embeddings of one model run: per entity type, original ids and float32 vectors [n, dim]."""

    ids: dict[str, pl.Series]
    vectors: dict[str, np.ndarray]
    cutoff: datetime
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(next(iter(self.vectors.values())).shape[1])

    def rows(self) -> dict[str, int]:
        return {entity: len(self.ids[entity]) for entity in self.ids}
