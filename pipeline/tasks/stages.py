"""The Celery tasks: thin wrappers that decide retry versus dead letter.

Only ``TransientError`` is retried (exponential backoff with jitter, a finite count); a
``PermanentError``, an unknown error, exhausted retries or too many redeliveries end in a dead
letter. A task hands the next stage an immutable signature carrying its message; it never
waits on another task and returns nothing the broker must keep.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from celery import Task
from celery.exceptions import Retry, SoftTimeLimitExceeded
from pydantic import ValidationError

from pipeline.core.backoff import backoff_seconds
from pipeline.core.routing import HEAVY
from pipeline.errors import PermanentError, TransientError
from pipeline.messages import DeadLetter, StageMessage
from pipeline.storage.redis import claim, release
from pipeline.tasks import steps
from pipeline.tasks.app import ENDCAP_INFERENCE, GONDOLA_INFERENCE, TASK_QUEUES, app
from pipeline.tasks.deadletter import make_letter, write_letter
from pipeline.tasks.runtime import get_runtime

log = logging.getLogger(__name__)
Step = Callable[[StageMessage, Any], StageMessage]
NEXT = {"ingest": "normalize", "normalize": "detect", "detect": "comply"}
STEPS: dict[str, Step] = {"ingest": steps.ingest, "normalize": steps.normalize,
                          "detect": steps.detect, "comply": steps.comply}


class LockHeldError(TransientError):
    """Another worker is running this stage for the same photo."""


def queue_for(stage: str, msg: StageMessage) -> str:
    if stage == "detect":
        return ENDCAP_INFERENCE if msg.route == HEAVY else GONDOLA_INFERENCE
    return TASK_QUEUES[f"shelf.{stage}"]


def send_stage(stage: str, msg: StageMessage) -> None:
    """Enqueue ``stage`` for ``msg`` as an immutable signature on its queue."""
    queue = queue_for(stage, msg)
    app.signature(f"shelf.{stage}", args=(msg.model_dump(mode="json"),), immutable=True,
                  queue=queue, routing_key=queue).apply_async()


def _count_delivery(task: Task, rt: Any) -> int:
    """How often this exact attempt has been delivered (redeliveries after a lost worker)."""
    key = f"shelf:deliveries:{task.request.id}:{task.request.retries}"
    n = int(rt.redis.incr(key))
    rt.redis.expire(key, rt.settings.celery.visibility_timeout_s * 4)
    return n


def claim_stage(client: Any, lock: str, task_id: str, ttl_s: int) -> bool:
    """Hold ``lock`` for this task. A lock left by an earlier delivery of the same task (its
    worker was killed before releasing) is taken over: Celery never runs one task id twice at
    once while the visibility timeout exceeds the stage's time limit."""
    if claim(client, lock, task_id, ttl_s):
        return True
    return client.get(lock) == task_id and bool(client.set(lock, task_id, xx=True, ex=ttl_s))


def dead_letter(stage: str, exc: BaseException, attempts: int, msg: StageMessage) -> DeadLetter:
    rt = get_runtime()
    letter = make_letter(stage, exc, attempts, msg)
    write_letter(rt.store, rt.settings.s3.artifacts_bucket, letter)
    app.signature("shelf.dead_letter", args=(letter.model_dump(mode="json"),),
                  immutable=True).apply_async()
    return letter


def run_stage(task: Task, stage: str, payload: dict[str, Any]) -> None:
    rt = get_runtime()
    c = rt.settings.celery
    try:
        msg = StageMessage.model_validate(payload)
    except ValidationError as exc:
        # Nothing to replay it with, but it must not vanish: keep the payload and the reason.
        key = f"dead-letter/unreadable/{stage}-{task.request.id}.json"
        rt.store.put_json(rt.settings.s3.artifacts_bucket, key, {
            "stage": stage, "error": str(exc), "payload": payload,
            "failed_at": datetime.now(UTC).isoformat()})
        log.error("%s: unreadable message kept at %s: %s", stage, key, exc)
        return
    try:
        _attempt(task, stage, msg)
    except Retry:
        raise
    except Exception as exc:
        # The dead-letter path itself failed (S3 or Redis unreachable): keep the message by
        # retrying later, since dropping it would lose the photo.
        delay = backoff_seconds(attempt=min(task.request.retries, 10), base_s=c.backoff_base_s,
                                cap_s=c.backoff_max_s)
        log.error("%s could not finish or dead-letter (%s); retry in %.1f s", stage, exc, delay)
        raise task.retry(exc=exc, countdown=delay) from exc


