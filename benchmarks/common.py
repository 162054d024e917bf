"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import json
import resource
from pathlib import Path


def peak_rss_gib() -> float:
    """This process's peak resident memory in GiB. VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork + exec,
    so a child started by a large parent would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def current_rss_gib() -> float:
    """This process's resident memory now (VmRSS) in GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def reset_peak_rss() -> None:
    """Reset this process's VmHWM to its current RSS (Linux 4.0+), so `peak_rss_gib` then measures one phase."""
    Path("/proc/self/clear_refs").write_text("5")


def write_results(results: Path, name: str, payload: dict, markdown: list[str]) -> None:
    """Write a benchmark's figures twice: `<name>.json` for machines and `<name>.md` for people."""
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (results / f"{name}.md").write_text("\n".join(markdown) + "\n")
