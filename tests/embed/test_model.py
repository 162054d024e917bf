from __future__ import annotations

import math

import pytest
import torch

from graphrec.data.validation import validate_events
from graphrec.embed.config import ModelConfig
from graphrec.embed.model import MultiBehaviourGCN, PairLookup, _normalised_edges
from graphrec.embed.propagation import MixedAdjacency
from graphrec.errors import InputError
from graphrec.graph.snapshot import build_snapshot
from graphrec.graph.tasks import task_from_snapshot


@pytest.fixture(scope="module")
def task(small_shop):
    events = validate_events(small_shop.events).frame
    return task_from_snapshot(build_snapshot(events, "2026-01-12", small_shop.items, small_shop.content))


def make_model(task, **overrides):
    model = MultiBehaviourGCN(
        task.num_users,
        task.num_items,
        task.behaviours,
        task.target,
        ModelConfig(**overrides),
        task.feature_sizes(),
        task.vector_sizes(),
    )
    model.set_graph(task.edges, task.item_features)
    return model


def user_edges(task, users):
    edges, local = {}, torch.full((task.num_users,), -1)
    local[users] = torch.arange(len(users))
    for behaviour, (u, i, _) in task.edges.items():
        keep = local[u] >= 0
        edges[behaviour] = (local[u[keep]], i[keep])
    return edges


def test_inductive_embedding_equals_training_embedding(task):
    model = make_model(task, num_layers=3)
    with torch.no_grad():
        user_vectors, _, item_layers = model.propagate()
        users = torch.arange(0, task.num_users, 7)
        inductive = model.embed_users(user_edges(task, users), len(users), item_layers, users)
    assert torch.allclose(inductive, user_vectors[users], atol=1e-6)


@pytest.mark.parametrize("content_inputs", ["cold", "all"])
def test_inductive_item_embedding_equals_training_embedding(task, content_inputs):
    model = make_model(task, num_layers=2, content_inputs=content_inputs)
    with torch.no_grad():
        model.feature_gate.fill_(0.7)  # features take part
        model.content_gate.fill_(0.5)  # and so do the items' image vectors
        _, item_vectors, _ = model.propagate()
        user_layers, _ = model.propagate_layers()
        items = torch.arange(0, task.num_items, 5)
        local = torch.full((task.num_items,), -1)
        local[items] = torch.arange(len(items))
        edges = {}
        for behaviour, (u, i, _) in task.edges.items():
            keep = local[i] >= 0
            edges[behaviour] = (local[i[keep]], u[keep])
        features = {name: values[items] for name, values in task.item_features.items()}
        inductive = model.embed_items(edges, len(items), user_layers, features, items)
        cold = model.embed_items({}, len(items), user_layers, features)  # a new item: features only
    assert torch.allclose(inductive, item_vectors[items], atol=1e-6)
    assert cold.abs().sum(1).min() > 0
    assert task.vector_sizes() == {"image_embedding": 32}


def test_content_vectors_place_a_new_item_and_stay_out_when_disabled(task):
    model = make_model(task, num_layers=2)
    assert set(model.vector_projection) == {"image_embedding"}
    with torch.no_grad():
        model.content_gate.fill_(1.0)
        user_layers, _ = model.propagate_layers()
        images = task.item_features["image_embedding"][:4]
        only_content = model.embed_items({}, 4, user_layers, {"image_embedding": images})
        nothing = model.embed_items({}, 4, user_layers, {"image_embedding": torch.zeros(4, 32)})
        # Content vectors are L2-normalised: a vector's scale does not change the item's embedding.
        scaled = model.embed_items({}, 4, user_layers, {"image_embedding": 3 * images})
    assert only_content.abs().sum(1).min() > 0 and nothing.abs().sum() == 0
    assert torch.allclose(scaled, only_content, atol=1e-6)
    without_images = {n: v for n, v in task.item_features.items() if n != "image_embedding"}
    with pytest.raises(InputError, match=r"item features \['image_embedding'\]"):
        model.set_graph(task.edges, without_images)
    plain = make_model(task, use_content=False)
    assert len(plain.vector_projection) == 0 and not hasattr(plain, "content_gate")
    assert "content_gate" not in dict(plain.named_parameters())
    assert plain.hyperparameters()["vector_sizes"] == {}


