from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from graphrec.embed.config import ModelConfig
from graphrec.embed.cooccurrence import Cooccurrence, normalised_neighbours
from graphrec.embed.model import MultiBehaviourGCN

# Users 0..4, items 0..5. Views and purchases; (1, 2) and (3, 4) are bought without a view, (0, 0) viewed and bought.
VIEWS = ([0, 0, 0, 1, 1, 2, 2, 3, 4, 4], [0, 1, 2, 1, 3, 0, 5, 2, 1, 5])
BUYS = ([0, 1, 3, 4], [0, 2, 4, 1])
NUM_USERS, NUM_ITEMS = 5, 6


def edges():
    def part(users, items):
        return torch.tensor(users), torch.tensor(items), torch.ones(len(users))

    return {"view": part(*VIEWS), "purchase": part(*BUYS)}


def dense_matrix() -> np.ndarray:
    matrix = np.zeros((NUM_USERS, NUM_ITEMS))
    for users, items in (VIEWS, BUYS):
        matrix[users, items] = 1.0
    return matrix


def brute_similarity(matrix: np.ndarray) -> np.ndarray:
    """GF-CF's normalised item-item filter, written out: sum over users of R[u, j] R[u, i] / d_u / sqrt(d_j d_i)."""
    user_degree, item_degree = matrix.sum(1), matrix.sum(0)
    similarity = np.zeros((NUM_ITEMS, NUM_ITEMS))
    for j in range(NUM_ITEMS):
        for i in range(NUM_ITEMS):
            if i != j:
                both = matrix[:, j] * matrix[:, i] / np.maximum(user_degree, 1)
                similarity[j, i] = both.sum() / np.sqrt(max(item_degree[j], 1) * max(item_degree[i], 1))
    return similarity


def cooccurrence(neighbours: int = 100) -> Cooccurrence:
    e = edges()
    users, items = torch.cat([e["view"][0], e["purchase"][0]]), torch.cat([e["view"][1], e["purchase"][1]])
    alone = (torch.tensor([1, 3]), torch.tensor([2, 4]))  # bought, never viewed
    return Cooccurrence((users, items), alone, NUM_USERS, NUM_ITEMS, neighbours)


def test_similarity_is_the_normalised_filter_with_its_largest_entries_kept():
    matrix = dense_matrix()
    expected = brute_similarity(matrix)
    full = normalised_neighbours(sp.csr_matrix(matrix.astype(np.float32)), 100)
    np.testing.assert_allclose(full.toarray(), expected, rtol=1e-5, atol=1e-7)
    two = normalised_neighbours(sp.csr_matrix(matrix.astype(np.float32)), 2, block=4).toarray()
    for j in range(NUM_ITEMS):
        kept = np.flatnonzero(two[j])
        assert len(kept) <= 2
        # What is kept is among the row's largest entries, with its value.
        assert all(expected[j, i] >= np.sort(expected[j])[-2] - 1e-7 for i in kept)
        np.testing.assert_allclose(two[j, kept], expected[j, kept], rtol=1e-5)


def test_rows_and_pairs_sum_the_similarity_to_the_users_items():
    matrix, co = dense_matrix(), cooccurrence()
    raw = matrix @ brute_similarity(matrix)
    rows = co.rows(torch.arange(NUM_USERS))
    np.testing.assert_allclose(rows.numpy(), np.log1p(raw * co.scale), rtol=1e-5, atol=1e-6)
    users = torch.tensor([0, 0, 2, 4, 3])
    items = torch.tensor([3, 5, 1, 0, 0])
    np.testing.assert_allclose(co.pairs(users, items).numpy(), rows[users, items].numpy(), rtol=1e-5, atol=1e-6)


def test_a_purchase_alone_is_scored_without_its_buyer():
    matrix, co = dense_matrix(), cooccurrence()
    user_degree, item_degree = matrix.sum(1), matrix.sum(0)
    similarity = brute_similarity(matrix)

    def left_out(u, i):
        # The buyer's own term leaves every S[j, i] it is part of (degrees as trained).
        return sum(
            similarity[j, i] - matrix[u, j] * matrix[u, i] / user_degree[u] / np.sqrt(item_degree[j] * item_degree[i])
            for j in np.flatnonzero(matrix[u])
            if j != i
        )

    # (1, 2) and (3, 4) were bought without a view: left out. (0, 0) was viewed too, so the view keeps the buyer in
    # the graph, as it would for a held-out purchase the user had viewed; (2, 1) is not a training pair at all.
    users, items = torch.tensor([1, 3, 0, 2]), torch.tensor([2, 4, 0, 1])
    scores = torch.expm1(co.pairs(users, items, leave_own_out=True)) / co.scale
    expected = [left_out(1, 2), left_out(3, 4), (matrix[0] @ similarity)[0], (matrix[2] @ similarity)[1]]
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert scores[0] < (matrix[1] @ similarity)[2]


def test_sums_scaled_to_one_on_average_over_the_training_pairs():
    co = cooccurrence()
    users, items = np.nonzero(dense_matrix())
    mean = torch.expm1(co.pairs(torch.from_numpy(users), torch.from_numpy(items), leave_own_out=True)).mean()
    assert float(mean) == pytest.approx(1.0, rel=1e-5)


def test_model_history_term_adds_the_weighted_cooccurrence():
    model = MultiBehaviourGCN(
        NUM_USERS, NUM_ITEMS, ["view", "purchase"], "purchase", ModelConfig(dim=4, cooccurrence=True)
    )
    model.set_graph(edges())
    users = torch.arange(NUM_USERS)
    before = model.history_scores(users)
    with torch.no_grad():
        model.cooccurrence_weight.fill_(2.0)
    after = model.history_scores(users)
    torch.testing.assert_close(after - before, 2.0 * model._cooccurrence.rows(users))
    pairs = model.history_scores(torch.tensor([1]), torch.tensor([2]), leave_own_out=True)
    torch.testing.assert_close(
        pairs - before[1, 2], 2.0 * model._cooccurrence.pairs(torch.tensor([1]), torch.tensor([2]), True)
    )
    assert "cooccurrence_weight" in MultiBehaviourGCN.HISTORY_PARAMETERS
    off = MultiBehaviourGCN(NUM_USERS, NUM_ITEMS, ["view", "purchase"], "purchase", ModelConfig())
    assert not hasattr(off, "cooccurrence_weight")  # off by default
    # Without auxiliary behaviours there is no history term, so no co-occurrence either.
    single = MultiBehaviourGCN(NUM_USERS, NUM_ITEMS, ["purchase"], "purchase", ModelConfig(cooccurrence=True))
    assert not single.use_cooccurrence
