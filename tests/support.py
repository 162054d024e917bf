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
