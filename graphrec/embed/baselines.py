"""Non-learned baselines on a `RecTask`, each a scorer `users [B] -> scores [B, num_items]`.

- popularity: target-behaviour popularity, the same list for everyone;
- history: the items the user already touched through any behaviour, ordered by target-behaviour popularity,
  then the rest in the same order (RelBench's past-visit baseline, completed so every list has K items);
- item-kNN: cosine similarity of items' user sets over all behaviours, top-`neighbours` per item; a user's score
  for an item sums its similarity to the items the user touched.

The strong baselines a graph model has to beat, each with its settings chosen on a validation task
(`select_on_validation`), never on the test pairs:

- tuned item-kNN (`item_knn_family`): cosine with shrinkage over a behaviour-weighted user-item matrix, the
  neighbourhood size from 50 to the full similarity;
- EASE^R (`ease_family`, Steck, WWW 2019, https://arxiv.org/abs/1905.03375): the closed-form item-item linear model
  with a zero diagonal, in item space or, where users are fewer than items, in user space (Woodbury);
- GF-CF (`gf_cf_family`, Shen et al., CIKM 2021, https://arxiv.org/abs/2108.07567): the normalised item-item
  linear filter plus an ideal low-pass filter from the top singular vectors, training-free.

Matrix factorisation (BPR) and single-behaviour LightGCN are `MultiBehaviourGCN` configurations (see
`training/evaluate.py`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import svds

from graphrec.graph.tasks import RecTask
from graphrec.metrics import evaluate_ranking, expand_rows, sample_users

Scorer = Callable[[torch.Tensor], torch.Tensor]
# (settings, scorer) pairs of one baseline over one task; expensive parts are shared across the settings.
Family = Callable[[RecTask, Sequence[dict[str, Any]]], Iterator[tuple[dict[str, Any], Scorer]]]

log = logging.getLogger("graphrec.baselines")


class TooLarge(ValueError):
    """A baseline would need more memory than its limit allows on this task (the evaluation reports it skipped)."""


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


def item_knn_scorer(task: RecTask, neighbours: int = 100, block: int = 1024) -> Scorer:
    """Item-based kNN over co-occurrence in all behaviours (cosine), keeping `neighbours` per item."""
    matrix = interaction_matrix(task, "all")  # [users, items], 1 where the user touched the item
    norms = np.maximum(np.sqrt(np.asarray(matrix.sum(0)).ravel()), 1.0).astype(np.float32)
    rows, cols, values = top_neighbours(matrix, norms, neighbours, [0.0], block)[0.0]
    similarity = sp.csr_matrix((values, (rows, cols)), shape=(task.num_items, task.num_items))
    # Sparse rows times the sparse similarity: a user's scores cost (items touched x neighbours), not the catalogue's
    # size (a dense [items, batch] product took about ten minutes for 20k users of a 327k-item shop).
    return _linear_scorer(matrix, similarity, _popularity_tie_break(task))


def top_neighbours(
    matrix: sp.csr_matrix, norms: np.ndarray, neighbours: int, shrinkages: Sequence[float], block: int = 1024
) -> dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each item's `neighbours` most similar other items by cosine over the users of `matrix` ([users, items]):
    co-occurrence / (norm_i norm_j + shrinkage), only pairs with a user in common. Per shrinkage: (item, neighbour,
    similarity) arrays, an item's neighbours by falling similarity, ties by index.

    Item-item products are taken `block` items at a time and stay sparse, so time and memory follow the pairs that
    co-occur rather than items squared (a 327k-item catalogue would need a 2.7 GB dense row block)."""
    by_item = matrix.T.tocsr()  # [items, users]
    none = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    found: dict[float, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {h: [none] for h in shrinkages}
    for start in range(0, matrix.shape[1], block):
        co = (by_item[start : start + block] @ matrix).tocoo()  # [b, items]: (weighted) users shared
        row, col, shared = co.row.astype(np.int64), co.col.astype(np.int64), co.data.astype(np.float32)
        other = (col != row + start) & (shared > 0)
        row, col, shared = row[other], col[other], shared[other]
        denominator = norms[row + start] * norms[col]
        for h in shrinkages:
            similarity = shared / (denominator + np.float32(h))
            order = np.lexsort((col, -similarity, row))  # by item, similarity falling, neighbour index
            first = np.searchsorted(row[order], np.arange(co.shape[0]))  # each item's first entry in `order`
            keep = order[np.arange(len(order)) - first[row[order]] < neighbours]
            found[h].append((row[keep] + start, col[keep], similarity[keep]))
    return {h: tuple(np.concatenate([part[i] for part in parts]) for i in range(3)) for h, parts in found.items()}


def interaction_matrix(task: RecTask, weighting: str = "all", aux_weight: float = 1.0) -> sp.csr_matrix:
    """The user-item matrix [num_users, num_items] (float32 CSR) a linear baseline learns from.

    Args:
        weighting: `all`: 1 where the user touched the item through any behaviour; `target`: the target behaviour
            only; `weighted`: 1 for the target behaviour plus `aux_weight` per other behaviour that touched it.
    """
    if weighting not in ("all", "target", "weighted"):
        raise ValueError(f"weighting must be all, target or weighted, not {weighting!r}")
    shape = (task.num_users, task.num_items)
    total = sp.csr_matrix(shape, dtype=np.float32)
    for behaviour, (users, items, _) in task.edges.items():
        is_target = behaviour == task.target
        if weighting == "target" and not is_target:
            continue
        pairs = sp.csr_matrix((np.ones(len(users), np.float32), (users.numpy(), items.numpy())), shape=shape)
        pairs.data[:] = 1.0  # repeated pairs count once
        total = total + (pairs if is_target or weighting == "all" else pairs * np.float32(aux_weight))
    if weighting == "all":
        total.data[:] = 1.0
    total.eliminate_zeros()
    return total.astype(np.float32)


def _weightings(task: RecTask, grid: Sequence[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """The grid's settings grouped by the matrix they need, so each matrix is built once."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for settings in grid:
        key = (settings.get("weighting", "all"), float(settings.get("aux_weight", 1.0)))
        groups.setdefault(key, []).append(settings)
    return groups


def _batch_rows(matrix: sp.csr_matrix, users: torch.Tensor) -> sp.csr_matrix:
    return matrix[users.numpy()]


def _popularity_tie_break(task: RecTask) -> torch.Tensor:
    popularity = task.popularity()
    return 1e-6 * popularity / (popularity.max() + 1)


def _dense(matrix) -> torch.Tensor:
    return torch.from_numpy(np.asarray(matrix.todense() if sp.issparse(matrix) else matrix, dtype=np.float32))


def item_knn_family(
    task: RecTask, grid: Sequence[dict[str, Any]], block: int = 1024, max_cells: int = 300_000_000
) -> Iterator[tuple[dict[str, Any], Scorer]]:
    """Item-kNN over each setting of `grid`: `neighbours` (None: every item, the full cosine), `shrinkage` (added to
    the cosine's denominator, damping similarities resting on few users) and the matrix's `weighting`.

    One pass over the item-item co-occurrences per matrix serves every neighbourhood size and shrinkage; it keeps
    items x the widest neighbourhood per shrinkage, and raises TooLarge above `max_cells` such entries.
    """
    widest_grid = max((int(s["neighbours"]) for s in grid if s.get("neighbours") is not None), default=0)
    kept = task.num_items * min(widest_grid, task.num_items) * len({s.get("shrinkage", 0.0) for s in grid})
    if kept > max_cells:
        raise TooLarge(f"item-kNN would keep {kept:,} neighbour entries, above its limit of {max_cells:,}")
    tie_break = _popularity_tie_break(task)
    for (weighting, aux_weight), settings_list in _weightings(task, grid).items():
        matrix = interaction_matrix(task, weighting, aux_weight)  # [users, items]
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(0)).ravel()).astype(np.float32)
        norms = np.maximum(norms, 1e-12)
        finite = [s for s in settings_list if s.get("neighbours") is not None]
        shrinkages = sorted({float(s.get("shrinkage", 0.0)) for s in finite})
        widest = min(max((int(s["neighbours"]) for s in finite), default=0), task.num_items - 1)
        tops = top_neighbours(matrix, norms, widest, shrinkages, block) if finite and widest > 0 else {}
        for settings in settings_list:
            neighbours = settings.get("neighbours")
            if neighbours is None:
                yield settings, _full_cosine_scorer(matrix, norms, tie_break)
                continue
            if widest <= 0:  # a catalogue of one item has no neighbours
                yield settings, lambda users: tie_break.expand(len(users), -1)
                continue
            rows, cols, values = tops[float(settings.get("shrinkage", 0.0))]
            rank = np.arange(len(rows)) - np.searchsorted(rows, rows)  # each item's neighbours come in rank order
            kept = rank < min(int(neighbours), widest)
            shape = (task.num_items,) * 2
            similarity = sp.csr_matrix((values[kept], (rows[kept], cols[kept])), shape=shape)
            yield settings, _linear_scorer(matrix, similarity, tie_break)


def _linear_scorer(matrix: sp.csr_matrix, item_item, tie_break: torch.Tensor) -> Scorer:
    """Scores x_u @ item_item for the users' rows x_u of `matrix` (item_item sparse or dense [items, items])."""

    def score(users: torch.Tensor) -> torch.Tensor:
        return _dense(_batch_rows(matrix, users) @ item_item) + tie_break

    return score


def _full_cosine_scorer(matrix: sp.csr_matrix, norms: np.ndarray, tie_break: torch.Tensor) -> Scorer:
    """Item-kNN with every neighbour, without forming the item-item matrix: x_u D^-1 X^T X D^-1 minus each item's
    similarity to itself (1 for every touched item), in two sparse products through the users."""
    left = (matrix @ sp.diags(1.0 / norms)).astype(np.float32).tocsr()  # [users, items]: X D^-1
    right = matrix.T.tocsr()  # [items, users]
    column_scale = torch.from_numpy(1.0 / norms)[None, :]

    def score(users: torch.Tensor) -> torch.Tensor:
        through_users = _batch_rows(left, users) @ right  # [B, users]: x_u D^-1 X^T
        scores = _dense(through_users @ matrix) * column_scale  # [B, items]
        # An item's similarity to itself is co_jj / n_j^2 = 1, so each touched item adds x_uj to its own score.
        return scores - _dense(_batch_rows(matrix, users)) + tie_break

    return score


def ease_family(
    task: RecTask, grid: Sequence[dict[str, Any]], max_dim: int = 15_000, max_cells: int = 200_000_000
) -> Iterator[tuple[dict[str, Any], Scorer]]:
    """EASE^R over each setting of `grid` (`l2`: the ridge penalty lambda; `weighting` of the matrix).

    B = I - P / diag(P) with P = (X^T X + lambda I)^-1, so scores are x_u - (x_u P) / diag(P). Where users are
    fewer than items the same P is reached in user space, P = (I - X^T (lambda I + X X^T)^-1 X) / lambda, whose
    1 / lambda cancels in the ratio. Raises TooLarge where the smaller side exceeds `max_dim` (a dense
    max_dim^2 matrix is inverted) or, in user space, users x items exceeds `max_cells` (two such dense matrices).
    """
    side = min(task.num_users, task.num_items)
    if side > max_dim:
        raise TooLarge(f"EASE would invert a dense {side:,} x {side:,} matrix, above its limit of {max_dim:,}")
    if task.num_users < task.num_items and task.num_users * task.num_items > max_cells:
        raise TooLarge(
            f"EASE in user space would hold dense {task.num_users:,} x {task.num_items:,} matrices, above its "
            f"limit of {max_cells:,} cells"
        )
    tie_break = _popularity_tie_break(task)
    for (weighting, aux_weight), settings_list in _weightings(task, grid).items():
        matrix = interaction_matrix(task, weighting, aux_weight)
        item_space = task.num_items <= task.num_users
        # float32 halves the inversion's time against float64; lambda >= 1 keeps the system well conditioned (the
        # tests check it against numpy's float64 closed form).
        gram = torch.from_numpy(
            np.asarray((matrix.T @ matrix if item_space else matrix @ matrix.T).todense(), dtype=np.float32)
        )
        for settings in settings_list:
            regularised = gram.clone()
            regularised.diagonal().add_(float(settings["l2"]))
            factor = torch.linalg.cholesky(regularised)
            del regularised
            inverse = torch.cholesky_inverse(factor)
            del factor
            if item_space:
                inverse.div_(-torch.diagonal(inverse).clone()[None, :])  # B = -P / diag(P), [items, items]
                inverse.fill_diagonal_(0.0)
                weights = inverse.numpy()
                yield settings, _linear_scorer(matrix, weights, tie_break)
                del weights
            else:
                yield settings, _ease_user_space_scorer(matrix, inverse, tie_break)
                del inverse


def _ease_user_space_scorer(matrix: sp.csr_matrix, kernel_inverse: torch.Tensor, tie_break: torch.Tensor) -> Scorer:
    """EASE scores through the [users, users] kernel (lambda I + X X^T)^-1 (see `ease_family`)."""
    dense = torch.from_numpy(np.asarray(matrix.todense(), dtype=np.float32))  # [users, items]
    projected = kernel_inverse @ dense  # [users, items]: K^-1 X
    diagonal = 1.0 - (dense * projected).sum(0)  # lambda * diag(P), [items]

    def score(users: torch.Tensor) -> torch.Tensor:
        rows = dense[users]  # [B, items]
        p_rows = rows - (rows @ dense.T) @ projected  # lambda * x_u P
        return rows - p_rows / diagonal[None, :] + tie_break

    return score


def gf_cf_family(
    task: RecTask, grid: Sequence[dict[str, Any]], seed: int = 0
) -> Iterator[tuple[dict[str, Any], Scorer]]:
    """GF-CF over each setting of `grid`: `alpha` (weight of the ideal low-pass filter; 0: the linear filter
    alone), `k` (singular vectors it keeps) and the matrix's `weighting`.

    With R~ = D_U^-1/2 R D_I^-1/2, a user's scores are r_u R~^T R~ + alpha * r_u D_I^-1/2 V_k V_k^T D_I^1/2, V_k
    the top-k right singular vectors of R~ (one truncated SVD per matrix serves every k).
    """
    tie_break = _popularity_tie_break(task)
    for (weighting, aux_weight), settings_list in _weightings(task, grid).items():
        matrix = interaction_matrix(task, weighting, aux_weight)
        user_degree = np.asarray(matrix.sum(1)).ravel()
        item_degree = np.asarray(matrix.sum(0)).ravel()
        user_scale = np.where(user_degree > 0, 1.0 / np.sqrt(np.maximum(user_degree, 1e-12)), 0.0)
        item_scale = np.where(item_degree > 0, 1.0 / np.sqrt(np.maximum(item_degree, 1e-12)), 0.0)
        normalised = (sp.diags(user_scale) @ matrix @ sp.diags(item_scale)).astype(np.float32).tocsr()
        normalised_t = normalised.T.tocsr()
        widest = max((int(s.get("k", 0)) for s in settings_list if s.get("alpha", 0.0) > 0), default=0)
        widest = min(widest, min(normalised.shape) - 1) if normalised.nnz else 0  # nothing to decompose
        basis = None
        if widest > 0:
            started = time.perf_counter()
            rng = np.random.default_rng(seed)
            v0 = rng.standard_normal(min(normalised.shape)).astype(np.float32)
            _, values, vt = svds(normalised, k=widest, v0=v0)
            basis = torch.from_numpy(np.ascontiguousarray(vt[np.argsort(-values)].T, dtype=np.float32))  # [items, k]
            log.debug("gf-cf: %d singular vectors in %.1fs", widest, time.perf_counter() - started)
        down = torch.from_numpy(item_scale.astype(np.float32))
        up = torch.from_numpy(np.where(item_degree > 0, np.sqrt(item_degree), 0.0).astype(np.float32))
        for settings in settings_list:
            alpha = float(settings.get("alpha", 0.0))
            k = min(int(settings.get("k", 0)), widest)
            yield settings, _gf_cf_scorer(matrix, normalised, normalised_t, basis, k, alpha, down, up, tie_break)


def _gf_cf_scorer(matrix, normalised, normalised_t, basis, k, alpha, down, up, tie_break) -> Scorer:
    vectors = basis[:, :k] if basis is not None and alpha > 0 and k > 0 else None

    def score(users: torch.Tensor) -> torch.Tensor:
        rows = _batch_rows(matrix, users)  # [B, items], sparse
        linear = _dense((rows @ normalised_t) @ normalised)  # [B, items]
        if vectors is None:
            return linear + tie_break
        ideal = ((_dense(rows) * down) @ vectors) @ vectors.T * up  # [B, items]
        return linear + alpha * ideal + tie_break

    return score


# The settings each tuned baseline tries on validation. Behaviour weightings apply where the task has behaviours
# other than its target; one behaviour leaves only `all`.
ITEM_KNN_GRID = [{"neighbours": n, "shrinkage": h} for n in (50, 100, 200, 500) for h in (0.0, 10.0, 100.0)] + [
    {"neighbours": None, "shrinkage": 0.0}
]
# Each EASE setting inverts a dense matrix (about a minute at 12k items on 2 cores), so its grid is short: lambda
# five-fold apart, on the union of behaviours and on the target behaviour alone.
EASE_GRID = [{"l2": v} for v in (20.0, 100.0, 500.0)]
GF_CF_GRID = [{"alpha": 0.0, "k": 0}] + [{"alpha": a, "k": k} for a in (0.3, 1.0) for k in (64, 256)]
WEIGHTINGS = [
    {"weighting": "all"},
    {"weighting": "target"},
    {"weighting": "weighted", "aux_weight": 0.3},
]


EASE_WEIGHTINGS = WEIGHTINGS[:2]


def with_weightings(
    task: RecTask, grid: Sequence[dict[str, Any]], weightings: Sequence[dict[str, Any]] = tuple(WEIGHTINGS)
) -> list[dict[str, Any]]:
    """`grid` crossed with the behaviour weightings that differ on this task (just `all` for one behaviour)."""
    weightings = weightings if len(task.behaviours) > 1 else weightings[:1]
    return [{**w, **settings} for w in weightings for settings in grid]


def select_on_validation(
    family: Family,
    grid: Sequence[dict[str, Any]],
    val_task: RecTask,
    test_task: RecTask,
    metric: str = "ndcg@20",
    max_users: int | None = 5000,
    seed: int = 0,
) -> tuple[Scorer, dict[str, Any]]:
    """Try every setting of `grid` on `val_task` and return the best one's scorer fitted on `test_task`.

    Validation is scored on at most `max_users` users with truth (a fixed sample, `seed`), so its cost does not grow
    with the shop. Returns the scorer and {settings, validation: [{settings, metric}], seconds}.
    """
    started = time.perf_counter()
    users = sample_users(val_task.truth, max_users, seed)
    if users is None:
        users = torch.nonzero(val_task.truth.counts() > 0).flatten()
    k = int(metric.split("@")[1])
    tried = []
    for settings, scorer in family(val_task, grid):
        value = evaluate_ranking(scorer, val_task.truth, val_task.exclude, (k,), users=users)[metric]
        tried.append({"settings": settings, metric: round(value, 5)})
        log.debug("%s: %s", settings, value)
        del scorer  # its matrices go before the next setting's are built
    if not tried:
        raise ValueError("an empty grid: nothing to select")
    best = max(tried, key=lambda t: t[metric])["settings"]
    validation_seconds = time.perf_counter() - started
    _, scorer = next(family(test_task, [best]))
    return scorer, {
        "settings": best,
        "validation": tried,
        "validation_users": len(users),
        "validation_seconds": round(validation_seconds, 2),
    }
