"""Top-K ranking metrics over a full catalogue: Recall, NDCG, HR, MAP, catalogue coverage and popularity bias.

Definitions follow the LightGCN / MuLe protocols: every candidate is scored, already-known pairs are masked,
Recall@K = hits / |relevant| (LightGCN), HR@K = 1 if any hit, NDCG@K with binary relevance and the ideal DCG of
min(|relevant|, K) hits, MAP@K = mean over hits of precision at the hit's rank, divided by min(|relevant|, K).
All are averaged over users with at least one relevant item.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch


def expand_rows(starts: torch.Tensor, ends: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For CSR row slices [starts[r], ends[r]): the output row of every entry and the entry's position."""
    lengths = ends - starts
    rows = torch.repeat_interleave(torch.arange(len(starts)), lengths)
    offsets = torch.arange(int(lengths.sum())) - torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
    return rows, torch.repeat_interleave(starts, lengths) + offsets


@dataclass
class Interactions:
    """Per-user sets of item indices in CSR form: the items of user `u` are `indices[indptr[u]:indptr[u + 1]]`."""

    indptr: torch.Tensor  # [num_users + 1]
    indices: torch.Tensor  # [nnz]
    num_items: int

    @classmethod
    def from_pairs(
        cls, users: torch.Tensor | np.ndarray, items: torch.Tensor | np.ndarray, num_users: int, num_items: int
    ) -> Interactions:
        """Build from (user, item) pairs; duplicates are kept once."""
        users = torch.tensor(np.asarray(users), dtype=torch.long)
        items = torch.tensor(np.asarray(items), dtype=torch.long)
        if len(users):
            key = torch.unique(users * num_items + items)
            users, items = key // num_items, key % num_items
        counts = torch.bincount(users, minlength=num_users)
        indptr = torch.zeros(num_users + 1, dtype=torch.long)
        indptr[1:] = torch.cumsum(counts, 0)
        return cls(indptr, items, num_items)

    @property
    def num_users(self) -> int:
        return len(self.indptr) - 1

    def counts(self) -> torch.Tensor:
        return self.indptr[1:] - self.indptr[:-1]

    def dense(self, users: torch.Tensor) -> torch.Tensor:
        """A [len(users), num_items] boolean matrix of the users' items."""
        out = torch.zeros(len(users), self.num_items, dtype=torch.bool)
        starts, ends = self.indptr[users], self.indptr[users + 1]
        lengths = ends - starts
        rows = torch.repeat_interleave(torch.arange(len(users)), lengths)
        offsets = torch.arange(int(lengths.sum())) - torch.repeat_interleave(
            torch.cumsum(lengths, 0) - lengths, lengths
        )
        cols = self.indices[torch.repeat_interleave(starts, lengths) + offsets]
        out[rows, cols] = True
        return out


def ranking_metrics(hits: torch.Tensor, num_relevant: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """Per-user Recall, NDCG, HR and MAP at `k` from a [users, >=k] hit matrix of the ranked lists."""
    hits = hits[:, :k].float()
    num_relevant = num_relevant.float()
    discounts = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float))
    dcg = (hits * discounts).sum(1)
    ideal_hits = torch.clamp(num_relevant, max=k)
    idcg = torch.cumsum(discounts, 0)[(ideal_hits - 1).clamp(min=0).long()]
    precision_at = torch.cumsum(hits, 1) / torch.arange(1, k + 1, dtype=torch.float)
    return {
        f"recall@{k}": hits.sum(1) / num_relevant,
        f"ndcg@{k}": dcg / idcg,
        f"hr@{k}": (hits.sum(1) > 0).float(),
        f"map@{k}": (precision_at * hits).sum(1) / ideal_hits,
    }


def sample_users(truth: Interactions, max_users: int | None, seed: int = 0) -> torch.Tensor | None:
    """A fixed sample of at most `max_users` users with truth, sorted (the same for the same seed); None where the
    limit is None or keeps every such user (then `evaluate_ranking` takes them all)."""
    users = torch.nonzero(truth.counts() > 0).flatten()
    if max_users is None or len(users) <= max_users:
        return None
    generator = torch.Generator().manual_seed(seed)
    return users[torch.randperm(len(users), generator=generator)[:max_users]].sort().values


