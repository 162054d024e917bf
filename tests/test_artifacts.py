from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from graphrec.artifacts import atomic_directory, code_version, fingerprint_inputs


def test_atomic_directory_replaces_only_on_success(tmp_path):
    target = tmp_path / "artifact"
    with atomic_directory(target) as staging:
        (staging / "a.txt").write_text("v1")
    with pytest.raises(RuntimeError), atomic_directory(target) as staging:
        (staging / "a.txt").write_text("half")
        raise RuntimeError("crash")
    assert (target / "a.txt").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]


def test_sigkill_mid_write_leaves_previous_version(tmp_path):
    target = tmp_path / "artifact"
    with atomic_directory(target) as staging:
        (staging / "a.txt").write_text("v1")
    script = textwrap.dedent(f"""
        import os, signal
        from graphrec.artifacts import atomic_directory
        with atomic_directory({str(target)!r}) as staging:
            (staging / "a.txt").write_text("half-written")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script], env=os.environ.copy())
    assert result.returncode == -signal.SIGKILL
    assert (target / "a.txt").read_text() == "v1"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "artifact"]
    assert leftovers and leftovers[0].startswith(".artifact.tmp-")
    with atomic_directory(target) as staging:  # the next write cleans the leftover up
        (staging / "a.txt").write_text("v2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]
    assert (target / "a.txt").read_text() == "v2"


def test_fingerprint_changes_with_content(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("a")
    first = fingerprint_inputs({"events": path})["events"]["sha256"]
    path.write_text("b")
    assert fingerprint_inputs({"events": path})["events"]["sha256"] != first


def test_code_version_names_package():
    assert code_version()["graphrec"]


def test_a_kill_between_the_two_renames_brings_the_previous_version_back(tmp_path):
    target = tmp_path / "artifact"
    with atomic_directory(target) as staging:
        (staging / "v").write_text("1")
    os.rename(target, tmp_path / ".artifact.old-deadbeef")  # as a kill after the first rename leaves it
    with pytest.raises(RuntimeError), atomic_directory(target):
        assert (target / "v").read_text() == "1"  # restored before the new write starts
        raise RuntimeError("the new write fails")
    assert (target / "v").read_text() == "1" and not list(tmp_path.glob(".artifact.*"))
