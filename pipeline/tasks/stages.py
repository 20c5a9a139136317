"""The Celery tasks: thin wrappers that decide retry versus dead letter.

Only ``TransientError`` is retried (exponential backoff with jitter, a finite count); a
``PermanentError``, an unknown error, exhausted retries or too many redeliveries end in a dead
letter. A task hands the next stage an immutable signature carrying its message; it never
waits on another task and returns nothing the broker must keep.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import signal
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from types import FrameType
from typing import Any

from celery import Task
from celery.exceptions import Retry, SoftTimeLimitExceeded
from celery.signals import worker_process_shutdown
from kombu.exceptions import KombuError
from pydantic import ValidationError
from redis import Redis
from redis.exceptions import RedisError

from pipeline import logs, metrics
from pipeline.core.backoff import backoff_seconds
from pipeline.core.routing import HEAVY
from pipeline.errors import (
    ArtifactLostError,
    ForgedMessageError,
    LockHeldError,
    PermanentError,
    PipelineError,
    StageTimeLimitExceeded,
    StageTimeoutError,
    TransientError,
)
from pipeline.messages import METADATA_VALUE, DeadLetter, StageMessage
from pipeline.settings import Settings, get_settings
from pipeline.storage.keys import artifact_key, parse_raw_key
from pipeline.storage.redis import (
    claim,
    claim_or_take_over,
    count,
    flag,
    flagged,
    flags_under,
    lease,
    release,
    translate_broker,
    ttl_s,
    unflag,
)
from pipeline.tasks import steps
from pipeline.tasks.app import (
    ENDCAP_INFERENCE,
    GONDOLA_INFERENCE,
    TASK_QUEUES,
    app,
    soft_limit_s,
)
from pipeline.tasks.deadletter import make_letter, read_letter, write_letter
from pipeline.tasks.runtime import Runtime, get_runtime

log = logging.getLogger(__name__)
Step = Callable[[StageMessage, Runtime], StageMessage]
REDOS_PER_DAY = 3  # an upload's chain started again from ingest for lost artifacts
NEXT = {"ingest": "normalize", "normalize": "detect", "detect": "comply"}
STEPS: dict[str, Step] = {"ingest": steps.ingest, "normalize": steps.normalize,
                          "detect": steps.detect, "comply": steps.comply}



def queue_for(stage: str, msg: StageMessage) -> str:
    if stage == "detect":
        return ENDCAP_INFERENCE if msg.route == HEAVY else GONDOLA_INFERENCE
    return TASK_QUEUES[f"shelf.{stage}"]


_batch = threading.local()  # the producer of this thread's open publish_batch, if any


def send_stage(stage: str, msg: StageMessage, queue: str | None = None) -> None:
    """Enqueue ``stage`` for ``msg`` as an immutable signature on its queue (or on
    ``queue``, one no worker reads in a benchmark). Inside :func:`publish_batch` the message
    is buffered until the batch ends.

    The headers name the upload only: the default repr of the arguments costs a quarter of
    a publish and would copy the photo's pre-signed URL into every log that shows them."""
    queue = queue or queue_for(stage, msg)
    try:
        app.signature(f"shelf.{stage}", args=(msg.model_dump(mode="json"),), immutable=True,
                      queue=queue, routing_key=queue).apply_async(
            producer=getattr(_batch, "producer", None),
            argsrepr=f"(upload {msg.photo.upload_id})", kwargsrepr="{}")
    except (KombuError, RedisError, OSError) as exc:
        raise translate_broker(exc, f"enqueue {stage}") from exc


@contextmanager
def publish_batch() -> Iterator[None]:
    """:func:`send_stage` calls from this thread inside the block reach the broker in one
    round trip when it ends. A failed flush raises ``TransientError``, and then any of the
    block's messages may or may not have been enqueued; an exception inside the block
    enqueues none of those still buffered."""
    if getattr(_batch, "producer", None) is not None:  # nested: the outer block flushes
        yield
        return
    try:
        with app.producer_or_acquire() as producer, producer.batch():
            _batch.producer = producer
            try:
                yield
            finally:
                _batch.producer = None
    except (KombuError, RedisError, OSError) as exc:
        raise translate_broker(exc, "enqueue batch") from exc


