"""The Celery app, built from Settings: queues, reliability options, routes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from celery import Celery
from kombu.entity import Exchange, Queue

from pipeline.settings import Settings, get_settings

INGESTION = "ingestion"
PREPROCESSING = "preprocessing"
GONDOLA_INFERENCE = "gondola_inference"
ENDCAP_INFERENCE = "endcap_inference"
COMPLIANCE = "compliance"
AGGREGATION = "aggregation"
DEAD_LETTER = "dead_letter"
# Later stages first: under a backlog, photos already in flight finish before new ones start.
CPU_QUEUES = (COMPLIANCE, PREPROCESSING, INGESTION, AGGREGATION, DEAD_LETTER)
INFERENCE_QUEUES = (ENDCAP_INFERENCE, GONDOLA_INFERENCE)
ALL_QUEUES = (*CPU_QUEUES, *INFERENCE_QUEUES)

TASK_QUEUES = {
    "shelf.ingest": INGESTION,
    "shelf.normalize": PREPROCESSING,
    "shelf.detect": GONDOLA_INFERENCE,  # the route picks the real queue per photo
    "shelf.comply": COMPLIANCE,
    "shelf.dead_letter": DEAD_LETTER,
    "shelf.aggregate": AGGREGATION,
    "shelf.recompute": AGGREGATION,
    "shelf.reconcile": AGGREGATION,
}


def soft_limit_s(settings: Settings) -> int:
    """A stage's soft time limit: it ends in a dead letter that says so, well before the
    hard limit kills its process."""
    return max(1, settings.celery.stage_time_limit_s - 15)


def celery_soft_limit_s(settings: Settings) -> int:
    """Celery's own soft limit, a backstop after the stage's (:func:`soft_limit_s`): at the
    same instant, its signal would land inside the stage's dead-lettering and turn a stage
    that ran out of time into a retry of the whole stage."""
    return max(soft_limit_s(settings) + 1, settings.celery.stage_time_limit_s - 5)


def broker_key(settings: Settings, name: str) -> str:
    """The Redis key of a queue (or of kombu's ``unacked`` hash) under the broker's prefix."""
    return settings.celery.key_prefix + name


def create_app(settings: Settings | None = None) -> Celery:
    s = settings or get_settings()
    c = s.celery
    if c.backoff_max_s >= c.visibility_timeout_s:
        raise ValueError("backoff_max_s must stay below the Redis visibility timeout, or "
                         "retried messages are delivered again and again (kombu#337)")
    if c.stage_time_limit_s + 10 >= c.visibility_timeout_s:
        raise ValueError("stage_time_limit_s must stay well below the visibility timeout, or "
                         "a slow task runs twice (celery#5306) and a wait for a dead "
                         "worker's stage lock outlasts it")
    if s.ingest.download_deadline_s >= soft_limit_s(s):
        raise ValueError(f"ingest.download_deadline_s ({s.ingest.download_deadline_s:g} s) "
                         f"must stay below a stage's soft time limit ({soft_limit_s(s)} s), "
                         "or a slow download ends its photo in the dead letters instead of "
                         "a retry")
    app = Celery("shelf", broker=s.redis.url, include=["pipeline.tasks.stages",
                                                            "pipeline.tasks.baseline"])
    exchange = Exchange("shelf", type="direct")
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        timezone="UTC",
        enable_utc=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # A stage killed at the hard time limit goes back to its queue, never acknowledged as
        # if done: the delivery count then dead-letters it with its reason.
        task_acks_on_timeout=False,
        worker_prefetch_multiplier=1,
        worker_max_tasks_per_child=c.max_tasks_per_child,
        worker_max_memory_per_child=c.max_memory_per_child_mb * 1024,  # KiB
        task_time_limit=c.stage_time_limit_s,
        task_soft_time_limit=celery_soft_limit_s(s),
        broker_connection_retry_on_startup=True,
        # A lost broker connection puts every unacknowledged message back on its queue, the
        # tasks still running included: they are stopped, or each would run twice at once
        # (their copies under the same task id take over their stage locks).
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # Retries wait in the worker that took them (countdown), each counted against the
        # visibility timeout from then: a retry storm must not fill a worker with more of
        # them than it can run before they are delivered again elsewhere.
        worker_eta_task_limit=c.eta_task_limit,
        broker_transport_options={
            "visibility_timeout": c.visibility_timeout_s,
            "queue_order_strategy": "priority",
            "global_keyprefix": c.key_prefix,
            # Without them a publish or read on a half-open connection waits forever (a
            # listener's poller would hang for good). Reads outlast kombu's 1 s BRPOP.
            "socket_timeout": 30,
            "socket_connect_timeout": 10,
            "socket_keepalive": True,
            "health_check_interval": 25,
        },
        task_queues=[Queue(q, exchange, routing_key=q) for q in ALL_QUEUES],
        task_default_queue=INGESTION,
        task_default_exchange="shelf",
        task_default_routing_key=INGESTION,
        task_routes={name: {"queue": q, "routing_key": q} for name, q in TASK_QUEUES.items()},
        beat_schedule={
            "aggregate-recent-days": {"task": "shelf.aggregate",
                                      "schedule": float(c.aggregate_every_s)},
            "recompute-pending": {"task": "shelf.recompute",
                                  "schedule": float(c.recompute_every_s)},
            "reconcile-uploads": {"task": "shelf.reconcile",
                                  "schedule": float(c.reconcile_every_s)},
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


app = create_app()


@contextmanager
def using_broker(settings: Settings) -> Iterator[None]:
    """This process's app sends to ``settings``' broker (its URL and key prefix) inside the
    block, and to the one it had before after it: a test session or a fault campaign sends to
    its own isolated keys without redirecting anyone else's messages."""
    before = (app.conf.broker_url, app.conf.broker_transport_options)
    app.conf.broker_url = settings.redis.url
    app.conf.broker_transport_options = {**before[1],
                                         "global_keyprefix": settings.celery.key_prefix}
    # Celery's own reset (as after a fork): the next send takes its pools for app.conf's
    # broker (kombu keeps one pool per URL and transport options), never the old one.
    app._after_fork()
    try:
        yield
    finally:
        app.conf.broker_url, app.conf.broker_transport_options = before
        app._after_fork()
