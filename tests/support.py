"""Helpers for tests and benchmarks that need real servers: a throwaway Redis on a loopback port."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from graphrec.store.feast_repo import FeatureStoreError


def free_loopback_port() -> int:
    """A TCP port nothing listens on at the moment of the call."""

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def local_redis_server(workdir: str | Path) -> Iterator[str | None]:
    """A throwaway `redis-server` on a loopback port, without persistence, for trials, tests and benchmarks.
    Yields its `host:port` (Feast's connection string), or None where redis-server is not installed."""

    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = free_loopback_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen([*command, "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            raise FeatureStoreError(f"redis-server did not answer on 127.0.0.1:{port} within 10 s")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


# The small ranker every test of a published (embedding version, ranker) pair shares.
def _ranker_settings():
    from graphrec.rank.model import RankerConfig
    from training.config import RankerStageConfig, RankSplitConfig, RankTrainConfig

    return RankerStageConfig(
        model=RankerConfig(hidden=[16]),
        train=RankTrainConfig(epochs=3, batch_size=1024, lr=0.01),
        split=RankSplitConfig(test_days=3, validation_days=2, skip_days=4),
        policy_requests=60,
        top_k=12,
    )


RANKER = _ranker_settings()


def publish_pair(shop, root: Path) -> dict:
    """Validate `shop` into `root/validated`, backfill 8-dim embedding versions into `root/store` every 3 days and
    train the ranker into `root/ranker` (with the policy value); returns the ranker job's report."""
    from graphrec.data.config import ValidationConfig
    from graphrec.data.validation import validate_dataset
    from graphrec.embed.config import ModelConfig
    from training.backfill import backfill_job
    from training.config import BackfillConfig, EmbeddingStageConfig, ExportStageConfig, TrainConfig
    from training.rank_job import rank_job

    tables = {name: getattr(shop, name) for name in ("events", "items", "content", "impressions")}
    validate_dataset(tables, root / "validated", ValidationConfig(reference_time="2026-06-01"))
    embeddings = EmbeddingStageConfig(model=ModelConfig(dim=8, num_layers=1), train=TrainConfig(epochs=1))
    export = ExportStageConfig(store=str(root / "store"))
    backfill_job(
        root / "validated", root / "bf", BackfillConfig(every_days=3, first_after_days=3), None, embeddings, export
    )
    shop.click_model.save(root / "click_model.npz")
    return rank_job(root / "validated", root / "ranker", RANKER, root / "store", None, root / "click_model.npz")


@contextlib.contextmanager
def serving_process(options: list[str], log_path: str | Path, ready_timeout_s: float = 120.0) -> Iterator[str]:
    """A real `graphrec serve` process on a free loopback port with `options` (`--serve.*`); yields its base URL
    once /readyz answers 200, and stops it (SIGTERM, then SIGKILL after 15 s) on exit."""
    import sys
    import urllib.error
    import urllib.request

    repo = Path(__file__).resolve().parents[1]
    port = free_loopback_port()
    command = [sys.executable, "-m", "training.cli", "serve", "--serve.port", str(port), *options]
    log_path = Path(log_path)
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=repo, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if process.poll() is not None:
                raise RuntimeError(f"graphrec serve exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"graphrec serve not ready in {ready_timeout_s:.0f} s:\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