def _count_delivery(task: Task, rt: Runtime) -> int:
    """How often this exact attempt has been delivered (redeliveries after a lost worker)."""
    return count(rt.redis, f"shelf:deliveries:{task.request.id}:{task.request.retries}",
                 rt.settings.celery.visibility_timeout_s * 4)


LOCK_WAITS = 3


def lock_wait_s(client: Redis, lock: str) -> float:
    """Seconds until ``lock`` expires (at least one), plus jitter."""
    try:
        left = ttl_s(client, lock)
    except TransientError:
        left = 1.0
    return max(1.0, left) + random.uniform(0.2, 1.5)


def dead_letter(stage: str, exc: BaseException, attempts: int, msg: StageMessage) -> DeadLetter:
    rt = get_runtime()
    letter = make_letter(stage, exc, attempts, msg)
    bucket = rt.settings.s3.artifacts_bucket
    if isinstance(exc, TransientError):  # it may have been sent round by beat before
        prior = read_letter(rt.store, bucket, letter.id)
        if prior is not None:
            letter = letter.model_copy(update={"auto_replays": prior.auto_replays})
    write_letter(rt.store, bucket, letter)
    metrics.DEAD_LETTERS.labels(stage, letter.error_type).inc()
    steps.record_outcome(rt, msg, dead_letter=letter.id)
    app.signature("shelf.dead_letter", args=(letter.model_dump(mode="json"),),
                  immutable=True).apply_async()
    return letter



def check_message(msg: StageMessage, settings: Settings) -> None:
    """Stage messages come through the broker: they may only name the raw bucket's photo and
    artifacts in the pipeline's own buckets, this photo's own, and carry dates and metadata
    as the stages write them (they become keys and partitions)."""
    s3 = settings.s3
    p = msg.photo
    if p.bucket != s3.raw_bucket:
        raise ForgedMessageError(f"photo in bucket {p.bucket!r}, not the raw bucket")
    cam = parse_raw_key(p.key, s3.raw_prefix)
    claimed = (p.store, p.aisle, p.bay, p.camera)
    # Composed as the key's own are (a message of a release that kept a Mac's decomposed
    # accents names the same bay)
    if tuple(unicodedata.normalize("NFC", v) for v in claimed) != (
            (cam.store, cam.aisle, cam.bay, cam.camera) if cam else ("unknown",) * 4):
        raise ForgedMessageError(f"identity {claimed} is not the one its key says")
    if msg.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", msg.sha256):
        raise ForgedMessageError("sha256 is not a hex digest")
    for name, ref in msg.artifacts.items():
        if ".." in ref.key.split("/"):
            raise ForgedMessageError(f"artifact {name!r} key {ref.key!r} climbs out")
        if ref.bucket == s3.artifacts_bucket:
            if msg.sha256 is None or not ref.key.startswith(artifact_key(msg.sha256, "")):
                raise ForgedMessageError(f"artifact {name!r} at {ref.key!r} is not this "
                                         "photo's")
        elif ref.bucket == s3.results_bucket:
            if not (ref.key.startswith("compliance/")
                    and ref.key.endswith(f"/{p.upload_id}.json")):
                raise ForgedMessageError(f"artifact {name!r} at {ref.key!r} is not this "
                                         "upload's result")
        else:
            raise ForgedMessageError(f"artifact {name!r} in bucket {ref.bucket!r}")
    if msg.captured_date is not None and not _is_day(msg.captured_date):
        raise ForgedMessageError(f"captured_date {msg.captured_date[:40]!r} is not YYYY-MM-DD")
    if msg.taken_at is not None and not _is_aware_time(msg.taken_at):
        raise ForgedMessageError(f"taken_at {msg.taken_at[:40]!r} is not an ISO 8601 time "
                                 "with its zone")
    for field, value in (("store_format", p.store_format), ("display_type", p.display_type),
                         ("planogram_id", p.planogram_id)):
        if value is not None and not METADATA_VALUE.fullmatch(value):
            raise ForgedMessageError(f"{field} {value[:40]!r} is not a metadata value")


def _is_day(text: str) -> bool:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _is_aware_time(text: str) -> bool:
    try:
        return datetime.fromisoformat(text).tzinfo is not None
    except ValueError:
        return False


def _without_urls(payload: Any) -> Any:
    if isinstance(payload, dict):
        return {k: ("(dropped)" if k == "url" else _without_urls(v)) for k, v in payload.items()}
    if isinstance(payload, list):
        return [_without_urls(v) for v in payload]
    return payload


