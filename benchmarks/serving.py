"""Benchmark: latency and throughput of the ranking API (POST /v1/rank) served by `graphrec serve`.

A real server process (`graphrec serve` on loopback with `--workers` worker processes, 2 by default: one per core
of the goal's machine; Redis as the online store, read with one pipelined call per request) and an open-loop load
generator in another process (asyncio + aiohttp, keep-alive connections opened before the clock starts, requests
sent on a fixed schedule whatever the responses do).

Shapes: 100 candidates and 20 slots per request, then 2,000 candidates and 40 slots; candidates are drawn from the
content table's module ids, users from the shop's users with 10 % unknown ones (they get the cold-start page).
`GET /healthz` on the same server, a trivial async endpoint, is the HTTP floor.

For each shape the rate steps up (`--rates`, from 10/s: the server must hold a rate for its latency to mean
something) and stops at the first step not held; p50 / p99 are quoted at `--fixed-rate` (25/s) for every shape.
A step is held when, over its whole duration (60 s): every response is 2xx and complete (a JSON page with the
requested number of modules), the generator sent every request on schedule (p99 of its send lag at most 10 ms) and
the completions kept up (completed requests / time to the last one >= 98 % of the target rate), and the p99 latency
is under 100 ms. A step that cannot be held any more (an error, or more than 1 % of its requests over 100 ms) is
stopped at once. At 300/s for 100 candidates (the goal's rate) a step is measured even where the ladder stopped
below it.

Goal (the issue's): on 2 cores, p99 at most 15 ms at 300 requests/s for 100 candidates.

The published pair (validated tables, embedding versions, ranker) of the generated shop is cached in the workdir,
keyed by the shop settings; the benchmark serves a copy of its store, so the cached one keeps its SQLite settings.

Usage:
    python benchmarks/serving.py            # full run, about 15-20 min on 2 cores: benchmarks/results/serving.*
    python benchmarks/serving.py --quick    # smoke run: 10 s steps, fewer rates, results in the workdir only
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, write_results

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
GOAL = {"candidates": 100, "slots": 20, "rate": 300, "p99_ms": 15.0, "cores": 2}
HELD = {"p99_ms_below": 100.0, "completion_rate_share": 0.98, "send_lag_p99_ms": 10.0}
SHAPES = {"rank_100": (100, 20), "rank_2000": (2000, 40)}
# Low rates first: the server must hold a rate for its latency to mean anything. The floor shares the fixed rate.
RANK_RATES = [10, 25, 50, 75, 100, 150, 200, 300, 400, 600, 800, 1000]
FLOOR_RATES = [25, 100, 300, 1000, 1500, 2000, 3000, 4500]
UNKNOWN_USERS = 0.1
BODIES = 1000  # distinct request bodies per shape, cycled
CONNECTIONS = 32
REQUEST_TIMEOUT_S = 5.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ------------------------------------------------------------------------------------------------ the published pair


def shop_settings(events: int, content: int, seed: int):
    from graphrec.data.config import ShopConfig

    return ShopConfig.scaled_to(events, n_content=content, seed=seed)


def prepare_pair(workdir: Path, shop_config) -> Path:
    """Generate, validate, backfill and train the pair once per shop setting (`tests.support.publish_pair`)."""
    from graphrec.data.shop import generate_shop
    from tests.support import publish_pair

    key = hashlib.sha256(json.dumps(asdict(shop_config), sort_keys=True).encode()).hexdigest()[:10]
    root = workdir / f"pair-{key}"
    if (root / "pair.json").exists():
        log(f"reusing the published pair in {root}")
        return root
    shutil.rmtree(root, ignore_errors=True)  # a half-published pair from an interrupted run
    root.mkdir(parents=True)
    started = time.perf_counter()
    log(f"generating and publishing the pair into {root} (a few minutes)")
    shop = generate_shop(shop_config)
    report = publish_pair(shop, root)
    seconds = time.perf_counter() - started
    info = {"shop": asdict(shop_config), "publish_seconds": round(seconds, 1), "ranker_report": report}
    (root / "pair.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    log(f"published in {seconds:.0f} s")
    return root


def pair_facts(root: Path) -> dict:
    """Users and modules the requests are drawn from, and what the pair holds."""
    import polars as pl

    from graphrec.data.validation import read_validated
    from graphrec.store.versions import load_version, require_latest

    events, _, content, _ = read_validated(root / "validated")
    users = events.select(pl.col("user_id").unique().sort()).collect()["user_id"].to_list()
    modules = content["content_id"].unique().sort().to_list()
    version = require_latest(root / "store")
    embedded = load_version(root / "store", version)
    info = json.loads((root / "pair.json").read_text())
    return {
        "users": users,
        "modules": modules,
        "facts": {
            "events": events.select(pl.len()).collect().item(),
            "users": len(users),
            "users_with_embedding": len(set(users) & set(embedded.ids["user"].to_list())),
            "modules_in_content_table": len(modules),
            "embedding_version": version,
            "embedding_dim": embedded.dim,
            "publish_seconds": info["publish_seconds"],
        },
    }


def write_bodies(path: Path, users: list, modules: list, candidates: int, slots: int, seed: int) -> None:
    """`BODIES` rank requests as JSON lines: known users, `UNKNOWN_USERS` unknown ones, random candidates."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(BODIES):
        unknown = rng.random() < UNKNOWN_USERS
        user = f"bench-unknown-{i:05d}" if unknown else users[int(rng.integers(len(users)))]
        picks = rng.choice(len(modules), size=candidates, replace=False)
        body = {
            "user_id": user,
            "candidates": [modules[j] for j in picks],
            "slots": slots,
            "context": {"device": "mobile_web"},
        }
        lines.append(json.dumps(body, separators=(",", ":")))
    path.write_text("\n".join(lines) + "\n")