@pytest.mark.parametrize("content_inputs", ["cold", "all"])
def test_content_vectors_enter_items_without_a_trained_id_only_when_cold(task, content_inputs):
    model = make_model(task, num_layers=2, content_inputs=content_inputs)
    warm = torch.nonzero(model._has_edges).flatten()
    cold = torch.nonzero(~model._has_edges).flatten()
    assert len(warm) and len(cold)
    flipped = task.item_features | {"image_embedding": -task.item_features["image_embedding"]}
    with torch.no_grad():
        model.content_gate.fill_(1.0)
        before = model.item_inputs()
        model.set_graph(task.edges, flipped)
        after = model.item_inputs()
    # An item without a trained id vector is placed by its content in both modes; a warm item by its content too
    # with `all`, by its id and catalog features alone with `cold`.
    assert (before[cold] - after[cold]).abs().sum(1).min() > 0
    unchanged = torch.isclose(before[warm], after[warm]).all(1)
    assert bool(unchanged.all()) if content_inputs == "cold" else not bool(unchanged.any())


def test_new_user_embedding_comes_from_its_items(task):
    model = make_model(task)
    with torch.no_grad():
        _, _, item_layers = model.propagate()
        edges = {"view": (torch.tensor([0, 0]), torch.tensor([1, 2]))}
        vector = model.embed_users(edges, 1, item_layers)
        empty = model.embed_users({}, 1, item_layers)
    assert vector.abs().sum() > 0 and empty.abs().sum() == 0


def test_single_behaviour_without_features_is_lightgcn(task):
    model = make_model(task, behaviours=["purchase"], use_features=False, history=False)
    assert model.behaviours == ["purchase"] and len(model.feature_embedding) == 0
    assert model.history_behaviours == []
    with torch.no_grad():
        _, _, layers = model.propagate()
    bought = torch.zeros(task.num_items, dtype=torch.bool)
    bought[task.edges["purchase"][1]] = True
    assert torch.equal(layers[0][bought], model.item_embedding.weight[bought])
    # An item never bought has no edge in this single-behaviour graph: its id vector, trained only as a
    # negative, is left out, and without features it has nothing else.
    assert (~bought).any() and layers[0][~bought].abs().sum() == 0


def test_cold_item_vectors_are_what_a_new_item_gets(task):
    model = make_model(task, num_layers=2)
    with torch.no_grad():
        model.feature_gate.fill_(0.5)
        model.content_gate.fill_(0.5)
        user_layers, _ = model.propagate_layers()
        items = torch.arange(0, task.num_items, 9)
        features = {name: values[items] for name, values in task.item_features.items()}
        new = model.embed_items({}, len(items), user_layers, features)
        assert torch.allclose(model.cold_item_vectors(items), new, atol=1e-6)
        # The items the training graph has no edge for are exactly such items: propagation gives them the same.
        _, item_vectors, _ = model.propagate()
        isolated = torch.nonzero(~model._has_edges).flatten()
        assert len(isolated) > 0
        assert torch.allclose(item_vectors[isolated], model.cold_item_vectors(isolated), atol=1e-6)


def test_features_give_items_without_interactions_a_vector(task):
    model = make_model(task)
    model.item_embedding.weight.data.zero_()
    model.feature_gate.data.fill_(1.0)
    assert model.item_inputs().abs().sum(1).min() > 0


def test_history_term_only_uses_auxiliary_behaviours(task):
    model = make_model(task)
    assert task.target not in model.history_behaviours
    with torch.no_grad():
        model.history_weight.fill_(1.0)
    users, items, _ = task.edges["view"]
    expected = torch.zeros(len(users))
    for behaviour in model.history_behaviours:
        lookup = PairLookup(*task.edges[behaviour][:2], torch.log1p(task.edges[behaviour][2]), task.num_items)
        expected += lookup(users, items)
    assert torch.allclose(model.history_scores(users, items), expected)
    rows = model.history_scores(users[:5])
    assert torch.allclose(rows[torch.arange(5), items[:5]], expected[:5])