def run_stage(task: Task, stage: str, payload: dict[str, Any]) -> None:
    rt = get_runtime()
    c = rt.settings.celery
    try:
        msg = StageMessage.model_validate(payload)
        check_message(msg, rt.settings)
    except (ValidationError, ForgedMessageError) as exc:
        # Nothing to replay it with, but it must not vanish: keep the payload and the reason
        # (without any URL it carried).
        key = f"dead-letter/unreadable/{stage}-{task.request.id}.json"
        rt.store.put_json(rt.settings.s3.artifacts_bucket, key, {
            "stage": stage, "error": str(exc)[:2000], "payload": _without_urls(payload),
            "failed_at": datetime.now(UTC).isoformat()})
        log.error("%s: unreadable or forged message kept at %s: %s", stage, key, exc)
        return
    try:
        with logs.context(stage=stage, task_id=str(task.request.id),
                          upload_id=msg.photo.upload_id, sha256=msg.sha256, key=msg.photo.key,
                          store=msg.photo.store):
            _attempt(task, stage, msg)
    except Retry:
        raise
    except Exception as exc:
        # The dead-letter path itself failed (S3 or Redis unreachable): retry later, a
        # finite number of times; past that the photo is left to reconciliation, which
        # finds uploads with neither a result nor a dead letter.
        if task.request.retries >= c.max_retries * 2:
            log.critical("%s gave up on %s after %d retries (%s); reconciliation will "
                         "re-enqueue it", stage, msg.photo.upload_id, task.request.retries, exc)
            return
        delay = _backoff(task, rt.settings)
        log.error("%s could not finish or dead-letter (%s); retry in %.1f s", stage, exc, delay)
        raise task.retry(exc=exc, countdown=delay, max_retries=c.max_retries * 2) from exc


def _backoff(task: Task, settings: Settings) -> float:
    """The wait before ``task``'s next try: exponential in its retries so far (capped at the
    tenth), with jitter, up to the settings' cap."""
    c = settings.celery
    return backoff_seconds(attempt=min(task.request.retries, 10), base_s=c.backoff_base_s,
                           cap_s=c.backoff_max_s)


