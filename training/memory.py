"""The process's resident memory high-water mark, per stage of a job (Linux's VmHWM and clear_refs)."""

from __future__ import annotations

from pathlib import Path


def reset_peak_memory(strict: bool = False) -> None:
    """Reset the process's resident high-water mark (VmHWM) to its current size (Linux 4.0+). Elsewhere the peak
    then covers the whole process so far, or, with `strict`, the OSError is raised."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        if strict:
            raise


def peak_memory_gib() -> float | None:
    """The process's resident high-water mark in GiB (VmHWM), or None off Linux. VmHWM, not ru_maxrss: Linux
    carries ru_maxrss over fork + exec, so a child started by a large parent would report the parent's peak."""
    return _status_gib("VmHWM")


def resident_memory_gib() -> float | None:
    """The process's resident memory now in GiB (VmRSS), or None off Linux."""
    return _status_gib("VmRSS")


def _status_gib(field: str) -> float | None:
    """A kB field of /proc/self/status in GiB, or None where the platform has none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def release_free_memory() -> None:
    """Collect unreachable Python objects and hand glibc's free heap pages back to the system (`malloc_trim`; a
    no-op elsewhere), so what one stage of a job freed there (torch's and numpy's small blocks) is not counted
    against the next. Memory held by polars' own allocator is not reached. Only ctypes reaches the call: no
    library wraps it."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