def code_state() -> dict:
    """The commit measured, the library and API files that differ from it, and their modification times (others
    edit the repository while a run goes on: a file changed mid-run is reported, not silently measured)."""
    repo = HERE.parent

    def git(*command: str) -> str:
        try:
            return subprocess.run(["git", *command], cwd=repo, capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    files = sorted(p for folder in ("serving", "graphrec") for p in (repo / folder).rglob("*.py"))
    return {
        "commit": git("rev-parse", "HEAD").strip() or None,
        "uncommitted": [line[3:] for line in git("status", "--porcelain", "--", "serving", "graphrec").splitlines()],
        "mtimes": {str(p.relative_to(repo)): p.stat().st_mtime for p in files},
    }


# ------------------------------------------------------------------------------------------------ processes


def start_server(
    root: Path, store: Path, redis_address: str, port: int, logfile: Path, workers: int
) -> subprocess.Popen:
    """`graphrec serve` in its own session (a terminal's Ctrl-C reaches us, and we stop it in order)."""
    command = [
        str(Path(sys.executable).parent / "graphrec"),
        "serve",
        *("--serve.port", str(port), "--serve.workers", str(workers)),
        *("--serve.ranker", str(root / "ranker"), "--serve.validated", str(root / "validated")),
        *("--serve.store", str(store), "--serve.clock", "data_end"),
        *("--serve.impression_log", "null", "--serve.feedback", "null"),
        *("--serve.feature_store.online_store", "redis", "--serve.feature_store.redis", redis_address),
    ]
    out = logfile.open("w")
    return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(server: subprocess.Popen, base: str, logfile: Path, workers: int = 1, timeout_s: float = 300.0) -> dict:
    """/readyz's answer once every worker answers it (each new connection lands on one of them)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    seen: set = set()
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"graphrec serve exited with {server.returncode}:\n{logfile.read_text()[-3000:]}")
        try:
            response = httpx.get(f"{base}/readyz", timeout=2.0)
            if response.status_code == 200:
                seen.add(response.json().get("worker"))
                if len(seen) >= workers:
                    return response.json() | {"workers": sorted(seen)}
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"graphrec serve not ready within {timeout_s:.0f} s:\n{logfile.read_text()[-3000:]}")


def stop_process(process: subprocess.Popen | None, name: str) -> None:
    """SIGINT (uvicorn finishes requests in flight), then SIGKILL after 10 s."""
    if process is None or process.poll() is not None:
        return
    try:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        log(f"{name} did not stop within 10 s: killing it")
        process.kill()
        process.wait(timeout=10)


def run_step(workdir: Path, spec: dict) -> dict:
    """One load step in a generator process of its own; returns its figures."""
    spec_path = workdir / "step.json"
    spec["out"] = str(workdir / "step-result.json")
    Path(spec["out"]).unlink(missing_ok=True)
    spec_path.write_text(json.dumps(spec))
    generator = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child-load", str(spec_path)])
    try:
        generator.wait(timeout=spec["duration_s"] + 4 * REQUEST_TIMEOUT_S + 30)
    finally:
        if generator.poll() is None:
            generator.kill()
            generator.wait(timeout=10)
    if generator.returncode != 0 or not Path(spec["out"]).exists():
        raise RuntimeError(f"the load generator failed (exit {generator.returncode})")
    return json.loads(Path(spec["out"]).read_text())


# ------------------------------------------------------------------------------------------------ the load generator


def child_load(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    try:
        import uvloop

        result = uvloop.run(load_step(spec))
    except ImportError:
        import asyncio

        result = asyncio.run(load_step(spec))
    Path(spec["out"]).write_text(json.dumps(result))


async def load_step(spec: dict) -> dict:
    """Open loop: request i is sent at t0 + i / rate on one of the keep-alive connections (waiting for a free one
    counts in its latency). Latency runs from the send to the last byte of the response."""
    import asyncio

    import aiohttp

    rate, duration = spec["rate"], float(spec["duration_s"])
    n = max(1, round(rate * duration))
    url, method = spec["url"], spec["method"]
    bodies = [line.encode() for line in Path(spec["bodies"]).read_text().splitlines()] if spec["bodies"] else [None]
    expect = spec["expect_modules"]
    latency = np.full(n, np.nan)
    lag = np.full(n, np.nan)
    sent_at = {}  # request -> send time, while in flight
    errors: collections.Counter = collections.Counter()
    samples: list[str] = []
    over = 0  # completed requests over the p99 bound
    last_end = 0.0
    clock = time.perf_counter
    bound = HELD["p99_ms_below"] / 1e3

    def complete(status: int, payload: bytes) -> str | None:
        if not 200 <= status < 300:
            return f"http_{status}"
        try:
            page = json.loads(payload)
        except ValueError:
            return "incomplete_body"
        if expect is None:
            return None if page == {"status": "ok"} else "unexpected_body"
        return None if len(page.get("modules", ())) == expect else "wrong_module_count"

    async def one(i: int, due: float, body: bytes | None) -> None:
        nonlocal over, last_end
        started = clock()
        lag[i] = started - due
        sent_at[i] = started
        try:
            async with session.request(method, url, data=body, headers=headers) as response:
                payload = await response.read()
                status = response.status
        except TimeoutError:
            errors["timeout"] += 1
            return
        except aiohttp.ClientError as exc:
            errors[type(exc).__name__] += 1
            if len(samples) < 3:
                samples.append(f"{type(exc).__name__}: {exc}")
            return
        finally:
            sent_at.pop(i, None)
        ended = clock()
        problem = complete(status, payload)
        if problem:
            errors[problem] += 1
            if len(samples) < 3:
                samples.append(f"{problem}: {payload[:300]!r}")
            return
        latency[i] = ended - started
        last_end = max(last_end, ended)
        over += latency[i] > bound

    def verdict(now: float, next_due: float | None) -> str | None:
        if errors:
            return "errors"
        waiting = sum(now - t > bound for t in list(sent_at.values()))
        if over + waiting > 0.01 * n:
            return f"more than 1 % of requests over {HELD['p99_ms_below']:.0f} ms"
        if next_due is not None and now - next_due > 1.0:
            return "the generator fell behind its schedule"
        return None

    headers = {"content-type": "application/json"} if spec["bodies"] else {}
    connector = aiohttp.TCPConnector(limit=spec["connections"], force_close=False)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    stopped = None
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # Open the keep-alive connections before the clock starts.
        async def warm() -> None:
            async with session.get(spec["warm_url"]) as response:
                await response.read()

        await asyncio.gather(*(warm() for _ in range(spec["connections"])))
        tasks: set = set()
        t0 = clock() + 0.05
        i = 0
        checked = t0
        while i < n:
            now = clock()
            due = t0 + i / rate
            if due > now:
                await asyncio.sleep(due - now)
                continue
            while i < n and t0 + i / rate <= now:  # everything due: the timer wakes us at ms granularity
                task = asyncio.create_task(one(i, t0 + i / rate, bodies[i % len(bodies)]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            if now - checked > 0.05:
                checked = now
                stopped = verdict(now, t0 + i / rate if i < n else None)
                if stopped:
                    break
            await asyncio.sleep(0)
        deadline = clock() + REQUEST_TIMEOUT_S + 1
        while tasks and not stopped and clock() < deadline:
            await asyncio.sleep(0.05)
            stopped = verdict(clock(), None)
        now = clock()
        in_flight = np.array([now - t for t in sent_at.values()])
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    sent = int(np.isfinite(lag).sum())
    done = latency[np.isfinite(latency)]
    # A stopped step's unfinished requests count at their age so far: its percentiles are lower bounds.
    seen = np.concatenate([done, in_flight]) * 1e3 if stopped else done * 1e3
    sent_lag = lag[np.isfinite(lag)] * 1e3
    figures = {
        "rate": rate,
        "duration_s": duration,
        "planned": n,
        "sent": sent,
        "completed": len(done),
        "errors": dict(errors),
        "error_samples": samples,
        "stopped": stopped,
        "completion_rate": round(len(done) / (last_end - t0), 1) if len(done) and last_end > t0 else 0.0,
        "send_lag_p99_ms": round(float(np.percentile(sent_lag, 99)), 3) if len(sent_lag) else None,
        "send_lag_max_ms": round(float(sent_lag.max()), 3) if len(sent_lag) else None,
        "lower_bound": bool(stopped),
    }
    if len(seen):
        for name, q in (("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99), ("p999_ms", 99.9)):
            figures[name] = round(float(np.percentile(seen, q)), 3)
        figures["mean_ms"] = round(float(seen.mean()), 3)
        figures["max_ms"] = round(float(seen.max()), 3)
    # The five slowest completed requests as (seconds into the step, ms): stalls show up as clusters.
    slowest = np.argsort(np.nan_to_num(latency, nan=-1.0))[::-1][: min(5, len(done))]
    figures["slowest"] = [[round(float(lag[j] + j / rate), 2), round(float(latency[j] * 1e3), 1)] for j in slowest]
    return figures


def held(step: dict) -> bool:
    """Zero errors, every request sent on schedule and completed, completions at the rate, p99 under the bound."""
    return (
        not step["stopped"]
        and not step["errors"]
        and step["completed"] == step["planned"]
        and step["send_lag_p99_ms"] is not None
        and step["send_lag_p99_ms"] <= HELD["send_lag_p99_ms"]
        and step["completion_rate"] >= HELD["completion_rate_share"] * step["rate"]
        and step.get("p99_ms", float("inf")) < HELD["p99_ms_below"]
    )


def ladder(workdir: Path, base: str, name: str, bodies: Path | None, expect, rates: list[int], duration: float):
    """Step the rate up until a step is not held; returns the steps and the highest held rate."""
    path, method = ("/healthz", "GET") if bodies is None else ("/v1/rank", "POST")
    spec = {
        "url": base + path,
        "warm_url": base + "/healthz",
        "method": method,
        "bodies": str(bodies) if bodies else None,
        "expect_modules": expect,
        "connections": CONNECTIONS,
    }
    # Warm-up (not recorded): first calls of the model and the Redis client; then a pause to drain any backlog.
    warm = run_step(workdir, spec | {"rate": 10, "duration_s": 3.0})
    log(f"{name} warm-up 10/s: p50 {warm.get('p50_ms')} ms, errors {warm['errors']} {warm['error_samples']}")
    time.sleep(2.0)
    steps, best = [], None
    for rate in rates:
        step = run_step(workdir, spec | {"rate": rate, "duration_s": duration})
        step["held"] = held(step)
        step["load_average_1m"] = round(os.getloadavg()[0], 2)
        steps.append(step)
        log(
            f"{name} {rate}/s: p50 {step.get('p50_ms')} ms, p99 {step.get('p99_ms')} ms, "
            f"{step['completed']:,}/{step['planned']:,} completed, errors {step['errors']}, send lag p99 "
            f"{step['send_lag_p99_ms']} ms, {'held' if step['held'] else 'NOT held: ' + str(step['stopped'])}"
        )
        if not step["held"]:
            break
        best = rate
        time.sleep(2.0)
    return steps, best


# ------------------------------------------------------------------------------------------------ in-process profile


def profile_in_process(config, bodies: dict[str, Path], requests: int) -> dict:
    """Where the time goes inside a request: `RankingService.rank` called directly (its `Page.timings`, plus
    timers around the candidate lookup and the reasons), and the request / response models of the app."""
    import torch

    from serving.schemas import RankRequest, RankResponse
    from serving.service import RankingService

    service = RankingService(config)
    parts_of = {}

    def timed(name, function):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                parts_of[name] = (time.perf_counter() - started) * 1e3

        return wrapper

    service._candidates = timed("candidates_ms", service._candidates)
    service.reasons = timed("reasons_ms", service.reasons)
    result = {"requests": requests, "torch_threads": torch.get_num_threads()}
    for shape, path in bodies.items():
        lines = path.read_text().splitlines()[:requests]
        rows = collections.defaultdict(list)
        for k, line in enumerate(lines):
            parts_of.clear()
            started = time.perf_counter()
            body = RankRequest.model_validate_json(line)
            parse_ms = (time.perf_counter() - started) * 1e3
            page = service.rank(body.user_id, candidates=body.candidates, slots=body.slots, device=body.context.device)
            started = time.perf_counter()
            RankResponse.of(page).model_dump_json()
            response_ms = (time.perf_counter() - started) * 1e3
            if k < 20:  # warm-up
                continue
            if page.fallback == "cold_start":
                rows["cold_start_total_ms"].append(page.timings["total_ms"])
                continue
            timings = page.timings | parts_of
            known = ("candidates_ms", "embeddings_ms", "features_ms", "model_ms", "reasons_ms")
            rows["parse_ms"].append(parse_ms)
            for part in known:
                rows[part].append(timings.get(part, 0.0))
            rows["order_and_page_ms"].append(timings["total_ms"] - sum(timings.get(p, 0.0) for p in known))
            rows["response_ms"].append(response_ms)
            rows["service_total_ms"].append(timings["total_ms"])
        total = float(np.mean(rows["service_total_ms"]) + np.mean(rows["parse_ms"]) + np.mean(rows["response_ms"]))
        result[shape] = {
            part: {
                "mean_ms": round(float(np.mean(values)), 3),
                "p50_ms": round(float(np.median(values)), 3),
                "share": round(float(np.mean(values)) / total, 3) if part != "cold_start_total_ms" else None,
            }
            for part, values in rows.items()
        }
        result[shape]["personal_requests"] = len(rows["service_total_ms"])
        means = {part: row["mean_ms"] for part, row in result[shape].items() if isinstance(row, dict)}
        log(f"profile {shape} (mean ms): {means}")
    return result


# ------------------------------------------------------------------------------------------------ results


def fixed(steps: list[dict], rate: int) -> dict | None:
    return next((s for s in steps if s["rate"] == rate), None)


def ms(step: dict | None, key: str) -> str:
    if step is None or step.get(key) is None:
        return "-"
    return ("≥ " if step["lower_bound"] else "") + f"{step[key]:.2f}"


def markdown_lines(payload: dict) -> list[str]:
    info, data, goal, code = payload["machine"], payload["data"], payload["goal"], payload["code"]
    floor = payload["floor"]
    shop = data["shop"]
    lines = [
        "# Ranking API latency and throughput",
        "",
        f"Command: `{payload['command']}`  ",
        f"Machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['memory_gib']} GiB, Python {info['python']}, "
        f"torch {info['torch']}; load average (1 min) {payload['load_average']['start']} at the start, "
        f"{payload['load_average']['end']} at the end (the machine is shared: other jobs ran beside this one).  ",
        f"Date: {payload['date']}; total {payload['seconds'] / 60:.1f} min (publishing the pair: "
        f"{data['publish_seconds']:.0f} s, cached across runs)  ",
        f"Code: commit {(code['commit'] or 'unknown')[:12]}"
        + (f", uncommitted changes in {', '.join(code['uncommitted'])}" if code["uncommitted"] else "")
        + (
            f"; CHANGED DURING THE RUN (the server kept the code it started with): "
            f"{', '.join(code['changed_during_run'])}"
            if code["changed_during_run"]
            else "; no library or API file changed during the run"
        ),
        "",
        f"Data: the generated shop `ShopConfig.scaled_to({shop['target_events']:,}, n_content={shop['n_content']:,}, "
        f"seed={shop['seed']})`: {data['events']:,} events, {data['users']:,} users "
        f"({data['users_with_embedding']:,} with an embedding), {data['modules_in_content_table']:,} modules in the "
        f"content table; pair published by `tests.support.publish_pair` (embedding version {data['embedding_version']}"
        f", dim {data['embedding_dim']}; the test suite's small ranker).",
        "",
        f"Setup: {payload['setup']}",
        "",
        f"## Goal: p99 at most {goal['p99_ms']:.0f} ms at {goal['rate']} requests/s for {goal['candidates']} "
        f"candidates on {goal['cores']} cores: **{'met' if goal['met'] else 'MISSED'}**",
        "",
        f"Measured p99 at {goal['rate']}/s, {goal['candidates']} candidates / {goal['slots']} slots: "
        f"{ms(goal['step'], 'p99_ms')} ms (p50 {ms(goal['step'], 'p50_ms')} ms"
        + (", step held" if goal["step"] and goal["step"]["held"] else ", step not held")
        + ").",
        "",
        "## Highest rate held",
        "",
        f"Held: {payload['held_definition']}",
        "",
        "| endpoint | candidates / slots | highest rate held (req/s) | first rate not held | why | "
        "rate ratio to the floor |",
        "|---|---|---:|---:|---|---:|",
    ]
    for shape in payload["shapes"].values():
        failed = next((step for step in shape["steps"] if not step["held"]), None)
        lines.append(
            f"| POST /v1/rank | {shape['candidates']:,} / {shape['slots']} | {shape['highest_held_rate'] or 'none'} | "
            f"{failed['rate'] if failed else '-'} | {why(failed)} | {shape['rate_ratio_to_floor'] or '-'} |"
        )
    failed = next((step for step in floor["steps"] if not step["held"]), None)
    lines.append(
        f"| GET /healthz (floor) | - | {floor['highest_held_rate'] or 'none'} | {failed['rate'] if failed else '-'} | "
        f"{why(failed)} | 1 |"
    )
    lines += [
        "",
        "## Latency per step (client side, end to end: send to the last byte of the response)",
        "",
        "| endpoint | rate (req/s) | held | completed | errors | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | "
        "p99 / floor p99 | send lag p99 ms | load 1m |",
        "|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, shape in [*payload["shapes"].items(), ("floor", floor)]:
        label = f"rank {shape['candidates']:,} / {shape['slots']}" if name != "floor" else "healthz (floor)"
        for step in shape["steps"]:
            base = fixed(floor["steps"], step["rate"])
            ratio = (
                ("≥ " if step["lower_bound"] else "") + f"{step['p99_ms'] / base['p99_ms']:.1f}"
                if name != "floor" and base and step.get("p99_ms") and base.get("p99_ms")
                else "-"
            )
            lines.append(
                f"| {label} | {step['rate']:,} | {'yes' if step['held'] else 'no'} | {step['completed']:,} / "
                f"{step['planned']:,} | {step['errors'] or 0} | {ms(step, 'p50_ms')} | {ms(step, 'p90_ms')} | "
                f"{ms(step, 'p99_ms')} | {ms(step, 'p999_ms')} | {ms(step, 'max_ms')} | {ratio} | "
                f"{step['send_lag_p99_ms']} | {step['load_average_1m']} |"
            )
    lines += [
        "",
        "`≥`: a step stopped early; its unfinished requests count at their age when it stopped. The floor's steps "
        "run after the rank shapes on the same server; the floor is bounded by the generator and the server "
        "sharing the 2 cores (with Redis and any other job).",
        "",
        f"Fixed rate {payload['fixed_rate']}/s: "
        + "; ".join(
            f"{name}: p50 {ms(fixed(s['steps'], payload['fixed_rate']), 'p50_ms')} ms, p99 "
            f"{ms(fixed(s['steps'], payload['fixed_rate']), 'p99_ms')} ms"
            for name, s in [*payload["shapes"].items(), ("floor", floor)]
        )
        + ".",
    ]
    profile = payload.get("profile")
    if profile and "error" in profile:
        lines += ["", f"The in-process profile failed: `{profile['error']}`."]
    elif profile:
        lines += [
            "",
            f"## Where the time goes inside a request (in process, {profile['requests']} requests per shape, "
            "known users; unknown users get the cold-start page)",
            "",
            "`RankingService.rank` called directly on the same pair and Redis (its `Page.timings`, plus timers around "
            "the candidate lookup and the reasons), with the app's request and response models timed apart. "
            "HTTP, uvicorn and FastAPI, the client and queueing are the rest of the end-to-end latency.",
            "",
            "| part | " + " | ".join(f"{n} mean ms (share)" for n in payload["shapes"]) + " |",
            "|---|" + "---:|" * len(payload["shapes"]),
        ]
        parts = {
            "parse_ms": "request body parse + validation (pydantic)",
            "candidates_ms": "candidate lookup (`_candidates`)",
            "embeddings_ms": "user vector (Redis, one pipelined call)",
            "features_ms": "request-time features (`FeatureState.features`)",
            "model_ms": "ranker inputs + forward",
            "reasons_ms": "reasons (occlusion of feature groups: extra forwards)",
            "order_and_page_ms": "ordering, page build",
            "response_ms": "response model + JSON",
            "service_total_ms": "`RankingService.rank` total",
            "cold_start_total_ms": "`RankingService.rank`, unknown user (cold start)",
        }
        for key, label in parts.items():
            cells = []
            for name in payload["shapes"]:
                row = profile[name].get(key)
                if row is None:
                    cells.append("-")
                else:
                    share = f" ({row['share']:.0%})" if row["share"] is not None else ""
                    cells.append(f"{row['mean_ms']:.3f}{share}")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines += ["", payload["profile_summary"]]
        rate = payload["fixed_rate"]
        for name, shape in payload["shapes"].items():
            step = fixed(shape["steps"], rate)
            if step is None or not step["held"]:
                continue
            inside = sum(profile[name][k]["p50_ms"] for k in ("parse_ms", "service_total_ms", "response_ms"))
            lines.append(
                f"- {name} at {rate}/s: end-to-end p50 {step['p50_ms']:.2f} ms, of which about {inside:.2f} ms in "
                f"process (parse + rank + response, p50s) and {step['p50_ms'] - inside:.2f} ms in HTTP, uvicorn and "
                "FastAPI, the client and queueing."
            )
    return lines


def why(step: dict | None) -> str:
    if step is None:
        return "-"
    if step["stopped"]:
        return step["stopped"] + (f" {step['errors']}" if step["errors"] else "")
    reasons = []
    if step.get("p99_ms", 0) >= HELD["p99_ms_below"]:
        reasons.append(f"p99 {step['p99_ms']:.0f} ms")
    if step["send_lag_p99_ms"] is not None and step["send_lag_p99_ms"] > HELD["send_lag_p99_ms"]:
        reasons.append(f"generator send lag p99 {step['send_lag_p99_ms']:.0f} ms")
    if step["completion_rate"] < HELD["completion_rate_share"] * step["rate"]:
        reasons.append(f"completions {step['completion_rate']:.0f}/s")
    if step["completed"] < step["planned"]:
        reasons.append(f"{step['planned'] - step['completed']} requests unfinished")
    return ", ".join(reasons) or "-"


def profile_summary(profile: dict) -> str:
    if "error" in profile:
        return f"The in-process profile failed: {profile['error']}"
    sentences = []
    for shape, rows in profile.items():
        if not isinstance(rows, dict):
            continue
        parts = {k: v for k, v in rows.items() if isinstance(v, dict) and v["share"] is not None}
        parts.pop("service_total_ms", None)
        top = max(parts, key=lambda k: parts[k]["mean_ms"])
        sentences.append(f"{shape}: the largest part is {top.removesuffix('_ms')} ({parts[top]['share']:.0%})")
    return "In process: " + "; ".join(sentences) + "."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 s steps, fewer rates, results in the workdir")
    parser.add_argument("--duration", type=float, default=None, help="seconds per step (default 60, quick 10)")
    parser.add_argument("--rates", type=int, nargs="*", default=None, help="rank rates to step through")
    parser.add_argument("--floor-rates", type=int, nargs="*", default=None, help="/healthz rates to step through")
    parser.add_argument("--fixed-rate", type=int, default=25, help="the rate p50 / p99 are quoted at per shape")
    parser.add_argument("--events", type=int, default=100_000, help="target events of the generated shop")
    parser.add_argument("--content", type=int, default=2_500, help="content modules of the generated shop")
    parser.add_argument("--shop-seed", type=int, default=7)
    parser.add_argument("--profile-requests", type=int, default=300)
    parser.add_argument(
        "--workers", type=int, default=2, help="uvicorn worker processes of the server (default 2: one per core)"
    )
    parser.add_argument("--workdir", default=str(HERE / "work" / "serving"))
    parser.add_argument("--child-load", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_load:
        child_load(args.child_load)
        return
    from training.signals import stop_on_sigterm

    stop_on_sigterm()  # a SIGTERM unwinds through the `finally` blocks: server, generator and Redis are stopped
    duration = args.duration or (10.0 if args.quick else 60.0)
    rates = args.rates or ([10, 25, 100] if args.quick else RANK_RATES)
    floor_rates = args.floor_rates or ([25, 300, 1000] if args.quick else FLOOR_RATES)
    started = time.perf_counter()
    load_start = round(os.getloadavg()[0], 2)
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    shop_config = shop_settings(args.events, args.content, args.shop_seed)
    root = prepare_pair(workdir, shop_config)
    drawn = pair_facts(root)
    if drawn["facts"]["modules_in_content_table"] < max(c for c, _ in SHAPES.values()):
        raise SystemExit(f"the shop has {drawn['facts']['modules_in_content_table']} modules: raise --content")
    run = workdir / "run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    bodies = {}
    for seed, (name, (candidates, slots)) in enumerate(SHAPES.items()):
        bodies[name] = run / f"bodies-{name}.jsonl"
        write_bodies(bodies[name], drawn["users"], drawn["modules"], candidates, slots, seed)

    from graphrec.store.config import FeatureStoreConfig
    from graphrec.store.publish import sync_online
    from serving.config import ServeConfig
    from serving.service import RankingService  # noqa: F401 (imported with the server's start: the same code)
    from tests.support import free_loopback_port, local_redis_server

    code = code_state()
    server = None
    results: dict = {"shapes": {}}
    with local_redis_server(run) as redis_address:
        if redis_address is None:
            raise SystemExit("redis-server is not installed (apt-get install redis-server)")
        # A copy of the store: syncing to Redis points its feature_store.yaml at this throwaway Redis.
        store = run / "store"
        shutil.copytree(root / "store", store)
        feature_store = FeatureStoreConfig(online_store="redis", redis=redis_address)
        log(f"writing {sync_online(store, feature_store)} to Redis at {redis_address}")
        port = free_loopback_port()
        base = f"http://127.0.0.1:{port}"
        logfile = run / "server.log"
        try:
            server = start_server(root, store, redis_address, port, logfile, args.workers)
            ready = wait_ready(server, base, logfile, args.workers)
            log(f"graphrec serve ready on {base}: {ready}")
            for name, (candidates, slots) in SHAPES.items():
                steps, best = ladder(run, base, name, bodies[name], slots, rates, duration)
                if name == "rank_100" and fixed(steps, GOAL["rate"]) is None:  # stopped below it: measure it anyway
                    spec_rates = [GOAL["rate"]]
                    extra, _ = ladder(run, base, name + " (goal rate)", bodies[name], slots, spec_rates, duration)
                    steps += extra
                results["shapes"][name] = {"candidates": candidates, "slots": slots, "steps": steps, "best": best}
            floor_steps, floor_best = ladder(run, base, "healthz", None, None, floor_rates, duration)
        finally:
            stop_process(server, "graphrec serve")
        serve_config = ServeConfig(
            ranker=str(root / "ranker"),
            validated=str(root / "validated"),
            store=str(store),
            clock="data_end",
            impression_log=None,
            feedback=None,
            feature_store=feature_store,
        )
        try:
            profile = profile_in_process(serve_config, bodies, args.profile_requests)
        except Exception as exc:  # the load figures above stand without it
            log(f"the in-process profile failed: {exc!r}")
            profile = {"error": repr(exc)}

    info = machine()
    mtimes = code.pop("mtimes")
    now = code_state()["mtimes"]
    code["changed_during_run"] = sorted(p for p in set(mtimes) | set(now) if mtimes.get(p) != now.get(p))
    floor = {"steps": floor_steps, "highest_held_rate": floor_best}
    shapes = {}
    for name, shape in results["shapes"].items():
        best = shape.pop("best")
        ratio = round(best / floor_best, 3) if best and floor_best else None
        shapes[name] = shape | {"highest_held_rate": best, "rate_ratio_to_floor": ratio}
        for step in shape["steps"]:
            base_step = fixed(floor_steps, step["rate"])
            if base_step and step.get("p99_ms") and base_step.get("p99_ms"):
                step["p99_ratio_to_floor"] = round(step["p99_ms"] / base_step["p99_ms"], 2)
    goal_step = fixed(shapes["rank_100"]["steps"], GOAL["rate"])
    goal_met = bool(
        goal_step and goal_step["held"] and goal_step["p99_ms"] <= GOAL["p99_ms"] and (os.cpu_count() or 0) <= 2
    )
    command = "python benchmarks/serving.py " + " ".join(a for a in sys.argv[1:])
    payload = {
        "benchmark": "serving",
        "command": command.strip(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info,
        "code": code,
        "load_average": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
        "data": drawn["facts"] | {"shop": asdict(shop_config), "unknown_user_share": UNKNOWN_USERS},
        "setup": (
            f"`graphrec serve` ({args.workers} worker process{'es' if args.workers > 1 else ''}, loopback, "
            f"`--serve.clock data_end`, reasons on, no impression log, "
            f"no feedback store), Redis online store read directly (`online_read: direct`); an open-loop generator "
            f"in another process (asyncio + aiohttp on uvloop, {CONNECTIONS} keep-alive connections opened before "
            f"each step, {BODIES} distinct bodies per shape cycled, device mobile_web, "
            f"{UNKNOWN_USERS:.0%} unknown users); {duration:.0f} s per step after a 3 s warm-up per ladder; "
            f"request timeout {REQUEST_TIMEOUT_S:.0f} s."
        ),
        "held_definition": (
            f"over the whole {duration:.0f} s step, zero errors (every response 2xx and complete: JSON with the "
            f"requested number of modules, or healthz's body), every request sent on schedule (p99 of the "
            f"generator's send lag at most {HELD['send_lag_p99_ms']:.0f} ms) and completed, completions at "
            f"{HELD['completion_rate_share']:.0%} of the target rate or more (no backlog), and p99 under "
            f"{HELD['p99_ms_below']:.0f} ms. Rates step up and stop at the first step not held."
        ),
        "held_rule": HELD,
        "goal": GOAL | {"met": goal_met, "step": goal_step},
        "fixed_rate": args.fixed_rate,
        "shapes": shapes,
        "floor": floor,
        "profile": profile,
        "profile_summary": profile_summary(profile),
        "seconds": round(time.perf_counter() - started, 1),
    }
    results_dir = workdir / "results" if args.quick else RESULTS
    write_results(results_dir, "serving", payload, markdown_lines(payload), workdir=workdir)
    log(f"goal {'met' if goal_met else 'MISSED'}; wrote {results_dir / 'serving.md'}")


if __name__ == "__main__":
    main()