def test_history_rows_equal_the_pair_scores_and_add_into_a_given_block(task):
    model = make_model(task)
    assert model.use_conversion and len(model.history_behaviours) >= 2
    with torch.no_grad():
        model.history_weight.copy_(torch.linspace(0.5, 2.0, len(model.history_behaviours)))
        model.conversion_weight.fill_(1.5)
    users = torch.arange(min(task.num_users, 12))
    grid_users = users.repeat_interleave(task.num_items)
    grid_items = torch.arange(task.num_items).repeat(len(users))
    pairs = model.history_scores(grid_users, grid_items).reshape(len(users), task.num_items)
    rows = model.history_scores(users)
    assert rows.abs().sum() > 0
    torch.testing.assert_close(rows, pairs)
    base = torch.randn(len(users), task.num_items)
    torch.testing.assert_close(model.history_scores(users, out=base.clone()), base + pairs)


def test_pair_lookup_misses_are_zero():
    lookup = PairLookup(torch.tensor([0, 2]), torch.tensor([1, 3]), torch.tensor([5.0, 7.0]), num_items=4)
    assert lookup(torch.tensor([0, 2, 1]), torch.tensor([1, 3, 1])).tolist() == [5.0, 7.0, 0.0]
    assert lookup.rows(torch.tensor([2])).tolist() == [[0.0, 0.0, 0.0, 7.0]]


def test_normalized_embeddings_are_cosine_over_temperature(task):
    model = make_model(task, num_layers=2, normalize=True, temperature=0.25)
    with torch.no_grad():
        model.feature_gate.fill_(0.5)  # items without interactions have their features only, not a zero vector
        users, items, item_layers = model.propagate()
        assert torch.allclose(users.norm(dim=1), torch.full((task.num_users,), 2.0), atol=1e-4)
        assert torch.allclose(items.norm(dim=1), torch.full((task.num_items,), 2.0), atol=1e-4)
        # The inductive path applies the same normalisation.
        picked = torch.arange(0, task.num_users, 11)
        inductive = model.embed_users(user_edges(task, picked), len(picked), item_layers, user_ids=picked)
    assert torch.allclose(inductive, users[picked], atol=1e-5)


def test_mixed_propagation_matches_dense_forward_and_gradients():
    # Three behaviours on 3 users x 4 items; the pair (0, 1) is in all three, (2, 3) in two.
    edges = [
        (torch.tensor([0, 0, 1, 2, 2]), torch.tensor([1, 3, 0, 0, 3])),
        (torch.tensor([0, 2]), torch.tensor([1, 3])),
        (torch.tensor([0, 1, 2]), torch.tensor([1, 2, 2])),
    ]
    adjacencies = [(users, items, _normalised_edges(users, items, 3, 4)[0]) for users, items in edges]
    mixed = MixedAdjacency(adjacencies, 3, 4)
    assert len(mixed) == 7  # distinct pairs
    dense = torch.stack(
        [torch.sparse_coo_tensor(torch.stack([u, i]), v, (3, 4)).to_dense() for u, i, v in adjacencies]
    ).double()
    for to_items, rows, columns in ((False, 3, 4), (True, 4, 3)):
        matrices = dense.transpose(1, 2) if to_items else dense
        alpha = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64, requires_grad=True)
        x = torch.randn(columns, 5, dtype=torch.float64, requires_grad=True)
        y = torch.randn(rows, 5, dtype=torch.float64)
        out = mixed.propagate(mixed.values(alpha), x, to_items)
        expected = torch.einsum("b,brc,cd->rd", alpha, matrices, x)
        torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
        (out * y).sum().backward()
        alpha_dense = alpha.detach().clone().requires_grad_(True)
        x_dense = x.detach().clone().requires_grad_(True)
        (torch.einsum("b,brc,cd->rd", alpha_dense, matrices, x_dense) * y).sum().backward()
        torch.testing.assert_close(alpha.grad, alpha_dense.grad, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(x.grad, x_dense.grad, rtol=1e-6, atol=1e-6)


def test_one_behaviour_logit_gets_a_zero_gradient():
    # DDP expects a gradient for every parameter: the single behaviour's logit gets zeros, not None.
    users, items = torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 3])
    model = MultiBehaviourGCN(3, 4, ["purchase"], "purchase", ModelConfig(dim=8, num_layers=2, history=False))
    model.set_graph({"purchase": (users, items, torch.ones(4))})
    user_vectors, item_vectors, _ = model.propagate()
    (user_vectors.sum() + item_vectors.sum()).backward()
    assert model.behaviour_logits.grad is not None
    assert torch.equal(model.behaviour_logits.grad, torch.zeros(1))


