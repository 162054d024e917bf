"""The run's HTML report: every section, every number read back equal to the report's, escaped text, atomic writes."""

from __future__ import annotations

import copy
import html
import math
import struct
import zlib
from pathlib import Path

import pytest

from training.report import format_number, report_values, write_html_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SECTIONS = (
    "Stages",
    "Data reconciliation",
    "Graph",
    "Embeddings against baselines",
    "Training curves",
    "Ranker",
    "Calibration",
    "Quality gate",
    "Embedding drift",
    "Config",
)
SCRIPT = "<script>alert('x')</script>"


def tiny_png() -> bytes:
    """A valid 1x1 grey PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b"")


def metrics(auc: float, impressions: int) -> dict:
    return {
        "auc": auc,
        "logloss": 0.061234,
        "gauc": 0.6123,
        "ndcg@10": 0.0912,
        "ece": 0.00231,
        "impressions": impressions,
        "ctr": 0.01242077863286555,
    }


def full_report(workdir: Path, status: str) -> dict:
    """A report of a run that reached the gate: `published` (blessed, then published) or `gated`."""
    blessed = status == "published"
    checks = [
        {"check": "ranker AUC floor", "candidate": 0.7012, "published": None, "rule": ">= 0.55", "basis": "floor"},
        {
            "check": "embeddings NDCG@20 vs popularity",
            "candidate": 0.2859,
            "published": 0.0668,
            "rule": ">= popularity",
            "basis": "floor",
        },
        {
            "check": "ranker AUC",
            "candidate": 0.7012,
            "published": 0.7301 if not blessed else 0.6954,
            "rule": "drop <= 0.01",
            "basis": "same holdout: 4,210 impressions after the live ranker's data",
        },
    ]
    for check in checks:
        check["passed"] = blessed or check["check"] != "ranker AUC"
    reasons = [] if blessed else ["ranker AUC: 0.7012 against 0.7301 (drop <= 0.01; same holdout)"]
    stages = {
        "input": {
            "format": "generated",
            "sources": {
                "events": {"path": str(workdir / "raw/events.parquet"), "bytes": 132423, "sha256": "9f1d" * 16},
                "impressions": {"path": str(workdir / "raw/impressions.parquet"), "bytes": 322877, "sha256": "6a" * 32},
            },
            "notes": {},
            "generated": {"events": 20014, "impressions": 35344, "requests": 1216, "impression_ctr": 0.0124207786},
            "seconds": 0.57,
        },
        "validate": {
            "dir": str(workdir / "validated"),
            "tables": {
                "events": {
                    "input_rows": 20014,
                    "used": 19987,
                    "deduplicated": 12,
                    "quarantined": 15,
                    "reasons": {"duplicate": 12, "future_timestamp": 5, "null_user_id": 5, SCRIPT: 5},
                },
                "impressions": {"input_rows": 35344, "used": 35344, "deduplicated": 0, "quarantined": 0, "reasons": {}},
            },
            "cross_checks": {"event_items_not_in_catalog": 0, "impression_content_not_in_catalog": 3},
            "seconds": 0.29,
        },
        "snapshot": {
            "dir": str(workdir / "snapshot"),
            "cutoff": "2026-02-01T23:15:05+00:00",
            "num_nodes": {"user": 379, "item": 1200, "content": 200},
            "num_edges": {"user__view__item": 4575, "user__purchase__item": 353, "content__features__item": 1874},
            "seconds": 0.14,
        },
        "split": {
            "dir": str(workdir / "split"),
            "split": {"train_end": "2026-01-19T00:00:00+00:00", "val_end": "2026-01-26T00:00:00+00:00"},
            "targets": {"test/purchase_item": {"pairs": 129, "users": 90, "new_users": 36}},
            "seconds": 0.34,
        },
        "evaluate": {
            "dir": str(workdir / "evaluation"),
            "ndcg@20": {"popularity": 0.0668, "history": 0.2157, "mf_bpr": 0.0066, "graphrec": 0.2859},
            "graphrec": {"ndcg@20": 0.2859, "recall@20": 0.4123, "ndcg@10": 0.2511, "epochs": 4},
            "epochs": 4,
            "seconds": 7.9,
        },
        "model": {
            "dir": str(workdir / "model"),
            "epochs": 4,
            "behaviour_weights": {"view": 0.11945006251335144, "purchase": 0.2758944630622864},
            "warm_start": {"from": str(workdir / "model"), "shared": {"user": 379, "item": 1200}},
            "seconds": 1.51,
        },
        "backfill": {
            "cutoffs": [
                {"cutoff": "2026-01-10T00:00:00+00:00", "version": "v000001", "seconds": 3.2},
                {"cutoff": "2026-01-20T00:00:00+00:00", "version": "v000002", "skipped": True},
            ],
            "seconds": 3.9,
        },
        "ranker": {
            "dir": str(workdir / "ranker"),
            "rows": {"train": 21000, "validation": 5000, "test": 9344, "all": 30344, "impressions": 35344},
            "evaluation": {
                "training": {
                    "epochs_run": 3,
                    "train_loss": [0.0912, 0.0701, 0.0655],
                    "val_loss": [0.0688, 0.0642, 0.0649],
                    "best_epoch": 2,
                    "best_val_loss": 0.0642,
                },
                "test": {
                    "overall": metrics(0.7012, 9344),
                    "cold_users": metrics(0.6511, 1200) | {"gauc": float("nan")},
                    "heavy_users": metrics(0.7214, 2400),
                    "new_modules": {"impressions": 12, "note": "no clicks and non-clicks both in this slice"},
                    "calibration": [
                        {"predicted": 0.0021 * (i + 1), "observed": 0.0019 * (i + 1), "rows": 934 + (i < 4)}
                        for i in range(10)
                    ],
                },
            },
            "policy_value": {
                "requests": 300,
                "top_k": 10,
                "orders": {
                    "oracle": {"expected_clicks": 0.52, "expected_clicks_se": 0.011, "ratio_to_oracle": 1.0},
                    "ranker": {"expected_clicks": 0.41, "expected_clicks_se": 0.01, "ratio_to_oracle": 0.41 / 0.52},
                    "popularity": {
                        "expected_clicks": 0.36,
                        "expected_clicks_se": 0.009,
                        "ratio_to_oracle": 0.36 / 0.52,
                    },
                    "logging policy": {
                        "expected_clicks": 0.33,
                        "expected_clicks_se": 0.01,
                        "logged_clicks": 0.3610197368421,
                        "ratio_to_oracle": 0.33 / 0.52,
                    },
                },
            },
            "seconds": 12.4,
        },
        "gate": {
            "blessed": blessed,
            "forced": False,
            "enabled": True,
            "against": "v000002",
            "checks": checks,
            "reasons": reasons,
            "candidate": {"ndcg": 0.2859, "popularity_ndcg": 0.0668, "ranker": {"auc": 0.7012}},
            "comparison": {
                "comparable": True,
                "holdout_rows": 4210,
                "holdout_clicks": 52,
                "candidate": {"auc": 0.7012, "logloss": 0.0612},
                "published": {"auc": 0.7301 if not blessed else 0.6954, "logloss": 0.0608},
            },
            "seconds": 2.1,
        },
    }
    if blessed:
        stages["publish"] = {
            "store": str(workdir / "store"),
            "version": "v000003",
            "space": "v000001",
            "rows": {"user": 379, "item": 1200, "content": 200},
            "ranker": str(workdir / "store/rankers/v000003"),
            "forced": False,
            "drift": {"previous_version": "v000002", "mean_cosine": 0.9605, "compatible": True},
            "online_store": "sqlite",
            "seconds": 10.72,
        }
        outcome = {"status": "published", "version": "v000003", "previous": "v000002"}
    else:
        outcome = {"status": "gated", "reasons": reasons, "live": "v000002"}
    return {
        "kind": "run_report",
        "run_date": "2026-02-02",
        "started_at": "2026-12-02T00:09:12+00:00",
        "finished_at": "2026-12-02T00:09:33+00:00",
        "seconds": 21.48,
        "up_to_date": ["input", "validate"],
        "stages": stages,
        "code_version": {"graphrec": "0.1.0", "git_commit": "c0b8540a5754b10973572af632f9fc482fe09738"},
        "config": {"workdir": str(workdir), "gate": {"min_auc": 0.55}, "note": SCRIPT},
        "outcome": outcome,
    }


def at(report: dict, path: str):
    node = report
    for part in path.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def assert_values_match(report: dict, values: dict) -> None:
    assert values
    for path, value in values.items():
        expected = at(report, path)
        if isinstance(expected, int):
            assert type(value) is int and value == expected, path
        elif math.isnan(expected):
            assert math.isnan(value), path
        else:
            assert isinstance(value, float) and math.isclose(value, expected, rel_tol=1e-12), path


@pytest.fixture
def workdir(tmp_path):
    root = tmp_path / "work"
    (root / "evaluation").mkdir(parents=True)
    (root / "evaluation" / "curves.png").write_bytes(tiny_png())
    return root


@pytest.mark.parametrize("status", ["published", "gated"])
def test_every_section_and_number_of_a_full_report(workdir, tmp_path, status):
    report = full_report(workdir, status)
    run_dir = tmp_path / "runs" / "2026-02-02"
    path = write_html_report(copy.deepcopy(report), workdir, run_dir)
    assert path == run_dir / "report.html"
    text = path.read_text()
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in text
    assert f'<div class="status {status}">{status}</div>' in text
    assert text.count("not run in this run") == (status == "gated")  # a gated pair is not published: no drift

    figures = {"embedding_curves.png", "ranker_loss.png", "calibration.png"}
    assert {p.name for p in (run_dir / "figures").iterdir()} == figures
    for name in figures:
        assert (run_dir / "figures" / name).read_bytes().startswith(PNG_SIGNATURE)
        assert f'src="figures/{name}"' in text
    assert (run_dir / "figures" / "embedding_curves.png").read_bytes() == tiny_png()
    # Readable from file:// alone: no scripts, no absolute or remote resources.
    assert "<script" not in text and 'src="/' not in text and "http" not in text.split('<section id="config">')[0]

    values = report_values(text)
    assert_values_match(report, values)
    important = [
        "seconds",
        "stages.validate.tables.events.input_rows",
        "stages.validate.tables.events.used",
        "stages.validate.tables.events.deduplicated",
        "stages.validate.tables.events.quarantined",
        "stages.validate.tables.events.reasons.duplicate",
        "stages.validate.tables.impressions.quarantined",
        "stages.snapshot.num_nodes.user",
        "stages.snapshot.num_edges.user__view__item",
        *(f"stages.evaluate.ndcg@20.{method}" for method in report["stages"]["evaluate"]["ndcg@20"]),
        "stages.evaluate.graphrec.recall@20",
        "stages.ranker.evaluation.test.overall.auc",
        "stages.ranker.evaluation.test.overall.ece",
        "stages.ranker.evaluation.test.cold_users.gauc",
        "stages.ranker.evaluation.test.new_modules.impressions",
        "stages.ranker.evaluation.test.calibration.9.observed",
        "stages.ranker.policy_value.orders.logging policy.expected_clicks",
        "stages.ranker.policy_value.orders.ranker.ratio_to_oracle",
        "stages.gate.checks.0.candidate",
        "stages.gate.checks.2.candidate",
        "stages.gate.checks.2.published",
        "stages.backfill.cutoffs.0.seconds",
    ]
    assert not set(important) - set(values)
    assert "stages.gate.checks.0.published" not in values  # a floor has no published value
    assert ("stages.publish.drift.mean_cosine" in values) == (status == "published")

    assert '<tr class="best"><td>graphrec</td>' in text
    assert "+24.2% against the logging policy, +13.9% against the popularity order" in text
    assert text.count('<td class="fail">fail</td>') == (status == "gated")
    if status == "gated":
        assert "v000002 stays live" in text and "ranker AUC: 0.7012 against 0.7301" in text
    else:
        assert "Published <b>v000003</b> (previous: v000002)" in text


def test_text_from_the_report_is_escaped(workdir, tmp_path):
    text = write_html_report(full_report(workdir, "gated"), workdir, tmp_path / "run").read_text()
    assert SCRIPT not in text and "<script" not in text
    assert text.count(html.escape(SCRIPT)) == 3  # the quarantine reason, its data-key and the config


def test_a_report_with_most_sections_missing(tmp_path):
    report = {
        "run_date": "2026-02-02",
        "seconds": 1.5,
        "outcome": {"status": "done"},
        "up_to_date": ["snapshot"],
        "stages": {
            "input": {"format": "contract", "seconds": 0.2},
            "validate": {"seconds": 0.1},
            "backfill": {"skipped": "a pair is live: its versions cover the impressions"},
        },
    }
    run_dir = tmp_path / "run"
    text = write_html_report(report, tmp_path / "work", run_dir).read_text()
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in text
    assert text.count("not run in this run") == 8
    assert list((run_dir / "figures").iterdir()) == []
    assert "<td>snapshot</td><td>—</td><td>—</td><td>up to date</td>" in text
    assert "skipped: a pair is live" in text
    assert_values_match(report, report_values(text))
    assert set(report_values(text)) == {"seconds", "stages.input.seconds", "stages.validate.seconds"}

    empty = write_html_report({}, tmp_path / "work", tmp_path / "empty").read_text()
    assert report_values(empty) == {}
    assert '<div class="status unknown">unknown</div>' in empty


def test_writing_again_replaces_the_report_and_leaves_no_temporary_files(workdir, tmp_path):
    run_dir = tmp_path / "run"
    write_html_report(full_report(workdir, "published"), workdir, run_dir)
    report = full_report(workdir, "gated")
    del report["stages"]["ranker"]["evaluation"]["training"]
    path = write_html_report(report, workdir, run_dir)
    assert sorted(p.name for p in run_dir.iterdir()) == ["figures", "report.html"]
    # The loss plot of the first write is gone with the data it showed.
    assert sorted(p.name for p in (run_dir / "figures").iterdir()) == ["calibration.png", "embedding_curves.png"]
    text = path.read_text()
    assert '<div class="status gated">' in text and "ranker_loss.png" not in text
    assert_values_match(report, report_values(text))


@pytest.mark.parametrize(
    ("value", "shown"),
    [(20014, "20,014"), (0, "0"), (0.28591, "0.2859"), (0.0066, "0.0066"), (0.00231, "0.00231"), (21.48, "21.4800")],
)
def test_number_formats(value, shown):
    assert format_number(value) == shown
    assert format_number(float("nan")) == "n/a"


def test_a_section_the_data_breaks_does_not_fail_the_report(workdir, tmp_path):
    report = full_report(workdir, "published")
    report["stages"]["ranker"]["policy_value"]["orders"] = {"ranker": {"expected_clicks": "many"}}
    report["stages"]["gate"]["reasons"] = 5
    text = write_html_report(report, workdir, tmp_path / "run").read_text()
    assert "<h2>Quality gate</h2>" in text and "could not be rendered" in text
    assert "stages.ranker.evaluation.test.overall.auc" in report_values(text)
