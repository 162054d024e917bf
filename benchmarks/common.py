"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

from training.memory import peak_memory_gib, reset_peak_memory, resident_memory_gib


def peak_rss_gib() -> float:
    """This process's peak resident memory in GiB (VmHWM; ru_maxrss where the platform has no VmHWM)."""
    peak = peak_memory_gib()
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def current_rss_gib() -> float:
    """This process's resident memory now (VmRSS) in GiB; NaN where the platform has no VmRSS."""
    resident = resident_memory_gib()
    return resident if resident is not None else float("nan")


def reset_peak_rss() -> None:
    """Reset this process's VmHWM to its current RSS (Linux 4.0+), so `peak_rss_gib` then measures one phase."""
    reset_peak_memory(strict=True)


REPO = Path(__file__).resolve().parent.parent
WORKDIR_MARK = "<workdir>"
_DROP = object()  # what `portable` returns for a path to leave out


def _relative(path: str, root: str | Path | None) -> str | None:
    """`path` relative to `root` in POSIX form ("." for `root` itself), or None where it lies elsewhere. Lexical
    (symbolic links are not followed); a relative `root` counts from the current directory."""
    if root is None:
        return None
    path, root = os.path.normpath(path), os.path.abspath(root)
    if path == root:
        return "."
    if path.startswith(root.rstrip("/") + "/"):
        return PurePosixPath(os.path.relpath(path, root)).as_posix()
    return None


def _strip_repo(text: str) -> str:
    """Paths under the repository inside longer text (a command's `--workdir /repo/x`) become relative to it."""
    return text.replace(str(REPO).rstrip("/") + "/", "")


def portable(value: Any, workdir: str | Path | None = None) -> Any:
    """`value` (a payload, recursively) without the absolute paths of the machine that made it; the rule is
    `write_results`'s. Returns `_DROP` for a path to leave out (only ever inside a dict or list)."""
    if isinstance(value, dict):
        pairs = ((key, portable(item, workdir)) for key, item in value.items())
        return {key: item for key, item in pairs if item is not _DROP}
    if isinstance(value, list | tuple):
        return [item for item in (portable(v, workdir) for v in value) if item is not _DROP]
    if isinstance(value, PurePath):
        value = str(value)
    if not isinstance(value, str):
        return value
    if not (os.path.isabs(value) and "\n" not in value):
        return _strip_repo(value)
    inside_repo = _relative(value, REPO)
    if inside_repo is not None:
        return inside_repo
    inside_workdir = _relative(value, workdir)
    if inside_workdir is not None:
        return WORKDIR_MARK if inside_workdir == "." else f"{WORKDIR_MARK}/{inside_workdir}"
    return _DROP


def write_results(
    results: Path, name: str, payload: dict, markdown: list[str], workdir: str | Path | None = None
) -> None:
    """Write a benchmark's figures twice: `<name>.json` for machines and `<name>.md` for people.

    Committed results must not carry the absolute paths of the machine that made them, so every string in the
    payload (and `pathlib` paths, written as strings) that is an absolute path is rewritten before writing:
    - inside the repository: relative to the repository root (`benchmarks/work/embeddings/generated/runs/...`), the
      form the documented commands, run from the root, use;
    - inside `workdir`, the script's scratch folder where that lies outside the repository (`--workdir /tmp/x`, or
      a temporary folder): relative to it, behind the marker `<workdir>` (`<workdir>/gowalla/runs/...`), `<workdir>`
      being the folder named by the `--workdir` of the run's recorded command;
    - any other absolute path names nothing another machine could find: it is left out (its key, or its list
      entry, is dropped).
    Paths under the repository inside longer strings (a recorded command, a markdown line) lose the repository
    prefix too; other text, a command's `--workdir /tmp/x` included, is written as given. Figures are untouched.
    The markdown ends with exactly one newline.
    """
    results.mkdir(parents=True, exist_ok=True)
    payload = portable(payload, workdir)
    (results / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    text = "\n".join(_strip_repo(line) for line in markdown)
    (results / f"{name}.md").write_text(text.rstrip("\n") + "\n")  # one final newline, as committed files end


def machine() -> dict:
    """The machine and library versions a result was measured with (versions read from package metadata, so
    nothing heavy is imported to report them)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    info = {"cpus": os.cpu_count(), "cpu_model": model, "memory_gib": round(memory, 1)}
    info["python"] = platform.python_version()
    for package in ("polars", "torch"):
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            info[package] = None
    info["platform"] = platform.platform()
    return info
