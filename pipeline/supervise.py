"""``shelf supervise``: keep one process running, restart it when it exits, with backoff.

``make up`` starts every long-running process (workers, listener, beat) under a supervisor,
whose pid is the one recorded and stopped. The supervisor restarts its child whenever it
exits (crash, SIGKILL, out of memory) after an exponential backoff that resets once the
child has stayed up a while, and keeps ``run/<name>.state`` (pid, restarts, last exit) for
``shelf status``. SIGTERM or SIGINT is passed to the child, and the supervisor exits after it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)
STABLE_AFTER_S = 60.0  # a child up this long resets the backoff
KILL_AFTER_S = 25.0  # after SIGTERM, a child still running gets SIGKILL


@dataclass
class State:
    name: str
    command: list[str]
    supervisor_pid: int
    child_pid: int | None = None
    started_at: str | None = None
    restarts: int = 0
    last_exit: int | None = None
    last_exit_at: str | None = None
    stopping: bool = False


def backoff_s(failures: int, *, base_s: float = 1.0, cap_s: float = 30.0) -> float:
    return min(cap_s, base_s * 2 ** max(0, failures - 1)) if failures else 0.0


def read_states(run_dir: Path) -> list[State]:
    out = []
    for path in sorted(run_dir.glob("*.state")):
        try:
            out.append(State(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return out


class Supervisor:
    def __init__(self, name: str, command: list[str], run_dir: Path) -> None:
        self.state = State(name, command, os.getpid())
        self.path = run_dir / f"{name}.state"
        self.stop_event = threading.Event()
        self.child: subprocess.Popen[bytes] | None = None

    def _save(self) -> None:
        tmp = self.path.with_suffix(".state.tmp")
        tmp.write_text(json.dumps(asdict(self.state)))
        tmp.replace(self.path)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.state.stopping = True
        self.stop_event.set()
        self._stop(self.child, signum)

    @staticmethod
    def _stop(child: subprocess.Popen[bytes] | None, signum: int) -> None:
        if child is not None and child.poll() is None:
            child.send_signal(signum)
            # A child that ignores the request is killed, never left behind.
            timer = threading.Timer(KILL_AFTER_S, _kill_if_running, (child,))
            timer.daemon = True
            timer.start()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        failures = 0
        code = 0
        while not self.stop_event.is_set():
            started = time.monotonic()
            self.child = subprocess.Popen(self.state.command, preexec_fn=die_with_parent)
            if self.stop_event.is_set():  # asked to stop while it was being started: the
                self._stop(self.child, signal.SIGTERM)  # handler saw no child to tell
            self.state.child_pid = self.child.pid
            self.state.started_at = datetime.now(UTC).isoformat()
            self._save()
            code = self.child.wait()
            self.state.last_exit = code
            self.state.last_exit_at = datetime.now(UTC).isoformat()
            self.state.child_pid = None
            if self.stop_event.is_set():
                break
            failures = 1 if time.monotonic() - started > STABLE_AFTER_S else failures + 1
            self.state.restarts += 1
            self._save()
            delay = backoff_s(failures)
            log.warning("%s exited with %s; restart %d in %.1f s", self.state.name, code,
                        self.state.restarts, delay)
            self.stop_event.wait(delay)
        self._save()
        return 0 if self.state.stopping else code


def die_with_parent() -> None:
    """In a child before ``exec``: SIGTERM when the parent dies, even by SIGKILL (Linux), so
    no worker outlives the process that started it and goes on taking tasks."""
    import contextlib
    import ctypes

    pr_set_pdeathsig = 1
    # Not Linux: a parent's death leaves the child running, as usual.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _kill_if_running(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.kill()
