"""scripts/stack.sh stops only what it started: a pid file is trusted while its pid runs the
supervisor of that name, never another program that took the pid over."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "stack.sh"


@pytest.fixture
def stack_copy(tmp_path: Path) -> Path:
    """The script in a root of its own: its run/ is this test's."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPT, tmp_path / "scripts" / "stack.sh")
    (tmp_path / "run").mkdir()
    return tmp_path


@pytest.fixture
def procs() -> Iterator[list[int]]:
    started: list[int] = []
    yield started
    for pid in started:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _run(root: Path, *args: str) -> str:
    out = subprocess.run(["bash", str(root / "scripts" / "stack.sh"), *args],
                         capture_output=True, text=True, timeout=60)
    return out.stdout + out.stderr


def _sleeper(procs: list[int], *argv: str) -> int:
    """A process that is not this test's child (as a supervisor started with nohup is not
    the script's): once it ends it is gone, not a zombie that still answers kill -0."""
    cmd = " ".join(shlex.quote(a) for a in
                   [sys.executable, "-c", "import time; time.sleep(60)", *argv])
    out = subprocess.run(["bash", "-c", f"{cmd} >/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True)
    pid = int(out.stdout)
    procs.append(pid)
    return pid


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_pid_file_naming_another_program_is_neither_trusted_nor_stopped(
        stack_copy: Path, procs: list[int]) -> None:
    # Given a pid file left from before a reboot, its pid now another program's
    other = _sleeper(procs)
    (stack_copy / "run" / "redis.pid").write_text(f"{other}\n")

    assert "redis not started here" in _run(stack_copy, "status")
    assert "stale pid file" in _run(stack_copy, "stop", "redis")
    assert _running(other)
    assert not (stack_copy / "run" / "redis.pid").exists()


def test_its_own_supervisor_is_stopped(stack_copy: Path, procs: list[int]) -> None:
    ours = _sleeper(procs, "supervise", "--name", "redis", "--", "redis-server")
    (stack_copy / "run" / "redis.pid").write_text(f"{ours}\n")

    assert f"redis running (pid {ours})" in _run(stack_copy, "status")
    assert "stopped redis" in _run(stack_copy, "stop", "redis")
    assert not _running(ours)
