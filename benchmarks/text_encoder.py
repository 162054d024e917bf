"""Benchmark: text encoding (graphrec.data.text) of MIND news titles and abstracts, and the cache on a daily rerun.

Usage: python benchmarks/text_encoder.py [--limit 20000] [--abstracts 500] [--threads 2] [--batch-size 64]
       [--repeats 3] [--day1-share 0.95] [--workdir DIR]

Reads `news.tsv` of MIND-small from the shared datasets folder (`../shared/data/mind-small`, or
$GRAPHREC_SHARED_DATA/mind-small); exits 0 with a message where it is absent. With torch on `--threads` threads,
it encodes the first `--limit` titles (all of them where the file holds fewer) with no cache, `--repeats` times
after a warm-up batch, and the first `--abstracts` non-empty abstracts (the descriptions) once, and reports texts
per second (distinct texts encoded over the encoding time) and rows per second of the whole `encode_text_columns`
call. Then the daily cache: day 1 encodes a seeded `--day1-share` sample of the titles into an empty cache, day 2
all titles through it; the hit rate is day 2's cache hits over its distinct titles, and day 2's vectors are
compared with day 1's (read back from Parquet) and with the uncached encode. Results:
benchmarks/results/text_encoder.{md,json}.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from benchmarks.common import machine, peak_rss_gib, write_results  # noqa: E402
from graphrec.data.adapters import MIND_NEWS_COLUMNS  # noqa: E402

SHARED = Path(os.environ.get("GRAPHREC_SHARED_DATA", REPO.parent / "shared" / "data"))
NEWS_COLUMNS = list(MIND_NEWS_COLUMNS)


def read_news(path: Path):
    import polars as pl

    # MIND's TSV has no header and unescaped quotes inside titles: read every field as plain text.
    return pl.read_csv(
        path, separator="\t", has_header=False, quote_char=None, new_columns=NEWS_COLUMNS, infer_schema=False
    )


def cpu_cores() -> int:
    """Logical processors listed in /proc/cpuinfo."""
    try:
        return sum(line.startswith("processor") for line in Path("/proc/cpuinfo").read_text().splitlines())
    except OSError:
        return os.cpu_count() or 0


def matmul_gflops(size: int = 1024, repeats: int = 20) -> float:
    """float32 matrix-product speed on torch's current threads: how fast this machine is at the moment."""
    import torch

    a = torch.randn(size, size)
    a @ a
    start = time.perf_counter()
    for _ in range(repeats):
        a @ a
    return round(2 * size**3 * repeats / (time.perf_counter() - start) / 1e9, 1)


def timed_encode(table, column: str, encoder, cache=None) -> dict:
    from graphrec.data.text import encode_text_columns

    start = time.perf_counter()
    out, stats = encode_text_columns(table, [column], encoder, cache)
    seconds = time.perf_counter() - start
    row = stats["columns"][column] | {"wall_seconds": round(seconds, 3), "rows_per_s": round(table.height / seconds)}
    return {"table": out, "stats": row, "cache": stats.get("cache")}


