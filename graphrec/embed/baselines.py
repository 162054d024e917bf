"""Non-learned baselines on a `RecTask`, each a scorer `users [B] -> scores [B, num_items]`.

- popularity: target-behaviour popularity, the same list for everyone;
- history: the items the user already touched through any behaviour, ordered by target-behaviour popularity,
  then the rest in the same order (RelBench's past-visit baseline, completed so every list has K items);
- item-kNN: cosine similarity of items' user sets over all behaviours, top-`neighbours` per item; a user's score
  for an item sums its similarity to the items the user touched.
Matrix factorisation (BPR) and single-behaviour LightGCN are `MultiBehaviourGCN` configurations (see
`training/evaluate.py`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from graphrec.graph.tasks import RecTask
from graphrec.metrics import expand_rows

Scorer = Callable[[torch.Tensor], torch.Tensor]


def _touched(task: RecTask) -> torch.Tensor:
    """Sparse CSR [num_users, num_items] with 1 where the user touched the item through any behaviour."""
    users = torch.cat([e[0] for e in task.edges.values()])
    items = torch.cat([e[1] for e in task.edges.values()])
    matrix = torch.sparse_coo_tensor(
        torch.stack([users, items]), torch.ones(len(users)), (task.num_users, task.num_items), check_invariants=False
    ).coalesce()
    values = torch.ones_like(matrix.values())
    return (
        torch.sparse_coo_tensor(matrix.indices(), values, matrix.shape, check_invariants=False)
        .coalesce()
        .to_sparse_csr()
    )


def _rows(matrix: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
    crow, col, values = matrix.crow_indices(), matrix.col_indices(), matrix.values()
    out = torch.zeros(len(users), matrix.shape[1])
    rows, index = expand_rows(crow[users], crow[users + 1])
    out[rows, col[index]] = values[index]
    return out


def popularity_scorer(task: RecTask) -> Scorer:
    """Everyone gets the most popular items of the target behaviour (ties by all-behaviour popularity)."""
    popularity = task.popularity([task.target]) + 1e-6 * task.popularity()
    return lambda users: popularity.expand(len(users), -1)


def history_scorer(task: RecTask) -> Scorer:
    """Touched items first, by target-behaviour popularity (ties: all behaviours); then untouched items, same order.

    Ordering by the target behaviour's popularity is what makes this baseline strong (on taobao-mb it reaches the
    HR@10 0.26 / NDCG@10 0.125 quoted for it); all-behaviour popularity gives about 0.18 / 0.08 there.
    """
    popularity = task.popularity([task.target]) + 1e-3 * task.popularity() / (task.popularity().max() + 1)
    rank = popularity / (popularity.max() + 1)  # in [0, 1): keeps the touched block above everything else
    touched = _touched(task)
    return lambda users: _rows(touched, users) + rank


def item_knn_scorer(task: RecTask, neighbours: int = 100, block: int = 2048) -> Scorer:
    """Item-based kNN over co-occurrence in all behaviours (cosine), keeping `neighbours` per item."""
    touched = _touched(task)
    by_item = touched.to_sparse_coo().t().coalesce()  # [items, users]
    norms = torch.sqrt(torch.bincount(by_item.indices()[0], minlength=task.num_items).float()).clamp(min=1)
    by_item_csr = by_item.to_sparse_csr()
    rows, cols, vals = [], [], []
    for start in range(0, task.num_items, block):
        items = torch.arange(start, min(start + block, task.num_items))
        item_users = _rows(by_item_csr, items)  # [b, users]
        co = (by_item_csr @ item_users.t()).t()  # [b, items]: users shared with every item
        co = co / (norms[items, None] * norms[None, :])
        co[torch.arange(len(items)), items] = 0
        top = torch.topk(co, min(neighbours, task.num_items), dim=1)
        keep = top.values > 0
        rows.append(items[:, None].expand_as(top.indices)[keep])
        cols.append(top.indices[keep])
        vals.append(top.values[keep])
    # Stored transposed, so scores^T = S^T @ X^T is one CSR product.
    similarity_t = (
        torch.sparse_coo_tensor(
            torch.stack([torch.cat(cols), torch.cat(rows)]),
            torch.cat(vals),
            (task.num_items, task.num_items),
            check_invariants=False,
        )
        .coalesce()
        .to_sparse_csr()
    )
    popularity = task.popularity()
    tie_break = 1e-6 * popularity / (popularity.max() + 1)
    return lambda users: (similarity_t @ _rows(touched, users).t()).t() + tie_break
