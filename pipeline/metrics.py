"""Prometheus metrics, safe under prefork: every process writes its own files under
``PROMETHEUS_MULTIPROC_DIR`` (``run/metrics`` by default) and ``shelf metrics`` serves them
all, with queue depths and the recent photo rate read at scrape time.

Names follow Prometheus conventions: ``_seconds`` for durations, ``_total`` for counters.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from pipeline.settings import Settings, get_settings

log = logging.getLogger(__name__)
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
LATENCY_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
COMPLETED_KEY = "shelf:completed"  # photo completion times, for photos per hour


def multiproc_dir(settings: Settings | None = None) -> Path:
    """Where every process writes its metrics; set in the environment before prometheus_client
    is imported (``make up`` and ``shelf worker`` do)."""
    env = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    path = Path(env) if env else (settings or get_settings()).run_dir / "metrics"
    # (made when missing: a pod's emptyDir starts empty, and prometheus_client would fail
    # on its first metric, the container restarted for ever)
    path.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path


multiproc_dir()
from prometheus_client import Counter, Histogram  # noqa: E402  (after the directory is set)

STAGE_SECONDS = Histogram("shelf_stage_duration_seconds", "Time a stage spent on one photo.",
                          ["stage"], buckets=BUCKETS)
STAGE_RUNS = Counter("shelf_stage_runs_total", "Stage runs by outcome: success, skipped "
                     "(artifact already there), retry, redo (sent back to ingest: an "
                     "artifact was gone), dead_letter.", ["stage", "outcome"])
STAGE_FAILURES = Counter("shelf_stage_failures_total", "Stage failures by error class.",
                         ["stage", "error"])
DEAD_LETTERS = Counter("shelf_dead_letters_total", "Dead letters by stage and reason.",
                       ["stage", "reason"])
PUT_TO_RESULT = Histogram("shelf_put_to_result_seconds", "From the upload to its result.",
                          buckets=LATENCY_BUCKETS)
RESULTS = Counter("shelf_results_total", "Results written, by whether they carry compliance.",
                  ["compliance"])
INFERENCE_SECONDS = Histogram("shelf_inference_seconds", "Detector and embedder calls.",
                              ["model", "provider"], buckets=BUCKETS)
LISTENER_EVENTS = Counter("shelf_listener_events_total", "S3 events seen by the listener, "
                          "by outcome.", ["outcome"])
ARTIFACTS_SKIPPED = Counter("shelf_artifacts_skipped_total", "Stage work skipped because its "
                            "artifact was already there (a retry or a redelivery).", ["stage"])


def stage_done(stage: str, seconds: float, outcome: str) -> None:
    STAGE_SECONDS.labels(stage).observe(seconds)
    STAGE_RUNS.labels(stage, outcome).inc()


def photo_done(redis: Any, put_at: float | None, with_compliance: bool) -> None:
    now = time.time()
    RESULTS.labels("yes" if with_compliance else "no").inc()
    if put_at is not None:
        PUT_TO_RESULT.observe(max(0.0, now - put_at))
    try:
        pipe = redis.pipeline()
        pipe.zadd(COMPLETED_KEY, {f"{now:.6f}-{os.getpid()}": now})
        pipe.zremrangebyscore(COMPLETED_KEY, 0, now - 3600)
        pipe.execute()
    except Exception as exc:  # a metric must never fail a photo
        log.debug("photo rate not recorded: %s", exc)


def mark_process_dead(pid: int) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class LiveCollector:
    """Queue depths, work in flight and the last hour's photo rate, read at scrape time. A
    scrape answers whatever is away: without Redis, ``shelf_redis_up`` is 0 and its gauges
    are left out; without SQS, its depths are. Clients are made once and kept."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._redis: Any = None
        self._sqs: Any = None
        self._queue_urls: dict[str, str] = {}  # a queue's URL follows from its name: asked once

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        yield from self._redis_gauges()
        sqs_depth = GaugeMetricFamily("shelf_sqs_messages", "Messages on the event queues.",
                                      labels=["queue"])
        try:
            from pipeline.storage.s3 import make_client

            if self._sqs is None:
                self._sqs = make_client(self.settings.aws, "sqs")
            for name in (self.settings.sqs.queue, self.settings.sqs.dead_letter_queue):
                if name not in self._queue_urls:
                    self._queue_urls[name] = self._sqs.get_queue_url(QueueName=name)["QueueUrl"]
                url = self._queue_urls[name]
                attrs = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
                    "ApproximateNumberOfMessages"])["Attributes"]
                sqs_depth.add_metric([name], float(attrs["ApproximateNumberOfMessages"]))
        except Exception as exc:  # SQS away: the other metrics still answer
            log.warning("sqs depth not read: %s", exc)
        yield sqs_depth

    def _redis_gauges(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily
        from redis.exceptions import RedisError

        from pipeline.storage.redis import make_redis
        from pipeline.tasks.app import ALL_QUEUES, broker_key

        if self._redis is None:
            self._redis = make_redis(self.settings.redis.url)
        r = self._redis
        try:
            depth = GaugeMetricFamily("shelf_queue_depth", "Tasks waiting per queue.",
                                      labels=["queue"])
            for q in ALL_QUEUES:
                depth.add_metric([q], float(r.llen(broker_key(self.settings, q))))
            now = time.time()
            gauges = [
                depth,
                GaugeMetricFamily("shelf_tasks_in_flight", "Tasks taken by a worker, not yet "
                                  "acknowledged.",
                                  value=float(r.hlen(broker_key(self.settings, "unacked")))),
                GaugeMetricFamily("shelf_photos_per_hour", "Results written in the last hour.",
                                  value=float(r.zcount(COMPLETED_KEY, now - 3600, now)))]
        except (RedisError, OSError) as exc:  # Redis away: say so, and answer the rest
            log.warning("redis gauges not read: %s", exc)
            gauges = []
        yield GaugeMetricFamily("shelf_redis_up", "Whether Redis answered this scrape.",
                                value=1.0 if gauges else 0.0)
        yield from gauges


# A scrape's connection, however its client behaves, holds one of a few threads for a
# bounded time: a client silent for TIMEOUT_S, or connected longer than DEADLINE_S (one
# that trickles its request), is cut; past MAX_CONNECTIONS at once, new ones are closed.
# The server wsgiref gives serves one connection at a time and waits on it for ever: one
# idle connection (a port scan, a stuck client) stopped every scrape and liveness probe.
TIMEOUT_S = 10.0
DEADLINE_S = 30.0
MAX_CONNECTIONS = 16
HEALTH_PATH = "/healthz"  # answers without reading Redis or SQS: the liveness probe's


def _cut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # ended meanwhile
        sock.shutdown(socket.SHUT_RDWR)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics %s: " + format, self.address_string(), *args)


class MetricsServer(ThreadingMixIn, WSGIServer):
    """A WSGI server with a thread per connection, a bounded number of them, each bounded
    in time (see :data:`TIMEOUT_S`)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], *, timeout_s: float = TIMEOUT_S,
                 deadline_s: float = DEADLINE_S, max_connections: int = MAX_CONNECTIONS
                 ) -> None:
        handler = type("Handler", (_QuietHandler,), {"timeout": timeout_s})
        super().__init__(address, handler)
        self.deadline_s = deadline_s
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # as many as it serves at once: closed at once
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that timed out or broke (a port scan, a stuck client): a debug line,
        not the traceback socketserver prints on stderr past the service's JSON logs."""
        log.debug("metrics connection from %s ended: %s", client_address,
                  sys.exc_info()[1])

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        deadline = threading.Timer(self.deadline_s, _cut, (request,))
        deadline.daemon = True
        deadline.start()
        try:
            super().process_request_thread(request, client_address)
        finally:
            deadline.cancel()
            self._slots.release()


def make_app(settings: Settings) -> Any:
    """``/metrics`` for every process of this host, and :data:`HEALTH_PATH`."""
    from prometheus_client import CollectorRegistry, make_wsgi_app, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(LiveCollector(settings))
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == HEALTH_PATH:
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        return metrics(environ, start_response)

    return app


def make_server(settings: Settings, **limits: Any) -> MetricsServer:
    server = MetricsServer((settings.metrics.host, settings.metrics.port), **limits)
    server.set_app(make_app(settings))
    return server


def serve(settings: Settings) -> None:
    """``/metrics`` on 127.0.0.1:<port> until interrupted."""
    server = make_server(settings)
    log.info("metrics on http://%s:%d/metrics", settings.metrics.host, server.server_port)
    server.serve_forever()
