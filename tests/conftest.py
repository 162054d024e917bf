from __future__ import annotations

import os
from pathlib import Path

import pytest

from graphrec.generate import ShopConfig, generate_shop

SHARED_DATA = Path(os.environ.get("GRAPHREC_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def shared_dataset(name: str) -> Path:
    """Path of a real dataset beside the project; skips the test with a message where it is absent."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real dataset {name!r} not found at {path} (set GRAPHREC_SHARED_DATA to its folder)")
    return path


SMALL_SHOP = ShopConfig(
    target_events=20_000, n_users=600, n_items=900, n_content=20, n_categories=12, n_brands=40, days=14
)


@pytest.fixture(scope="session")
def small_shop():
    return generate_shop(SMALL_SHOP)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A throwaway redis-server on a loopback port (skips where redis-server is not installed); yields
    `host:port`."""
    import shutil
    import subprocess
    import time

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    else:
        process.kill()
        pytest.fail(f"redis-server did not start on port {port}")
    yield f"127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def free_port() -> int:
    return _free_port()
