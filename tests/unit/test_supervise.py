"""``shelf supervise`` keeps a process alive: restarted after it exits, stopped with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.supervise import backoff_s


def _supervise(tmp_path: Path, name: str, code: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SHELF_RUN_DIR": str(tmp_path)}
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "supervise", "--name", name,
                             "--", sys.executable, "-c", code], env=env)


def _state(tmp_path: Path, name: str) -> dict[str, object]:
    path = tmp_path / f"{name}.state"
    deadline = time.time() + 10
    while not path.exists() and time.time() < deadline:
        time.sleep(0.05)
    return dict(json.loads(path.read_text()))


def _wait(pred: object, timeout_s: float = 10) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.mark.parametrize(("failures", "expected"), [(0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0),
                                                    (6, 30.0), (50, 30.0)])
def test_backoff(failures: int, expected: float) -> None:
    assert backoff_s(failures) == expected


def test_a_crashing_child_is_restarted_with_backoff(tmp_path: Path) -> None:
    sup = _supervise(tmp_path, "crashy", "raise SystemExit(3)")
    try:
        _wait(lambda: int(_state(tmp_path, "crashy")["restarts"]) >= 2, timeout_s=15)
        state = _state(tmp_path, "crashy")
        assert state["last_exit"] == 3 and state["supervisor_pid"] == sup.pid
    finally:
        sup.terminate()
        sup.wait(timeout=30)


def test_a_killed_child_comes_back_and_sigterm_stops_both(tmp_path: Path) -> None:
    sup = _supervise(tmp_path, "sleepy", "import time; time.sleep(600)")
    try:
        _wait(lambda: _state(tmp_path, "sleepy")["child_pid"])
        first = int(_state(tmp_path, "sleepy")["child_pid"])  # type: ignore[arg-type]
        os.kill(first, signal.SIGKILL)
        _wait(lambda: _state(tmp_path, "sleepy")["child_pid"] not in (None, first),
              timeout_s=15)
        second = int(_state(tmp_path, "sleepy")["child_pid"])  # type: ignore[arg-type]
        assert _state(tmp_path, "sleepy")["last_exit"] == -signal.SIGKILL
    finally:
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=30) == 0
    with pytest.raises(ProcessLookupError):
        os.kill(second, 0)
    assert _state(tmp_path, "sleepy")["stopping"] is True


def test_a_supervised_child_dies_with_its_supervisor_even_when_it_is_killed(
        tmp_path: Path) -> None:
    # Given a supervisor whose child would sleep for minutes
    sup = _supervise(tmp_path, "orphan", "import time; time.sleep(300)")
    child = int(str(_wait_for_child(tmp_path, "orphan")))
    # When the supervisor is killed outright (no chance to pass a signal on)
    sup.kill()
    sup.wait()
    # Then its child does not live on as an orphan that keeps taking work
    _wait(lambda: not _alive(child))


def _wait_for_child(tmp_path: Path, name: str) -> object:
    _wait(lambda: _state(tmp_path, name).get("child_pid"))
    return _state(tmp_path, name)["child_pid"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def test_a_stop_asked_for_while_the_child_starts_reaches_the_child(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline import supervise

    sup = supervise.Supervisor("race", [sys.executable, "-c", "import time; time.sleep(20)"],
                               tmp_path)
    real_popen = subprocess.Popen

    def popen_interrupted(*args: object, **kw: object) -> subprocess.Popen[bytes]:
        sup._on_signal(signal.SIGTERM, None)  # `make down` lands while the child starts
        return real_popen(*args, **kw)  # type: ignore[call-overload, no-any-return]

    monkeypatch.setattr(supervise.subprocess, "Popen", popen_interrupted)
    started = time.monotonic()
    assert sup.run() == 0
    assert time.monotonic() - started < 10  # not the child's 20 s
    assert sup.state.last_exit == -signal.SIGTERM
