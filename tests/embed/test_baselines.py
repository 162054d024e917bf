from __future__ import annotations

import numpy as np
import pytest
import torch

from graphrec.embed.baselines import (
    EASE_GRID,
    GF_CF_GRID,
    ITEM_KNN_GRID,
    TooLarge,
    ease_family,
    gf_cf_family,
    interaction_matrix,
    item_knn_family,
    item_knn_scorer,
    select_on_validation,
    with_weightings,
)
from graphrec.graph.tasks import RecTask, holdout_task
from graphrec.metrics import Interactions


def random_task(num_users: int = 60, num_items: int = 40, seed: int = 0, behaviours=("view", "purchase")) -> RecTask:
    """A task with clustered tastes: users of a cluster touch mostly its items, so neighbourhoods carry signal."""
    generator = np.random.default_rng(seed)
    clusters = 4
    user_cluster = generator.integers(0, clusters, num_users)
    item_cluster = np.arange(num_items) % clusters
    edges = {}
    for behaviour, per_user in zip(behaviours, (8, 3), strict=False):
        users, items = [], []
        for user in range(num_users):
            own = np.flatnonzero(item_cluster == user_cluster[user])
            picks = np.where(
                generator.random(per_user) < 0.8,
                generator.choice(own, per_user),
                generator.integers(0, num_items, per_user),
            )
            pairs = np.unique(picks)
            users += [user] * len(pairs)
            items += pairs.tolist()
        users_t, items_t = torch.tensor(users), torch.tensor(items)
        edges[behaviour] = (users_t, items_t, torch.ones(len(users_t)))
    target = behaviours[-1]
    truth_users = torch.arange(num_users)
    truth_items = torch.tensor(
        [int(generator.choice(np.flatnonzero(item_cluster == c))) for c in user_cluster], dtype=torch.long
    )
    return RecTask(
        num_users,
        num_items,
        list(behaviours),
        target,
        edges,
        Interactions.from_pairs(truth_users, truth_items, num_users, num_items),
        Interactions.from_pairs(*edges[target][:2], num_users, num_items),
    )


def scores(family, task, settings, users=None):
    users = torch.arange(task.num_users) if users is None else users
    (_, scorer), *_ = list(family(task, [settings]))
    return scorer(users)


def dense(task: RecTask, weighting="all", aux_weight=1.0) -> np.ndarray:
    return interaction_matrix(task, weighting, aux_weight).toarray().astype(np.float64)


def test_interaction_matrix_weightings():
    task = random_task()
    view = np.zeros((task.num_users, task.num_items))
    purchase = np.zeros_like(view)
    view[task.edges["view"][0], task.edges["view"][1]] = 1
    purchase[task.edges["purchase"][0], task.edges["purchase"][1]] = 1
    assert np.array_equal(dense(task, "all"), np.maximum(view, purchase))
    assert np.array_equal(dense(task, "target"), purchase)
    assert np.allclose(dense(task, "weighted", 0.3), purchase + 0.3 * view)
    with pytest.raises(ValueError, match="weighting"):
        interaction_matrix(task, "views")


def test_item_knn_family_at_100_neighbours_is_the_fixed_item_knn():
    task = random_task(num_items=150)
    users = torch.arange(task.num_users)
    fixed = item_knn_scorer(task, neighbours=100)(users)
    tuned = scores(item_knn_family, task, {"weighting": "all", "neighbours": 100, "shrinkage": 0.0}, users)
    assert torch.allclose(fixed, tuned, atol=1e-5)


