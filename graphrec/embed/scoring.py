"""Scoring with a trained embedding model: full-catalogue scores and ranking metrics over a task's truth."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from graphrec.embed.model import MultiBehaviourGCN
from graphrec.graph.tasks import RecTask
from graphrec.metrics import evaluate_ranking, ranking_metrics, score_batch_size


def model_scorer(model: MultiBehaviourGCN, history: bool | float = True):
    """A scorer `users [B] -> scores [B, num_items]` from one propagation: the dot product, plus the history
    term (when the model has one) times `history`: True is 1, False or 0 the dot product alone, another number
    the scale a validation run chose (see `history_scale_sweep`)."""
    scale = float(history)
    model.eval()
    with torch.no_grad():
        user_vectors, item_vectors, _ = model.propagate()

    def score(batch: torch.Tensor) -> torch.Tensor:
        scores = user_vectors[batch] @ item_vectors.T
        if scale == 0 or not model.history_behaviours:
            return scores
        return _add_history(model, batch, scores, scale)

    return score


def _add_history(model: MultiBehaviourGCN, batch: torch.Tensor, scores: torch.Tensor, scale: float) -> torch.Tensor:
    """`scores + scale * history term`, in place: at scale 1 the term's sparse entries are scattered straight into
    the block (no dense copy of the term), otherwise the dense term is added."""
    if scale == 1:
        return model.history_scores(batch, out=scores)
    return scores.add_(model.history_scores(batch), alpha=scale)


# The sweep rewrites only the history term's entries per scale where they are fewer than 1 in this many scores.
SPARSE_TERM = 16


def history_scale_sweep(
    model: MultiBehaviourGCN,
    task: RecTask,
    scales: Sequence[float],
    k: int,
    users: torch.Tensor | None = None,
) -> dict[float, dict[str, float]]:
    """Ranking metrics at `k` of the scores `dot product + s * history term` for every scale `s`, in one pass.

    The history term's weights are trained on training triples, where the dot products' margins keep growing as
    the embeddings fit them, so the trained scale between the two is not the one that ranks held-out items best:
    on some shops the term swamps the dot products, on others it is swamped. Each batch's dot products and history
    term are computed once and combined and ranked per scale, so a sweep of n scales costs one scoring and n
    top-k's, not n scorings. Each scale's scores are those of `model_scorer(model, scale)` (up to float rounding
    where an item has several history entries at scale 1), so its figures are that scorer's.

    The term is sparse (the items of each user's history) unless co-occurrence fills it: then only its entries
    change between scales, so the excluded items are masked once and each scale rewrites just those entries of one
    block before its top-k (a 400k-item catalogue: the nine scales' dense copies, additions and masks took twice
    the time of their top-k's).
    """
    counts = task.truth.counts()
    users = torch.nonzero(counts > 0).flatten() if users is None else users[counts[users] > 0]
    ordered = sorted({float(s) for s in scales})
    sums: dict[float, dict[str, float]] = {s: {} for s in ordered}
    batch_size = score_batch_size(task.truth.num_items)
    model.eval()
    with torch.no_grad():
        user_vectors, item_vectors, _ = model.propagate()
        for start in range(0, len(users), batch_size):
            batch = users[start : start + batch_size]
            dot = user_vectors[batch] @ item_vectors.T  # [B, num_items]
            history = model.history_scores(batch)
            if task.exclude is not None:  # once for every scale: -inf plus a finite term stays -inf
                dot[task.exclude.dense(batch)] = -torch.inf
            relevant = task.truth.dense(batch)
            entries = torch.nonzero(history, as_tuple=True)
            sparse = len(entries[0]) * SPARSE_TERM < history.numel()
            if sparse:  # the scales differ only at the term's entries: one block, those entries rewritten
                at_dot, at_term = dot[entries], history[entries]
                block = dot
            else:
                block = torch.empty_like(dot)
            for scale in ordered:
                if sparse:
                    block[entries] = torch.add(at_dot, at_term, alpha=scale)
                    scores = block
                elif scale == 0:
                    scores = block.copy_(dot)
                else:
                    scores = torch.add(dot, history, alpha=scale, out=block)
                hits = relevant.gather(1, torch.topk(scores, k, dim=1).indices)
                for name, values in ranking_metrics(hits, counts[batch], k).items():
                    sums[scale][name] = sums[scale].get(name, 0.0) + float(values.sum())
    model.train()
    n = max(1, len(users))
    return {s: {name: total / n for name, total in sums[s].items()} | {"users": len(users)} for s in ordered}


def evaluate_model(
    model: MultiBehaviourGCN, task: RecTask, ks=(10, 20), history: bool = True, users: torch.Tensor | None = None
) -> dict[str, float]:
    """Rank the full catalogue with the model's scores and average the metrics over the task's truth."""
    result = evaluate_ranking(
        model_scorer(model, history), task.truth, task.exclude, ks, task.popularity(), users=users
    )
    model.train()
    return result
