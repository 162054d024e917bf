"""Embeddings of one model run as plain arrays: what the embedding stage hands the feature store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl

from graphrec.data.schema import ID_COLUMN

ENTITIES = tuple(ID_COLUMN)  # the entity types that get embeddings
__all__ = ["ENTITIES", "ID_COLUMN", "EmbeddingSet"]


@dataclass
class EmbeddingSet:
    """Embeddings of one model run: per entity type, original ids and float32 vectors [n, dim]."""

    ids: dict[str, pl.Series]
    vectors: dict[str, np.ndarray]
    cutoff: datetime
    info: dict[str, Any] = field(default_factory=dict)
    inductive: Any = None  # graphrec.embed.fresh.InductiveUsers of the model, in these vectors' basis

    @property
    def dim(self) -> int:
        """The vectors' dimension (the same for every entity type)."""
        return int(next(iter(self.vectors.values())).shape[1])

    def rows(self) -> dict[str, int]:
        """Vectors per entity type."""
        return {entity: len(self.ids[entity]) for entity in self.ids}
