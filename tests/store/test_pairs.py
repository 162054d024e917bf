"""Pairs in the store: a ranker published with its version, retired with it, and strays cleaned."""

from __future__ import annotations

import json

from graphrec.store.config import ExportConfig, FeatureStoreConfig
from graphrec.store.pairs import pair_info, paired_ranker, rankers_dir
from graphrec.store.publish import publish_embeddings
from graphrec.store.versions import latest_version, list_versions
from tests.store.test_versions import make_set, rotated

OFFLINE = FeatureStoreConfig(enabled=False)


def test_a_ranker_goes_live_with_its_version_and_retires_with_it(tmp_path):
    ranker = tmp_path / "ranker"
    ranker.mkdir()
    (ranker / "ranker.json").write_text("{}")
    (ranker / "ranker.safetensors").write_bytes(b"weights")
    store, base = tmp_path / "store", make_set()
    publish_embeddings(store, base, {}, ExportConfig(keep=2), OFFLINE)  # a version without a ranker
    assert paired_ranker(store) is None
    for seed in (1, 2):
        publish_embeddings(
            store, rotated(base, seed, noise=0.1), {}, ExportConfig(keep=2), OFFLINE, ranker, None, {"run": seed}
        )
    live = latest_version(store)
    assert (paired_ranker(store) / "ranker.safetensors").read_bytes() == b"weights"
    assert pair_info(store) == json.loads((paired_ranker(store) / "pair.json").read_text())
    assert pair_info(store)["version"] == live and pair_info(store)["run"] == 2
    # Leftovers of killed writers: a ranker whose version retention already deleted, a half-copied one.
    (rankers_dir(store) / "v000001").mkdir()
    (rankers_dir(store) / ".v000009.tmp-dead").mkdir()
    publish_embeddings(store, rotated(base, 3, noise=0.1), {}, ExportConfig(keep=2), OFFLINE, ranker, None, {})
    kept = list_versions(store)
    assert sorted(p.name for p in rankers_dir(store).iterdir()) == [v for v in kept if v != "v000001"]
    assert len(kept) == 2
