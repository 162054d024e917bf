"""The scheduled job: a published, gated pair; idempotent reruns; the gate; the lock; resume after SIGKILL."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from graphrec.artifacts import file_sha256
from graphrec.store.pairs import pair_info, paired_ranker
from graphrec.store.versions import latest_version, list_versions, orphan_versions
from tests.training.test_cli import tiny_run_config
from training.cli import main
from training.report import report_values
from training.run_state import EXIT_BUSY, EXIT_GATED, run_locks

ROOT = Path(__file__).resolve().parents[2]
RUN_DATE = "2026-01-26"


def job_config(tmp_path: Path, **groups) -> Path:
    # 2 epochs per backfilled version and a 3-epoch ranker, unless `groups` say otherwise
    config = tiny_run_config(tmp_path) | groups
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run(config: Path, *options: str) -> int:
    return main(["run", "--config", str(config), "--run_date", RUN_DATE, *options])


def store_state(store: Path) -> dict[str, str]:
    """Every file of the store with its checksum (the Feast registry and online database aside: Feast rewrites
    their bytes on every open)."""
    return {
        str(p.relative_to(store)): file_sha256(p)
        for p in sorted(store.rglob("*"))
        if p.is_file() and p.suffix not in (".db", ".lock") and "registry" not in p.name
    }


def value_at(report: dict, path: str):
    node = report
    for part in path.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A first run: backfill, ranker and a pair published into a fresh store."""
    tmp_path = tmp_path_factory.mktemp("job")
    config = job_config(tmp_path, backfill={"epochs": 3})
    assert run(config) == 0
    return tmp_path, config