@contextmanager
def stage_deadline(seconds: float) -> Iterator[None]:
    """``StageTimeLimitExceeded`` once ``seconds`` pass inside the block, raised as soon as
    the step is back in Python (after a native call such as a model run returns). Celery's
    own soft limit depends on the pool's event loop and was seen not to fire; this one is a
    timer of the process that runs the step. Only in a main thread on Unix, else a no-op."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(
            signal, "setitimer"):
        yield
        return

    def expired(_signum: int, _frame: FrameType | None) -> None:
        raise StageTimeLimitExceeded(f"stage over its soft time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _attempt(task: Task, stage: str, msg: StageMessage) -> None:
    rt = get_runtime()
    c = rt.settings.celery
    attempts = task.request.retries + 1
    deliveries = _count_delivery(task, rt)
    if deliveries > c.max_deliveries:
        dead_letter(stage, PermanentError(f"delivered {deliveries} times without finishing "
                                          "(worker lost each time?)"), attempts, msg)
        return
    # Artifacts are per photo hash; ingest (hash not yet known) and the result are per upload.
    subject = msg.sha256 if stage in ("normalize", "detect") and msg.sha256 \
        else msg.photo.upload_id
    lock = f"shelf:lock:{stage}:{subject}"
    start = time.monotonic()
    try:
        # A lock left by an earlier delivery of this same task (its worker was killed) is
        # taken over: Celery never runs one task id twice at once while the visibility
        # timeout exceeds the stage's time limit.
        if not claim_or_take_over(rt.redis, lock, str(task.request.id),
                                  c.stage_time_limit_s + 5):
            raise LockHeldError(f"{stage} already running for this photo")
        try:
            with stage_deadline(soft_limit_s(rt.settings)):
                out = STEPS[stage](msg, rt)
        finally:
            release(rt.redis, lock, str(task.request.id))
        spent = time.monotonic() - start
        metrics.stage_done(stage, spent, "success")
        log.info("%s done", stage, extra={"duration_s": round(spent, 3)})
        out = out.model_copy(update={"stage_seconds": {
            **out.stage_seconds, stage: round(spent, 3)}})
        nxt = NEXT.get(stage)
        if nxt:
            send_stage(nxt, out)
        else:
            log.info("photo %s done: %s", out.sha256, out.artifacts.get("result"))
            if out.captured_date:
                schedule_aggregate(rt, out.captured_date)
    except LockHeldError as exc:
        metrics.STAGE_RUNS.labels(stage, "retry").inc()
        # The holder may be a worker that died mid-stage: wait out its lock, whose expiry
        # follows the stage's time limit, a few times before giving up.
        if task.request.retries < c.max_retries + LOCK_WAITS:
            delay = lock_wait_s(rt.redis, lock)
            log.warning("%s: %s; retry in %.1f s", stage, exc, delay)
            raise task.retry(exc=exc, countdown=delay,
                             max_retries=c.max_retries + LOCK_WAITS) from exc
        dead_letter(stage, TransientError(f"lock never freed after {attempts} attempts: {exc}"),
                    attempts, msg)
    except TransientError as exc:
        metrics.STAGE_FAILURES.labels(stage, type(exc).__name__).inc()
        if task.request.retries < c.max_retries:
            metrics.STAGE_RUNS.labels(stage, "retry").inc()
            delay = backoff_seconds(attempt=task.request.retries, base_s=c.backoff_base_s,
                                    cap_s=c.backoff_max_s)
            log.warning("%s transient (%s), retry %d in %.1f s", stage, exc, attempts, delay)
            raise task.retry(exc=exc, countdown=delay, max_retries=c.max_retries) from exc
        dead_letter(stage, TransientError(f"retries exhausted after {attempts} attempts: {exc}"),
                    attempts, msg)
    except (StageTimeLimitExceeded, SoftTimeLimitExceeded) as exc:
        timeout = StageTimeoutError(str(exc) or "stage over its soft time limit")
        metrics.STAGE_FAILURES.labels(stage, type(timeout).__name__).inc()
        metrics.STAGE_RUNS.labels(stage, "dead_letter").inc()
        dead_letter(stage, timeout, attempts, msg)
    except ArtifactLostError as exc:
        metrics.STAGE_FAILURES.labels(stage, type(exc).__name__).inc()
        # Every artifact is rebuilt from the photo, which is still in the raw bucket; an
        # upload whose artifacts keep vanishing (so a redo that cannot end) is a dead letter.
        if count(rt.redis, f"shelf:redo:{msg.photo.upload_id}", 24 * 3600) <= REDOS_PER_DAY:
            log.warning("%s: %s; the photo goes round again from ingest", stage, exc)
            send_stage("ingest", steps.redo_from_ingest(rt, msg, exc.sha256))
            metrics.STAGE_RUNS.labels(stage, "redo").inc()
        else:
            metrics.STAGE_RUNS.labels(stage, "dead_letter").inc()
            dead_letter(stage, exc, attempts, msg)
    except PermanentError as exc:
        metrics.STAGE_FAILURES.labels(stage, type(exc).__name__).inc()
        metrics.STAGE_RUNS.labels(stage, "dead_letter").inc()
        dead_letter(stage, exc, attempts, msg)
    except Exception as exc:  # an unknown bug: recorded for a human, never retried blindly
        log.exception("%s failed with an unexpected error", stage)
        metrics.STAGE_FAILURES.labels(stage, type(exc).__name__).inc()
        metrics.STAGE_RUNS.labels(stage, "dead_letter").inc()
        dead_letter(stage, exc, attempts, msg)


@worker_process_shutdown.connect
def _process_gone(pid: int | None = None, **_: Any) -> None:
    """A pool process's metric files are merged, not summed as live, once it exits."""
    metrics.mark_process_dead(pid or os.getpid())


@app.task(bind=True, max_retries=10, name="shelf.ingest")
def ingest(self: Task, payload: dict[str, Any]) -> None:
    run_stage(self, "ingest", payload)


@app.task(bind=True, max_retries=10, name="shelf.normalize")
def normalize(self: Task, payload: dict[str, Any]) -> None:
    run_stage(self, "normalize", payload)


@app.task(bind=True, max_retries=10, name="shelf.detect")
def detect(self: Task, payload: dict[str, Any]) -> None:
    run_stage(self, "detect", payload)


