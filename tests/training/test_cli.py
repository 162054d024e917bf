from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest
import yaml

from training.cli import main

ROOT = Path(__file__).resolve().parents[2]


def tiny_run_config(tmp_path) -> dict:
    return {
        "workdir": str(tmp_path / "run"),
        "input": {"format": "generated"},
        "shop": {
            "target_events": 15_000,
            "n_users": 400,
            "n_items": 600,
            "n_content": 60,
            "n_categories": 10,
            "n_brands": 30,
            "days": 21,
            "corrupt_fraction": 0.002,
            "homepage": {"slots_by_device": {"desktop": 12, "app": 10, "mobile_web": 8}},
        },
        "split": {"val_days": 5, "test_days": 5},
        "embeddings": {
            "model": {"dim": 16},
            "train": {"epochs": 4, "eval_every": 2},
            "evaluation": {"methods": ["popularity", "history", "graphrec"], "ablations": False},
        },
        "export": {"store": str(tmp_path / "store")},
        "backfill": {"epochs": 2},
        "ranker": {"train": {"epochs": 3}, "policy_requests": 300},
    }


def test_run_end_to_end_from_yaml(tmp_path):
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(tiny_run_config(tmp_path)))
    # The first run as a scheduler starts it (stdout and stderr are files here, not a terminal): its log is one line
    # per stage, epoch, backfilled cutoff or ranker step, without redraws or colours.
    result = subprocess.run(
        [sys.executable, "-m", "training.cli", "run", "--config", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "\r" not in output and "\x1b[" not in output
    lines = output.splitlines()
    stages = [line for line in lines if "graphrec.pipeline: [" in line]
    epochs = [line for line in lines if "graphrec.training: epoch " in line]
    assert len(stages) == 10 and stages[-1].split("graphrec.pipeline: ")[1].startswith("[10/10] publish")
    assert len(epochs) >= 1  # the final model's and the backfilled versions' epochs, one line each
    # Every line is a stage, an epoch, a backfilled cutoff, a ranker step or the closing summary: nothing else.
    known = (
        "graphrec.pipeline: ",
        "graphrec.training: epoch ",
        "graphrec.backfill: [",
        "graphrec.rank: ",
        "graphrec.evaluate: ",  # a line per method evaluated
    )
    assert all(any(k in line for k in known) for line in lines), "\n".join(lines)
    assert "GPU available" not in output and "litmodels" not in output and "Warning" not in output
    report = json.loads((tmp_path / "run" / "run_report.json").read_text())
    events = report["stages"]["validate"]["tables"]["events"]
    assert events["input_rows"] == events["used"] + events["deduplicated"] + events["quarantined"]
    assert events["quarantined"] > 0  # the injected faults
    assert report["stages"]["snapshot"]["num_edges"]["user__view__item"] > 0
    # Each stage records its own memory high-water mark, so an operator sees which stage sets the job's peak.
    peaks = [stage["peak_rss_gib"] for stage in report["stages"].values()]
    assert all(0 < peak < 16 for peak in peaks) and len(peaks) == 10
    assert report["stages"]["split"]["targets"]["test/purchase_item"]["pairs"] > 0
    assert report["stages"]["evaluate"]["ndcg@20"]["graphrec"] >= 0
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()
    for stage in ("raw", "validated", "snapshot", "split", "evaluation", "model"):
        assert (tmp_path / "run" / stage).is_dir()
    assert report["config"]["shop"]["target_events"] == 15_000
    # Embedding versions at past cutoffs for the ranker's rows, then the pair as the next version.
    export = report["stages"]["publish"]
    live = export["version"]
    assert live == f"v{len(report['stages']['backfill']['cutoffs']) + 1:06d}" and export["rows"]["user"] > 0
    assert export["online_store"] == "sqlite" and export["ranker"].endswith(f"rankers/{live}")
    assert (tmp_path / "store" / "embeddings" / "LATEST").read_text().strip() == live
    assert (tmp_path / "store" / "feast" / "online.db").exists()
    # A run with another training seed warm-starts from the first run's model and publishes the next version in the
    # same embedding space (the gate off: on this tiny shop the two pairs differ by noise).
    assert main(["run", "--config", str(path), "--embeddings.train.seed", "1", "--gate.enabled", "false"]) == 0
    report = json.loads((tmp_path / "run" / "run_report.json").read_text())
    assert report["stages"]["model"]["warm_start"]["shared"]["user"] > 0
    assert report["stages"]["publish"]["version"] == f"v{int(live[1:]) + 1:06d}"
    assert report["stages"]["publish"]["drift"]["compatible"] is True


def test_generate_validate_build_graph_commands(tmp_path):
    assert main(["generate", "--out", str(tmp_path / "shop"), "--events", "8000", "--shop.seed", "5"]) == 0
    manifest = json.loads((tmp_path / "shop" / "manifest.json").read_text())
    assert manifest["config"]["seed"] == 5 and manifest["config"]["target_events"] == 8000
    assert main(["validate", "--input.path", str(tmp_path / "shop"), "--out", str(tmp_path / "valid")]) == 0
    assert (
        main(
            [
                "build-graph",
                "--validated",
                str(tmp_path / "valid"),
                "--out",
                str(tmp_path / "snap"),
                "--cutoff",
                "2026-01-20",
            ]
        )
        == 0
    )
    snap = json.loads((tmp_path / "snap" / "manifest.json").read_text())
    assert snap["cutoff"] == "2026-01-20T00:00:00+00:00"
    assert (
        main(
            [
                "split",
                "--validated",
                str(tmp_path / "valid"),
                "--out",
                str(tmp_path / "split"),
                "--split.val_days",
                "3",
                "--split.test_days",
                "3",
            ]
        )
        == 0
    )
    assert pl.read_parquet(tmp_path / "split" / "test" / "purchase_item_targets.parquet").height > 0


def test_bad_input_prints_one_clear_line_without_traceback(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "events.csv").write_text("user_id;item_id;event_type;timestamp\n1;2;view;1700000000\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.cli",
            "validate",
            "--input.path",
            str(tmp_path / "in"),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "graphrec: error:" in result.stderr and "pass delimiter=';'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


COMMANDS = [
    "generate",
    "validate",
    "build-graph",
    "split",
    "run",
    "evaluate",
    "train",
    "backfill",
    "export publish",
    "export list",
]


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_imports_no_stage(command):
    # `graphrec --help` must stay fast: only config modules load, never torch, PyG, Lightning, Feast or polars.
    code = textwrap.dedent(
        f"""
        import contextlib, io, sys
        from training.cli import main
        with contextlib.redirect_stdout(io.StringIO()) as out:
            try:
                main({[*command.split(), "--help"]!r})
            except SystemExit:
                pass
        assert "usage: graphrec" in out.getvalue()
        heavy = ("torch", "torch_geometric", "lightning", "feast", "polars", "pyarrow", "scipy")
        print(sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy)))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_print_config_reads_back(tmp_path, command):
    args = command.split()
    required = {"build-graph": ["--validated", "v"], "split": ["--validated", "v"], "train": ["--snapshot", "s"]}
    required["backfill"] = ["--validated", "v"]
    printed = subprocess.run(
        [sys.executable, "-m", "training.cli", *args, *required.get(args[0], []), "--print_config"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    groups = {"input", "shop", "validation", "graph", "split", "embeddings", "export", "backfill"}
    for name, value in yaml.safe_load(printed).items():
        assert name not in groups or isinstance(value, dict), f"{name}: {value!r}"  # real defaults, not null
    (tmp_path / "config.yaml").write_text(printed)
    again = subprocess.run(
        [sys.executable, "-m", "training.cli", *args, "--config", str(tmp_path / "config.yaml"), "--print_config"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert again == printed


@pytest.mark.parametrize(
    "command, path",
    [
        ("run", "default.yaml"),
        ("train", "train.yaml"),
        ("evaluate", "evaluate.yaml"),
        ("export publish", "export.yaml"),
        ("rank", "rank.yaml"),
    ],
)
def test_each_config_file_is_read_by_its_command(command, path):
    result = subprocess.run(
        [sys.executable, "-m", "training.cli", *command.split(), "--config", f"conf/{path}", "--print_config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    written = yaml.safe_load((ROOT / "conf" / path).read_text())

    def same(expected, actual, where=""):
        for key, value in expected.items():
            if isinstance(value, dict):
                same(value, actual[key], f"{where}{key}.")
            else:
                assert actual[key] == value, f"{where}{key}"

    same(written, printed)


def test_one_knob_has_one_name_in_every_command():
    # The groups run, train, evaluate and export share must print identically in each of them.
    def config(*args):
        out = subprocess.run(
            [sys.executable, "-m", "training.cli", *args, "--print_config"], capture_output=True, text=True, check=True
        )
        return yaml.safe_load(out.stdout)

    run = config("run")
    assert config("train", "--snapshot", "s")["embeddings"] == run["embeddings"]
    assert config("evaluate")["embeddings"] == run["embeddings"]
    assert config("export", "publish")["export"] == run["export"]
    assert config("export", "list")["export"] == run["export"]
    assert config("generate")["shop"] == run["shop"]
    assert config("split", "--validated", "v")["split"] == run["split"]
    backfill = config("backfill", "--validated", "v")
    assert (backfill["embeddings"], backfill["export"], backfill["graph"]) == (
        run["embeddings"],
        run["export"],
        run["graph"],
    )


def test_json_log_format(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.cli",
            "--log-format",
            "json",
            "generate",
            "--out",
            str(tmp_path / "shop"),
            "--events",
            "3000",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any("events" in r["message"] for r in records)


def test_unknown_or_missing_log_format_is_an_input_error():
    assert main(["--log-format", "xml", "generate", "--help"]) == 2
    assert main(["generate", "--log-format"]) == 2


BAD_COMMANDS = {
    "missing model": ["export", "--model", "{tmp}/nothing", "--export.store", "{tmp}/store"],
    "cutoff not a time": ["build-graph", "--validated", "{tmp}/v", "--cutoff", "tomorrow"],
    "contract without a path": ["run", "--input.format", "contract", "--workdir", "{tmp}/w"],
    "keep 0": ["export", "list", "--export.versions.keep", "0", "--export.store", "{tmp}/store"],
    "negative bad fraction": ["run", "--validation.max_bad_fraction", "-0.1", "--workdir", "{tmp}/w"],
    "negative event count": ["generate", "--events", "-5", "--out", "{tmp}/shop"],
    "zero dimension": ["train", "--snapshot", "{tmp}/s", "--embeddings.model.dim", "0"],
    "unknown method": ["evaluate", "--input.path", "{tmp}/x", "--embeddings.evaluation.methods", "[magic]"],
    "zero-day split": ["split", "--validated", "{tmp}/v", "--split.val_days", "0"],
    "probability above 1": ["generate", "--shop.p_click", "1.5", "--out", "{tmp}/shop"],
    "missing snapshot": ["train", "--snapshot", "{tmp}/nothing"],
    "missing window": ["train", "--snapshot", "{tmp}/s", "--val_window", "{tmp}/nothing"],
    "not a store": ["export", "list", "--export.store", "{tmp}/nothing"],
    "unknown online store": ["export", "sync", "--export.feature_store.online_store", "mongo"],
    "fewer modules than slots": ["generate", "--shop.n_content", "3", "--out", "{tmp}/shop"],
    "unknown device": ["generate", "--shop.homepage.slots_by_device", '{"tv": 3}', "--out", "{tmp}/shop"],
    "exploration above 1": ["generate", "--shop.homepage.exploration", "1.5", "--out", "{tmp}/shop"],
}


@pytest.mark.parametrize("name", sorted(BAD_COMMANDS))
def test_user_mistakes_get_one_line_and_exit_2(tmp_path, capsys, name):
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in BAD_COMMANDS[name]]
    if name == "missing window":  # a real snapshot, so the window is what is wrong
        from graphrec.data.shop import generate_shop
        from graphrec.data.validation import validate_events
        from graphrec.graph.snapshot import build_snapshot, save_snapshot
        from tests.conftest import SMALL_SHOP

        shop = generate_shop(SMALL_SHOP)
        save_snapshot(build_snapshot(validate_events(shop.events).frame, "2026-01-12"), tmp_path / "s")
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("graphrec: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "shop").exists() and not (tmp_path / "w" / "model").exists()


@pytest.mark.slow
def test_sigterm_stops_a_run_cleanly_and_the_rerun_completes(tmp_path):
    import signal
    import time

    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(tiny_run_config(tmp_path)))
    command = [sys.executable, "-m", "training.cli", "run", "--config", str(path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in process.stderr:  # wait for the evaluation (Lightning fits) to start, then stop it as Kubernetes does
        seen.append(line)
        if "] split" in line:
            break
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=120)
    err = "".join(seen) + rest
    assert process.returncode == 143, err[-3000:]
    assert "received SIGTERM" in err and "Traceback" not in err
    run = tmp_path / "run"
    assert not [p for p in run.rglob("*") if ".tmp-" in p.name], "a staged directory was left behind"
    assert not (run / "model").exists() and not (run / "run_report.json").exists()
    assert (run / "split" / "split.json").exists()  # stages completed before the signal are kept
    assert main(["run", "--config", str(path)]) == 0
    assert json.loads((run / "run_report.json").read_text())["outcome"]["status"] == "published"
