"""Benchmark: the main job end to end (wall time per stage, peak memory) on generated shops of growing size.

Usage:
    python benchmarks/pipeline.py                          # 1M and 10M events; figures in results/pipeline.{md,json}
    python benchmarks/pipeline.py --events 1000000         # one size
    python benchmarks/pipeline.py --events 200000 --workdir /tmp/pipeline   # a quick run

For each size the shop is generated first (`graphrec generate`, timed on its own: a shop's own job starts from
its files), then `graphrec run --config conf/default.yaml --input.format contract --input.path <shop>` runs in a
fresh workdir and store as a child process: the first run of a store, so it includes the backfill of embedding
versions at past cutoffs. Then the same command again: the rerun's cost when nothing changed. Peak memory is the
child's VmHWM (resident high-water mark), sampled every half second, plus its children's. Goal: the 10M-event run
end to end in under 30 minutes and 8 GB on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results"
from common import machine, write_results  # noqa: E402

GOAL_SECONDS, GOAL_GIB = 30 * 60, 8.0
RUN_DATE = "2026-02-01"
# The job's line for a finished stage: "[5/10] evaluate: ... (86.8s)".
STAGE_LINE = re.compile(r"graphrec\.pipeline: \[\d+/\d+\] (\w+): .*\(([\d.]+)s\)\s*$")


def completed_stages(log_text: str) -> dict[str, float]:
    """Seconds of each stage the run's log says finished (for a run that was stopped before its report)."""
    found = (STAGE_LINE.search(line) for line in log_text.splitlines())
    return {match.group(1): float(match.group(2)) for match in found if match}


