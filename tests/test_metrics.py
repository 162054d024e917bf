from __future__ import annotations

import math

import pytest
import torch

from graphrec.metrics import Interactions, candidate_auc, evaluate_ranking, ranking_metrics


def test_perfect_ranking_scores_one():
    truth = Interactions.from_pairs([0, 0, 1], [2, 3, 1], num_users=2, num_items=5)
    dense = truth.dense(torch.arange(2)).float()
    result = evaluate_ranking(lambda users: dense[users], truth, ks=(2,))
    assert result["recall@2"] == 1.0 and result["ndcg@2"] == pytest.approx(1.0)
    assert result["hr@2"] == 1.0 and result["map@2"] == pytest.approx(1.0)
    assert result["users"] == 2


def test_hand_computed_case():
    # Ranked list for one user: [a, b, c]; relevant: b and d (d not retrieved).
    hits = torch.tensor([[False, True, False]])
    values = ranking_metrics(hits, torch.tensor([2]), k=3)
    assert float(values["recall@3"]) == pytest.approx(0.5)
    assert float(values["hr@3"]) == 1.0
    idcg = 1 + 1 / math.log2(3)
    assert float(values["ndcg@3"]) == pytest.approx((1 / math.log2(3)) / idcg)
    assert float(values["map@3"]) == pytest.approx((1 / 2) / 2)


def test_no_hit_scores_zero():
    values = ranking_metrics(torch.zeros(1, 5, dtype=torch.bool), torch.tensor([3]), k=5)
    assert all(float(v) == 0.0 for v in values.values())


def test_excluded_items_are_never_recommended():
    truth = Interactions.from_pairs([0], [1], num_users=1, num_items=4)
    exclude = Interactions.from_pairs([0], [0], num_users=1, num_items=4)
    scores = torch.tensor([[10.0, 5.0, 1.0, 0.0]])
    assert evaluate_ranking(lambda u: scores[u], truth, exclude, ks=(1,))["hr@1"] == 1.0
    assert evaluate_ranking(lambda u: scores[u], truth, None, ks=(1,))["hr@1"] == 0.0


def test_users_without_truth_are_skipped_and_coverage():
    truth = Interactions.from_pairs([1], [2], num_users=3, num_items=4)
    scores = torch.arange(4.0).repeat(3, 1)
    result = evaluate_ranking(lambda u: scores[u], truth, ks=(2,), item_popularity=torch.tensor([0, 1, 2, 3]))
    assert result["users"] == 1 and result["hr@2"] == 1.0
    assert result["coverage@2"] == 0.5
    assert result["avg_pop@2"] == pytest.approx((1.0 + 2 / 3) / 2)


def test_interactions_dense_and_dedup():
    inter = Interactions.from_pairs([2, 0, 2, 2], [1, 3, 1, 0], num_users=3, num_items=4)
    assert inter.counts().tolist() == [1, 0, 2]
    assert inter.dense(torch.tensor([2, 0])).tolist() == [[True, True, False, False], [False, False, False, True]]


def test_candidate_auc_hand_computed():
    # Candidates 1, 2, 3, 4 (item 0 is not one). User 0's relevant item 2 scores above 1 and 4, below 3: 2/3.
    # User 1's relevant item 4 ties with 1 and is below 2 and 3: (0 + 0.5) / 3.
    scores = torch.tensor([[9.0, 1.0, 5.0, 7.0, 2.0], [9.0, 3.0, 5.0, 7.0, 3.0]])
    truth = Interactions.from_pairs([0, 1], [2, 4], num_users=2, num_items=5)
    candidates = torch.tensor([False, True, True, True, True])
    auc = candidate_auc(lambda users: scores[users], truth, candidates)
    assert auc == pytest.approx((2 / 3 + 0.5 / 3) / 2)
    perfect = candidate_auc(lambda users: truth.dense(users).float(), truth, candidates)
    assert perfect == 1.0
    one_candidate = torch.tensor([False, False, True, False, False])
    assert math.isnan(candidate_auc(lambda users: scores[users], truth, one_candidate))


def test_a_large_catalogue_is_scored_in_smaller_user_batches_with_the_same_metrics():
    from graphrec.metrics import score_batch_size

    assert score_batch_size(40_000) == 800 and score_batch_size(327_000) == 97 and score_batch_size(10) == 1024
    generator = torch.Generator().manual_seed(0)
    users = torch.randint(0, 300, (900,), generator=generator)
    items = torch.randint(0, 50, (900,), generator=generator)
    truth = Interactions.from_pairs(users, items, num_users=300, num_items=50)
    scores = torch.randn(300, 50, generator=generator)
    batches = []

    def score(batch):
        batches.append(len(batch))
        return scores[batch]

    whole = evaluate_ranking(score, truth, ks=(5, 10), batch_size=1024)
    small = evaluate_ranking(score, truth, ks=(5, 10), batch_size=7)
    assert max(batches[1:]) == 7 and small == pytest.approx(whole)
    pool = torch.zeros(50, dtype=torch.bool)
    pool[:30] = True
    assert candidate_auc(score, truth, pool, batch_size=7) == pytest.approx(candidate_auc(score, truth, pool))
