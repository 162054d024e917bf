"""Operations under faults: with Redis as the online store, stopping it mid-load keeps every answer 2xx (flagged
degraded, served from the local copy, with the same scores) and the API recovers by itself when Redis is back; a
reload of a real server process under concurrent load drops no request."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from graphrec.store.config import FeatureStoreConfig
from graphrec.store.publish import sync_online
from serving.app import create_app
from serving.config import ServeConfig
from tests.support import free_loopback_port, serving_process


def _redis(port: int, workdir) -> subprocess.Popen:
    binary = shutil.which("redis-server")
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir"]
    process = subprocess.Popen([*command, str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(200):
        try:
            client.ping()
            return process
        except redis.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"redis-server did not start on port {port}")


def _users(root, count: int) -> list:
    from graphrec.store.versions import load_version, require_latest

    return load_version(root / "store", require_latest(root / "store")).ids["user"].head(count).to_list()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_redis_outage_mid_load_degrades_to_the_local_copy_and_recovers(published_pair, tmp_path):
    root, _ = published_pair
    store = tmp_path / "store"
    shutil.copytree(root / "store", store)
    port = free_loopback_port()
    redis_process = _redis(port, tmp_path)
    feature_store = FeatureStoreConfig(online_store="redis", redis=f"127.0.0.1:{port}")
    sync_online(store, feature_store)
    config = ServeConfig(
        ranker=str(root / "ranker"),
        store=str(store),
        feature_store=feature_store,
        retry_online_after_s=0.2,
        clock="data_end",
        feedback=None,
        impression_log=None,
    )
    users = _users(root, 30)
    try:
        with TestClient(create_app(config)) as client:

            def pages():
                answers = [client.post("/v1/rank", json={"user_id": u, "slots": 5}) for u in users]
                assert all(a.status_code == 200 for a in answers)
                return [a.json() for a in answers]

            healthy = pages()
            assert {p["fallback"] for p in healthy} == {None}
            redis_process.terminate()
            redis_process.wait(timeout=10)
            down = pages()
            assert {p["fallback"] for p in down} == {"degraded"}
            for a, b in zip(healthy, down, strict=True):  # the local copy holds the same vectors
                assert [m["content_id"] for m in a["modules"]] == [m["content_id"] for m in b["modules"]]
                assert [m["score"] for m in a["modules"]] == pytest.approx([m["score"] for m in b["modules"]])
            assert client.get("/readyz").json()["online_store"] == "down"
            redis_process = _redis(port, tmp_path)  # back, empty: the operator resyncs it
            sync_online(store, feature_store)
            time.sleep(0.3)
            pages()  # the first call after the retry interval reaches Redis again
            assert {p["fallback"] for p in pages()} == {None}
            assert client.get("/readyz").json()["online_store"] == "up"
            metrics = client.get("/metrics").text
            assert 'graphrec_fallbacks_total{kind="degraded"}' in metrics
    finally:
        redis_process.terminate()
        redis_process.wait(timeout=10)


def test_a_reload_under_concurrent_load_drops_no_request(published_pair, tmp_path):
    root, _ = published_pair
    users = _users(root, 20)
    options = [
        *("--serve.ranker", str(root / "ranker"), "--serve.store", str(root / "store"), "--serve.clock", "data_end"),
        *("--serve.feedback", "null", "--serve.impression_log", "null", "--serve.admin_token", "t0ken"),
    ]
    with serving_process(options, tmp_path / "server.log") as url:
        stop = threading.Event()
        statuses: list[int] = []
        errors: list[str] = []

        def load():
            with httpx.Client(base_url=url, timeout=30) as client:
                i = 0
                while not stop.is_set() and i < 2000:
                    try:
                        response = client.post("/v1/rank", json={"user_id": users[i % len(users)], "slots": 10})
                        statuses.append(response.status_code)
                    except httpx.HTTPError as exc:
                        errors.append(repr(exc))
                    i += 1

        threads = [threading.Thread(target=load) for _ in range(3)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.0)
            with httpx.Client(base_url=url, timeout=120) as admin:
                for _ in range(2):
                    answer = admin.post("/admin/reload", headers={"Authorization": "Bearer t0ken"})
                    assert answer.status_code == 200, answer.text
            time.sleep(1.0)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        assert not errors, errors[:3]
        assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}


def _connections_per_worker(url: str, pool: int) -> dict[int, int]:
    """Open `pool` connections at once (as a client's connection pool does), then ask /readyz twice on each:
    connections per worker pid (a keep-alive connection stays with the worker that accepted it)."""
    import json
    import socket

    host, port = url.removeprefix("http://").split(":")
    connections = [socket.create_connection((host, int(port)), timeout=30) for _ in range(pool)]
    request = f"GET /readyz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    counts: dict[int, int] = {}
    try:
        for connection in connections:
            workers = set()
            for _ in range(2):
                connection.sendall(request)
                head, _, body = connection.recv(65536).partition(b"\r\n\r\n")
                length = next(
                    int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")
                )
                while len(body) < length:
                    body += connection.recv(65536)
                workers.add(json.loads(body)["worker"])
            assert len(workers) == 1, workers
            pid = workers.pop()
            counts[pid] = counts.get(pid, 0) + 1
    finally:
        for connection in connections:
            connection.close()
    return counts


def _wait_gone(pid: int, timeout_s: float = 30.0) -> None:
    """Wait until every thread of process `pid` has exited (gone, or zombies). The main thread of a killed
    process can be a zombie while its other threads still hold the shared file table, and with it the listening
    socket; it is closed once the last thread is."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = []
        for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
            try:
                states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
            except (FileNotFoundError, ProcessLookupError):
                continue
        if all(state in ("Z", "X") for state in states):
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still running {timeout_s:.0f} s after SIGKILL")


def test_a_reload_reaches_every_worker(published_pair, tmp_path):
    from safetensors.torch import load_file, save_file

    root, _ = published_pair
    ranker = tmp_path / "ranker"
    shutil.copytree(root / "ranker", ranker)
    options = [
        *("--serve.ranker", str(ranker), "--serve.store", str(root / "store"), "--serve.clock", "data_end"),
        *("--serve.feedback", "null", "--serve.impression_log", "null", "--serve.admin_token", "t0ken"),
        *("--serve.workers", "2"),
    ]
    with (
        serving_process(options, tmp_path / "server.log", ready_timeout_s=180) as url,
        httpx.Client(base_url=url, timeout=120) as client,
    ):

        def versions() -> set[str]:
            answers = []
            for _ in range(40):  # new connections, so both workers answer some of them
                answers.append(httpx.get(f"{url}/readyz", timeout=30).json()["arms"]["default"])
            return set(answers)

        def workers() -> set[int]:
            return {httpx.get(f"{url}/readyz", timeout=30).json()["worker"] for _ in range(40)}

        deadline = time.monotonic() + 120
        while len(workers()) != 2 and time.monotonic() < deadline:  # both workers up and listening
            time.sleep(0.5)
        # A client's pool opening its keep-alive connections at once is spread over both workers (each worker
        # accepts on a socket of its own), not taken by whichever worker wakes first.
        counts = _connections_per_worker(url, 32)
        assert len(counts) == 2 and min(counts.values()) >= 4, f"connections per worker: {counts}"
        (before,) = versions()
        weights = load_file(ranker / "ranker.safetensors")  # a newly published ranker: other weights
        weights["head.bias"] = weights["head.bias"] + 0.5
        save_file(weights, ranker / "ranker.safetensors")
        answer = client.post("/admin/reload", headers={"Authorization": "Bearer t0ken"})
        assert answer.status_code == 200, answer.text
        after = answer.json()["arms"]["default"]
        assert after != before
        time.sleep(3.0)  # the other worker's watcher looks every second
        assert versions() == {after}

        # A worker that dies is started again, and the port is served throughout.
        dead = next(iter(counts))
        os.kill(dead, signal.SIGKILL)
        # Connections the kernel had queued on the killed worker's own socket are reset as it dies (SO_REUSEPORT
        # does not move them to another socket; see the README): the checks start once its sockets are closed.
        _wait_gone(dead)
        deadline = time.monotonic() + 120
        while (len(alive := workers()) != 2 or dead in alive) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(alive) == 2 and dead not in alive, alive


def test_a_read_begun_before_an_outage_does_not_clear_it():
    from types import SimpleNamespace

    import numpy as np

    from serving.service import OnlineReader

    reader = OnlineReader(retry_after_s=60.0)
    local = np.zeros((1, 4), dtype=np.float32)

    def failing(*_):
        raise ConnectionError("refused")

    broken = SimpleNamespace(users={"u": 0}, user_vectors=local, online=SimpleNamespace(get=failing))

    def slow_read(*_):  # another request's read fails while this one is still in flight, then this one returns
        assert reader.user_vector(broken, "u")[1] is True
        return [np.ones(4, dtype=np.float32)], None

    healthy = SimpleNamespace(users={"u": 0}, user_vectors=local, online=SimpleNamespace(get=slow_read))
    vector, fallback = reader.user_vector(healthy, "u")
    assert not fallback and vector[0] == 1.0
    assert reader.down  # the failure came after this read began: the store is still reported down
    reader.down_until = 0.0  # the retry interval is over: the next read that succeeds clears it
    healthy.online.get = lambda *_: ([np.ones(4, dtype=np.float32)], None)
    assert reader.user_vector(healthy, "u")[1] is False and not reader.down


def test_the_port_check_sees_a_running_server_s_workers():
    """The workers bind with SO_REUSEPORT; a second server must not join them on the same port."""

    from graphrec.errors import GraphrecError
    from serving.server import _check_port, _listening_socket

    port = free_loopback_port()
    worker = _listening_socket("127.0.0.1", port)
    worker.listen(8)
    try:
        with pytest.raises(GraphrecError, match=f"127.0.0.1:{port}"):
            _check_port("127.0.0.1", port)
    finally:
        worker.close()
    _check_port("127.0.0.1", port)  # free again
