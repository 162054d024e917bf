"""Fresh user embeddings from a published version's inductive state: a user without new edges gets the published
vector back exactly; new session items pull the vector towards them; a new user is embedded from items alone."""

from __future__ import annotations

import numpy as np

from graphrec.store.versions import list_versions, load_inductive, load_version, require_latest


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_without_new_edges_every_version_gives_its_published_user_vectors(published_pair):
    root, _ = published_pair
    store = root / "store"
    for version in list_versions(store):
        kit = load_inductive(store, version)
        assert kit is not None, f"{version} was published without its inductive state"
        published = load_version(store, version).vectors["user"]
        fresh = np.stack([kit.embed(u, [], []) for u in range(len(published))])
        np.testing.assert_allclose(fresh, published, rtol=1e-4, atol=1e-5)


def test_session_items_pull_the_user_towards_them_and_embed_a_new_user(published_pair, small_shop):
    root, _ = published_pair
    store = root / "store"
    version = require_latest(store)
    kit = load_inductive(store, version)
    vectors = load_version(store, version)
    items = vectors.vectors["item"]
    view = kit.behaviours.index("view")
    rng = np.random.default_rng(0)
    gains = []
    for user in rng.choice(len(vectors.vectors["user"]), 40, replace=False):
        part = slice(int(kit.edge_ptr[user]), int(kit.edge_ptr[user + 1]))
        touched = set(kit.edge_item[part].tolist())
        fresh_items = np.array([i for i in rng.permutation(len(items))[:50] if i not in touched][:3])
        session = _unit(items[fresh_items].mean(axis=0))
        before = kit.embed(int(user), [], [])
        after = kit.embed(int(user), fresh_items, np.full(3, view))
        gains.append(float(_unit(after) @ session - _unit(before) @ session))
        again = kit.embed(int(user), np.concatenate([fresh_items, fresh_items]), np.full(6, view))
        np.testing.assert_allclose(again, after, rtol=1e-6)  # a repeated edge adds nothing
    assert np.mean(gains) > 0 and np.mean(np.array(gains) > 0) > 0.9
    newcomer = kit.embed(None, np.array([0, 1, 2]), np.full(3, view))
    assert np.linalg.norm(newcomer) > 0
    assert _unit(newcomer) @ _unit(items[[0, 1, 2]].mean(axis=0)) > 0.3
