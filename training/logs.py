"""Log output of the jobs: concise INFO lines (or JSON lines), libraries' banners silenced, one line per epoch.

Set up once by the CLI (`setup_logging`). By default a run prints one line per stage and a summary; libraries'
messages that tell a user nothing (Lightning's accelerator banner and tips, known deprecation warnings, Feast's
coloured progress output) are silenced. `--verbose` brings them back; `--log-format json` writes one JSON object
per line for schedulers and log collectors.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

from graphrec.logs import JsonFormatter

__all__ = ["LOG_FORMATS", "JsonFormatter", "progress_bar_wanted", "setup_logging"]

LOG_FORMATS = ("text", "json")

# Warnings libraries raise on every run that carry nothing for a graphrec user (the behaviour they describe is
# intended here), matched by message.
QUIET_WARNINGS = (
    r"Sparse CSR tensor support is in beta",
    r"Sparse invariant checks are implicitly disabled",
    r"`torch\.jit\.script` is deprecated",
    r".*LeafSpec.*",
    r".*does not have many workers.*",
    r".*smaller than the logging interval.*",
    r"Downcasting object dtype arrays",
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*is not a supported .* for use with Feast.*",
    r".*Entity .* has no type.*",
    r".*Cannot use sqlite_vec.*",
    r".*online_read.*deprecated.*",
    r".*datetime\.datetime\.utcnow\(\) is deprecated.*",
)
# Loggers whose INFO lines are banners ("GPU available", "TPU available", tips), kept at WARNING. Lightning resets
# its top-level logger's level when imported, so the loggers that emit the banners are named themselves.
QUIET_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.accelerators.cuda",
    "feast",
    "urllib3",
    "matplotlib",
    "numexpr",
)


def setup_logging(verbose: bool = False, log_format: str = "text") -> None:
    """Configure the root logger for a command (call once, before the command runs)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"--log-format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("graphrec").setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.captureWarnings(True)
    if verbose:
        return
    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Lightning's "possible user warnings" (few workers, logging interval) are about setups graphrec chose.
    os.environ.setdefault("POSSIBLE_USER_WARNINGS", "off")


def progress_bar_wanted() -> bool:
    """Progress bars only on an interactive terminal: a redrawn bar in a file or a scheduler's log is noise."""
    return sys.stdout.isatty() and sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
