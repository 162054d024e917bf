"""The embedding stage: the multi-behaviour GNN (a plain `nn.Module`), its artifact (save / load), scoring,
baselines, and the embeddings of every node that the feature store publishes."""

from __future__ import annotations

import importlib
from typing import Any

# Public names and the module that defines each, imported on first use: importing the package (or its light
# config module) stays cheap, e.g. for the command line's help.
_EXPORTS = {
    "MultiBehaviourGCN": "model",
    "save_model": "artifact",
    "load_model": "artifact",
    "read_model_info": "artifact",
    "ModelInfo": "artifact",
    "ModelArtifactError": "artifact",
    "model_scorer": "scoring",
    "evaluate_model": "scoring",
    "popularity_scorer": "baselines",
    "history_scorer": "baselines",
    "item_knn_scorer": "baselines",
    "embeddings_from_model": "inference",
    "EmbeddingSet": "vectors",
    "ENTITIES": "vectors",
    "ID_COLUMN": "vectors",
    "ModelConfig": "config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