def _tree_hwm_kib(pid: int) -> int:
    """VmHWM of `pid` plus its direct children's (kB)."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def timed(command: list[str], log_path: Path, timeout_s: float) -> dict:
    """Run `command`, its output to `log_path`; wall seconds, peak resident GiB, return code."""
    started = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=HERE.parent)
        peak = [0]

        def sample() -> None:
            while process.poll() is None:
                peak[0] = max(peak[0], _tree_hwm_kib(process.pid))
                time.sleep(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        sampler.join()
    return {"seconds": round(time.perf_counter() - started, 1), "peak_gib": round(peak[0] / 2**20, 2), "rc": code}


def bench_size(events: int, workdir: Path, timeout_s: float) -> dict:
    graphrec = str(Path(sys.executable).parent / "graphrec")
    shop, run, store = workdir / f"shop-{events}", workdir / f"run-{events}", workdir / f"store-{events}"
    for path in (run, store):
        shutil.rmtree(path, ignore_errors=True)
    result: dict = {"events": events}
    if not (shop / "manifest.json").exists():
        shutil.rmtree(shop, ignore_errors=True)
        generate = [graphrec, "generate", "--out", str(shop), "--events", str(events)]
        result["generate"] = timed(generate, workdir / f"generate-{events}.log", timeout_s)
        print(f"{events:,} events: generated in {result['generate']['seconds']}s", flush=True)
    manifest = json.loads((shop / "manifest.json").read_text())
    result["shop"] = {k: manifest["stats"][k] for k in ("events", "impressions") if k in manifest.get("stats", {})}
    command = [
        graphrec, "run", "--config", "conf/default.yaml", "--input.format", "contract", "--input.path", str(shop),
        "--workdir", str(run), "--export.store", str(store), "--run_date", RUN_DATE,
    ]  # fmt: skip
    result["command"] = " ".join(command[1:])
    result["run"] = timed(command, workdir / f"run-{events}.log", timeout_s)
    report_path = run / "runs" / RUN_DATE / "run_report.json"
    if result["run"]["rc"] in (0, 3) and report_path.exists():  # published, or gated with its report
        report = json.loads(report_path.read_text())
        result["stages"] = {name: stage.get("seconds") for name, stage in report["stages"].items()}
        result["stage_peak_gib"] = {name: stage.get("peak_rss_gib") for name, stage in report["stages"].items()}
        result["outcome"] = report["outcome"]
        ranker = report["stages"].get("ranker", {})
        result["ranker_test_auc"] = ranker.get("evaluation", {}).get("test", {}).get("overall", {}).get("auc")
        result["embeddings_ndcg@20"] = report["stages"]["evaluate"]["ndcg@20"]
        if result["run"]["rc"] == 0:
            result["rerun"] = timed(command, workdir / f"rerun-{events}.log", timeout_s)
    else:
        text = (workdir / f"run-{events}.log").read_text()
        result["log_tail"] = text[-2000:]
        result["stages_completed"] = completed_stages(text)
        result["last_line"] = text.strip().splitlines()[-1] if text.strip() else ""
    run_seconds = result["run"]["seconds"]
    peak = result["run"]["peak_gib"]
    result["goal_met"] = result["run"]["rc"] == 0 and run_seconds < GOAL_SECONDS and peak < GOAL_GIB
    print(f"{events:,} events: run {run_seconds}s, peak {result['run']['peak_gib']} GiB, rc {result['run']['rc']}")
    return result


def markdown_lines(payload: dict) -> list[str]:
    host = payload["machine"]
    lines = [
        "# The main job end to end",
        "",
        f"Command: `{payload['command']}`. Machine: {host['cpus']} CPUs ({host['cpu_model']}), "
        f"{host['memory_gib']} GiB. Date: {payload['date']}. Commit: {payload['commit']}.",
        "",
        "Each size: the shop generated first (timed apart), then `graphrec run` on its files in a fresh workdir and "
        "store (so with the first pair's backfill), then the same command again (nothing changed). Peak memory: "
        "the run's resident high-water mark. Goal: 10M events in under 30 minutes and 8 GB.",
        "",
        "| events | impressions | generate (s) | run (s) | run peak (GiB) | rerun (s) | outcome | < 30 min, 8 GB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["sizes"]:
        generate = r.get("generate", {}).get("seconds", "(reused)")
        rerun = r.get("rerun", {}).get("seconds", "-")
        outcome = (r.get("outcome") or {}).get("status", f"rc {r['run']['rc']}")
        goal = "yes" if r["goal_met"] else "no"
        lines.append(
            f"| {r['events']:,} | {r['shop'].get('impressions', 0):,} | {generate} | {r['run']['seconds']} | "
            f"{r['run']['peak_gib']} | {rerun} | {outcome} | {goal} |"
        )
    for r in payload["sizes"]:
        if "stages" not in r:
            continue
        # Each stage's own resident high-water mark, from the run report (runs before it was recorded lack it).
        peaks = r.get("stage_peak_gib") or {}
        lines += ["", f"## {r['events']:,} events: seconds and peak memory per stage", ""]
        lines += ["| stage | seconds | peak (GiB) |", "|---|---|---|"]
        lines += [
            f"| {name} | {seconds} | {peaks.get(name) if peaks.get(name) is not None else '-'} |"
            for name, seconds in r["stages"].items()
        ]
        lines += ["", f"Ranker test AUC {r['ranker_test_auc']:.4f}; embeddings test NDCG@20 {r['embeddings_ndcg@20']}."]
    for r in payload["sizes"]:
        if "stages" in r or "stages_completed" not in r:
            continue
        lines += [
            "",
            f"## {r['events']:,} events: the run stopped (rc {r['run']['rc']} after {r['run']['seconds']} s)",
            "",
            "Stages it finished, from its log:",
            "",
            "| stage | seconds |",
            "|---|---|",
        ]
        lines += [f"| {name} | {seconds} |" for name, seconds in r["stages_completed"].items()]
        lines += ["", f"Its last log line: `{r['last_line'][:300]}`"]
    before = payload.get("before")
    if before:
        lines += [
            "",
            f"## Against commit {before['commit']}",
            "",
            f"The same benchmark run on that commit's code (`{before['command']}`, {before['date']}, "
            f"{before['machine']['cpu_model']}): the same shops, so the ratios compare like with like.",
        ]
        earlier = {r["events"]: r for r in before["sizes"]}
        for r in payload["sizes"]:
            old = earlier.get(r["events"])
            if not old or "stages" not in r or "stages" not in old:
                continue
            lines += ["", f"### {r['events']:,} events", "", "| stage | before (s) | now (s) | before / now |"]
            lines.append("|---|---|---|---|")
            rows = [(name, old["stages"].get(name), seconds) for name, seconds in r["stages"].items()]
            rows.append(("run (whole job)", old["run"]["seconds"], r["run"]["seconds"]))
            for name, then, now in rows:
                ratio = f"{then / now:.2f}" if then and now else "-"
                lines.append(f"| {name} | {then} | {now} | {ratio} |")
            lines += [
                "",
                f"Peak memory {old['run']['peak_gib']} GiB before, {r['run']['peak_gib']} GiB now; ranker test AUC "
                f"{old['ranker_test_auc']:.4f} before, {r['ranker_test_auc']:.4f} now; graphrec test NDCG@20 "
                f"{old['embeddings_ndcg@20'].get('graphrec')} before, {r['embeddings_ndcg@20'].get('graphrec')} now.",
            ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--workdir", type=Path, default=HERE / "work" / "pipeline")
    parser.add_argument(
        "--results-name",
        default="pipeline",
        help="results file stem under benchmarks/results (e.g. pipeline-10m for a run of one size beside the main one)",
    )
    parser.add_argument("--timeout-s", type=float, default=4 * 3600, help="per command")
    parser.add_argument(
        "--compare-with",
        type=Path,
        help="a pipeline.json written by this benchmark on earlier code, on the same machine: kept in the results "
        "as `before`, with a table of each stage's time before and now",
    )
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    from graphrec.artifacts import code_version

    code = code_version()  # before the runs: the code they load
    if code.get("git_dirty"):
        print("warning: uncommitted changes; the results will not name the code that made them", file=sys.stderr)
    sizes = [bench_size(events, args.workdir, args.timeout_s) for events in sorted(args.events)]
    payload = {
        "command": "python benchmarks/pipeline.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": code.get("git_commit"),
        "dirty": code.get("git_dirty"),
        "goal": {"events": 10_000_000, "seconds": GOAL_SECONDS, "peak_gib": GOAL_GIB},
        "sizes": sizes,
        "load_average": os.getloadavg(),
    }
    if args.compare_with:
        payload["before"] = json.loads(args.compare_with.read_text())
    write_results(RESULTS, args.results_name, payload, markdown_lines(payload), workdir=args.workdir)
    print(f"wrote {RESULTS / (args.results_name + '.md')}")


if __name__ == "__main__":
    main()