@app.task(bind=True, max_retries=10, name="shelf.comply")
def comply(self: Task, payload: dict[str, Any]) -> None:
    run_stage(self, "comply", payload)


TRANSIENT_LETTERS = "shelf:transient_letters"  # letter id -> when it failed
# Letters beat sends round by itself: retries spent in an outage, and stages that ran out of
# time (a brownout of S3 slows every call of a stage past its limit just as surely).
AUTO_REPLAYED = frozenset({"TransientError", "StageTimeoutError"})
# Set once the index above has been built from the letters in S3; gone when Redis lost its
# data, and then the next replay run rebuilds the index (``replay_transient``).
TRANSIENT_LETTERS_BUILT = "shelf:transient_letters:built"


# Beat's tasks have limits of their own (see maintenance_time_limit_s). A rollup killed
# whole goes back to its queue like a stage (a rebuild run twice writes the same bytes); the
# periodic ones are acknowledged on receipt: the next tick runs them again.
_MAINTENANCE_LIMIT_S = get_settings().celery.maintenance_time_limit_s
MAINTENANCE_LIMITS = {"time_limit": _MAINTENANCE_LIMIT_S,
                      "soft_time_limit": _MAINTENANCE_LIMIT_S - 30}
_ROLLUP_LEASE_S = 60


ROLLUP_DUE = "shelf:aggregate-due:"  # + day: its rollup must be rebuilt (again)
_ROLLUP_DUE_S = 14 * 86_400


@app.task(bind=True, max_retries=10, name="shelf.aggregate", **MAINTENANCE_LIMITS)
def aggregate(self: Task, date: str | None = None) -> None:
    """Rebuild one day's rollups; beat's run (no ``date``): today and yesterday (UTC, for
    late photos) and every day still marked due, whose last rebuild was asked for and
    never ran (its worker killed, the broker away when it was asked)."""
    from datetime import UTC, datetime, timedelta

    rt = get_runtime()
    today = datetime.now(UTC).date()
    try:
        days = [date] if date else sorted(
            {str(today - timedelta(days=1)), str(today)}
            | {k.removeprefix(ROLLUP_DUE) for k in flags_under(rt.redis, ROLLUP_DUE)})
    except TransientError as exc:
        raise self.retry(exc=exc, countdown=_backoff(self, rt.settings)) from exc
    failed: PipelineError | None = None
    for day in days:  # one day's failure holds back no other day (it stays due)
        try:
            flag(rt.redis, ROLLUP_DUE + day, _ROLLUP_DUE_S)
            _rebuild(rt, day)
        except PipelineError as exc:
            log.error("rollup of %s not rebuilt (%s: %s)", day, type(exc).__name__, exc)
            failed = exc if failed is None or isinstance(exc, TransientError) else failed
    if isinstance(failed, TransientError):
        raise self.retry(exc=failed, countdown=_backoff(self, rt.settings)) from failed
    if failed is not None:
        raise failed


def _rebuild(rt: Runtime, day: str) -> None:
    """Rebuild ``day``, one rebuild of a day at a time.

    A rebuild that finds another one running leaves the day marked due and returns. The
    running one, once done, asks for one more rebuild (debounced) if the day was marked
    meanwhile, so the results that ended while it ran are in a rollup too, and no rebuild
    is dropped after its retries waited in vain; a burst of photos costs a rebuild per
    debounce, not one per photo. The lease is renewed while a rebuild runs, so a worker
    killed mid-rebuild holds the day up for a minute, and beat's next run finds it due."""
    from pipeline.analytics.aggregates import aggregate_day

    due = ROLLUP_DUE + day
    with lease(rt.redis, f"shelf:aggregate-running:{day}", uuid.uuid4().hex,
               _ROLLUP_LEASE_S) as held:
        if not held:
            log.info("rollup of %s: being rebuilt elsewhere, which asks for it again", day)
            return
        unflag(rt.redis, due)
        try:
            counts = aggregate_day(rt.store, rt.settings.s3.results_bucket, day)
        except BaseException:  # still due: its retry, or beat, rebuilds it
            with contextlib.suppress(PipelineError):
                flag(rt.redis, due, _ROLLUP_DUE_S)
            raise
        log.info("aggregated %s: %s", day, counts)
        if held.lost.is_set():  # another rebuild took the day meanwhile (this one frozen,
            # or Redis away past the lease): what this one wrote may be the older snapshot
            log.warning("rollup of %s: its lease was lost while it ran; rebuilt again", day)
            flag(rt.redis, due, _ROLLUP_DUE_S)
    if flagged(rt.redis, [due]):  # photos of the day ended while it ran
        _ask_rebuild(rt, day)


