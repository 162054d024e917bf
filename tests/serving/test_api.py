"""The ranking API over a published pair: served scores equal the offline ranker's, cold start and unknown modules,
feedback honoured and durable, served pages logged in the impressions contract, operations endpoints, reload."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from fastapi.testclient import TestClient

from graphrec.data.validation import read_validated
from graphrec.errors import ConfigError
from graphrec.rank.artifact import load_ranker
from graphrec.rank.config import RankFeatureConfig
from graphrec.rank.features import behaviour_features
from graphrec.store.versions import load_version, require_latest
from serving.app import create_app
from serving.config import ServeConfig

ROOT = Path(__file__).resolve().parents[2]


def _config(root, tmp_path, **overrides) -> ServeConfig:
    settings = {
        "ranker": str(root / "ranker"),
        "store": str(root / "store"),
        "feedback": str(tmp_path / "feedback"),
        "impression_log": str(tmp_path / "served"),
        "log_flush_seconds": 60.0,
        "clock": "data_end",  # the small shop's modules have all ended by now
    }
    return ServeConfig(**(settings | overrides))


@pytest.fixture
def client(published_pair, tmp_path):
    root, _ = published_pair
    with TestClient(create_app(_config(root, tmp_path))) as test_client:
        yield test_client


def _after_the_log(shop):
    end = max(shop.events["timestamp"].max(), shop.impressions["timestamp"].max())
    return end + timedelta(hours=2)


def _embedded_user(root, shop):
    vectors = load_version(root / "store", require_latest(root / "store"))
    users = set(vectors.ids["user"].to_list())
    counts = shop.events.group_by("user_id").len().sort("len", descending=True)
    return next(u for u in counts["user_id"].to_list() if u in users)


def test_served_scores_equal_the_offline_ranker_on_the_same_features(client, published_pair, small_shop):
    root, _ = published_pair
    user = _embedded_user(root, small_shop)
    when = _after_the_log(small_shop)
    modules = small_shop.content["content_id"].head(15).to_list()
    body = {
        "user_id": user,
        "candidates": modules,
        "slots": len(modules),
        "context": {"device": "mobile_web", "timestamp": when.isoformat()},
    }
    response = client.post("/v1/rank", json=body)
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["fallback"] is None and page["arm"] == "default"
    served = {m["content_id"]: m["score"] for m in page["modules"]}
    assert set(served) == set(modules)
    assert [m["rank"] for m in page["modules"]] == list(range(1, len(modules) + 1))
    assert [m["score"] for m in page["modules"]] == sorted(served.values(), reverse=True)

    # The offline path: behaviour_features of the same rows, the live version's vectors, the ranker's forward.
    ranker, info = load_ranker(root / "ranker")
    rows = pl.DataFrame(
        {
            "user_id": [user] * len(modules),
            "content_id": modules,
            "timestamp": [when] * len(modules),
            "device": ["mobile_web"] * len(modules),
        },
        schema_overrides={"timestamp": pl.Datetime("us", "UTC")},
    )
    events, items, content, _ = read_validated(root / "validated")  # the tables the API indexed
    impressions = pl.scan_parquet(root / "validated" / "impressions.parquet")
    settings = RankFeatureConfig(**info["features"]["config"])
    features = behaviour_features(rows, events, impressions, content, items, settings)
    vectors = load_version(root / "store", require_latest(root / "store"))
    user_row = vectors.ids["user"].to_list().index(user)
    content_rows = {c: i for i, c in enumerate(vectors.ids["content"].to_list())}
    features = features.with_columns(
        pl.lit(1.0).alias("has_user_embedding"),
        pl.Series("has_module_embedding", [float(c in content_rows) for c in modules]),
    )
    dense = torch.tensor(features.select(info["features"]["names"]).to_numpy(), dtype=torch.float32)
    dim = ranker.embedding_dim
    user_vec = torch.tensor(np.repeat(vectors.vectors["user"][user_row][None], len(modules), 0))
    module_vec = torch.tensor(
        np.stack([vectors.vectors["content"][content_rows[c]] if c in content_rows else np.zeros(dim) for c in modules])
    ).float()
    with torch.no_grad():
        offline = torch.sigmoid(ranker(dense, user_vec, module_vec)).numpy()
    np.testing.assert_allclose([served[c] for c in modules], offline, rtol=1e-5, atol=1e-6)
    assert page["model_version"].startswith("ranker-")
    assert page["embedding_version"] == require_latest(root / "store")
    for module in page["modules"]:
        assert module["reasons"] and all(r["text"] for r in module["reasons"])


def test_an_unknown_user_without_events_gets_the_popularity_order(client, small_shop):
    page = client.post("/v1/rank", json={"user_id": "nobody-ever", "slots": 5}).json()
    assert page["fallback"] == "cold_start"
    scores = [m["score"] for m in page["modules"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    with_events = client.post(
        "/v1/rank",
        json={
            "user_id": "nobody-ever",
            "slots": 5,
            "recent_events": [{"item_id": int(small_shop.items["item_id"][0]), "event_type": "view"}],
        },
    ).json()
    assert with_events["fallback"] is None  # fresh events make a known shopper of them


def test_candidates_exclusions_duplicates_and_unknown_modules(client, small_shop, published_pair):
    root, _ = published_pair
    user = _embedded_user(root, small_shop)
    modules = small_shop.content["content_id"].head(6).to_list()
    body = {"user_id": user, "candidates": [*modules, modules[0], "not-a-module"], "exclude": [modules[1]], "slots": 10}
    page = client.post("/v1/rank", json=body).json()
    served = [m["content_id"] for m in page["modules"]]
    assert modules[1] not in served and served.count(modules[0]) == 1
    assert served[-1] == "not-a-module" and page["modules"][-1]["reasons"][0]["code"] == "unknown"
    assert len(served) == 6
    assert len(client.post("/v1/rank", json={"user_id": user, "slots": 3}).json()["modules"]) == 3


def test_feedback_is_honoured_on_the_next_call_and_survives_a_restart(published_pair, small_shop, tmp_path):
    root, _ = published_pair
    user = _embedded_user(root, small_shop)
    config = _config(root, tmp_path)
    body = {"user_id": user, "slots": 10}
    with TestClient(create_app(config)) as client:
        first = [m["content_id"] for m in client.post("/v1/rank", json=body).json()["modules"]]
        hide = client.post("/v1/feedback", json={"user_id": user, "content_id": first[0], "action": "hide"})
        assert hide.status_code == 200 and hide.json()["recorded"]
        second = [m["content_id"] for m in client.post("/v1/rank", json=body).json()["modules"]]
        assert first[0] not in second
        liked = second[-1]
        client.post("/v1/feedback", json={"user_id": user, "content_id": liked, "action": "more_like_this"})
        lifted = client.post("/v1/rank", json=body | {"slots": 40}).json()["modules"]
        position = [m["content_id"] for m in lifted].index(liked)
        assert position < second.index(liked)
        assert any(r["code"] == "more_like_this" for r in lifted[position]["reasons"])
    with TestClient(create_app(config)) as client:  # a restart: the feedback database is read again
        again = [m["content_id"] for m in client.post("/v1/rank", json=body).json()["modules"]]
        assert first[0] not in again
        client.post("/v1/feedback", json={"user_id": user, "content_id": again[0], "action": "hide_similar"})
        after = [m["content_id"] for m in client.post("/v1/rank", json=body | {"slots": 200}).json()["modules"]]
        assert again[0] not in after
    from graphrec.data.feedback import read_feedback_store

    events = read_feedback_store(tmp_path / "feedback")
    assert events["action"].to_list() == ["hide", "more_like_this", "hide_similar"]
    assert events["content_id"].to_list() == [str(first[0]), str(liked), str(again[0])]


def test_served_pages_are_logged_in_the_impressions_contract(published_pair, small_shop, tmp_path):
    from graphrec.data.config import ValidationConfig
    from graphrec.data.validation import validate_dataset

    root, _ = published_pair
    user = _embedded_user(root, small_shop)
    with TestClient(create_app(_config(root, tmp_path))) as client:
        pages = [client.post("/v1/rank", json={"user_id": user, "slots": 4}).json() for _ in range(3)]
        pages.append(client.post("/v1/rank", json={"user_id": "nobody-ever", "slots": 2}).json())
    served = pl.read_parquet(tmp_path / "served" / "*.parquet")
    assert served.height == sum(len(p["modules"]) for p in pages)
    assert set(served["request_id"]) == {p["request_id"] for p in pages}
    assert served.filter(pl.col("fallback") == "cold_start").height == 2
    assert sorted(served.filter(pl.col("request_id") == pages[0]["request_id"])["slot"].to_list()) == [0, 1, 2, 3]
    assert not list((tmp_path / "served").glob(".*"))  # no temporary part left behind
    tables = {
        "events": small_shop.events,
        "content": small_shop.content,
        "items": small_shop.items,
        "impressions": served,
    }
    report = validate_dataset(tables, tmp_path / "validated", ValidationConfig(reference_time="2030-01-01"))
    assert report["tables"]["impressions"]["used"] == served.height


def test_health_readiness_and_metrics(client, small_shop):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["ready"] and ready["arms"]["default"].startswith("ranker-")
    client.post("/v1/rank", json={"user_id": "nobody-ever"})
    metrics = client.get("/metrics").text
    assert 'graphrec_pages_total{arm="default",fallback="cold_start"} 1.0' in metrics
    assert "graphrec_request_seconds_bucket" in metrics
    assert 'graphrec_serving_version{arm="default"' in metrics


def test_reload_needs_the_token_and_refuses_an_incompatible_pair(published_pair, tmp_path):
    root, _ = published_pair
    pair = tmp_path / "pair"
    shutil.copytree(root / "ranker", pair / "ranker")
    config = _config(root, tmp_path, ranker=str(pair / "ranker"), admin_token="s3cret")
    with TestClient(create_app(config)) as client:
        before = client.get("/readyz").json()["arms"]["default"]
        assert client.post("/admin/reload").status_code == 401
        assert client.post("/admin/reload", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = client.post("/admin/reload", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["arms"]["default"] == before
        meta = json.loads((pair / "ranker" / "ranker.json").read_text())
        meta["embeddings"]["live_version"] = "a-space-this-store-never-had"
        (pair / "ranker" / "ranker.json").write_text(json.dumps(meta))
        refused = client.post("/admin/reload", headers={"Authorization": "Bearer s3cret"})
        assert refused.status_code == 409 and "space" in refused.json()["detail"]
        assert client.get("/readyz").json()["arms"]["default"] == before
        assert client.post("/v1/rank", json={"user_id": "nobody-ever"}).status_code == 200


def test_size_limits_and_bad_bodies_are_4xx_with_a_message(published_pair, tmp_path):
    root, _ = published_pair
    config = _config(root, tmp_path)
    config.limits.max_candidates = 3
    with TestClient(create_app(config)) as client:
        too_many = client.post("/v1/rank", json={"user_id": 1, "candidates": ["a", "b", "c", "d"]})
        assert too_many.status_code == 422 and "at most 3" in too_many.json()["detail"]
        for body in (
            {},
            {"user_id": None},
            {"user_id": "u", "slots": 0},
            {"user_id": "u", "extra": 1},
            {"user_id": "u", "recent_events": [{"event_type": "view"}]},
            {"user_id": "u", "context": {"timestamp": "3000-01-01T00:00:00Z"}},
        ):
            response = client.post("/v1/rank", json=body)
            assert response.status_code == 422, (body, response.text)
        assert (
            client.post("/v1/rank", content=b"{not json", headers={"content-type": "application/json"}).status_code
            == 422
        )


def test_fresh_views_reach_the_features_and_the_embedding_of_the_request(client, published_pair, small_shop):
    # Whether the page's order follows depends on what the ranker learned; the API's part is that the session's
    # views reach the request's features and move the user's embedding towards the viewed items.
    from graphrec.rank.online import RecentEvents

    root, _ = published_pair
    service = client.app.state.service
    generation, state = service.generation, service.generation.state
    user = _embedded_user(root, small_shop)
    t = int(_after_the_log(small_shop).timestamp() * 1e6)
    stored, _ = service.reader.user_vector(generation, user)
    names = state.names
    versions = load_version(root / "store", generation.embedding_version)
    item_vectors, kit_items = versions.vectors["item"], generation.kit_items
    closer = []
    for module in [m for m in range(state.n_modules) if len(state.featured_items[m]) >= 3][:8]:
        item_ids = list(state.item_index)
        items = [item_ids[i] for i in state.featured_items[module][:3]]
        recent = RecentEvents(items, [None] * 3, ["view"] * 3, [t - 300_000_000 + k for k in range(3)])
        base = state.features(user, np.array([module]), t, "mobile_web", "s-now").dense[0]
        fresh = state.features(user, np.array([module]), t, "mobile_web", "s-now", recent).dense[0]
        assert fresh[names.index("session_featured_events")] == 3
        assert fresh[names.index("user_featured_events")] == base[names.index("user_featured_events")] + 3
        vector = service._fresh_vector(generation, user, recent, t)
        assert vector is not None and not np.allclose(vector, stored)
        viewed = item_vectors[[kit_items[i] for i in items]].mean(axis=0)
        cosine = [float(v @ viewed / np.linalg.norm(v) / np.linalg.norm(viewed)) for v in (stored, vector)]
        closer.append(cosine[1] - cosine[0])
    assert np.mean(np.array(closer) > 0) >= 0.75, closer  # the user moved towards what they just viewed


def test_experiment_arms_split_users_stably_and_show_in_the_page_log_and_metrics(published_pair, tmp_path):
    from serving.config import ExperimentConfig

    root, _ = published_pair
    shutil.copytree(root / "ranker", tmp_path / "challenger")
    experiment = ExperimentConfig(
        arms={"challenger": str(tmp_path / "challenger")}, shares={"default": 0.5, "challenger": 0.5}
    )
    users = [f"shopper-{i}" for i in range(60)]
    with TestClient(create_app(_config(root, tmp_path, experiment=experiment))) as client:
        arms = {u: client.post("/v1/rank", json={"user_id": u, "slots": 2}).json()["arm"] for u in users}
        again = {u: client.post("/v1/rank", json={"user_id": u, "slots": 2}).json()["arm"] for u in users[:20]}
        metrics = client.get("/metrics").text
    assert set(arms.values()) == {"default", "challenger"}
    assert 15 <= list(arms.values()).count("challenger") <= 45
    assert all(again[u] == arms[u] for u in again)  # the same user stays in the same arm
    assert 'graphrec_pages_total{arm="challenger",fallback="cold_start"}' in metrics
    served = pl.read_parquet(tmp_path / "served" / "*.parquet")
    logged = dict(served.select("user_id", "arm").unique().iter_rows())
    assert all(logged[u] == arms[u] for u in users)
    with pytest.raises(ConfigError, match="default"):
        ExperimentConfig(arms={"b": "x"}, shares={"b": 1.0})


def test_exploration_logs_each_picks_probability_given_the_picks_above(published_pair, small_shop, tmp_path):
    root, _ = published_pair
    user = _embedded_user(root, small_shop)
    modules = small_shop.content["content_id"].head(12).to_list()
    body = {"user_id": user, "candidates": modules, "slots": 12}
    # A hot temperature: these modules' scores are far apart (most have ended by the request's time), and the
    # test is about sampling and its logged propensities, not about how sharp the softmax is.
    with TestClient(create_app(_config(root, tmp_path, exploration=1.0, temperature=5.0))) as client:
        pages = [client.post("/v1/rank", json=body).json()["modules"] for _ in range(30)]
    firsts = {page[0]["content_id"] for page in pages}
    assert len(firsts) > 1  # sampled, not always the best
    for page in pages:
        logits = np.log([m["score"] / (1 - m["score"]) for m in page]) / 5.0
        for slot, module in enumerate(page):  # pure softmax over the modules not yet placed
            rest = logits[slot:]
            expected = np.exp(rest[0] - rest.max()) / np.exp(rest - rest.max()).sum()
            assert module["propensity"] == pytest.approx(expected, rel=1e-4)
        assert page[-1]["propensity"] == pytest.approx(1.0)
    served = pl.read_parquet(tmp_path / "served" / "*.parquet")
    assert served["propensity"].min() < 1


def test_a_request_can_skip_the_reasons_without_changing_the_order(client, published_pair, small_shop):
    root, _ = published_pair
    body = {"user_id": _embedded_user(root, small_shop), "slots": 8}
    explained = client.post("/v1/rank", json=body).json()["modules"]
    bare = client.post("/v1/rank", json=body | {"reasons": False}).json()["modules"]
    assert [m["content_id"] for m in bare] == [m["content_id"] for m in explained]
    assert all(m["reasons"] == [] for m in bare) and all(m["reasons"] for m in explained)


def test_a_preview_is_not_logged_as_a_served_page(published_pair, small_shop, tmp_path):
    root, _ = published_pair
    user = _embedded_user(root, small_shop)
    with TestClient(create_app(_config(root, tmp_path))) as client:
        html = client.get("/preview", params={"user_id": user, "slots": 5})
        assert html.status_code == 200 and html.text.count("class='module'") == 5
        client.post("/v1/rank", json={"user_id": user, "slots": 3})
    served = pl.read_parquet(tmp_path / "served" / "*.parquet")
    assert served.height == 3  # the rank call's page only


def test_a_pair_from_a_content_vector_model_serves_without_the_text_extra(published_pair, small_shop, tmp_path):
    root, _ = published_pair
    # The published pair's graph model learned projections of the shop's image vectors; serving reads its vectors
    # from the store and never encodes anything, so it runs where the text extra is not installed.
    version = load_version(root / "store", require_latest(root / "store"))
    assert version.info["manifest"]["model"]["hyperparameters"]["vector_sizes"] == {"image_embedding": 32}
    config = {
        "ranker": str(root / "ranker"),
        "store": str(root / "store"),
        "feedback": str(tmp_path / "feedback"),
        "impression_log": str(tmp_path / "served"),
        "clock": "data_end",
    }
    body = {
        "user_id": _embedded_user(root, small_shop),
        "candidates": small_shop.content["content_id"].head(10).to_list(),
        "slots": 10,
        "context": {"device": "app", "timestamp": _after_the_log(small_shop).isoformat()},
    }
    code = f"""
import json, sys
sys.modules["sentence_transformers"] = None  # the text extra is absent: importing it fails
from fastapi.testclient import TestClient
from serving.app import create_app
from serving.config import ServeConfig
with TestClient(create_app(ServeConfig(**json.loads({json.dumps(json.dumps(config))})))) as client:
    response = client.post("/v1/rank", json=json.loads({json.dumps(json.dumps(body))}))
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["fallback"] is None and len(page["modules"]) == 10, page
    assert "sentence_transformers" not in [m for m in sys.modules if sys.modules[m] is not None]
print("served")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0 and "served" in done.stdout, done.stderr[-3000:]
