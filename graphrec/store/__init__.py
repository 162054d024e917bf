"""The store stage: versioned, checksummed embedding versions with drift control, the Feast feature repo over
them (SQLite or Redis online), publishing and rollback, and the online reader the ranking API uses."""

from __future__ import annotations

import importlib
from typing import Any

# Public names and the module that defines each, imported on first use: importing the package (or its light
# config module) stays cheap, e.g. for the command line's help.
_EXPORTS = {
    "StoreError": "versions",
    "IncompatibleEmbeddingsError": "versions",
    "check_compatible": "versions",
    "latest_version": "versions",
    "list_versions": "versions",
    "load_version": "versions",
    "verify_version": "versions",
    "describe": "versions",
    "publish_embeddings": "publish",
    "rollback": "publish",
    "sync_online": "publish",
    "store_summary": "publish",
    "FeatureStoreError": "feast_repo",
    "historical_embeddings": "feast_repo",
    "open_store": "feast_repo",
    "OnlineEmbeddings": "online",
    "ExportConfig": "config",
    "FeatureStoreConfig": "config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
