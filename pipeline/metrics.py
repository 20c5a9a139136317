"""Prometheus metrics, safe under prefork: every process writes its own files under
``PROMETHEUS_MULTIPROC_DIR`` (``run/metrics`` by default) and ``shelf metrics`` serves them
all, with queue depths and the recent photo rate read at scrape time.

Names follow Prometheus conventions: ``_seconds`` for durations, ``_total`` for counters.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.settings import Settings, get_settings

log = logging.getLogger(__name__)
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
LATENCY_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
COMPLETED_KEY = "shelf:completed"  # photo completion times, for photos per hour


def multiproc_dir(settings: Settings | None = None) -> Path:
    """Where every process writes its metrics; set in the environment before prometheus_client
    is imported (``make up`` and ``shelf worker`` do)."""
    env = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if env:
        return Path(env)
    path = (settings or get_settings()).run_dir / "metrics"
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
    """Queue depths, work in flight and the last hour's photo rate, read at scrape time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from pipeline.storage.redis import make_redis
        from pipeline.tasks.app import ALL_QUEUES, broker_key

        r = make_redis(self.settings.redis.url)
        depth = GaugeMetricFamily("shelf_queue_depth", "Tasks waiting per queue.",
                                  labels=["queue"])
        for q in ALL_QUEUES:
            depth.add_metric([q], float(r.llen(broker_key(self.settings, q))))
        yield depth
        yield GaugeMetricFamily("shelf_tasks_in_flight", "Tasks taken by a worker, not yet "
                                "acknowledged.",
                                value=float(r.hlen(broker_key(self.settings, "unacked"))))
        now = time.time()
        yield GaugeMetricFamily("shelf_photos_per_hour", "Results written in the last hour.",
                                value=float(r.zcount(COMPLETED_KEY, now - 3600, now)))
        sqs_depth = GaugeMetricFamily("shelf_sqs_messages", "Messages on the event queues.",
                                      labels=["queue"])
        try:
            from pipeline.storage.s3 import make_client

            sqs = make_client(self.settings.aws, "sqs")
            for name in (self.settings.sqs.queue, self.settings.sqs.dead_letter_queue):
                url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
                attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
                    "ApproximateNumberOfMessages"])["Attributes"]
                sqs_depth.add_metric([name], float(attrs["ApproximateNumberOfMessages"]))
        except Exception as exc:  # SQS away: the other metrics still answer
            log.warning("sqs depth not read: %s", exc)
        yield sqs_depth


def serve(settings: Settings) -> None:
    """``/metrics`` on 127.0.0.1:<port> until interrupted."""
    from wsgiref.simple_server import make_server

    from prometheus_client import CollectorRegistry, make_wsgi_app, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(LiveCollector(settings))
    server = make_server(settings.metrics.host, settings.metrics.port,
                         make_wsgi_app(registry))
    log.info("metrics on http://%s:%d/metrics", settings.metrics.host, settings.metrics.port)
    server.serve_forever()