@pytest.mark.parametrize("neighbours,shrinkage", [(5, 0.0), (12, 3.0)])
def test_item_knn_keeps_each_items_top_cosine_neighbours(neighbours, shrinkage):
    """Against a dense hand computation: each item's `neighbours` highest cosines to other items (ties by item
    index, only items sharing a user), scores x_u @ S, across several blocks of the sparse products."""
    task = random_task(num_users=70, num_items=90, seed=3)
    x = dense(task, "weighted", 0.5)
    settings = {"weighting": "weighted", "aux_weight": 0.5, "neighbours": neighbours, "shrinkage": shrinkage}
    (_, scorer), *_ = list(item_knn_family(task, [settings], block=16))
    got = scorer(torch.arange(task.num_users)).double().numpy()
    norms = np.maximum(np.sqrt((x * x).sum(0)), 1e-12)
    assert np.allclose(got, x @ _top_cosine(x, norms, neighbours, shrinkage), atol=1e-4)
    if shrinkage == 0.0:
        fixed = item_knn_scorer(task, neighbours=neighbours, block=16)(torch.arange(task.num_users)).double().numpy()
        x = dense(task)
        assert np.allclose(fixed, x @ _top_cosine(x, np.maximum(np.sqrt(x.sum(0)), 1.0), neighbours), atol=1e-4)


def _top_cosine(x: np.ndarray, norms: np.ndarray, neighbours: int, shrinkage: float = 0.0) -> np.ndarray:
    """Item-item cosines, each row keeping its `neighbours` largest positive ones (ties by index), computed in
    float32 as the baseline does so that near-ties order alike."""
    norms = norms.astype(np.float32)
    x32 = x.astype(np.float32)
    cosine = (x32.T @ x32) / (norms[:, None] * norms[None, :] + np.float32(shrinkage))
    np.fill_diagonal(cosine, 0.0)
    kept = np.zeros(cosine.shape)
    for item, row in enumerate(cosine):
        order = np.lexsort((np.arange(len(row)), -row))
        top = [j for j in order[:neighbours] if row[j] > 0]
        kept[item, top] = row[top]
    return kept


def test_full_cosine_equals_every_neighbour_kept_and_the_hand_computed_cosine():
    task = random_task()
    full = scores(item_knn_family, task, {"weighting": "weighted", "aux_weight": 0.3, "neighbours": None}).double()
    widest = scores(
        item_knn_family, task, {"weighting": "weighted", "aux_weight": 0.3, "neighbours": task.num_items - 1}
    ).double()
    assert torch.allclose(full, widest, atol=1e-5)
    x = dense(task, "weighted", 0.3)
    norms = np.sqrt((x * x).sum(0))
    cosine = (x.T @ x) / np.outer(norms, norms)
    np.fill_diagonal(cosine, 0.0)
    assert np.allclose(full.numpy(), x @ cosine, atol=1e-4)


def test_shrinkage_damps_similarities_resting_on_few_users():
    task = random_task()
    plain = scores(item_knn_family, task, {"neighbours": 20, "shrinkage": 0.0})
    shrunk = scores(item_knn_family, task, {"neighbours": 20, "shrinkage": 50.0})
    assert (shrunk <= plain + 1e-6).all() and (shrunk < plain - 1e-6).any()


def test_ease_matches_its_closed_form_in_item_and_user_space():
    l2 = 7.0
    for num_users, num_items in ((80, 30), (25, 60)):  # item space, then user space (fewer users than items)
        task = random_task(num_users, num_items)
        x = dense(task)
        p = np.linalg.inv(x.T @ x + l2 * np.eye(num_items))
        b = -p / np.diag(p)[None, :]
        np.fill_diagonal(b, 0.0)
        got = scores(ease_family, task, {"l2": l2}).double().numpy()
        assert np.allclose(got, x @ b, atol=1e-4), (num_users, num_items)


def test_ease_refuses_a_matrix_above_its_limit():
    task = random_task(80, 30)
    with pytest.raises(ValueError, match="30 x 30"):
        next(ease_family(task, [{"l2": 1.0}], max_dim=20))