def vectors(table, column: str, texts: list[str]):
    """Vectors [len(texts), dim] of the given texts, read off an encoded table."""
    import polars as pl

    wanted = pl.DataFrame({column: texts})
    found = table.select(column, f"{column}_embedding").unique(column, keep="first")
    return wanted.join(found, on=column, how="left", maintain_order="left")[f"{column}_embedding"].to_numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=20_000, help="titles to encode (the file may hold fewer)")
    parser.add_argument("--abstracts", type=int, default=500, help="non-empty abstracts to encode")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="uncached passes over the titles (median reported)")
    parser.add_argument("--day1-share", type=float, default=0.95, help="share of the titles seen on day 1")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, help="where the cache is written (default: a temporary folder)")
    args = parser.parse_args()

    news = SHARED / "mind-small" / "news.tsv"
    if not news.exists():
        print(f"text_encoder benchmark skipped: {news} not found (set GRAPHREC_SHARED_DATA to the datasets folder)")
        return
    logging.basicConfig(level=logging.INFO, format="    %(name)s: %(message)s", stream=sys.stderr)
    import numpy as np
    import polars as pl
    import torch

    from graphrec.artifacts import file_sha256
    from graphrec.data.text import TextEmbeddingCache, TextEncoderConfig, load_text_encoder

    torch.set_num_threads(args.threads)
    frame = read_news(news)
    titles = frame.head(args.limit).select("news_id", "title")
    abstracts = frame.filter(pl.col("abstract").str.strip_chars().str.len_bytes() > 0).head(args.abstracts)
    abstracts = abstracts.select("news_id", "abstract")
    config = TextEncoderConfig(batch_size=args.batch_size, num_threads=args.threads)
    load_before = os.getloadavg()[0]
    gflops_before = matmul_gflops()

    start = time.perf_counter()
    encoder = load_text_encoder(config)
    load_seconds = time.perf_counter() - start  # the import of sentence-transformers included
    start = time.perf_counter()
    encoder.encode(titles["title"].head(args.batch_size).to_list())  # first call: allocator and kernel warm-up
    warmup_seconds = time.perf_counter() - start
    print(f"encoder {encoder.name} ({encoder.version}) loaded in {load_seconds:.1f}s, warm-up {warmup_seconds:.2f}s")

    passes = []
    for repeat in range(args.repeats):
        run = timed_encode(titles, "title", encoder)
        passes.append(run["stats"])
        print(f"titles, pass {repeat + 1}: {run['stats']}")
    uncached = run["table"]
    abstract_run = timed_encode(abstracts, "abstract", encoder)["stats"]
    print(f"abstracts: {abstract_run}")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="text-encoder-"))
    cache_dir = workdir / "text-cache"
    if cache_dir.exists():
        sys.exit(f"{cache_dir} exists: the daily run needs an empty cache (remove it or pick another --workdir)")
    day1_rows = titles.sample(fraction=args.day1_share, seed=args.seed, shuffle=False)
    day1 = timed_encode(day1_rows, "title", encoder, TextEmbeddingCache(cache_dir, encoder.identity))
    day2 = timed_encode(titles, "title", encoder, TextEmbeddingCache(cache_dir, encoder.identity))
    print(f"day 1: {day1['stats']}\nday 2: {day2['stats']}")
    seen = day1_rows["title"].unique().to_list()
    exact = bool(np.array_equal(vectors(day2["table"], "title", seen), vectors(day1["table"], "title", seen)))
    everyone = titles["title"].unique().to_list()
    drift = float(np.abs(vectors(day2["table"], "title", everyone) - vectors(uncached, "title", everyone)).max())
    cache_bytes = sum(p.stat().st_size for p in cache_dir.rglob("*.parquet"))
    hit_rate = day2["stats"]["cache_hits"] / day2["stats"]["distinct_texts"]

    median = statistics.median(p["texts_per_s"] for p in passes)
    uncached_seconds = statistics.median(p["wall_seconds"] for p in passes)
    info = machine() | {
        "cpuinfo_processors": cpu_cores(),
        "torch_threads": torch.get_num_threads(),
        "sentence_transformers": encoder.version.split("sentence-transformers==")[-1],
        "peak_rss_gib": round(peak_rss_gib(), 2),
    }
    command = "python " + shlex.join([str(Path(sys.argv[0])), *sys.argv[1:]])
    data = {
        "file": os.path.relpath(news, REPO),
        "sha256": file_sha256(news),
        "rows_in_file": frame.height,
        "limit": args.limit,
        "titles": titles.height,
        "distinct_titles": titles["title"].n_unique(),
        "abstracts": abstracts.height,
        "title_chars_mean": round(titles["title"].str.len_chars().mean(), 1),
        "abstract_chars_mean": round(abstracts["abstract"].str.len_chars().mean(), 1),
    }
    payload = {
        "benchmark": "text_encoder",
        "command": command,
        "machine": info,
        "encoder": encoder.identity.as_dict() | {"batch_size": args.batch_size},
        "data": data,
        "load_seconds": round(load_seconds, 2),
        "warmup_seconds": round(warmup_seconds, 3),
        "titles": {"passes": passes, "median_texts_per_s": median},
        "abstracts": abstract_run,
        "daily_cache": {
            "day1_share": args.day1_share,
            "seed": args.seed,
            "day1": day1["stats"],
            "day2": day2["stats"],
            "day2_hit_rate": round(hit_rate, 4),
            "day2_speedup_over_uncached": round(uncached_seconds / day2["stats"]["wall_seconds"], 1),
            "cached_equals_day1_exactly": exact,
            "max_abs_diff_cached_vs_uncached": drift,
            "cache_parquet_bytes": cache_bytes,
            "parts": day2["cache"]["parts"],
        },
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "matmul_gflops": [gflops_before, matmul_gflops()],
        "date": time.strftime("%Y-%m-%d"),
    }
    report(payload, workdir)
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)  # only the cache: its figures are in the results