def test_conversion_term_hand_computed():
    # Items 0..2. Views: users 0, 1, 2 on item 0; user 0 on item 1. Purchases: user 3 bought item 0, user 1 item 2.
    views = (torch.tensor([0, 1, 2, 0]), torch.tensor([0, 0, 0, 1]), torch.ones(4))
    buys = (torch.tensor([3, 1]), torch.tensor([0, 2]), torch.ones(2))
    model = MultiBehaviourGCN(4, 3, ["view", "purchase"], "purchase", ModelConfig(dim=4, num_layers=1))
    model.set_graph({"view": views, "purchase": buys})
    rate = 2 / 4  # 2 buyers over 4 (user, item) view pairs
    expected = [
        math.log10(((1 + 10 * rate) / (3 + 10)) / rate),
        math.log10(((0 + 10 * rate) / (1 + 10)) / rate),
        math.log10(((1 + 10 * rate) / (0 + 10)) / rate),
    ]
    torch.testing.assert_close(model._conversion, torch.tensor(expected))
    with torch.no_grad():
        model.history_weight.zero_()
        model.conversion_weight.fill_(2.0)
    # Only items the user touched through an auxiliary behaviour get the term: user 0 viewed items 0 and 1.
    rows = model.history_scores(torch.tensor([0, 3]))
    torch.testing.assert_close(rows[0], torch.tensor([2 * expected[0], 2 * expected[1], 0.0]))
    torch.testing.assert_close(rows[1], torch.zeros(3))
    pairs = model.history_scores(torch.tensor([0, 0, 3]), torch.tensor([1, 2, 0]))
    torch.testing.assert_close(pairs, torch.tensor([2 * expected[1], 0.0, 0.0]))
    # In training an item's rate leaves out the scored user's own purchase: user 1 did not buy item 0, so nothing
    # changes; made a buyer of it, the rate counts one buyer fewer.
    own = model.history_scores(torch.tensor([1]), torch.tensor([0]), leave_own_out=True)
    torch.testing.assert_close(own, torch.tensor([2 * expected[0]]))
    model._bought = PairLookup(torch.tensor([1]), torch.tensor([0]), torch.ones(1), 3)
    left_out = math.log10(((0 + 10 * rate) / (3 + 10)) / rate)
    own = model.history_scores(torch.tensor([1]), torch.tensor([0]), leave_own_out=True)
    torch.testing.assert_close(own, torch.tensor([2 * left_out]))
    assert not hasattr(
        MultiBehaviourGCN(4, 3, ["view", "purchase"], "purchase", ModelConfig(conversion=False)), "conversion_weight"
    )


def test_spectral_init_starts_from_the_graph(task):
    def training_auc(model):
        users, items, _ = task.edges["purchase"]
        negatives = torch.randint(0, task.num_items, (len(users),), generator=torch.Generator().manual_seed(0))
        u, i = model.user_embedding.weight, model.item_embedding.weight
        positive = (u[users] * i[items]).sum(-1)
        negative = (u[users] * i[negatives]).sum(-1)
        return float((positive > negative).float().mean())

    normal = make_model(task, init="normal")
    spectral = make_model(task, init="spectral")
    spectral.spectral_init(task.edges, seed=0)
    again = make_model(task, init="spectral")
    again.spectral_init(task.edges, seed=0)
    torch.testing.assert_close(spectral.user_embedding.weight, again.user_embedding.weight)
    # Interacting pairs are already close in the spectral start, not in the random one.
    assert training_auc(spectral) > 0.75 and training_auc(normal) < 0.6
    norms = spectral.user_embedding.weight.norm(dim=1).mean()
    assert abs(float(norms) - 0.1 * 64**0.5) < 1e-3
    with pytest.raises(ValueError, match=r"model\.init"):
        ModelConfig(init="xavier")