def test_first_run_publishes_a_pair_in_one_swap(published):
    tmp_path, _ = published
    store, workdir = tmp_path / "store", tmp_path / "run"
    live = latest_version(store)
    report = json.loads((workdir / "runs" / RUN_DATE / "run_report.json").read_text())
    backfilled = [c["version"] for c in report["stages"]["backfill"]["cutoffs"]]
    assert len(backfilled) >= 1  # the ranker's rows met versions older than them
    # Each backfilled version trained for backfill.epochs or the evaluation's choice (2 or 4), whichever is fewer.
    chosen = report["stages"]["evaluate"]["epochs"]
    assert report["stages"]["backfill"]["epochs"] == min(3, chosen)
    assert json.loads((workdir / "backfill" / "model" / "model.json").read_text())["train"]["epochs"] == min(3, chosen)
    assert report["outcome"] == {"status": "published", "version": live, "previous": backfilled[-1]}
    # The final model warm-started from the last backfilled one, so the pair shares the ranker's embedding space.
    assert report["stages"]["model"]["warm_start"]["from"].endswith("backfill/model")
    assert report["stages"]["publish"]["drift"]["compatible"] is True
    assert report["stages"]["gate"]["blessed"] and report["stages"]["gate"]["against"] is None
    ranker = paired_ranker(store, live)
    assert ranker is not None and (ranker / "ranker.safetensors").exists()
    pair = pair_info(store)
    assert pair["version"] == live and pair["run_date"] == RUN_DATE and pair["gate"]["blessed"]
    assert pair["metrics"]["ranker"]["auc"] == report["stages"]["ranker"]["evaluation"]["test"]["overall"]["auc"]
    # Backfilled versions (no ranker) are history for the rows; only the pair's version has a ranker.
    assert [v for v in list_versions(store) if paired_ranker(store, v)] == [live]
    manifest = json.loads((workdir / "runs" / RUN_DATE / "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        path = workdir / name if not Path(name).is_absolute() else Path(name)
        assert file_sha256(path) == entry["sha256"], name
    assert any(name.startswith("model/") for name in manifest["files"])


def test_the_api_serves_the_live_pair(published):
    from serving.config import ServeConfig
    from serving.service import Generation

    tmp_path, _ = published
    store = tmp_path / "store"
    generation = Generation(ServeConfig(store=str(store), ranker=None, feedback=None, impression_log=None))
    live = latest_version(store)
    assert generation.embedding_version == live
    assert generation.arms["default"].path == str(paired_ranker(store, live))
    # LATEST moved to a version published without a ranker (say a rollback to a backfilled one): a clear refusal.
    (store / "embeddings" / "LATEST").write_text("v000001\n")
    try:
        with pytest.raises(Exception, match="published without a ranker"):
            Generation(ServeConfig(store=str(store), ranker=None, feedback=None, impression_log=None))
    finally:
        (store / "embeddings" / "LATEST").write_text(f"{live}\n")


def test_report_shows_the_numbers_of_the_metrics_files(published):
    tmp_path, _ = published
    workdir = tmp_path / "run"
    run_dir = workdir / "runs" / RUN_DATE
    values = report_values((run_dir / "report.html").read_text())
    report = json.loads((run_dir / "run_report.json").read_text())
    for key, value in values.items():
        assert math.isclose(value, value_at(report, key), rel_tol=1e-12), key
    metrics = json.loads((workdir / "evaluation" / "metrics.json").read_text())
    ndcg = values["stages.evaluate.ndcg@20.graphrec"]
    assert round(metrics["results"]["graphrec"]["ndcg@20"], 4) == ndcg
    ranker = json.loads((workdir / "ranker" / "report.json").read_text())
    assert values["stages.ranker.evaluation.test.overall.auc"] == ranker["evaluation"]["test"]["overall"]["auc"]
    validated = json.loads((workdir / "validated" / "report.json").read_text())
    for table, counts in validated["tables"].items():
        assert values[f"stages.validate.tables.{table}.quarantined"] == counts["quarantined"]
    assert any(key.startswith("stages.gate.checks.") for key in values)


def test_rerun_of_a_finished_date_changes_nothing(published, capsys):
    tmp_path, config = published
    store = tmp_path / "store"
    before = store_state(store)
    report_before = (tmp_path / "run" / "runs" / RUN_DATE / "run_report.json").read_bytes()
    capsys.readouterr()
    assert run(config) == 0
    assert "nothing changed" in capsys.readouterr().err
    assert store_state(store) == before
    assert (tmp_path / "run" / "runs" / RUN_DATE / "run_report.json").read_bytes() == report_before
    # The next day on the same data: every stage is up to date and the live pair stays.
    assert main(["run", "--config", str(config), "--run_date", "2026-01-27"]) == 0
    report = json.loads((tmp_path / "run" / "runs" / "2026-01-27" / "run_report.json").read_text())
    assert report["outcome"]["status"] == "nothing to do"
    assert {"validate", "snapshot", "model", "ranker", "publish"} <= set(report["up_to_date"])
    assert store_state(store) == before


def test_gate_blocks_a_worse_pair_and_a_forced_publish_is_recorded(published, capsys):
    tmp_path, config = published
    store = tmp_path / "store"
    live = latest_version(store)
    worse = ["--ranker.train.lr", "1e-7", "--ranker.train.epochs", "1"]  # an untrained ranker: miscalibrated
    assert run(config, *worse) == EXIT_GATED
    assert "gated:" in capsys.readouterr().err
    assert latest_version(store) == live and pair_info(store)["version"] == live
    report = json.loads((tmp_path / "run" / "runs" / RUN_DATE / "run_report.json").read_text())
    assert report["outcome"]["status"] == "gated"
    failed = [c["check"] for c in report["stages"]["gate"]["checks"] if not c["passed"]]
    assert "ranker logloss" in failed
    assert any(reason.startswith("ranker logloss") for reason in report["outcome"]["reasons"])
    assert "report.html" in os.listdir(tmp_path / "run" / "runs" / RUN_DATE)
    # The same worse candidate, forced: published, and the pair records that it was forced past the gate.
    assert run(config, *worse, "--force_publish", "true") == 0
    forced = latest_version(store)
    assert forced != live and pair_info(store)["gate"]["forced"] is True
    report = json.loads((tmp_path / "run" / "runs" / RUN_DATE / "run_report.json").read_text())
    assert report["stages"]["gate"]["forced"] and report["stages"]["publish"]["forced"]
    assert report["stages"]["gate"]["against"] == live
    # A rollback goes back to the previous pair (not to a backfilled version the API would refuse), ranker and all.
    assert main(["export", "rollback", "--export.store", str(store)]) == 0
    assert latest_version(store) == live and pair_info(store)["version"] == live
    assert main(["export", "rollback", "--export.store", str(store), "--to", "v000001"]) == 2
    assert "published without a ranker" in capsys.readouterr().err
    assert latest_version(store) == live


def test_a_second_run_exits_busy(tmp_path, capsys):
    config = job_config(tmp_path)
    with run_locks(tmp_path / "run"):
        assert run(config) == EXIT_BUSY
    assert "busy:" in capsys.readouterr().err
    with run_locks(tmp_path / "store"):  # another workdir's run publishing into the same store
        assert run(config) == EXIT_BUSY
    assert not (tmp_path / "run" / "validated").exists()  # nothing ran


def _killed_run(config: Path, point: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "training.cli", "run", "--config", str(config), "--run_date", RUN_DATE]
    env = {**os.environ, "GRAPHREC_FAULT_AT": point}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)


def _assert_nothing_half_published(store: Path, workdir: Path, stage: str) -> None:
    live = latest_version(store) if (store / "embeddings").exists() else None
    assert live is None or paired_ranker(store, live) is None  # at most a backfilled version: no pair went live
    assert not (workdir / "runs").exists()
    assert not (workdir / "stages" / f"{stage}.json").exists()


@pytest.mark.slow
def test_resume_after_sigkill_in_training_ranker_training_and_publish(tmp_path, capsys):
    """Killed (SIGKILL: no clean-up) in the middle of the final model's training, then of the ranker's training,
    then of the publish (the pair staged and written online, LATEST not moved): each next run continues from the
    stage the last one was in, and the last one publishes one pair."""
    config = job_config(tmp_path)
    store, workdir = tmp_path / "store", tmp_path / "run"
    records = {}
    for point, stage in (
        ("model:epoch_2_start", "model"),  # the stage trains 2 or 4 epochs (the best of eval every 2)
        ("ranker:ranker_epoch_2", "ranker"),
        ("publish:online_written", "publish"),
    ):
        killed = _killed_run(config, point)
        assert killed.returncode == -9, killed.stderr[-3000:]
        _assert_nothing_half_published(store, workdir, stage)
        if stage == "ranker":  # the model's training continued from its last checkpoint, not from scratch
            assert "resuming the killed training run" in killed.stderr
        done = {p.stem: json.loads(p.read_text())["completed_at"] for p in (workdir / "stages").glob("*.json")}
        for name, completed_at in records.items():
            assert done.get(name) == completed_at, f"{name} was rebuilt after the kill in {point}"
        records = done
    orphans_before = orphan_versions(store)
    assert orphans_before, "the killed publish left its staged version, never live"
    capsys.readouterr()
    assert run(config) == 0
    report = json.loads((workdir / "runs" / RUN_DATE / "run_report.json").read_text())
    assert set(records) - {"publish"} <= set(report["up_to_date"]), report["up_to_date"]
    live = latest_version(store)
    assert report["outcome"]["version"] == live and paired_ranker(store, live) is not None
    assert live not in orphan_versions(store)
    assert [v for v in list_versions(store) if paired_ranker(store, v)] == [live]
    assert not [p for p in workdir.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]


def test_ddp_is_refused_with_the_command_that_takes_it(tmp_path, capsys):
    config = job_config(tmp_path)
    assert run(config, "--embeddings.train.strategy", "ddp", "--embeddings.train.devices", "2") == 2
    assert "`graphrec train`" in capsys.readouterr().err
    assert not (tmp_path / "run" / "validated").exists()


@pytest.mark.slow
def test_the_next_day_is_gated_on_impressions_neither_ranker_saw(tmp_path, capsys):
    """Day one publishes a pair from a shop's log cut three days short; day two runs on the whole log: the gate
    compares the rankers on the three days after the live ranker's last impression, the candidate's settings
    trained on the same past as the live ranker, and scores both orders with the shop's click model."""
    import polars as pl

    config = tiny_run_config(tmp_path)
    generate = tmp_path / "generate.yaml"
    generate.write_text(yaml.safe_dump({"out": str(tmp_path / "shop"), "shop": config["shop"]}))
    assert main(["generate", "--config", str(generate)]) == 0
    shop, day_one = tmp_path / "shop", tmp_path / "day-one"
    day_one.mkdir()
    last = pl.read_parquet(shop / "impressions.parquet")["timestamp"].max()  # events hold faulty future times
    cut = last - timedelta(days=3)
    for name in ("events", "impressions"):
        table = pl.read_parquet(shop / f"{name}.parquet")
        table.filter(pl.col("timestamp") < cut).write_parquet(day_one / f"{name}.parquet")
    for name in ("items.parquet", "content.parquet", "click_model.npz"):
        (day_one / name).write_bytes((shop / name).read_bytes())
    config["input"] = {"format": "contract", "path": str(day_one)}
    config["gate"] = {"min_holdout_clicks": 20}  # three days of this tiny shop hold a few dozen clicks
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", "--config", str(path), "--run_date", "2026-01-22"]) == 0
    live = latest_version(tmp_path / "store")
    code = main(["run", "--config", str(path), "--run_date", "2026-01-25", "--input.path", str(shop)])
    report = json.loads((tmp_path / "run" / "runs" / "2026-01-25" / "run_report.json").read_text())
    gate = report["stages"]["gate"]
    comparison = gate["comparison"]
    assert gate["against"] == live and comparison["comparable"], comparison
    assert comparison["holdout_clicks"] >= 20 and comparison["trained_until"] < cut.isoformat()
    assert "trained on the" in comparison["candidate_fit"]
    same = {c["check"] for c in gate["checks"] if c["basis"].startswith("same holdout")}
    assert same == {"ranker AUC", "ranker logloss", "expected clicks per request"}
    assert report["stages"]["backfill"].get("skipped")  # a live version: no backfill, LATEST untouched until publish
    assert (code, report["outcome"]["status"]) in ((0, "published"), (3, "gated"))


def test_every_stage_key_holds_the_code_not_only_the_input_stage(tmp_path, monkeypatch):
    """A change of graphrec's code rebuilds the stages after the input too (their keys hash the code digest,
    which the input stage's list of input files once replaced)."""
    import training.pipeline as pipeline
    from graphrec.data.config import InputConfig

    source = tmp_path / "input"
    source.mkdir()
    (source / "events.csv").write_text("user_id,item_id,event_type,timestamp\n1,10,view,2026-01-01T00:00:00Z\n")
    settings = pipeline.RunSettings(workdir=tmp_path / "work", input=InputConfig(format="contract", path=str(source)))
    keys = []
    for digest in ("code-before", "code-after"):
        monkeypatch.setattr(pipeline, "source_digest", lambda digest=digest: digest)
        run = pipeline._Run(settings, "2026-01-02", tmp_path / "work", None)
        run.input()
        keys.append(run._key("validate", validation={}))
    assert keys[0] != keys[1]
