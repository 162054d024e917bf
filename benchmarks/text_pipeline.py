"""Benchmark: the main job's wall time with the text encoder against without it, on the same generated shop.

Usage:
    python benchmarks/text_pipeline.py                        # the default job's 200k-event shop
    python benchmarks/text_pipeline.py --events 1000000 --workdir /tmp/text-pipeline

The shop is generated once; then `graphrec run --config conf/default.yaml` runs on its files twice, each in a
fresh workdir and store, in one process tree at a time: without text vectors, then with
`--validation.text.enabled true` (item and module titles encoded by all-MiniLM-L6-v2 into `title_embedding`,
which the graph model and the export then use). Then the encoder run once more with the same workdir after its
validated data is removed, as a next-day run whose catalog is unchanged: every title comes from the cache.
Goal: the run with the encoder within 1.5x of the run without.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results"
from common import machine, write_results  # noqa: E402
from pipeline import RUN_DATE, timed  # noqa: E402

GOAL_RATIO = 1.5
NEXT_DAY = "2026-02-02"  # the cached run's date: a finished run date would do nothing at all


def _report(workdir: Path, run_date: str = RUN_DATE) -> dict:
    path = workdir / "runs" / run_date / "run_report.json"
    return json.loads(path.read_text()) if path.exists() else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--workdir", type=Path, default=HERE / "work" / "text_pipeline")
    parser.add_argument("--timeout-s", type=float, default=3 * 3600, help="per command")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    graphrec = str(Path(sys.executable).parent / "graphrec")
    shop = args.workdir / f"shop-{args.events}"
    if not (shop / "manifest.json").exists():
        shutil.rmtree(shop, ignore_errors=True)
        generate = [graphrec, "generate", "--out", str(shop), "--events", str(args.events)]
        if timed(generate, args.workdir / "generate.log", args.timeout_s)["rc"] != 0:
            sys.exit(f"generating the shop failed: see {args.workdir / 'generate.log'}")
    runs: dict[str, dict] = {}
    for name, extra in (("without", []), ("with_text", ["--validation.text.enabled", "true"])):
        run, store = args.workdir / f"run-{name}", args.workdir / f"store-{name}"
        for path in (run, store):
            shutil.rmtree(path, ignore_errors=True)
        command = [
            graphrec, "run", "--config", "conf/default.yaml", "--input.format", "contract", "--input.path", str(shop),
            "--workdir", str(run), "--export.store", str(store), "--run_date", RUN_DATE, *extra,
        ]  # fmt: skip
        runs[name] = {"command": " ".join(command[1:]), **timed(command, args.workdir / f"{name}.log", args.timeout_s)}
        report = _report(run)
        stages = report.get("stages", {})
        runs[name]["stages"] = {stage: body.get("seconds") for stage, body in stages.items()}
        runs[name]["embeddings_ndcg@20"] = (stages.get("evaluate", {}).get("ndcg@20") or {}).get("graphrec")
        runs[name]["ranker_test_auc"] = (
            stages.get("ranker", {}).get("evaluation", {}).get("test", {}).get("overall", {}).get("auc")
        )
        if name == "with_text":
            runs[name]["text"] = stages.get("validate", {}).get("text")
            # The next day with the same catalog: validation again (its stage output removed), titles from cache.
            shutil.rmtree(run / "validated", ignore_errors=True)
            next_day = [*command[: command.index("--run_date") + 1], NEXT_DAY, *extra]
            again = timed(next_day, args.workdir / "with_text_again.log", args.timeout_s)
            validate = _report(run, NEXT_DAY).get("stages", {}).get("validate", {})
            runs["with_text_cached"] = {**again, "text": validate.get("text"), "validate_s": validate.get("seconds")}
        print(f"{name}: {runs[name]['seconds']} s, rc {runs[name]['rc']}", flush=True)
    ratio = runs["with_text"]["seconds"] / runs["without"]["seconds"]
    payload = {
        "command": "python benchmarks/text_pipeline.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "events": args.events,
        "runs": runs,
        "ratio": round(ratio, 3),
        "goal": GOAL_RATIO,
        "goal_met": bool(ratio <= GOAL_RATIO and all(r["rc"] == 0 for r in runs.values())),
        "load_average": os.getloadavg(),
    }
    write_results(RESULTS, "text_pipeline", payload, markdown_lines(payload), workdir=args.workdir)
    print(f"ratio {ratio:.2f}; wrote {RESULTS / 'text_pipeline.md'}")


def markdown_lines(payload: dict) -> list[str]:
    host, runs = payload["machine"], payload["runs"]
    lines = [
        "# The main job with the text encoder",
        "",
        f"Command: `{payload['command']}`. Machine: {host['cpus']} CPUs ({host['cpu_model']}), "
        f"{host['memory_gib']} GiB. Date: {payload['date']}. Generated shop of {payload['events']:,} events.",
        "",
        "`graphrec run --config conf/default.yaml` on the same shop files, each in a fresh workdir and store: "
        "without text vectors, with `--validation.text.enabled true`, and once more with the encoder after "
        "removing the validated data, dated the next day (a run over an unchanged catalog: every title from the "
        "cache; the later stages find their outputs up to date).",
        "",
        "| run | seconds | peak GiB | rc | validate s | embeddings NDCG@20 | ranker test AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, run in runs.items():
        validate = run.get("stages", {}).get("validate", run.get("validate_s"))
        ndcg, auc = run.get("embeddings_ndcg@20"), run.get("ranker_test_auc")
        lines.append(
            f"| {name} | {run['seconds']} | {run['peak_gib']} | {run['rc']} | {validate} | "
            f"{'-' if ndcg is None else f'{ndcg:.4f}'} | {'-' if auc is None else f'{auc:.4f}'} |"
        )
    verdict = "met" if payload["goal_met"] else "missed"
    lines += ["", f"With the encoder / without: **{payload['ratio']:.2f}x** (goal <= {payload['goal']}x: {verdict})."]
    for name in ("with_text", "with_text_cached"):
        text = runs.get(name, {}).get("text")
        if text:
            lines += ["", f"{name} text encoding: `{json.dumps(text.get('tables'))}`; cache {text.get('cache')}."]
    return lines


if __name__ == "__main__":
    main()
