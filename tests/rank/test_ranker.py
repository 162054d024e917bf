"""The ranker: metrics, the position tower kept out of serving scores, the artifact, and a fit that learns."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from graphrec.rank.artifact import RankerArtifactError, load_ranker, read_ranker_info, save_ranker
from graphrec.rank.metrics import auc, click_metrics, expected_calibration_error, group_auc, ndcg_at_k
from graphrec.rank.model import HomepageRanker, RankerConfig


def test_metrics_on_known_answers():
    y = np.array([0, 0, 1, 1, 0, 1])
    assert auc(y.astype(float), y) == 1.0 and auc(-y.astype(float), y) == 0.0
    assert auc(np.zeros(6), y) == 0.5
    groups = np.array([1, 1, 1, 2, 2, 2])
    scores = np.array([0.1, 0.2, 0.9, 0.3, 0.8, 0.1])  # group 1 perfect; group 2: its non-click ranks first
    assert group_auc(scores, y, groups) == pytest.approx((1.0 * 3 + 0.0 * 3) / 6)
    assert ndcg_at_k(y.astype(float), y, groups, k=3) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 0.2, 200_000)
    calibrated = (rng.random(len(p)) < p).astype(int)
    assert expected_calibration_error(p, calibrated) < 0.003
    assert expected_calibration_error(np.clip(p * 2, 0, 1), calibrated) > 0.05
    summary = click_metrics(p, calibrated, rng.integers(0, 50, len(p)), rng.integers(0, 5_000, len(p)))
    assert set(summary) >= {"auc", "logloss", "gauc", "ndcg@10", "ece"}


def _model(dim: int = 4) -> HomepageRanker:
    torch.manual_seed(0)
    return HomepageRanker(num_dense=5, embedding_dim=dim, num_slots=8, num_devices=3, config=RankerConfig(hidden=[16]))


def test_position_tower_never_moves_the_serving_score():
    model = _model().eval()
    dense, user, module = torch.randn(10, 5), torch.randn(10, 4), torch.randn(10, 4)
    with torch.no_grad():
        model.slot_logit.weight.normal_()
        serving = model(dense, user, module)
        a = model.click_log_probability(
            serving, model.seen_logit(torch.zeros(10, dtype=torch.long), torch.zeros(10, dtype=torch.long))
        )[0]
        b = model.click_log_probability(serving, model.seen_logit(torch.full((10,), 5), torch.full((10,), 2)))[0]
    assert not torch.allclose(a, b)  # the slot changes P(click) in training ...
    assert torch.equal(serving, model(dense, user, module))  # ... the serving score takes no slot at all


def test_artifact_round_trip_gives_the_same_scores_without_lightning(tmp_path):
    model = _model().eval()
    model.set_dense_statistics(torch.arange(5.0), torch.full((5,), 2.0))
    save_ranker(model, tmp_path / "ranker", {"features": {"names": list("abcde")}})
    loaded, info = load_ranker(tmp_path / "ranker")
    dense, user, module = torch.randn(7, 5), torch.randn(7, 4), torch.randn(7, 4)
    with torch.no_grad():
        assert torch.equal(model(dense, user, module), loaded(dense, user, module))
    assert info["features"]["names"] == list("abcde") and read_ranker_info(tmp_path / "ranker")["code_version"]
    code = textwrap.dedent(
        f"""
        import sys
        from graphrec.rank.artifact import load_ranker
        load_ranker({str(tmp_path / "ranker")!r})
        print(sorted({{m.split(".")[0] for m in sys.modules}} & {{"lightning", "pytorch_lightning", "training"}}))
        """
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    )
    with pytest.raises(RankerArtifactError):
        load_ranker(tmp_path)


def test_fit_learns_relevance_and_position_apart(tmp_path):
    from training.config import RankTrainConfig
    from training.rank_system import fit_ranker, predict

    rng = np.random.default_rng(0)
    n = 40_000
    dense = rng.normal(size=(n, 5)).astype(np.float32)
    slot = rng.integers(0, 8, n)
    device = rng.integers(0, 3, n)
    relevance = 1 / (1 + np.exp(-(dense[:, 0] * 1.5 - 1.0)))
    seen = 1 / (slot + 1.0)
    clicked = (rng.random(n) < relevance * seen).astype(np.float32)
    arrays = {"dense": dense, "user": None, "module": None, "slot": slot, "device": device, "clicked": clicked}
    train = {k: (v[:30_000] if v is not None else None) for k, v in arrays.items()}
    val = {k: (v[30_000:] if v is not None else None) for k, v in arrays.items()}
    model = HomepageRanker(5, 0, 8, 3, RankerConfig(hidden=[16]))
    model, summary = fit_ranker(
        model, train, val, RankTrainConfig(epochs=12, batch_size=512, lr=0.01, patience=3), tmp_path
    )
    assert summary["epochs_run"] >= 1 and len(summary["val_loss"]) == summary["epochs_run"]
    score, click = predict(model, val)
    assert auc(score, relevance[30_000:] > 0.5) > 0.95  # the serving score orders by relevance
    with torch.no_grad():
        seen_learned = torch.sigmoid(model.seen_logit(torch.arange(8), torch.zeros(8, dtype=torch.long))).numpy()
    # Only the product seen x relevance is identified; the tower must still fall with the slot.
    assert seen_learned[0] > seen_learned[2] > seen_learned[4] and seen_learned[0] > 2 * seen_learned[7]
    assert abs(click.mean() - val["clicked"].mean()) < 0.01  # calibrated on average


def test_averaged_fit_keeps_the_averaged_weights_it_validated(tmp_path):
    """With `average_epochs`, the model returned is the moving average that early stopping validated (its loss on
    the validation rows is the best epoch's), and the average differs from the last step's weights."""
    from training.config import RankTrainConfig
    from training.rank_system import fit_ranker

    rng = np.random.default_rng(1)
    n = 12_000
    dense = rng.normal(size=(n, 5)).astype(np.float32)
    slot, device = rng.integers(0, 8, n).astype(np.int32), rng.integers(0, 3, n).astype(np.int8)
    clicked = (rng.random(n) < 1 / (1 + np.exp(-(dense[:, 0] - 2.0)))).astype(np.float32)
    arrays = {"dense": dense, "user": None, "module": None, "slot": slot, "device": device, "clicked": clicked}
    train = {k: (v[:9_000] if v is not None else None) for k, v in arrays.items()}
    val = {k: (v[9_000:] if v is not None else None) for k, v in arrays.items()}
    fits = {}
    for average in (0.0, 0.5):
        config = RankTrainConfig(epochs=4, batch_size=256, lr=0.01, patience=4, average_epochs=average)
        fits[average] = fit_ranker(
            HomepageRanker(5, 0, 8, 3, RankerConfig(hidden=[16])), train, val, config, tmp_path / str(average)
        )
    for model, summary in fits.values():
        with torch.no_grad():
            loss = model.click_loss(
                model(torch.from_numpy(val["dense"])),
                model.seen_logit(torch.from_numpy(val["slot"]).long(), torch.from_numpy(val["device"]).long()),
                torch.from_numpy(val["clicked"]),
            )
        assert float(loss) == pytest.approx(summary["best_val_loss"], rel=1e-5)
    averaged, last = (fits[a][0].state_dict() for a in (0.5, 0.0))
    assert any(not torch.equal(averaged[k], last[k]) for k in averaged)


def test_input_statistics_read_by_blocks_equal_those_of_the_whole_matrix():
    """The transform is fitted a block of rows at a time (no transformed copy of the whole matrix); its log flags,
    means and standard deviations equal those computed on the whole matrix at once."""
    rng = np.random.default_rng(3)
    dense = np.concatenate(
        [rng.poisson(4.0, (5_003, 2)), rng.normal(0.5, 2.0, (5_003, 2)), np.full((5_003, 1), 7.0)], axis=1
    ).astype(np.float32)
    whole = torch.from_numpy(dense)
    log = (whole.min(dim=0).values >= 0) & (whole.max(dim=0).values > 2)
    transformed = torch.where(log, torch.log1p(whole.clamp(min=0)), whole).double()
    for block_rows in (len(dense), 1_000, 7):
        model = HomepageRanker(dense.shape[1], 0, 4, 3, RankerConfig())
        model.fit_dense_transform(dense, block_rows=block_rows)
        assert model.dense_log.tolist() == [True, True, False, False, True]
        np.testing.assert_allclose(model.dense_mean.numpy(), transformed.mean(dim=0).numpy(), rtol=1e-6)
        expected_std = transformed.std(dim=0).numpy()
        expected_std[-1] = 1.0  # constant in training: scale 1
        np.testing.assert_allclose(model.dense_std.numpy(), expected_std, rtol=1e-5)


def test_row_columns_gather_what_the_matrix_holds():
    """The ranker's dense inputs are gathered per batch from per-feature columns; every way of reading them gives
    the rows of the [rows, features] matrix they stand for."""
    from graphrec.rank.rows import RowColumns

    rng = np.random.default_rng(4)
    matrix = rng.random((50, 3), dtype=np.float32)
    columns = [np.ascontiguousarray(matrix[:, j]) for j in range(3)]
    selected = np.array([7, 3, 3, 49, 0, 12])
    for rows, expected in ((None, matrix), (selected, matrix[selected])):
        view = RowColumns(columns, rows, len(matrix))
        assert view.shape == expected.shape and len(view) == len(expected)
        np.testing.assert_array_equal(np.asarray(view), expected)
        np.testing.assert_array_equal(view[np.array([4, 1])], expected[[4, 1]])
        np.testing.assert_array_equal(view[1:4], expected[1:4])
        np.testing.assert_array_equal(view[:, 2], expected[:, 2])
        np.testing.assert_array_equal(np.concatenate([view[i : i + 4] for i in range(0, len(view), 4)]), expected)


def test_impressions_come_back_in_time_order_sorted_only_when_they_are_not(tmp_path):
    import polars as pl
    from polars.testing import assert_frame_equal

    from graphrec.rank.rows import read_impressions

    ordered = pl.DataFrame(
        {"timestamp": [1, 1, 1, 2, 2], "request_id": [10, 10, 11, 9, 9], "slot": [0, 1, 0, 0, 3], "x": list("abcde")}
    )
    for name, frame in (("ordered", ordered), ("shuffled", ordered.sample(fraction=1.0, shuffle=True, seed=1))):
        (tmp_path / name).mkdir()
        frame.write_parquet(tmp_path / name / "impressions.parquet")
        assert_frame_equal(read_impressions(tmp_path / name), ordered)
    swapped = ordered.with_columns(pl.Series("slot", [1, 0, 0, 0, 3]))  # one request's slots out of order
    (tmp_path / "swapped").mkdir()
    swapped.write_parquet(tmp_path / "swapped" / "impressions.parquet")
    assert read_impressions(tmp_path / "swapped")["slot"].to_list() == [0, 1, 0, 0, 3]


def test_rows_without_impressions_say_which_file_is_missing(tmp_path):
    import polars as pl

    from graphrec.errors import InputError
    from graphrec.rank.rows import impression_rows

    pl.DataFrame({"user_id": ["u1"], "item_id": [1], "event_type": ["view"]}).write_parquet(tmp_path / "events.parquet")
    pl.DataFrame({"content_id": ["c1"], "item_ids": [[1]]}).write_parquet(tmp_path / "content.parquet")
    with pytest.raises(InputError, match=r"no impressions\.parquet"):
        impression_rows(tmp_path)


def test_order_check_by_blocks_sees_a_swap_anywhere():
    import polars as pl

    from graphrec.rank.rows import _in_order

    ordered = pl.DataFrame({"timestamp": [1, 1, 2, 2, 3, 4, 4], "request_id": [1, 1, 2, 3, 4, 5, 5]})
    ordered = ordered.with_columns(slot=pl.Series([0, 1, 0, 0, 0, 0, 1]))
    keys = ["timestamp", "request_id", "slot"]
    for block_rows in (1, 2, 3, 100):
        assert _in_order(ordered, keys, block_rows)
        for row in range(ordered.height - 1):  # each pair of neighbours swapped, across block boundaries too
            order = list(range(ordered.height))
            order[row], order[row + 1] = order[row + 1], order[row]
            assert not _in_order(ordered[order], keys, block_rows), (block_rows, row)
    assert _in_order(ordered.head(0), keys) and _in_order(ordered.head(1), keys)


def test_impressions_read_encoded_hold_the_same_values_narrower(tmp_path):
    import polars as pl

    from graphrec.rank.rows import read_impressions

    frame = pl.DataFrame(
        {
            "timestamp": [2, 1, 1, 3],
            "request_id": [7, 5, 5, 8],
            "slot": [0, 1, 0, 0],
            "user_id": ["u2", "u1", "u1", None],
            "content_id": ["c1", "c2", "c1", "c3"],
            "device": ["app", "desktop", "desktop", "mobile_web"],
            "propensity": [0.5, 0.2, 0.3, 0.1],
        }
    )
    frame.write_parquet(tmp_path / "impressions.parquet")
    columns = ["timestamp", "request_id", "slot", "user_id", "content_id", "device"]
    encoded = read_impressions(tmp_path, columns, encoded=True)
    assert encoded.columns == columns
    assert encoded.schema["user_id"] == encoded.schema["content_id"] == encoded.schema["device"] == pl.Categorical
    assert encoded.schema["slot"] == pl.Int32
    plain = read_impressions(tmp_path).select(columns)
    assert encoded.with_columns(pl.col(pl.Categorical).cast(pl.String)).to_dict(as_series=False) == plain.with_columns(
        pl.col("slot").cast(pl.Int32)
    ).to_dict(as_series=False)
    assert plain["request_id"].to_list() == [5, 5, 7, 8]


@pytest.mark.parametrize("dtype", ["String", "Categorical"])
def test_device_codes_index_the_known_devices_and_read_others_as_the_first(dtype):
    import polars as pl

    from graphrec.data.config import DEVICES
    from graphrec.rank.rows import RankRows

    devices = ["app", "desktop", "tv", "mobile_web", "app", None]
    frame = pl.DataFrame({"device": devices}).with_columns(pl.col("device").cast(getattr(pl, dtype)))
    codes = RankRows(frame, []).device_codes
    assert codes.tolist() == [DEVICES.index(d) if d in DEVICES else 0 for d in devices]


def test_row_columns_read_masks_and_feature_lists_and_refuse_a_single_row():
    from graphrec.rank.rows import RowColumns

    matrix = np.arange(24, dtype=np.float32).reshape(8, 3)
    view = RowColumns([np.ascontiguousarray(matrix[:, j]) for j in range(3)], np.array([6, 1, 4]), 8)
    np.testing.assert_array_equal(view[np.array([True, False, True])], matrix[[6, 4]])
    np.testing.assert_array_equal(view[[0, 2], [2, 0]], matrix[[6, 4]][:, [2, 0]])
    with pytest.raises(TypeError):
        view[1]
    with pytest.raises(IndexError):
        view[np.array([True, False])]
