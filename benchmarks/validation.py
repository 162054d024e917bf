"""Benchmark: validation of raw events in bounded memory (chunked) against the whole-table pass.

Usage: python benchmarks/validation.py [--sizes 1000000 10000000 30000000] [--workdir benchmarks/work/validation]
       [--data-dir DIR] [--compare-max 10000000] [--csv-sizes 1000000] [--chunk-sweep 500000 1000000 ...]

For each size the raw events of a generated shop (`ShopConfig.scaled_to(size)`, seed 7; above 10M events, several
shops one after the other, see `child_generate`) are written to `<data-dir>/<size>/events.parquet` in a child
process (skipped when the file exists, so `--data-dir` reuses pre-generated data). Each measurement then runs
`validate_dataset` in a fresh process, timed from the call to the validated dataset on disk (interpreter start
and imports excluded), and reports the process's peak resident memory (VmHWM, read before the checksums are
computed). The chunked run uses the default `validation.chunk_rows`; up to
`--compare-max` events the whole-table pass (one chunk larger than the table) runs too, and above it a run with
another chunk size; both must write the same tables: same row counts and the same order-sensitive checksum (the
sum of 64-bit hashes of each row with its position) of `events.parquet` and `quarantine/events.parquet`. The same
events written as CSV (`--csv-sizes`) show the CSV path is bounded too. `--chunk-sweep` times chunk sizes at
`--sweep-size` events. Results: benchmarks/results/validation.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # graphrec from this checkout, as the other benchmarks import it
from common import machine, peak_rss_gib, write_results  # noqa: E402

GOAL_PEAK_GIB = 3.0
GOAL_ROWS_PER_S = 1_500_000
GENERATE_MAX = 10_000_000  # events of one generated shop, at most (larger logs are several shops)
WHOLE_TABLE = 10**12  # a chunk larger than any table: the whole-table pass


def checksum(path: Path) -> dict:
    """Rows and an order-sensitive checksum of a Parquet table, in one streaming pass (memory stays flat)."""
    import polars as pl

    frame = pl.scan_parquet(path).with_row_index("__position")
    hashed = pl.struct(pl.all()).hash(seed=0)
    rows, low, high = (
        frame.select(pl.len(), (hashed % 2**32).sum().alias("low"), (hashed // 2**32).sum().alias("high"))
        .collect(engine="streaming")
        .row(0)
    )
    return {"rows": rows, "hash": f"{(low + (high << 32)) % 2**64:016x}"}


def child_generate(size: str, out: str) -> dict:
    """The raw events of `size` generated events; above GENERATE_MAX, of several shops (seeds 7, 8, ...) of equal
    size, their user and session ids prefixed with the shop's index (`s1-`), one after the other (the generator
    holds a whole shop in memory: one of 30M events needs more than 24 GiB)."""
    import math

    import polars as pl

    from graphrec.data.config import ShopConfig
    from graphrec.data.shop import generate_shop

    start = time.perf_counter()
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    shops = math.ceil(int(size) / GENERATE_MAX)
    parts, rows = [], 0
    for shop in range(shops):
        events = generate_shop(ShopConfig.scaled_to(int(size) // shops, seed=7 + shop)).events
        rows += events.height
        if shops > 1:
            events = events.with_columns(
                pl.format("s{}-{}", pl.lit(shop), pl.col(c)).alias(c) for c in ("user_id", "session_id")
            )
        parts.append(target.with_suffix(f".part{shop}.partial"))
        events.write_parquet(parts[-1])
        del events
    partial = target.with_suffix(".parquet.partial")
    pl.concat([pl.scan_parquet(p) for p in parts]).sink_parquet(partial)
    partial.rename(target)  # a killed run leaves no events file that looks complete
    for part in parts:
        part.unlink()
    return {"seconds": time.perf_counter() - start, "rows": rows}


def child_csv(parquet: str, csv: str) -> dict:
    import polars as pl

    start = time.perf_counter()
    partial = Path(csv + ".partial")
    pl.scan_parquet(parquet).sink_csv(partial)
    partial.rename(csv)
    return {"seconds": time.perf_counter() - start}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_validate(events: str, out: str, chunk_rows: str, checkout: str = "") -> dict:
    import logging
    import shutil

    if checkout:  # another checkout's graphrec (the implementation before chunking), for a same-session baseline
        sys.path.insert(0, checkout)
    from graphrec.data.config import ValidationConfig
    from graphrec.data.validation import validate_dataset

    logging.basicConfig(level=logging.INFO, format="    %(message)s", stream=sys.stderr)
    shutil.rmtree(out, ignore_errors=True)
    fields = ValidationConfig.__dataclass_fields__
    config = ValidationConfig(chunk_rows=int(chunk_rows)) if "chunk_rows" in fields else ValidationConfig()
    start, cpu = time.perf_counter(), cpu_seconds()
    report = validate_dataset({"events": events}, out, config)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    peak = peak_rss_gib()  # before the checksums, which read the outputs again
    table = report["tables"]["events"]
    result = {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_gib": peak,
        "input_rows": table["input_rows"],
        "used": table["used"],
        "deduplicated": table["deduplicated"],
        "quarantined": table["quarantined"],
        "reasons": table["reasons"],
        "checksums": {
            "events": checksum(Path(out) / "events.parquet"),
            "quarantine": checksum(Path(out) / "quarantine" / "events.parquet"),
        },
    }
    shutil.rmtree(out, ignore_errors=True)
    return result


def run_child(kind: str, *args: str) -> dict:
    command = [sys.executable, __file__, "--child", kind, *args]
    load_before = os.getloadavg()[0]
    proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=None, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} {' '.join(args)} failed with exit code {proc.returncode}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]  # 1-minute, before and after
    return result


def events_file(data_dir: Path, size: int, csv: bool = False) -> Path:
    parquet = data_dir / str(size) / "events.parquet"
    if not parquet.exists():
        print(f"[{size:,}] generating the shop's raw events ...", flush=True)
        made = run_child("generate", str(size), str(parquet))
        print(f"[{size:,}] {made['rows']:,} events in {made['seconds']:.0f}s", flush=True)
    if not csv:
        return parquet
    path = parquet.with_suffix(".csv")
    if not path.exists():
        print(f"[{size:,}] writing the events as CSV ...", flush=True)
        run_child("csv", str(parquet), str(path))
    return path


def measure(events: Path, out: Path, chunk_rows: int, label: str, checkout: Path | None = None) -> dict:
    print(f"{label}: validating {events.name}, chunk_rows={chunk_rows:,} ...", flush=True)
    result = run_child("validate", str(events), str(out), str(chunk_rows), str(checkout or ""))
    result["chunk_rows"] = chunk_rows
    result["rows_per_s"] = round(result["input_rows"] / result["seconds"])
    print(
        f"{label}: {result['seconds']:.2f}s ({result['cpu_seconds']:.1f} CPU s), {result['rows_per_s']:,} rows/s, "
        f"peak {result['peak_rss_gib']:.2f} GiB, load {result['load_average']}",
        flush=True,
    )
    return result


def compare(size: int, events: Path, args, source: str) -> dict:
    """The default chunked run and its comparison run (whole table, or another chunk size) on one input."""
    out = args.workdir / f"validated-{source}-{size}"
    chunked = measure(events, out, args.chunk_rows, f"[{size:,} {source}] chunked")
    row = {"target_events": size, "source": source, "chunked": chunked}
    if size <= args.compare_max:
        other = measure(events, out, WHOLE_TABLE, f"[{size:,} {source}] whole table")
        row["comparison"] = "whole table"
    else:
        other = measure(events, out, args.cross_chunk_rows, f"[{size:,} {source}] other chunk size")
        row["comparison"] = f"chunk_rows {args.cross_chunk_rows:,}"
        row["whole_table_skipped"] = (
            f"it would hold about {4.65 * size / 1e7:.0f} GiB (linear in the events from the 4.65 GiB measured at 10M "
            "before chunking), too close to this machine's memory, which it shares with other work; raise "
            "--compare-max to attempt it"
        )
    row["other"] = other
    row["same_outputs"] = same_outputs(chunked, other)
    print(f"[{size:,} {source}] same outputs as {row['comparison']}: {row['same_outputs']}", flush=True)
    if args.baseline_checkout and size <= args.baseline_max:
        label = f"[{size:,} {source}] before chunking"
        row["baseline"] = measure(events, out, WHOLE_TABLE, label, args.baseline_checkout)
        row["baseline"]["same_outputs"] = same_outputs(chunked, row["baseline"])
    return row


def load_range(*runs: dict) -> str:
    loads = [value for run in runs for value in run["load_average"]]
    return f"{min(loads):.1f}-{max(loads):.1f}"


def same_outputs(one: dict, other: dict) -> bool:
    keys = ("checksums", "used", "deduplicated", "quarantined", "reasons")
    return all(one[key] == other[key] for key in keys)


def main() -> None:
    from training.signals import stop_on_sigterm

    stop_on_sigterm()  # a scheduler's SIGTERM stops the run within seconds, nothing half-written
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000, 30_000_000])
    parser.add_argument("--workdir", type=Path, default=HERE / "work" / "validation")
    parser.add_argument("--data-dir", type=Path, help="where <size>/events.parquet live (default: the workdir)")
    parser.add_argument("--chunk-rows", type=int, help="default: validation.chunk_rows's default")
    parser.add_argument("--compare-max", type=int, default=10_000_000, help="largest size run as one whole table")
    parser.add_argument("--cross-chunk-rows", type=int, default=6_000_000, help="comparison chunk above that")
    parser.add_argument("--csv-sizes", type=int, nargs="*", default=[1_000_000])
    parser.add_argument("--chunk-sweep", type=int, nargs="*", default=[], help="chunk sizes to time at --sweep-size")
    parser.add_argument("--sweep-size", type=int, default=10_000_000)
    parser.add_argument(
        "--baseline-checkout",
        type=Path,
        help="another checkout to time beside this one (e.g. `git worktree add /tmp/before 49366ef`)",
    )
    parser.add_argument(
        "--baseline-label",
        default="the implementation before chunking (the whole table in memory)",
        help="what the baseline checkout is, for the results",
    )
    parser.add_argument("--baseline-max", type=int, default=10_000_000, help="largest size run with the baseline")
    parser.add_argument("--note", default="", help="a line for the results (how the data was made, the machine)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        func = {"generate": child_generate, "csv": child_csv, "validate": child_validate}[kind]
        print(json.dumps(func(*rest)))
        return
    from graphrec.data.config import ValidationConfig  # only here: a baseline child imports another checkout's

    args.chunk_rows = args.chunk_rows or ValidationConfig().chunk_rows
    data_dir = args.data_dir or args.workdir
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = [compare(size, events_file(data_dir, size), args, "parquet") for size in args.sizes]
    rows += [compare(size, events_file(data_dir, size, csv=True), args, "csv") for size in args.csv_sizes]
    sweep = []
    for chunk_rows in args.chunk_sweep:
        events = events_file(data_dir, args.sweep_size)
        label = f"[{args.sweep_size:,} sweep]"
        sweep.append(measure(events, args.workdir / f"validated-sweep-{args.sweep_size}", chunk_rows, label))
    report(rows, sweep, args)


def report(rows: list[dict], sweep: list[dict], args) -> None:
    argv = [str(Path(sys.argv[0])), *sys.argv[1:]]
    if "--note" in argv:  # the note is written out below the results
        argv[argv.index("--note") + 1] = "..."
    command = "python " + shlex.join(argv)
    info = machine()
    runs = [r[k] for r in rows for k in ("chunked", "other", "baseline") if k in r] + sweep
    loads = [run["load_average"] for run in runs]
    quietest = min((min(pair) for pair in loads), default=0.0)
    busiest = max((max(pair) for pair in loads), default=0.0)
    payload = {
        "benchmark": "validation",
        "command": command,
        "machine": info,
        "data": "raw events of the generated shop (graphrec.data.config.ShopConfig.scaled_to(size), seed 7), Parquet"
        f" as generated; above {GENERATE_MAX:,} events, ceil(size / {GENERATE_MAX:,}) shops of equal size (seeds 7, 8,"
        " ...) one after the other, user and session ids prefixed with the shop's index; CSV rows are the same events"
        " written by polars",
        "goal": {"peak_rss_gib_at_30M": GOAL_PEAK_GIB, "rows_per_s": GOAL_ROWS_PER_S, "same_outputs": True},
        "results": rows,
        "chunk_sweep": {"events": args.sweep_size, "runs": sweep},
        "load_average_range": [quietest, busiest],
        "note": args.note,
        "date": time.strftime("%Y-%m-%d"),
    }
    lines = [
        "# Validation: chunked (bounded memory) vs the whole-table pass",
        "",
        f"Command: `{command}`  ",
        f"Data: {payload['data']}.  ",
        f"Machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['memory_gib']} GiB, Python {info['python']}, "
        f"polars {info['polars']}.  ",
        f"Date: {payload['date']}",
        "",
        "Each run is `validate_dataset` in a fresh process, timed from the call to the validated dataset on disk "
        "(typed `events.parquet`, its quarantine and `report.json`; interpreter start and imports excluded); peak "
        "memory is the process's high-water RSS (VmHWM). `same outputs`: the two runs wrote the same row counts and "
        "the same order-sensitive checksum (sum of 64-bit hashes of each row with its position) of the validated "
        "table and of the quarantine, and the same report counts.",
        "",
        "| events | source | chunk_rows | seconds | CPU s | rows/s | peak GiB | compared with | its seconds "
        "| its peak GiB | same outputs | load (1 min) |",
        "|---:|:---|---:|---:|---:|---:|---:|:---|---:|---:|:---:|:---|",
    ]
    for r in rows:
        c, o = r["chunked"], r["other"]
        lines.append(
            f"| {c['input_rows']:,} | {r['source']} | {c['chunk_rows']:,} | {c['seconds']:.2f} | "
            f"{c['cpu_seconds']:.1f} | {c['rows_per_s']:,} | {c['peak_rss_gib']:.2f} | {r['comparison']} | "
            f"{o['seconds']:.2f} | {o['peak_rss_gib']:.2f} | {'yes' if r['same_outputs'] else 'NO'} | "
            f"{load_range(c, o)} |"
        )
    baselines = [r for r in rows if "baseline" in r]
    if baselines:
        lines += [
            "",
            f"{args.baseline_label[0].upper()}{args.baseline_label[1:]} (`--baseline-checkout`), timed in the same "
            "session, so that the machine's load weighs on both alike:",
            "",
            "| events | source | seconds | CPU s | rows/s | peak GiB | same outputs | its time / chunked time "
            "| load (1 min) |",
            "|---:|:---|---:|---:|---:|---:|:---:|---:|:---|",
        ]
        for r in baselines:
            b = r["baseline"]
            lines.append(
                f"| {b['input_rows']:,} | {r['source']} | {b['seconds']:.2f} | {b['cpu_seconds']:.1f} | "
                f"{b['rows_per_s']:,} | {b['peak_rss_gib']:.2f} | {'yes' if b['same_outputs'] else 'NO'} | "
                f"{b['seconds'] / r['chunked']['seconds']:.2f}x | {load_range(b)} |"
            )
    skipped = [r for r in rows if "whole_table_skipped" in r]
    for r in skipped:
        lines += ["", f"Whole-table pass at {r['target_events']:,} events not run: {r['whole_table_skipped']}."]
    lines += ["", "Checksums (validated events; quarantine):", ""]
    for r in rows:
        c = r["chunked"]["checksums"]
        lines.append(
            f"- {r['target_events']:,} {r['source']}: {c['events']['rows']:,} rows `{c['events']['hash']}`; "
            f"{c['quarantine']['rows']:,} rows `{c['quarantine']['hash']}`"
        )
    if sweep:
        lines += [
            "",
            f"Chunk size at {args.sweep_size:,} events (Parquet):",
            "",
            "| chunk_rows | seconds | CPU s | rows/s | peak GiB | load (1 min) |",
            "|---:|---:|---:|---:|---:|:---|",
        ]
        for run in sweep:
            lines.append(
                f"| {run['chunk_rows']:,} | {run['seconds']:.2f} | {run['cpu_seconds']:.1f} | {run['rows_per_s']:,} | "
                f"{run['peak_rss_gib']:.2f} | {load_range(run)} |"
            )
    parquet = [r for r in rows if r["source"] == "parquet"]
    big = max(parquet, key=lambda r: r["target_events"]) if parquet else None
    if big:
        c = big["chunked"]
        slowest = min(r["chunked"]["rows_per_s"] for r in parquet)
        all_same = all(r["same_outputs"] for r in rows)
        lines += [
            "",
            f"Goals at {c['input_rows']:,} events: peak {c['peak_rss_gib']:.2f} GiB (goal < {GOAL_PEAK_GIB:g}: "
            f"{'met' if c['peak_rss_gib'] < GOAL_PEAK_GIB else 'missed'}); {c['rows_per_s']:,} rows/s (goal "
            f"{GOAL_ROWS_PER_S:,}: {'met' if c['rows_per_s'] >= GOAL_ROWS_PER_S else 'missed'}; slowest Parquet size "
            f"{slowest:,}); same outputs as the comparison run at every size: {'met' if all_same else 'missed'}.",
        ]
    lines += [
        "",
        f"Machine load: the 1-minute load average around the runs was {quietest:.1f}-{busiest:.1f} on {info['cpus']} "
        f"CPUs, this benchmark's own process counting for up to {info['cpus']} of it.",
    ]
    if args.note:
        lines += ["", f"Note: {args.note}"]
    write_results(RESULTS, "validation", payload, lines, workdir=args.workdir)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
