"""Running the ranking API under uvicorn: one process, or several workers on the same port.

Workers are separate processes, each loading the models; they get the config as JSON in GRAPHREC_SERVE_CONFIG and
aggregate their metrics through PROMETHEUS_MULTIPROC_DIR. Each worker accepts on a listening socket of its own,
bound with SO_REUSEPORT, so the kernel spreads new connections evenly over the workers (`Workers`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from typing import Any

from serving.app import CONFIG_ENV, RELOAD_ENV, config_to_environment, create_app
from serving.config import ServeConfig
from serving.metrics import MULTIPROCESS_ENV

log = logging.getLogger("graphrec.serving")


def log_config(log_format: str = "text", verbose: bool = False) -> dict[str, Any]:
    """logging.dictConfig for uvicorn's processes: graphrec's text or JSON lines on stderr."""
    formatter = (
        {"()": "graphrec.logs.JsonFormatter"}
        if log_format == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s", "datefmt": "%H:%M:%S"}
    )
    level = "DEBUG" if verbose else "INFO"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["stderr"], "level": "WARNING"},
        "loggers": {
            "graphrec": {"level": level},
            # one line per request at INFO would be the access log's job; kept at WARNING unless --verbose
            "graphrec.serving.access": {"level": "INFO" if verbose else "WARNING"},
            "uvicorn": {"level": "INFO"},
            "uvicorn.error": {"level": "INFO"},
        },
    }


def run_server(config: ServeConfig, log_format: str = "text", verbose: bool = False) -> None:
    """Serve until interrupted (SIGINT / SIGTERM: requests in flight finish, the impression log is flushed)."""
    import uvicorn

    logging_config = log_config(log_format, verbose)
    log.info(
        "ranking API on http://%s:%d (%d worker%s)",
        config.host,
        config.port,
        config.workers,
        "s" if config.workers > 1 else "",
    )
    if config.workers == 1:
        uvicorn.run(create_app(config), host=config.host, port=config.port, log_config=logging_config, access_log=False)
        return
    metrics_dir = tempfile.mkdtemp(prefix="graphrec-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    os.environ[MULTIPROCESS_ENV] = "1"
    os.environ[RELOAD_ENV] = os.path.join(metrics_dir, "reload")
    os.environ[CONFIG_ENV] = config_to_environment(config)
    try:
        if hasattr(socket, "SO_REUSEPORT"):
            Workers(config.host, config.port, config.workers, logging_config).run()
        else:  # no SO_REUSEPORT (Windows): uvicorn's workers, which share one socket
            uvicorn.run(
                "serving.app:app_from_environment",
                factory=True,
                host=config.host,
                port=config.port,
                workers=config.workers,
                log_config=logging_config,
                access_log=False,
            )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


STARTUP_FAILURE = 3  # uvicorn's exit code for a worker whose app failed to start
RESTART_PAUSE_S = 1.0  # least time between two starts of the same worker, doubled with each restart of it
MAX_RESTART_PAUSE_S = 60.0
STOP_TIMEOUT_S = 30.0  # a worker still running this long after SIGTERM is killed


class Workers:
    """`count` uvicorn worker processes serving `serving.app:app_from_environment` on one port, each accepting on
    a listening socket of its own bound with SO_REUSEPORT, so the kernel spreads new connections over the workers
    evenly (nginx's `reuse_port`). uvicorn's own `--workers` share one socket: whichever worker wakes first takes a
    burst of new connections, and a client's pool of keep-alive connections then stays on one worker (measured:
    0.73 against 0.04 cores at 250 requests/s with 32 connections). uvicorn has no option for this, hence this
    small supervisor.

    A worker binds before loading the models but listens only once they are loaded (uvicorn listens after the
    lifespan startup), so it receives no connection before it can answer. A worker that dies is started again,
    after a pause that doubles with each restart of that worker (at most a minute); a worker whose first start fails
    (its app's startup failed: exit 3) stops the server with that exit code, since every start would fail alike.
    SIGINT or SIGTERM stops every worker gracefully (requests in flight finish, the impression log is flushed). A
    worker whose supervisor is gone (killed) stops by itself, so no orphan keeps serving the port."""

    def __init__(self, host: str, port: int, count: int, logging_config: dict[str, Any]) -> None:
        self.host, self.port, self.count, self.logging_config = host, port, count, logging_config
        self.context = multiprocessing.get_context("spawn")
        self.stopping = False  # set by the signal handlers: a plain flag, which a handler can set at any moment
        self.processes: list[Any] = []
        self.started_at: list[float] = []
        self.restarts: list[int] = []

    def _start(self, slot: int) -> Any:
        process = self.context.Process(
            target=_serve_worker,
            args=(self.host, self.port, self.logging_config, os.getpid()),
            name=f"graphrec-serve-{slot}",
        )
        process.start()
        return process

    def run(self) -> None:
        _check_port(self.host, self.port)
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        failure = None
        try:
            for slot in range(self.count):
                self.processes.append(self._start(slot))
                self.started_at.append(time.monotonic())
                self.restarts.append(0)
            log.info("started %d workers: %s", self.count, ", ".join(str(p.pid) for p in self.processes))
            while failure is None and not self.stopping:
                time.sleep(0.5)
                failure = self._keep_alive()
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if failure is not None:
            sys.exit(failure)

    def _stop(self, *_: Any) -> None:
        self.stopping = True

    def _keep_alive(self) -> int | None:
        """Start dead workers again; the exit code to stop with where a worker's first start failed."""
        for slot, process in enumerate(self.processes):
            if process.is_alive() or self.stopping:
                continue
            process.join()
            if process.exitcode == STARTUP_FAILURE and self.restarts[slot] == 0:
                log.error("worker %d (pid %s) failed to start: stopping the server", slot, process.pid)
                return STARTUP_FAILURE
            pause = min(RESTART_PAUSE_S * 2 ** self.restarts[slot], MAX_RESTART_PAUSE_S)
            if time.monotonic() - self.started_at[slot] < pause:
                continue  # joined; started again on a later pass
            log.warning("worker %d (pid %s) exited with %s: starting it again", slot, process.pid, process.exitcode)
            self.processes[slot] = self._start(slot)
            self.started_at[slot] = time.monotonic()
            self.restarts[slot] += 1
        return None

    def _stop_all(self) -> None:
        for process in self.processes:
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("worker pid %s still running %.0f s after SIGTERM: killing it", process.pid, STOP_TIMEOUT_S)
                process.kill()
                process.join()


def _listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT, not yet listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _check_port(host: str, port: int) -> None:
    """Fail in the parent, with the address, where the port is taken (by another program or another graphrec
    server: the probe does not set SO_REUSEPORT, so the workers of a running server make it fail too)."""
    from graphrec.errors import GraphrecError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        probe.listen(1)
    except OSError as exc:
        probe.close()
        raise GraphrecError(f"serve.host/serve.port {host}:{port}: cannot listen there ({exc.strerror})") from None
    probe.close()


def _serve_worker(host: str, port: int, logging_config: dict[str, Any], supervisor: int) -> None:
    """One worker process: its own SO_REUSEPORT socket, the app from the environment, uvicorn until SIGTERM (or
    until its supervisor is gone)."""
    import uvicorn

    def watch_supervisor() -> None:
        while os.getppid() == supervisor:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful stop

    threading.Thread(target=watch_supervisor, name="supervisor-watch", daemon=True).start()

    try:
        sock = _listening_socket(host, port)
    except OSError as exc:
        print(f"graphrec serve worker: cannot bind {host}:{port} ({exc.strerror})", file=sys.stderr)
        sys.exit(STARTUP_FAILURE)
    config = uvicorn.Config(
        "serving.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        log_config=logging_config,
        access_log=False,
    )
    uvicorn.Server(config).run(sockets=[sock])
