from __future__ import annotations

import pytest
import torch

from graphrec.data.validation import validate_events
from graphrec.embed.config import ModelConfig
from graphrec.embed.model import MultiBehaviourGCN
from graphrec.graph.sampling import NeighbourSampler, _floyd
from graphrec.graph.snapshot import build_snapshot
from graphrec.graph.tasks import task_from_snapshot


@pytest.fixture(scope="module")
def task(small_shop):
    events = validate_events(small_shop.events).frame
    return task_from_snapshot(build_snapshot(events, "2026-01-12", small_shop.items, small_shop.content))


def make_model(task, num_layers):
    sizes = task.feature_sizes()
    config = ModelConfig(dim=16, num_layers=num_layers)
    model = MultiBehaviourGCN(task.num_users, task.num_items, task.behaviours, task.target, config, sizes)
    model.set_graph(task.edges, task.item_features)
    with torch.no_grad():
        model.feature_gate.fill_(0.5)  # features take part
        model.behaviour_logits.copy_(torch.linspace(-1, 1, len(model.behaviours)))
    return model


def graph_edges(task):
    """Every (user, item, behaviour index) of the task, as a set."""
    return {
        (int(u), int(i), k)
        for k, name in enumerate(task.behaviours)
        for u, i in zip(*task.edges[name][:2], strict=True)
    }


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_full_neighbourhood_gives_the_full_graph_embeddings(task, num_layers):
    model = make_model(task, num_layers)
    sampler = NeighbourSampler(task.edges, model.behaviours, task.num_users, task.num_items, [-1] * num_layers)
    users = torch.tensor([0, 3, 3, 17, task.num_users - 1])
    items = torch.tensor([1, 2, 40, task.num_items - 1])
    subgraph = sampler.sample(users, items, torch.Generator().manual_seed(0))
    assert len(subgraph.users) < task.num_users or num_layers > 1
    with torch.no_grad():
        user_vectors, item_vectors, _ = model.propagate()
        sub_users, sub_items = model.propagate_subgraph(subgraph)
    assert torch.allclose(sub_users[subgraph.user_index(users)], user_vectors[users], atol=1e-5)
    assert torch.allclose(sub_items[subgraph.item_index(items)], item_vectors[items], atol=1e-5)


def test_sampled_edges_are_graph_edges_within_the_fanout(task):
    behaviours = task.behaviours
    sampler = NeighbourSampler(task.edges, behaviours, task.num_users, task.num_items, [3, 2])
    users = torch.arange(0, task.num_users, 9)
    subgraph = sampler.sample(users, torch.tensor([], dtype=torch.long), torch.Generator().manual_seed(1))
    edges = {
        (int(subgraph.users[u]), int(subgraph.items[i]), k)
        for k, name in enumerate(behaviours)
        for u, i in zip(*subgraph.edges[name], strict=True)
    }
    total = sum(len(subgraph.edges[name][0]) for name in behaviours)
    assert edges <= graph_edges(task) and len(edges) == total  # real edges, none twice
    # Each seed user draws min(degree, 3) edges at hop 1; its items may draw more of its edges at hop 2.
    assert set(users.tolist()) <= set(subgraph.users.tolist())
    degree = torch.zeros(task.num_users, dtype=torch.long)
    for name in behaviours:
        degree += torch.bincount(task.edges[name][0], minlength=task.num_users)
    sampled = torch.zeros(len(subgraph.users), dtype=torch.long)
    for name in behaviours:
        sampled += torch.bincount(subgraph.edges[name][0], minlength=len(subgraph.users))
    seeds = subgraph.user_index(users)
    assert (sampled[seeds] <= degree[users]).all() and (sampled[seeds] >= torch.clamp(degree[users], max=3)).all()


def test_fanout_keeps_up_to_that_many_distinct_neighbours(task):
    sampler = NeighbourSampler(task.edges, task.behaviours, task.num_users, task.num_items, [4])
    users = torch.arange(task.num_users)
    nodes, neighbours, kinds = sampler._from_user.sample(users, 4, torch.Generator().manual_seed(2))
    counts = torch.bincount(nodes, minlength=task.num_users)
    degree = sampler._from_user.indptr[1:] - sampler._from_user.indptr[:-1]
    assert torch.equal(counts, degree.clamp(max=4))
    drawn = set(zip(nodes.tolist(), neighbours.tolist(), kinds.tolist(), strict=True))
    assert len(drawn) == len(nodes)  # without replacement


def test_floyd_draws_every_subset_equally_often():
    generator = torch.Generator().manual_seed(3)
    chosen = _floyd(torch.full((30_000,), 4), 2, generator)
    assert ((chosen >= 0) & (chosen < 4)).all() and (chosen[:, 0] != chosen[:, 1]).all()
    pairs = chosen.sort(1).values
    counts = torch.bincount(pairs[:, 0] * 4 + pairs[:, 1], minlength=16)[[1, 2, 3, 6, 7, 11]]
    assert counts.sum() == 30_000
    assert ((counts / 30_000 - 1 / 6).abs() < 0.015).all(), counts  # 6 subsets, 1/6 each (sd 0.002)
    mixed = _floyd(torch.tensor([5, 50, 5000]), 5, generator)
    assert all(len(set(row.tolist())) == 5 for row in mixed) and (mixed < torch.tensor([[5], [50], [5000]])).all()
    assert sorted(mixed[0].tolist()) == [0, 1, 2, 3, 4]


def test_sampling_is_seeded(task):
    sampler = NeighbourSampler(task.edges, task.behaviours, task.num_users, task.num_items, [2, 2])
    users = torch.arange(0, task.num_users, 5)
    items = torch.arange(0, task.num_items, 11)
    a = sampler.sample(users, items, torch.Generator().manual_seed(7))
    b = sampler.sample(users, items, torch.Generator().manual_seed(7))
    c = sampler.sample(users, items, torch.Generator().manual_seed(8))
    assert torch.equal(a.users, b.users) and all(
        torch.equal(a.edges[n][0], b.edges[n][0]) and torch.equal(a.edges[n][1], b.edges[n][1]) for n in a.edges
    )
    assert any(not torch.equal(a.edges[n][0], c.edges[n][0]) for n in a.edges if len(a.edges[n][0]))


def test_bad_fanouts_are_refused(task):
    with pytest.raises(ValueError, match="fanouts"):
        NeighbourSampler(task.edges, task.behaviours, task.num_users, task.num_items, [0, 5])
