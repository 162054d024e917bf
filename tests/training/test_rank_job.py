"""The ranker job: point-in-time rows, the temporal split, the artifact's scores, and the policy value."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest
import torch
from polars.testing import assert_frame_equal

from graphrec.errors import ConfigError, InputError
from graphrec.rank.artifact import load_ranker
from graphrec.rank.policy import pbm_ips
from graphrec.store.versions import list_versions, read_manifest
from tests.support import RANKER
from training.config import (
    RankerStageConfig,
    RankSplitConfig,
)
from training.rank_job import build_rows, fit_split, rank_job, split_rows


@pytest.fixture(scope="module")
def ranked(published_pair):
    return published_pair


def test_every_row_meets_an_embedding_version_cut_before_it(ranked):
    root, _ = ranked
    rows = build_rows(root / "validated", RANKER, root / "store")
    frame = rows.frame.filter(pl.col("user_embedding_version").is_not_null())
    assert frame.height > 0.5 * rows.frame.height
    cutoffs = {v: read_manifest(root / "store", v)["cutoff"] for v in list_versions(root / "store")}
    for column in ("user_embedding_version", "module_embedding_version"):
        known = frame.filter(pl.col(column).is_not_null())
        cutoff = known[column].replace_strict(cutoffs).str.to_datetime(time_zone="UTC")
        assert (cutoff <= known["timestamp"]).all()
    # A row without a version has zero vectors and its flag at 0, never another version's vector.
    missing = rows.frame.filter(pl.col("user_embedding_version").is_null())
    assert (missing["has_user_embedding"] == 0).all()
    assert (missing["user_vector_row"] == 0).all()
    without = np.flatnonzero(rows.frame["user_embedding_version"].is_null().to_numpy())
    assert np.abs(np.asarray(rows.arrays(without)["user"])).sum() == 0


def test_the_split_is_temporal_and_refuses_a_log_too_short(ranked):
    root, report = ranked
    rows = build_rows(root / "validated", RankerStageConfig(embeddings=False, split=RANKER.split))
    parts = split_rows(rows, RANKER.split)
    times = rows.frame["timestamp"]
    assert times.gather(parts["train"]).max() < times.gather(parts["validation"]).min()
    assert times.gather(parts["validation"]).max() < times.gather(parts["test"]).min()
    assert report["rows"]["test"] == len(parts["test"])
    slices = report["evaluation"]["test"]
    assert 0 < slices["new_modules"]["impressions"] < slices["overall"]["impressions"]
    assert 0 < slices["cold_users"]["impressions"] < slices["overall"]["impressions"]
    with pytest.raises(InputError, match="too few"):
        split_rows(rows, RankSplitConfig(test_days=7, validation_days=7, skip_days=7))


def test_the_skipped_days_are_history_only_rows_and_split_as_if_built(ranked):
    """The first `skip_days` are no part of the split: their impressions are the later rows' history, not rows. The
    rows built are exactly those of every impression after them, with the same features and the same split."""
    from graphrec.rank.rows import impression_rows

    root, _ = ranked
    config = RankerStageConfig(embeddings=False, split=RANKER.split)
    rows = build_rows(root / "validated", config)
    every = impression_rows(root / "validated", features=config.features)
    assert every.history_only == 0 and rows.history_only > 0
    assert rows.frame.height + rows.history_only == every.frame.height
    kept = every.frame.filter(pl.col("row_id") >= rows.frame["row_id"].min())
    assert_frame_equal(rows.frame, kept)
    parts, every_parts = split_rows(rows, config.split), split_rows(every, config.split)
    first_day = rows.frame["timestamp"].min()
    assert every.frame["timestamp"].gather(every_parts["train"]).min() == first_day
    for name, index in parts.items():
        assert rows.frame["row_id"].gather(index).equals(every.frame["row_id"].gather(every_parts[name]))
    with pytest.raises(InputError, match="all of them within"):
        build_rows(root / "validated", RankerStageConfig(embeddings=False, split=RankSplitConfig(skip_days=400)))


def test_the_published_ranker_is_the_evaluation_fit_updated_on_the_days_it_did_not_see(ranked, tmp_path):
    """`ranker.final_fit` "update" (the default) trains the evaluation fit one epoch more on the validation and test
    days, from its weights: its input transform and position tower are the evaluation fit's, not refitted on those
    days; "retrain" fits a new ranker on every day."""
    from training.rank_job import _final_fit
    from training.rank_system import fit_ranker

    root, report = ranked
    _, info = load_ranker(root / "ranker")
    final_fit = info["training"]["final_fit"]
    assert final_fit["mode"] == "update" and final_fit["epochs_run"] == 1
    assert final_fit["rows"] == report["rows"]["validation"] + report["rows"]["test"]
    config = RankerStageConfig(embeddings=False, split=RANKER.split, model=RANKER.model, train=RANKER.train)
    rows = build_rows(root / "validated", config)
    parts = split_rows(rows, config.split)
    evaluated, summary = fit_split(rows, parts, config, tmp_path / "evaluation")
    before = {name: value.clone() for name, value in evaluated.state_dict().items()}
    updated, update = _final_fit(evaluated, summary, rows, parts, config, tmp_path / "update")
    assert updated is not evaluated and update["mode"] == "update"
    assert all(torch.equal(before[name], value) for name, value in evaluated.state_dict().items())  # kept as it was
    for buffer in ("dense_log", "dense_mean", "dense_std"):
        assert torch.equal(getattr(updated, buffer), before[buffer])
    assert torch.equal(updated.slot_logit.weight, before["slot_logit.weight"]) is False  # trained on, not reset
    assert not all(torch.equal(before[name], value) for name, value in updated.state_dict().items())
    retrained, again = _final_fit(evaluated, summary, rows, parts, replace(config, final_fit="retrain"), tmp_path)
    assert again["mode"] == "retrain" and again["rows"] == len(parts["all"])
    assert not torch.equal(retrained.dense_mean, before["dense_mean"])  # its transform is fitted on every day
    # A cold start would refit the transform on the rows it is given; a warm one keeps it.
    warm, _ = fit_ranker(updated, rows.arrays(parts["test"], False), None, replace(config.train, epochs=1), tmp_path,
                         warm=True)  # fmt: skip
    assert torch.equal(warm.dense_mean, before["dense_mean"])
    assert RankerStageConfig(final_fit=True).final_fit == "retrain"  # earlier configs' booleans
    assert RankerStageConfig(final_fit="false").final_fit == "off"
    with pytest.raises(ConfigError, match="final_fit"):
        RankerStageConfig(final_fit="sometimes")


def test_the_artifact_scores_the_rows_as_training_did(ranked):
    from training.rank_system import predict

    root, report = ranked
    model, info = load_ranker(root / "ranker")
    rows = build_rows(root / "validated", RANKER, root / "store")
    assert info["features"]["names"] == rows.feature_names
    assert info["embeddings"]["dim"] == rows.embedding_dim == model.embedding_dim
    assert info["metrics"]["overall"]["auc"] == report["evaluation"]["test"]["overall"]["auc"]
    arrays = rows.arrays(np.arange(500))
    relevance, _ = predict(model, arrays)
    with torch.no_grad():  # serving: the network alone on the same inputs, no slot, no Lightning
        serving = torch.sigmoid(
            model(
                torch.from_numpy(np.asarray(arrays["dense"])),
                torch.from_numpy(np.asarray(arrays["user"])),
                torch.from_numpy(np.asarray(arrays["module"])),
            )
        ).numpy()
    np.testing.assert_allclose(serving, relevance, rtol=1e-6)
    assert not (root / ".ranker.work").exists()


def test_policy_value_puts_the_oracle_on_top(ranked):
    _, report = ranked
    table = report["policy_value"]["orders"]
    assert set(table) == {"oracle", "ranker", "popularity", "logging policy"}
    oracle = table["oracle"]["expected_clicks"]
    assert oracle > 0 and all(row["expected_clicks"] <= oracle + 1e-9 for row in table.values())
    assert table["ranker"]["ratio_to_oracle"] > 0
    for name in ("oracle", "ranker", "popularity"):
        assert np.isfinite(table[name]["ips"]) and table[name]["ips_se"] > 0


def test_candidate_rows_line_up_with_the_click_model(ranked, small_shop):
    from graphrec.data.homepage import ReferenceScorer
    from graphrec.rank.policy import candidate_rows, ranked_value, score_grid
    from graphrec.rank.rows import read_impressions

    root, _ = ranked
    model = small_shop.click_model
    requests = np.arange(0, len(model.request_ids), 97)
    candidates = candidate_rows(model, read_impressions(root / "validated"), requests)
    assert candidates.height == model.active(requests).sum()
    true = model.relevance(
        model.request_index(candidates["request_id"].to_numpy()), model.module_index(candidates["content_id"])
    )
    grid = score_grid(candidates, true, len(requests), len(model.content_ids))
    _, value = ranked_value(model, requests, grid, 12)
    _, oracle = ranked_value(model, requests, ReferenceScorer.fit(model).scores("oracle", requests), 12)
    np.testing.assert_allclose(value, oracle)


def test_first_slot_ips_is_unbiased_under_the_position_based_model():
    rng = np.random.default_rng(0)
    n, modules, slots, exploration = 200_000, 30, 5, 0.3
    relevance = rng.uniform(0.05, 0.6, modules)
    theta = 1.0 / np.arange(1, slots + 1)
    preference = np.exp(rng.normal(size=modules))
    policy = (1 - exploration) * preference / preference.sum() + exploration / modules  # first-slot distribution
    shown = rng.choice(modules, size=n, p=policy)
    clicked = (rng.random(n) < theta[0] * relevance[shown]).astype(float)
    log = {
        "module": shown,
        "clicked": clicked,
        "propensity": policy[shown],
        "device": np.zeros(n, dtype=np.int64),
        "page": np.full(n, slots),
    }
    target = np.tile(np.argsort(-relevance)[:slots], (n, 1))  # the best order, a policy the log rarely shows
    truth = float((theta * relevance[target[0]]).sum())
    estimate = pbm_ips(log, target, theta[None, :])
    assert abs(estimate["ips"] - truth) < 3 * estimate["ips_se"]
    assert abs(estimate["snips"] - truth) < 0.05 * truth
    # Slots past the logged page are never seen, whatever the target puts there.
    short = pbm_ips(log | {"page": np.full(n, 1)}, target, theta[None, :])
    assert short["ips"] < estimate["ips"]


def test_the_command_needs_a_store_for_embeddings(ranked, capsys):
    from training.cli import main

    root, _ = ranked
    code = main(["rank", "--validated", str(root / "validated"), "--export.store", str(root / "nowhere")])
    assert code == 2 and "graphrec: error:" in capsys.readouterr().err


def test_a_bad_click_model_is_one_line_and_leaves_no_scratch(ranked, tmp_path):
    root, _ = ranked
    with pytest.raises(InputError, match="not a readable click model"):
        rank_job(root / "validated", tmp_path / "ranker", RANKER, root / "store", None, tmp_path / "missing.npz")
    assert not (tmp_path / "ranker").exists() and not (tmp_path / ".ranker.work").exists()
