from __future__ import annotations

import os
from pathlib import Path

import pytest

from graphrec.data.config import HomepageConfig, ShopConfig
from graphrec.data.shop import generate_shop

SHARED_DATA = Path(os.environ.get("GRAPHREC_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def shared_dataset(name: str) -> Path:
    """Path of a real dataset beside the project; skips the test with a message where it is absent."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real dataset {name!r} not found at {path} (set GRAPHREC_SHARED_DATA to its folder)")
    return path


# A short page keeps the small shop's module pool small (the pool must hold 4 x the longest page).
SMALL_HOMEPAGE = HomepageConfig(slots_by_device={"desktop": 12, "app": 10, "mobile_web": 8})
SMALL_SHOP = ShopConfig(
    target_events=20_000,
    n_users=600,
    n_items=900,
    n_content=120,
    n_categories=12,
    n_brands=40,
    days=14,
    homepage=SMALL_HOMEPAGE,
)


@pytest.fixture(scope="session")
def small_shop():
    return generate_shop(SMALL_SHOP)


@pytest.fixture(scope="session")
def published_pair(small_shop, tmp_path_factory):
    """A validated small shop with backfilled embedding versions and a ranker on them: (root, the job's report)."""
    from tests.support import publish_pair

    root = tmp_path_factory.mktemp("pair")
    return root, publish_pair(small_shop, root)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A throwaway redis-server on a loopback port (skips where redis-server is not installed); yields
    `host:port`."""
    from tests.support import local_redis_server

    with local_redis_server(tmp_path_factory.mktemp("redis")) as address:
        if address is None:
            pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
        yield address


@pytest.fixture
def free_port() -> int:
    from tests.support import free_loopback_port

    return free_loopback_port()
