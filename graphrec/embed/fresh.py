"""Fresh user embeddings at request time: the GNN's own inductive aggregation over a user's logged interactions
plus the events of the current session, without retraining.

A user's embedding in the multi-behaviour LightGCN (`graphrec.embed.model`) is the mean over layers 0..K of
layer 0 (the user's id embedding) and layers k+1 = sum_b alpha_b sum_{i in N_b(u)} (|N_b(u)| deg_b(i))^-1/2 e_i^(k):
the items' layer-k vectors, normalised with the items' training degrees. `InductiveUsers` keeps exactly what that
needs (the items' layers 0..K-1, their degrees per behaviour, the behaviour weights, each user's layer 0 and
training edges), in the basis of the embedding version it was published with, so adding a session's items to a
user's edges moves the user's vector the way the model would, while a user with no new edges gets the published
vector back (`tests/embed/test_fresh.py` checks both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

ARRAYS = ("item_layers", "item_degree", "alpha", "user_layer0", "edge_ptr", "edge_item", "edge_behaviour")


@dataclass
class InductiveUsers:
    """The state of a trained model for embedding users inductively.

    Args:
        item_layers: [K, items, dim] the items' layer 0..K-1 vectors.
        item_degree: [behaviours, items] the items' training degrees.
        alpha: [behaviours] the learned behaviour weights.
        user_layer0: [users, dim] the users' id embeddings.
        edge_ptr, edge_item, edge_behaviour: the users' training edges as CSR (user -> item rows, behaviour index).
        behaviours: behaviour names in index order.
        normalize, temperature: the model's output transform (`ModelConfig.normalize`).
    """

    item_layers: np.ndarray
    item_degree: np.ndarray
    alpha: np.ndarray
    user_layer0: np.ndarray
    edge_ptr: np.ndarray
    edge_item: np.ndarray
    edge_behaviour: np.ndarray
    behaviours: list[str]
    normalize: bool = False
    temperature: float = 1.0

    @property
    def dim(self) -> int:
        return int(self.user_layer0.shape[1])

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays, by name (for a safetensors file)."""
        return {name: np.ascontiguousarray(getattr(self, name)) for name in ARRAYS}

    def meta(self) -> dict[str, Any]:
        return {"behaviours": self.behaviours, "normalize": self.normalize, "temperature": self.temperature}

    def rotated(self, rotation: np.ndarray) -> InductiveUsers:
        """The same state in a rotated basis (vectors @ rotation), as a published version is aligned."""
        return InductiveUsers(
            (self.item_layers.astype(np.float64) @ rotation).astype(np.float32),
            self.item_degree,
            self.alpha,
            (self.user_layer0.astype(np.float64) @ rotation).astype(np.float32),
            self.edge_ptr,
            self.edge_item,
            self.edge_behaviour,
            self.behaviours,
            self.normalize,
            self.temperature,
        )

    def embed(self, user: int | None, items: np.ndarray, behaviours: np.ndarray) -> np.ndarray:
        """[dim] the embedding of user row `user` (None: a user the model never saw) with the extra edges (item rows,
        behaviour indices) added to its training edges; an edge it already has adds nothing (the graph is binary)."""
        if user is not None:
            part = slice(int(self.edge_ptr[user]), int(self.edge_ptr[user + 1]))
            items = np.concatenate([self.edge_item[part], np.asarray(items, np.int64)])
            behaviours = np.concatenate([self.edge_behaviour[part], np.asarray(behaviours, np.int64)])
        pairs = np.unique(np.stack([np.asarray(behaviours, np.int64), np.asarray(items, np.int64)]), axis=1)
        layer0 = self.user_layer0[user].astype(np.float64) if user is not None else np.zeros(self.dim)
        layers = [layer0]
        for k in range(self.item_layers.shape[0]):
            total = np.zeros(self.dim)
            for b in range(len(self.behaviours)):
                chosen = pairs[1][pairs[0] == b]
                if not len(chosen):
                    continue
                norm = (len(chosen) * np.maximum(self.item_degree[b, chosen], 1.0)) ** -0.5
                total += self.alpha[b] * (norm[:, None] * self.item_layers[k][chosen]).sum(axis=0)
            layers.append(total)
        vector = np.mean(layers, axis=0)
        if self.normalize:
            vector = vector / max(np.linalg.norm(vector), 1e-12) / self.temperature**0.5
        return vector.astype(np.float32)


@torch.no_grad()
def inductive_users(model, task) -> InductiveUsers:
    """The inductive state of `model` (graph attached) over its training task's user -> item edges."""
    user_layers, item_layers = model.propagate_layers()
    behaviours = list(model.behaviours)
    users, items, kinds = [], [], []
    for b, name in enumerate(behaviours):
        edge_users, edge_items = task.edges[name][0], task.edges[name][1]
        users.append(edge_users.numpy())
        items.append(edge_items.numpy())
        kinds.append(np.full(len(edge_users), b, np.int64))
    users, items, kinds = np.concatenate(users), np.concatenate(items), np.concatenate(kinds)
    order = np.argsort(users, kind="stable")
    ptr = np.zeros(task.num_users + 1, np.int64)
    np.cumsum(np.bincount(users, minlength=task.num_users), out=ptr[1:])
    return InductiveUsers(
        item_layers=torch.stack(item_layers[: model.config.num_layers]).numpy().astype(np.float32)
        if model.config.num_layers
        else np.zeros((0, task.num_items, model.config.dim), np.float32),
        item_degree=torch.stack([model._degrees[name][1] for name in behaviours]).numpy().astype(np.float32),
        alpha=model.behaviour_weights().numpy().astype(np.float64),
        user_layer0=user_layers[0].numpy().astype(np.float32),
        edge_ptr=ptr,
        edge_item=items[order].astype(np.int64),
        edge_behaviour=kinds[order].astype(np.int64),
        behaviours=behaviours,
        normalize=bool(model.config.normalize),
        temperature=float(model.config.temperature),
    )
