"""The store stage: versioned, checksummed embedding versions with drift control, the Feast feature repo over
them (SQLite or Redis online), publishing and rollback, and the online reader the ranking API uses."""

from graphrec.exports import lazy_exports

# Public names and the module that defines each, imported on first use.
__getattr__, __all__ = lazy_exports(
    __name__,
    {
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
    },
)
