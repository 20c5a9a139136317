"""The Celery app, built from Settings: queues, reliability options, routes."""

from __future__ import annotations

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
        worker_prefetch_multiplier=1,
        worker_max_tasks_per_child=c.max_tasks_per_child,
        task_time_limit=c.stage_time_limit_s,
        task_soft_time_limit=max(1, c.stage_time_limit_s - 15),
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": c.visibility_timeout_s,
            "queue_order_strategy": "priority",
            "global_keyprefix": c.key_prefix,
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


def use_broker(settings: Settings) -> None:
    """Point this process's app at ``settings``' broker (for a process whose env changed after
    the app was built: tests and the chaos run send to their own isolated broker keys)."""
    app.conf.broker_url = settings.redis.url
    app.conf.broker_transport_options = {**app.conf.broker_transport_options,
                                         "global_keyprefix": settings.celery.key_prefix}
