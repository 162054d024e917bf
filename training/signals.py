"""Stopping on SIGTERM: how Kubernetes, Airflow and systemd stop a task (then SIGKILL after a grace period).

Python's default for SIGTERM ends the process at once, without unwinding. `stop_on_sigterm` turns it into an
exception instead, raised in the main thread at the next bytecode: staged artifact directories are removed by
their `atomic_directory` blocks, Lightning runs its teardown, the last completed checkpoint stays resumable, and
the process exits with 143 (128 + SIGTERM) within seconds.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType

EXIT_TERMINATED = 128 + signal.SIGTERM

log = logging.getLogger("graphrec")


class Terminated(SystemExit):
    """Raised in the main thread when the process receives SIGTERM."""

    def __init__(self) -> None:
        super().__init__(EXIT_TERMINATED)


_received = False


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    # Once only: a second SIGTERM during the unwinding must not interrupt the clean-up itself. A flag, not SIG_IGN:
    # Lightning restores the handler it found when a fit ends, which would undo SIG_IGN.
    global _received
    if _received:
        return
    _received = True
    log.warning("received SIGTERM: stopping; completed artifacts and the last checkpoint are kept")
    raise Terminated()


def raise_if_terminated() -> None:
    """Raise Terminated if SIGTERM was received but its exception did not stop the process: Python swallows an
    exception raised while a signal handler runs inside a destructor or a GC callback ("Exception ignored in
    ..."). Long jobs call this between their stages, so a SIGTERM stops them at the latest there."""
    if _received:
        raise Terminated()


def stop_on_sigterm() -> None:
    """Make SIGTERM stop the process by unwinding (see the module docstring). Call once, in the main thread."""
    signal.signal(signal.SIGTERM, _raise_terminated)
