"""`graphrec tune`: a killed search resumes the same study, the written YAML is read by the tuned command, and
bad settings stop with one line."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from graphrec.data.config import ValidationConfig
from graphrec.data.validation import validate_dataset
from graphrec.errors import GraphrecError
from training.cli import main
from training.tune import study_lock

ROOT = Path(__file__).resolve().parents[2]
# The small shop spans 14 days: 2 skipped, 8 train, 2 validation and 2 test days; small trials.
RANKER = [
    "--ranker.embeddings", "false",
    "--ranker.policy_requests", "0",
    "--ranker.split.skip_days", "2",
    "--ranker.split.validation_days", "2",
    "--ranker.split.test_days", "2",
    "--ranker.train.epochs", "3",
    # The behaviour features alone: the seeded search below is a fixed scenario whose third trial the pruner stops.
    "--ranker.features.content_vectors", "[]",
]  # fmt: skip
RANKER_SEARCH = [
    "--target", "ranker",
    "--tune.n_trials", "3",
    "--tune.ranker_space.hidden", "[[16], [32, 16]]",
    "--tune.ranker_space.batch_size", "[2048, 4096]",
    # Prune from the second epoch on, once 2 trials are complete: the study prunes as well as completes.
    "--tune.pruner_startup_trials", "2",
    "--tune.pruner_warmup_epochs", "1",
]  # fmt: skip
TUNED_RANKER_KEYS = {
    "ranker.model.cross_layers",
    "ranker.model.hidden",
    "ranker.model.dropout",
    "ranker.train.lr",
    "ranker.train.weight_decay",
    "ranker.train.batch_size",
}


@pytest.fixture(scope="module")
def validated(small_shop, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tune")
    tables = {name: getattr(small_shop, name) for name in ("events", "items", "content", "impressions")}
    validate_dataset(tables, root / "validated", ValidationConfig(reference_time="2026-06-01"))
    return root / "validated"


def _states(db: Path) -> list[tuple[int, str]]:
    """(number, state) of the study's trials, read without creating anything (the search owns the file)."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as connection:
            return connection.execute("SELECT number, state FROM trials ORDER BY number").fetchall()
    except sqlite3.OperationalError:  # tables not created yet, or a write in progress
        return []


def _trials(workdir: Path, name: str = "ranker") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{workdir / 'study.db'}").get_trials()


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.fixture(scope="module")
def killed_and_resumed(validated, tmp_path_factory):
    """A ranker search killed (SIGKILL) during its second trial, then rerun; and the same search unbroken."""
    root = tmp_path_factory.mktemp("search")
    workdir, out = root / "work", root / "conf" / "ranker.yaml"
    args = ["tune", *RANKER_SEARCH, *RANKER, "--validated", str(validated)]
    paths = ["--tune.workdir", str(workdir), "--tune.out", str(out)]
    process = subprocess.Popen(
        [sys.executable, "-m", "training.cli", *args, *paths],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed_during = None
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        states = _states(workdir / "study.db")
        running = [n for n, s in states if s == "RUNNING"]
        if any(s == "COMPLETE" for _, s in states) and running:
            process.kill()
            killed_during = running[0]
            break
        time.sleep(0.05)
    process.wait(timeout=60)
    assert killed_during is not None, f"the search ended before it could be killed: {process.stderr.read()[-3000:]}"
    before = _trials(workdir)
    assert main([*args, *paths]) == 0
    unbroken = root / "unbroken"
    assert main([*args, "--tune.workdir", str(unbroken), "--tune.out", str(unbroken / "ranker.yaml")]) == 0
    return workdir, out, killed_during, before, _trials(workdir), _trials(unbroken)


def test_a_killed_search_resumes_its_study(killed_and_resumed):
    _, _, killed, before, after, unbroken = killed_and_resumed
    assert before[killed].state == TrialState.RUNNING  # what the kill left behind
    complete = [t for t in after if t.state == TrialState.COMPLETE]
    assert len(complete) == 3  # --tune.n_trials counts complete trials over both runs
    assert after[killed].state == TrialState.FAIL and "interrupted" in after[killed].user_attrs
    for old in before[:killed]:  # every trial the first run finished is kept as it was
        assert (after[old.number].state, after[old.number].params, after[old.number].value) == (
            old.state,
            old.params,
            old.value,
        )
    assert after[0].state == TrialState.COMPLETE and after[0].params == before[0].params
    # A seeded study draws the same trials whether or not it was killed (the killed trial aside) ...
    resumed = [(t.state, t.params, t.value) for t in after if "interrupted" not in t.user_attrs]
    assert resumed == [(t.state, t.params, t.value) for t in unbroken]
    # ... and its pruner stopped some trials early, which do not count.
    pruned = [t for t in unbroken if t.state == TrialState.PRUNED]
    assert pruned and all(len(t.intermediate_values) < 3 for t in pruned)


def test_a_rerun_of_a_finished_search_does_nothing(killed_and_resumed, validated, capsys):
    workdir, out, *_ = killed_and_resumed
    written = out.read_text()
    trials = len(_trials(workdir))
    args = ["tune", *RANKER_SEARCH, *RANKER, "--validated", str(validated)]
    assert main([*args, "--tune.workdir", str(workdir), "--tune.out", str(out)]) == 0
    assert "nothing to run" in capsys.readouterr().err
    assert len(_trials(workdir)) == trials and out.read_text() == written


def test_a_rerun_with_other_settings_is_refused(killed_and_resumed, validated, capsys):
    workdir, out, *_ = killed_and_resumed
    args = ["tune", *RANKER_SEARCH, *RANKER, "--validated", str(validated), "--tune.workdir", str(workdir)]
    assert main([*args, "--tune.out", str(out), "--ranker.split.test_days", "3"]) == 2
    assert "ranker.split.test_days" in capsys.readouterr().err


def test_the_tuned_yaml_trains_the_ranker(killed_and_resumed, validated, tmp_path):
    _, out, *_ = killed_and_resumed
    text = out.read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert "study 'ranker'" in header[0] and "3 complete trials" in header[1] and "best val_loss" in header[1]
    assert "written 20" in header[1]  # the date
    tuned = _flat(yaml.safe_load(text))
    assert set(tuned) == TUNED_RANKER_KEYS  # only the searched keys, in the `ranker` group `graphrec rank` reads
    for name in ("ranker.trials.csv", "ranker.history.png", "ranker.importance.png"):
        assert (out.parent / name).stat().st_size > 0
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name]

    from graphrec.rank.artifact import read_ranker_info

    ranker = tmp_path / "ranker"
    assert main(["rank", "--config", str(out), "--validated", str(validated), "--out", str(ranker), *RANKER]) == 0
    info = read_ranker_info(ranker)
    model, train = info["architecture"]["config"], info["training"]["config"]
    for key, value in tuned.items():
        _, part, name = key.split(".")
        assert (model if part == "model" else train)[name] == value, key