def test_gf_cf_linear_and_ideal_filters_hand_computed():
    task = random_task(50, 30)
    r = dense(task)
    normalised = r / np.sqrt(r.sum(1, keepdims=True)) / np.sqrt(r.sum(0, keepdims=True))
    linear = r @ normalised.T @ normalised
    got = scores(gf_cf_family, task, {"alpha": 0.0, "k": 0}).double().numpy()
    assert np.allclose(got, linear, atol=1e-4)
    _, _, vt = np.linalg.svd(normalised)
    v = vt[:8].T
    degree = r.sum(0)
    ideal = (r / np.sqrt(degree)) @ v @ v.T * np.sqrt(degree)
    got = scores(gf_cf_family, task, {"alpha": 0.5, "k": 8}).double().numpy()
    assert np.allclose(got, linear + 0.5 * ideal, atol=1e-3)


def test_every_family_is_deterministic_and_ranks_a_users_cluster_first():
    task = random_task()
    for family, grid in ((item_knn_family, ITEM_KNN_GRID), (ease_family, EASE_GRID), (gf_cf_family, GF_CF_GRID)):
        for settings in with_weightings(task, grid[:2]):
            first = scores(family, task, settings)
            assert torch.equal(first, scores(family, task, settings)), (family.__name__, settings)
            hits = torch.topk(first, 10, dim=1).indices % 4  # items of cluster c are c, c + 4, ...
            truth_cluster = task.truth.indices % 4
            assert (hits == truth_cluster[:, None]).float().mean() > 0.5, (family.__name__, settings)


def test_selection_reads_validation_only_and_fits_the_choice_on_the_test_task():
    task = random_task(num_items=60)
    val = holdout_task(task)
    grid = with_weightings(task, ITEM_KNN_GRID[:6])
    scorer, info = select_on_validation(item_knn_family, grid, val, task, metric="ndcg@10")
    best = max(info["validation"], key=lambda t: t["ndcg@10"])
    assert info["settings"] == best["settings"] and len(info["validation"]) == len(grid)
    expected = scores(item_knn_family, task, info["settings"])
    assert torch.equal(scorer(torch.arange(task.num_users)), expected)
    # The test pairs play no part in the choice.
    shuffled = RecTask(**{**task.__dict__, "truth": Interactions.from_pairs([0], [1], task.num_users, task.num_items)})
    _, again = select_on_validation(item_knn_family, grid, val, shuffled, metric="ndcg@10")
    assert again["settings"] == info["settings"] and again["validation"] == info["validation"]


def test_validation_sample_is_bounded_and_fixed():
    task = random_task(num_users=200)
    val = holdout_task(task)
    _, first = select_on_validation(gf_cf_family, GF_CF_GRID[:1], val, task, max_users=50)
    _, second = select_on_validation(gf_cf_family, GF_CF_GRID[:1], val, task, max_users=50)
    assert first["validation_users"] == 50 and first["validation"] == second["validation"]


def test_edge_cases_give_scores_or_a_clear_refusal():
    task = random_task()
    no_target = RecTask(
        **{
            **task.__dict__,
            "edges": {**task.edges, "purchase": (torch.zeros(0, dtype=torch.long),) * 2 + (torch.zeros(0),)},
        }
    )
    for family, settings in (
        (gf_cf_family, {"weighting": "target", "alpha": 0.3, "k": 8}),
        (item_knn_family, {"weighting": "target", "neighbours": 5}),
        (item_knn_family, {"weighting": "target", "neighbours": None}),
    ):
        got = scores(family, no_target, settings)  # nothing to learn from: the popularity tie-break alone
        assert got.shape == (task.num_users, task.num_items) and torch.isfinite(got).all()
    users = torch.arange(5)
    one = (users, torch.zeros(5, dtype=torch.long), torch.ones(5))
    empty = Interactions.from_pairs([], [], 5, 1)
    one_item = RecTask(5, 1, ["view", "purchase"], "purchase", {"view": one, "purchase": one}, empty, empty)
    assert scores(item_knn_family, one_item, {"neighbours": 5}).shape == (5, 1)
    with pytest.raises(TooLarge, match="neighbour entries"):
        next(item_knn_family(task, [{"neighbours": 20}], max_cells=100))
