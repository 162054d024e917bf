"""Scoring with a trained embedding model: full-catalogue scores and ranking metrics over a task's truth."""

from __future__ import annotations

import torch

from graphrec.embed.model import MultiBehaviourGCN
from graphrec.graph.tasks import RecTask
from graphrec.metrics import evaluate_ranking


def model_scorer(model: MultiBehaviourGCN, history: bool = True):
    """A scorer `users [B] -> scores [B, num_items]` from one propagation: the dot product, plus the history
    term when `history` (and the model has one)."""
    model.eval()
    with torch.no_grad():
        user_vectors, item_vectors, _ = model.propagate()

    def score(batch: torch.Tensor) -> torch.Tensor:
        scores = user_vectors[batch] @ item_vectors.T
        return model.history_scores(batch, out=scores) if history and model.history_behaviours else scores

    return score


def evaluate_model(
    model: MultiBehaviourGCN, task: RecTask, ks=(10, 20), history: bool = True, users: torch.Tensor | None = None
) -> dict[str, float]:
    """Rank the full catalogue with the model's scores and average the metrics over the task's truth."""
    result = evaluate_ranking(
        model_scorer(model, history), task.truth, task.exclude, ks, task.popularity(), users=users
    )
    model.train()
    return result