def _attempt(task: Task, stage: str, msg: StageMessage) -> None:
    rt = get_runtime()
    c = rt.settings.celery
    attempts = task.request.retries + 1
    deliveries = _count_delivery(task, rt)
    if deliveries > c.max_deliveries:
        dead_letter(stage, PermanentError(f"delivered {deliveries} times without finishing "
                                          "(worker lost each time?)"), attempts, msg)
        return
    lock = f"shelf:lock:{stage}:{msg.sha256 or msg.photo.bucket + '/' + msg.photo.key}"
    start = time.monotonic()
    try:
        if not claim_stage(rt.redis, lock, str(task.request.id), c.stage_time_limit_s + 30):
            raise LockHeldError(f"{stage} already running for this photo")
        try:
            out = STEPS[stage](msg, rt)
        finally:
            release(rt.redis, lock)
        out = out.model_copy(update={"stage_seconds": {
            **out.stage_seconds, stage: round(time.monotonic() - start, 3)}})
        nxt = NEXT.get(stage)
        if nxt:
            send_stage(nxt, out)
        else:
            log.info("photo %s done: %s", out.sha256, out.artifacts.get("result"))
            if out.captured_date:
                schedule_aggregate(rt, out.captured_date)
    except TransientError as exc:
        if task.request.retries < c.max_retries:
            delay = backoff_seconds(attempt=task.request.retries, base_s=c.backoff_base_s,
                                    cap_s=c.backoff_max_s)
            log.warning("%s transient (%s), retry %d in %.1f s", stage, exc, attempts, delay)
            raise task.retry(exc=exc, countdown=delay) from exc
        dead_letter(stage, TransientError(f"retries exhausted after {attempts} attempts: {exc}"),
                    attempts, msg)
    except (PermanentError, SoftTimeLimitExceeded) as exc:
        dead_letter(stage, exc, attempts, msg)
    except Exception as exc:  # an unknown bug: recorded for a human, never retried blindly
        log.exception("%s failed with an unexpected error", stage)
        dead_letter(stage, exc, attempts, msg)


@app.task(bind=True, max_retries=None, name="shelf.ingest")
def ingest(self: Task, payload: dict[str, Any]) -> None:
    run_stage(self, "ingest", payload)


@app.task(bind=True, max_retries=None, name="shelf.normalize")
def normalize(self: Task, payload: dict[str, Any]) -> None:
    run_stage(self, "normalize", payload)


@app.task(bind=True, max_retries=None, name="shelf.detect")
def detect(self: Task, payload: dict[str, Any]) -> None:
    run_stage(self, "detect", payload)


@app.task(bind=True, max_retries=None, name="shelf.comply")
def comply(self: Task, payload: dict[str, Any]) -> None:
    run_stage(self, "comply", payload)


@app.task(bind=True, max_retries=None, name="shelf.aggregate")
def aggregate(self: Task, date: str | None = None) -> None:
    """Rebuild one day's rollups (default: today and yesterday, UTC, for late photos)."""
    from datetime import UTC, datetime, timedelta

    from pipeline.aggregation import aggregate_day

    rt = get_runtime()
    today = datetime.now(UTC).date()
    days = [date] if date else [str(today - timedelta(days=1)), str(today)]
    try:
        for day in days:
            counts = aggregate_day(rt.store, rt.settings.s3.results_bucket, day)
            log.info("aggregated %s: %s", day, counts)
    except TransientError as exc:
        c = rt.settings.celery
        raise self.retry(exc=exc, countdown=backoff_seconds(
            attempt=min(self.request.retries, 10), base_s=c.backoff_base_s,
            cap_s=c.backoff_max_s)) from exc


def schedule_aggregate(rt: Any, date: str) -> None:
    """Ask for a rebuild of ``date`` soon; photos finishing together share one rebuild."""
    delay = rt.settings.celery.aggregate_debounce_s
    if rt.redis.set(f"shelf:aggregate-pending:{date}", "1", nx=True, ex=max(1, int(delay))):
        app.signature("shelf.aggregate", args=(date,), immutable=True,
                      countdown=delay).apply_async()


@app.task(name="shelf.dead_letter")
def record_dead_letter(payload: dict[str, Any]) -> None:
    """Consumes the dead_letter queue: counts and indexes letters for ``shelf status``."""
    letter = DeadLetter.model_validate(payload)
    rt = get_runtime()
    rt.redis.zadd("shelf:dead_letters", {letter.id: letter.failed_at.timestamp()})
    log.warning("dead letter %s (%s: %s)", letter.id, letter.error_type, letter.error)