def test_the_tuned_embeddings_yaml_is_read_by_train(validated, tmp_path, capsys):
    from graphrec.embed.artifact import read_model_info
    from graphrec.graph.config import SplitConfig
    from graphrec.graph.split import split_validated

    split_validated(validated, tmp_path / "split", SplitConfig(val_days=3, test_days=3))
    out = tmp_path / "conf" / "embeddings.yaml"
    short = [
        "--embeddings.train.epochs",
        "2",
        "--embeddings.train.eval_every",
        "1",
        "--embeddings.train.min_batches",
        "2",
    ]
    args = [
        "tune", "--target", "embeddings",
        "--val_window", str(tmp_path / "split" / "val"),
        *short,
        "--tune.embeddings_space.dim", "[8, 16]",
        "--tune.embeddings_space.num_layers", "[1, 2]",
        "--tune.workdir", str(tmp_path / "work"),
        "--tune.out", str(out),
    ]  # fmt: skip
    assert main([*args, "--tune.n_trials", "1"]) == 0
    assert (
        "need 2 complete trials" in capsys.readouterr().err and not (out.parent / "embeddings.importance.png").exists()
    )
    assert main([*args, "--tune.n_trials", "2"]) == 0  # the same study, one more trial
    trials = _trials(tmp_path / "work", "embeddings")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert (out.parent / "embeddings.importance.png").exists()
    tuned = _flat(yaml.safe_load(out.read_text()))
    assert set(tuned) == {
        "embeddings.model.dim",
        "embeddings.model.num_layers",
        "embeddings.train.lr",
        "embeddings.train.l2",
        "embeddings.train.aux_weight",
    }
    best = max(trials, key=lambda t: t.value)
    assert tuned == best.user_attrs["config"]
    model = tmp_path / "model"
    snapshot = str(tmp_path / "split" / "val" / "snapshot")
    assert main(["train", "--config", str(out), "--snapshot", snapshot, "--out", str(model), *short]) == 0
    info = read_model_info(model)
    assert info.dim == tuned["embeddings.model.dim"]


BAD = {
    "zero trials": ["--target", "ranker", "--validated", "{tmp}/v", "--tune.n_trials", "0"],
    "unknown target": ["--target", "ranking", "--validated", "{tmp}/v"],
    "no validated dataset": ["--target", "ranker"],
    "no window": ["--target", "embeddings"],
    "a range upside down": ["--target", "ranker", "--validated", "{tmp}/v", "--tune.ranker_space.lr", "[0.1, 0.01]"],
    "a log range from 0": ["--target", "embeddings", "--val_window", "{tmp}/w", "--tune.embeddings_space.l2", "[0, 1]"],
    "a trial that never validates": [
        "--target",
        "embeddings",
        "--val_window",
        "{tmp}/w",
        "--embeddings.train.epochs",
        "2",
        "--embeddings.train.eval_every",
        "5",
    ],
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_settings_get_one_line(name, tmp_path, capsys):
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in BAD[name]]
    assert main(["tune", *args, "--tune.workdir", str(tmp_path / "work")]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("graphrec: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "work").exists()  # stopped before a study was opened


def test_one_search_of_a_study_at_a_time(tmp_path):
    with study_lock(tmp_path, "ranker"):
        with pytest.raises(GraphrecError, match="another graphrec tune"), study_lock(tmp_path, "ranker"):
            pass
        with study_lock(tmp_path, "embeddings"):  # another target's study is another lock
            pass