def report(payload: dict, workdir: Path) -> None:
    info, data, daily = payload["machine"], payload["data"], payload["daily_cache"]
    enc, titles, abstracts = payload["encoder"], payload["titles"], payload["abstracts"]
    fewer = f" (all the file holds: fewer than --limit {data['limit']:,})" if data["titles"] < data["limit"] else ""
    lines = [
        "# Text encoder: MIND titles and abstracts through all-MiniLM-L6-v2, and the daily cache",
        "",
        f"Command: `{payload['command']}`  ",
        f"Data: `{data['file']}` (MIND-small news, sha256 `{data['sha256'][:16]}…`): the first {data['titles']:,} "
        f"titles{fewer}, {data['distinct_titles']:,} distinct, {data['title_chars_mean']} characters on average; "
        f"the first {data['abstracts']:,} non-empty abstracts, {data['abstract_chars_mean']} characters on average.  ",
        f"Machine: {info['cpuinfo_processors']} logical CPUs in /proc/cpuinfo ({info['cpu_model']}), "
        f"{info['memory_gib']} GiB; torch {info['torch']} on {info['torch_threads']} threads, sentence-transformers "
        f"{info['sentence_transformers']}, polars {info['polars']}, Python {info['python']}.  ",
        f"Encoder: {enc['name']} ({enc['version']}), dim {enc['dim']}, normalised {enc['normalize']}, batch size "
        f"{enc['batch_size']}.  ",
        f"Date: {payload['date']}",
        "",
        "Texts/s: distinct texts encoded over the encoder's time (batches sorted longest first); rows/s: table rows "
        "over the whole `encode_text_columns` call (deduplication, cache look-up and joins included). Loading took "
        f"{payload['load_seconds']} s (mostly importing sentence-transformers) and the first batch "
        f"{payload['warmup_seconds']} s; both are left out of the rates.",
        "",
        "| texts | rows | encoded | texts/s | rows/s | seconds |",
        "|:---|---:|---:|---:|---:|---:|",
    ]
    for number, run in enumerate(titles["passes"], start=1):
        lines.append(
            f"| titles, pass {number} | {run['rows']:,} | {run['encoded']:,} | {run['texts_per_s']:,} | "
            f"{run['rows_per_s']:,} | {run['wall_seconds']} |"
        )
    lines.append(
        f"| abstracts | {abstracts['rows']:,} | {abstracts['encoded']:,} | {abstracts['texts_per_s']:,} | "
        f"{abstracts['rows_per_s']:,} | {abstracts['wall_seconds']} |"
    )
    day1, day2 = daily["day1"], daily["day2"]
    lines += [
        "",
        f"Titles: median {titles['median_texts_per_s']:,} texts/s on {info['torch_threads']} threads.",
        "",
        f"Daily cache: day 1 encodes a seeded {daily['day1_share']:.0%} of the titles into an empty cache, day 2 all "
        "of them through it.",
        "",
        "| day | rows | distinct | cache hits | encoded | seconds |",
        "|:---|---:|---:|---:|---:|---:|",
        f"| 1 | {day1['rows']:,} | {day1['distinct_texts']:,} | {day1['cache_hits']:,} | {day1['encoded']:,} | "
        f"{day1['wall_seconds']} |",
        f"| 2 | {day2['rows']:,} | {day2['distinct_texts']:,} | {day2['cache_hits']:,} | {day2['encoded']:,} | "
        f"{day2['wall_seconds']} |",
        "",
        f"Day 2 hit rate {daily['day2_hit_rate']:.1%}, {daily['day2_speedup_over_uncached']}x faster than the uncached "
        f"pass. Cached vectors equal day 1's bit for bit: {'yes' if daily['cached_equals_day1_exactly'] else 'NO'}; "
        f"largest difference from the uncached pass {daily['max_abs_diff_cached_vs_uncached']:.1e} (a text's vector "
        "moves in the last bits with the other texts of its batch, as padding changes the matrix shapes). Cache on "
        f"disk: {daily['cache_parquet_bytes'] / 2**20:.1f} MiB in {daily['parts']} Parquet parts.",
        "",
        f"Machine load: the 1-minute load average was {payload['load_average'][0]} before and "
        f"{payload['load_average'][1]} after, on {info['cpus']} CPUs (other jobs share the machine); a 1024 x 1024 "
        f"float32 matrix product on the same threads ran at {payload['matmul_gflops'][0]} GFLOP/s before and "
        f"{payload['matmul_gflops'][1]} after. Peak memory {info['peak_rss_gib']} GiB.",
    ]
    write_results(RESULTS, "text_encoder", payload, lines, workdir=workdir)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
