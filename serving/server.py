"""Running the ranking API under uvicorn: one process, or several workers sharing the port.

Workers are separate processes (uvicorn spawns them), each loading the models; they get the config as JSON in
GRAPHREC_SERVE_CONFIG and aggregate their metrics through PROMETHEUS_MULTIPROC_DIR.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
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
