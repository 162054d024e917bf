"""The scheduling files in deploy/ call the main job with arguments this CLI accepts."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest
import yaml

from training.cli import main

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _graphrec_args(command: str) -> list[str]:
    """The arguments after `graphrec` in a shell command line, with shell substitutions made concrete."""
    command = re.sub(r'"?\$\(date [^)]*\)"?', "2026-01-31", command).replace("\\%", "%")
    command = command.replace("{{ ds }}", "2026-01-31").replace('"$REDIS"', "redis:6379")
    command = command.split(">>")[0]
    return shlex.split(command.split("bin/graphrec ", 1)[1])


def _accepted(args: list[str], capsys) -> dict:
    assert args[:3] == ["run", "--config", "conf/default.yaml"], args
    assert "--run_date" in args
    root = Path(__file__).resolve().parents[1]
    config = [a if not a.startswith("conf/") else str(root / a) for a in args]
    with pytest.raises(SystemExit) as exited:  # --print_config prints the parsed settings and exits
        main([*config, "--print_config"])
    assert exited.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_crontab_line(capsys):
    lines = [line for line in (DEPLOY / "crontab").read_text().splitlines() if line and not line.startswith("#")]
    job = next(line for line in lines if "graphrec run" in line)
    config = _accepted(_graphrec_args(job), capsys)
    assert config["run_date"] == "2026-01-31"


def test_kubernetes_cronjob_forbids_overlap(capsys):
    manifest = yaml.safe_load((DEPLOY / "cronjob.yaml").read_text())
    assert manifest["kind"] == "CronJob" and manifest["spec"]["concurrencyPolicy"] == "Forbid"
    container = manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    config = _accepted(_graphrec_args(container["args"][0]), capsys)
    assert config["export"]["feature_store"]["online_store"] == "redis"
    assert config["workdir"] == "/data/default" and config["export"]["store"] == "/data/store"


def test_airflow_dag(capsys):
    tree = ast.parse((DEPLOY / "airflow_dag.py").read_text())
    keywords = {k.arg: k.value for node in ast.walk(tree) if isinstance(node, ast.Call) for k in node.keywords}
    assert ast.literal_eval(keywords["max_active_runs"]) == 1
    constants = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id.isupper()
    }
    assert set(constants["NO_RETRY"]) == {2, 3}  # bad input and gated fail at once; busy (75) is retried
    args = [part.format(ds="2026-01-31") for part in constants["COMMAND"]]
    assert args[0].endswith("bin/graphrec")
    config = _accepted([a for a in args[1:] if a not in ("--log-format", "json")], capsys)
    assert config["run_date"] == "2026-01-31"
