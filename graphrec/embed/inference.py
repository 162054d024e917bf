"""Embeddings of every user, item and content module from a trained model artifact, for the feature store."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphrec.embed.artifact import load_model, read_model_info
from graphrec.embed.fresh import inductive_users
from graphrec.embed.vectors import EmbeddingSet
from graphrec.errors import InputError
from graphrec.graph.snapshot import Snapshot, load_snapshot
from graphrec.graph.tasks import task_from_snapshot


@torch.no_grad()
def embeddings_from_model(model_dir: str | Path, snapshot: str | Path | None = None) -> EmbeddingSet:
    """User, item and content embeddings of a trained model on its snapshot (default: the one it was trained on).

    Users and items get their propagated embeddings. Content modules are not a training target of the item
    model; they are embedded inductively in the same space (`embed_items` over the users who viewed or clicked
    them, with the training degrees, plus the item model's projection of the module's content vectors where it has
    vectors of the same kind), so `user . content` is a meaningful score. A module without interactions gets the
    mean embedding of the items it features, one with neither its content vectors' projection, and one with
    nothing a zero vector (counted in `info`).
    """
    info = read_model_info(model_dir)
    model, metadata = load_model(model_dir)
    snapshot = snapshot or info.snapshot_path
    loaded = load_snapshot(snapshot)
    node = info.target_node
    task = task_from_snapshot(loaded, None, info.target_event, node)
    if (task.num_users, task.num_items) != (model.num_users, model.num_items):
        raise InputError(
            f"{snapshot}: {task.num_users:,} users and {task.num_items:,} {node}s, but the model in "
            f"{model_dir} was trained on {model.num_users:,} and {model.num_items:,}; export with its own snapshot"
        )
    model.set_graph(task.edges, task.item_features)
    model.eval()
    users, items, _ = model.propagate()
    user_layers, _ = model.propagate_layers()
    ids = {
        "user": loaded.ids_of("user", np.arange(task.num_users)),
        node: loaded.ids_of(node, np.arange(task.num_items)),
    }
    vectors = {"user": users.numpy().astype(np.float32), node: items.numpy().astype(np.float32)}
    info: dict[str, Any] = {}
    if node == "item" and "content" in loaded.data.node_types and loaded.data["content"].num_nodes:
        vectors["content"], info["content"] = _content_vectors(model, loaded, user_layers, items)
        ids["content"] = loaded.ids_of("content", np.arange(loaded.data["content"].num_nodes))
    inductive = inductive_users(model, task) if node == "item" else None
    cutoff = loaded.manifest["cutoff"]
    info["snapshot"] = {"path": str(snapshot), "input_fingerprint": loaded.manifest.get("input_fingerprint", {})}
    info["model_metadata"] = metadata
    return EmbeddingSet(ids, vectors, datetime.fromisoformat(cutoff), info, inductive)


def _content_vectors(model, snapshot: Snapshot, user_layers: list[torch.Tensor], items: torch.Tensor):
    data = snapshot.data
    count = data["content"].num_nodes
    edges = {}
    for behaviour in model.behaviours:
        if ("user", behaviour, "content") in data.edge_types:
            users, modules = data["user", behaviour, "content"].edge_index
            edges[behaviour] = (modules, users)
    # Modules carrying content vectors of the kind (name and size) the item model learned to project (the same
    # encoder's title vectors, images in the same space) get that projection in their layer 0, as items do.
    store = data["content"]
    content = {
        name: store[name]
        for name, projection in model.vector_projection.items()
        if name in store and store[name].shape[1] == projection.in_features
    }
    vectors = model.embed_items(edges, count, user_layers, content)
    touched = torch.zeros(count, dtype=torch.bool)
    for modules, _ in edges.values():
        touched[modules] = True
    from_items = torch.zeros(count, dtype=torch.bool)
    if ("content", "features", "item") in data.edge_types:
        modules, featured = data["content", "features", "item"].edge_index
        sums = torch.zeros(count, items.shape[1]).index_add(0, modules, items[featured])
        counts = torch.bincount(modules, minlength=count).float()
        from_items = ~touched & (counts > 0)
        vectors[from_items] = sums[from_items] / counts[from_items, None]
    has_content = torch.zeros(count, dtype=torch.bool)
    for values in content.values():
        has_content |= values.abs().sum(dim=1) > 0
    from_content = ~touched & ~from_items & has_content
    stats = {
        "method": "inductive from user interactions (and content vectors); featured-item mean where none; "
        "content vectors alone where neither",
        "content_vectors": sorted(content),
        "from_interactions": int(touched.sum()),
        "from_featured_items": int(from_items.sum()),
        "from_content": int(from_content.sum()),
        "zero_vector": int((~touched & ~from_items & ~has_content).sum()),
    }
    return vectors.numpy().astype(np.float32), stats