def score_batch_size(num_items: int, max_users: int = 1024, max_cells: int = 32_000_000) -> int:
    """Users scored at once against the whole catalogue: at most `max_users`, and at most `max_cells` scores per
    batch (128 MB of float32; a batch takes a few such [users, items] copies: the scores, masks, the scorer's own
    products), so a 327k-item catalogue is scored ~100 users at a time instead of holding 4 GB per batch."""
    return max(1, min(max_users, max_cells // max(1, num_items)))


def evaluate_ranking(
    score: Callable[[torch.Tensor], torch.Tensor],
    truth: Interactions,
    exclude: Interactions | None = None,
    ks: Sequence[int] = (10, 20),
    item_popularity: torch.Tensor | None = None,
    batch_size: int | None = None,
    users: torch.Tensor | None = None,
) -> dict[str, float]:
    """Score every item for each user with relevant items, mask `exclude`, and average the metrics.

    Args:
        score: maps a batch of user indices [B] to scores over all items [B, num_items].
        truth: the relevant (held-out) items per user.
        exclude: items never to recommend per user (usually the training positives of the target behaviour).
        ks: cut-offs.
        item_popularity: training interaction counts per item, for the popularity-bias figures.
        users: evaluate only these users (default: every user with a relevant item).
        batch_size: users scored at once (default: `score_batch_size` of the catalogue).

    Returns metric means, plus `coverage@K` (share of the catalogue in any top-K list), `avg_pop@K` (mean
    popularity percentile of recommended items, 1 = most popular) and `users`.
    """
    counts = truth.counts()
    users = torch.nonzero(counts > 0).flatten() if users is None else users[counts[users] > 0]
    batch_size = batch_size or score_batch_size(truth.num_items)
    k_max = max(ks)
    sums: dict[str, float] = {}
    recommended = {k: torch.zeros(truth.num_items, dtype=torch.bool) for k in ks}
    percentile = None
    if item_popularity is not None:
        ranks = torch.argsort(torch.argsort(item_popularity.float(), stable=True), stable=True).float()
        percentile = ranks / max(1, truth.num_items - 1)
    pop_sums = dict.fromkeys(ks, 0.0)
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        with torch.no_grad():
            scores = score(batch).float().clone()  # [B, num_items]
        if exclude is not None:
            scores[exclude.dense(batch)] = -torch.inf
        top = torch.topk(scores, k_max, dim=1).indices  # [B, k_max]
        hits = truth.dense(batch).gather(1, top)
        for k in ks:
            for name, values in ranking_metrics(hits, counts[batch], k).items():
                sums[name] = sums.get(name, 0.0) + float(values.sum())
            recommended[k][top[:, :k].flatten()] = True
            if percentile is not None:
                pop_sums[k] += float(percentile[top[:, :k]].mean(1).sum())
    n = max(1, len(users))
    result = {name: total / n for name, total in sums.items()}
    for k in ks:
        result[f"coverage@{k}"] = float(recommended[k].float().mean())
        if percentile is not None:
            result[f"avg_pop@{k}"] = pop_sums[k] / n
    result["users"] = len(users)
    return result


def candidate_auc(
    score: Callable[[torch.Tensor], torch.Tensor],
    truth: Interactions,
    candidates: torch.Tensor,
    batch_size: int | None = None,
) -> float:
    """Mean AUC of each relevant item against the other `candidates` (a boolean item mask), ties counting half.

    For slices whose items cannot compete in a full-catalogue top-K yet (new items): 0.5 means the scores order
    them no better than chance, 1.0 that every relevant item outscores every other candidate.
    """
    counts = truth.counts()
    users = torch.nonzero(counts > 0).flatten()
    pool = torch.nonzero(candidates).flatten()
    if len(users) == 0 or len(pool) < 2:
        return float("nan")
    batch_size = batch_size or score_batch_size(truth.num_items)
    total, pairs = 0.0, 0
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        with torch.no_grad():
            scores = score(batch).float()[:, pool]  # [B, candidates]
        relevant = truth.dense(batch)[:, pool]
        rows, cols = torch.nonzero(relevant, as_tuple=True)
        positive = scores[rows, cols][:, None]
        others = scores[rows]
        below = (others < positive).sum(1) + 0.5 * ((others == positive).sum(1) - 1)  # minus the item itself
        total += float((below / (len(pool) - 1)).sum())
        pairs += len(rows)
    return total / max(1, pairs)
