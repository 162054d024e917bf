"""The embedding stage: the multi-behaviour GNN (a plain `nn.Module`), its artifact (save / load), scoring,
baselines, and the embeddings of every node that the feature store publishes."""

from graphrec.exports import lazy_exports

# Public names and the module that defines each, imported on first use.
__getattr__, __all__ = lazy_exports(
    __name__,
    {
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
    },
)
