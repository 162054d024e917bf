"""Recommendation tasks over a snapshot: per-behaviour training edges, held-out truth and what to mask."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import torch

from graphrec.data.schema import EVENT_TYPES, VECTOR_SUFFIX
from graphrec.graph.snapshot import Snapshot, load_snapshot
from graphrec.graph.split import read_targets
from graphrec.metrics import Interactions

FEATURES = {"item": ("category_index", "brand_index"), "content": ("module_type_index",)}


@dataclass
class RecTask:
    """What a model learns from and is judged on: user -> target-node edges per behaviour, truth and mask.

    `edges[b]` holds `(users, targets, weights)` of behaviour `b` in the training snapshot; `truth` holds the
    held-out target pairs of known users; `exclude` the training pairs of the target behaviour (masked at
    evaluation, as in the LightGCN / MuLe protocols).
    """

    num_users: int
    num_items: int
    behaviours: list[str]
    target: str
    edges: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    truth: Interactions
    exclude: Interactions
    item_features: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)

    def popularity(self, behaviours: list[str] | None = None) -> torch.Tensor:
        """Training interaction counts per item over the given behaviours (default: all)."""
        counts = torch.zeros(self.num_items)
        for behaviour in behaviours or self.behaviours:
            _, items, _ = self.edges[behaviour]
            counts += torch.bincount(items, minlength=self.num_items).float()
        return counts

    def feature_sizes(self) -> dict[str, int]:
        """Vocabulary size of each categorical item feature (its largest code + 1), as the model's embeddings need."""
        return {
            name: int(values.max()) + 1
            for name, values in self.item_features.items()
            if values.dim() == 1 and len(values)
        }

    def vector_sizes(self) -> dict[str, int]:
        """Size of each content vector of the items (`*_embedding` features, [num_items, size])."""
        return {name: values.shape[1] for name, values in self.item_features.items() if values.dim() == 2}

    def user_activity(self) -> torch.Tensor:
        """Training interaction counts per user over all behaviours."""
        counts = torch.zeros(self.num_users)
        for users, _, _ in self.edges.values():
            counts += torch.bincount(users, minlength=self.num_users).float()
        return counts


def task_from_snapshot(
    snapshot: Snapshot,
    targets: pl.DataFrame | None = None,
    target_event: str = "purchase",
    target_node: str = "item",
) -> RecTask:
    """Build a task from a snapshot and a target table (from `evaluation_targets`; None: no truth).

    Target pairs with a user or item unknown to the snapshot cannot be scored by a transductive model; they are
    counted in `stats` (`truth_pairs_new_user`, `truth_pairs_new_item`), not silently lost.
    """
    data = snapshot.data
    num_users, num_items = data["user"].num_nodes, data[target_node].num_nodes
    behaviours = [b for b in EVENT_TYPES if ("user", b, target_node) in data.edge_types]
    if target_event not in behaviours:
        raise ValueError(f"the snapshot has no ('user', {target_event!r}, {target_node!r}) edges to learn from")
    edges = {}
    for behaviour in behaviours:
        store = data["user", behaviour, target_node]
        edges[behaviour] = (store.edge_index[0], store.edge_index[1], store["count"].float())
    target_users, target_items, _ = edges[target_event]
    exclude = Interactions.from_pairs(target_users, target_items, num_users, num_items)
    stats: dict[str, int] = {}
    if targets is not None:
        index_column = f"{target_node}_index"
        stats["truth_pairs"] = targets.height
        stats["truth_pairs_new_user"] = int(targets["user_index"].null_count())
        known = targets.filter(pl.col("user_index").is_not_null())
        stats["truth_pairs_new_item"] = int(known[index_column].null_count())
        known = known.filter(pl.col(index_column).is_not_null())
        truth = Interactions.from_pairs(
            known["user_index"].to_numpy(), known[index_column].to_numpy(), num_users, num_items
        )
    else:
        truth = Interactions.from_pairs([], [], num_users, num_items)
    store = data[target_node]
    names = [*FEATURES[target_node], *sorted(n for n in store if n.endswith(VECTOR_SUFFIX))]
    features = {name: store[name] for name in names if name in store}
    return RecTask(num_users, num_items, behaviours, target_event, edges, truth, exclude, features, stats)


def holdout_task(task: RecTask, seed: int = 0) -> RecTask:
    """A validation task carved from training data: one training target pair per user (with at least two) is
    held out as truth and its target edge removed; auxiliary edges of the pair stay, as in the published
    protocols where a held-out purchase may have been viewed or carted before. Node indices stay the same.

    For fixed published splits without a validation window, so that epochs can be chosen without the test set.
    """
    users, items, counts = task.edges[task.target]
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(users), generator=generator)
    shuffled = users[order]
    # The first occurrence of each user in the shuffled order is its held-out pair.
    first = torch.ones(len(users), dtype=torch.bool)
    sorted_users, position = torch.sort(shuffled, stable=True)
    first_sorted = torch.ones(len(users), dtype=torch.bool)
    first_sorted[1:] = sorted_users[1:] != sorted_users[:-1]
    first[position] = first_sorted
    per_user = torch.bincount(users, minlength=task.num_users)
    held = order[first & (per_user[shuffled] >= 2)]
    held_keys = users[held] * task.num_items + items[held]
    edges = dict(task.edges)
    keep = ~torch.isin(users * task.num_items + items, held_keys)
    edges[task.target] = (users[keep], items[keep], counts[keep])
    truth = Interactions.from_pairs(users[held], items[held], task.num_users, task.num_items)
    target_users, target_items, _ = edges[task.target]
    exclude = Interactions.from_pairs(target_users, target_items, task.num_users, task.num_items)
    stats = {"truth_pairs": len(held), "holdout_seed": seed}
    return RecTask(
        task.num_users, task.num_items, task.behaviours, task.target, edges, truth, exclude, task.item_features, stats
    )


def window_task(window_dir: str | Path, target_event: str = "purchase", target_node: str = "item") -> RecTask:
    """The task of one split window (`graphrec split`'s val/ or test/): its snapshot with its target pairs."""
    window_dir = Path(window_dir)
    targets = read_targets(window_dir, target_event, target_node)
    return task_from_snapshot(load_snapshot(window_dir / "snapshot"), targets, target_event, target_node)