def _ask_rebuild(rt: Runtime, day: str) -> None:
    """A rebuild of ``day`` in ``aggregate_debounce_s``, unless one is asked for already.
    Redis or the broker away leaves it to beat, which rebuilds every day still due."""
    delay = rt.settings.celery.aggregate_debounce_s
    try:
        if claim(rt.redis, f"shelf:aggregate-pending:{day}", "1", int(delay)):
            app.signature("shelf.aggregate", args=(day,), immutable=True,
                          countdown=delay).apply_async()
    except (PipelineError, RedisError, KombuError, OSError) as exc:
        log.warning("rollup of %s not asked for (%s: %s); beat's periodic rollup rebuilds "
                    "it", day, type(exc).__name__, exc)


def schedule_aggregate(rt: Runtime, date: str) -> None:
    """Ask for a rebuild of ``date`` soon; photos finishing together share one rebuild. The
    day is marked due first, so beat's next run rebuilds it should the request be lost. The
    photo's result is written by then: a broker or Redis away now must not turn it into a
    dead letter."""
    try:
        flag(rt.redis, ROLLUP_DUE + date, _ROLLUP_DUE_S)
    except PipelineError as exc:
        log.warning("rollup of %s not marked due (%s: %s)", date, type(exc).__name__, exc)
    _ask_rebuild(rt, date)


@app.task(bind=True, max_retries=3, name="shelf.recompute", acks_late=False,
          **MAINTENANCE_LIMITS)
def recompute(self: Task) -> None:
    """Beat: uploads that waited for a planogram are complied again once it is there."""
    from pipeline.operations import recompute_pending

    rt = get_runtime()
    try:
        n = recompute_pending(rt.settings, rt.store, redis=rt.redis)
    except TransientError as exc:
        raise self.retry(exc=exc, countdown=rt.settings.celery.backoff_base_s) from exc
    if n:
        log.info("recompute: %d uploads sent back to comply with their new planogram", n)


@app.task(bind=True, max_retries=3, name="shelf.reconcile", acks_late=False,
          **MAINTENANCE_LIMITS)
def reconcile(self: Task) -> None:
    """Beat: raw uploads of the last days with neither a result nor a dead letter go
    through the pipeline again."""
    from datetime import timedelta

    from pipeline.operations import reconcile as run
    from pipeline.operations import replay_transient

    rt = get_runtime()
    c = rt.settings.celery
    since = datetime.now(UTC) - timedelta(seconds=c.reconcile_window_s)
    try:
        r = run(rt.settings, rt.store, since=since, grace_s=c.reconcile_grace_s,
                enqueue=lambda m: send_stage("ingest", m), redis=rt.redis)
    except TransientError as exc:
        raise self.retry(exc=exc, countdown=c.backoff_base_s) from exc
    log.log(logging.WARNING if r.requeued else logging.INFO,
            "reconcile: %d checked, %d ended, %d recent, %d re-enqueued, %d sent round "
            "already, %d left to the next run, %d listed but not in S3", r.scanned, r.ended,
            r.recent, r.requeued, r.resent, r.unchecked, r.vanished)
    replayed = replay_transient(rt.settings, rt.store, rt.redis)
    if replayed:
        log.warning("reconcile: %d photos dead-lettered by a transient fault sent round again",
                    replayed)


@app.task(bind=True, name="shelf.dead_letter", max_retries=20)
def record_dead_letter(self: Task, payload: dict[str, Any]) -> None:
    """Consumes the dead_letter queue: logs each letter and indexes those of transient
    faults, which beat sends round (``replay_transient``). Redis away is waited out."""
    letter = DeadLetter.model_validate(payload)
    rt = get_runtime()
    try:
        if letter.error_type in AUTO_REPLAYED:
            rt.redis.zadd(TRANSIENT_LETTERS, {letter.id: letter.failed_at.timestamp()})
    except RedisError as exc:
        raise self.retry(exc=exc, countdown=_backoff(self, rt.settings)) from exc
    log.warning("dead letter %s (%s: %s)", letter.id, letter.error_type, letter.error)
