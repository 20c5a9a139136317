"""The metrics endpoint under clients that misbehave, and with Redis and SQS away: it keeps
answering scrapes and probes."""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.metrics import HEALTH_PATH, MetricsServer, make_app
from pipeline.settings import Settings

AWAY = "127.0.0.1:1"  # nothing listens there: refused at once


@pytest.fixture
def serve() -> Iterator[object]:
    servers: list[MetricsServer] = []
    settings = Settings(redis={"url": f"redis://{AWAY}/0"},
                        aws={"endpoint_url": f"http://{AWAY}"})

    def start(**limits: float) -> tuple[str, int]:
        server = MetricsServer(("127.0.0.1", 0), **limits)  # type: ignore[arg-type]
        server.set_app(make_app(settings))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[0], server.server_port

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _get(address: tuple[str, int], path: str = "/metrics") -> tuple[int, str]:
    with urllib.request.urlopen(f"http://{address[0]}:{address[1]}{path}", timeout=10) as r:
        return r.status, r.read().decode()


def _idle(address: tuple[str, int]) -> socket.socket:
    return socket.create_connection(address, timeout=10)


def test_an_idle_connection_does_not_hold_up_scrapes_and_a_lost_redis_is_reported(
        serve: object) -> None:
    address = serve()  # type: ignore[operator]
    quiet = [_idle(address) for _ in range(3)]  # connected, sending nothing
    status, body = _get(address)
    assert status == 200
    assert "shelf_redis_up 0.0" in body and "shelf_queue_depth" not in body
    assert _get(address, HEALTH_PATH) == (200, "ok\n")
    for s in quiet:
        s.close()


def test_connections_past_the_cap_are_closed_and_idle_ones_dropped_in_time(
        serve: object) -> None:
    address = serve(timeout_s=0.5, max_connections=2)  # type: ignore[operator]
    quiet = [_idle(address) for _ in range(2)]
    time.sleep(0.1)  # both taken up by the server
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        _get(address, HEALTH_PATH)
    for s in quiet:  # the server hangs up on each once it has been silent too long
        assert s.recv(1) == b""
    assert _get(address, HEALTH_PATH)[0] == 200


def test_a_client_trickling_its_request_is_cut_at_the_deadline(serve: object) -> None:
    address = serve(timeout_s=1.0, deadline_s=1.0)  # type: ignore[operator]
    s = _idle(address)
    started = time.monotonic()
    cut = False
    for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\n" * 10:
        try:
            s.sendall(bytes([byte]))
        except OSError:
            cut = True
            break
        time.sleep(0.1)
    assert cut and time.monotonic() - started < 6
    s.close()
    assert _get(address, HEALTH_PATH)[0] == 200


def test_a_connection_that_times_out_leaves_no_traceback_on_stderr(
        serve: object, capfd: pytest.CaptureFixture[str]) -> None:
    address = serve(timeout_s=0.3)  # type: ignore[operator]
    s = _idle(address)
    assert s.recv(1) == b""  # hung up on once silent too long
    s.close()
    time.sleep(0.2)
    assert "Traceback" not in capfd.readouterr().err


def test_a_metrics_directory_named_but_missing_is_made(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A pod's emptyDir at /run/shelf starts empty; PROMETHEUS_MULTIPROC_DIR names a folder
    # inside it
    from pipeline.metrics import multiproc_dir

    wanted = tmp_path / "run" / "shelf" / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(wanted))
    assert multiproc_dir() == wanted and wanted.is_dir()
