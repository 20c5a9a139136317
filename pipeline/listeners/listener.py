"""SQS long-poll loop: S3 ObjectCreated events -> enqueued photo chains, one per version.

A received batch of up to ten messages costs three Redis round trips, whatever it holds: one
claims every record's object version unless it was already enqueued (a short in-progress
claim), one publishes the chains, one marks the versions as seen and drops the claims. A
listener killed in between leaves expiring claims and undeleted messages, so the events come
back and are enqueued again: a duplicate chain, which the stages absorb (results are per
upload), rather than a lost photo. A message is deleted only when none of its records is left
to retry, ten at a time at the end of the batch.

The listener reads nothing from S3: who sent the photo is the key's to say, and the object's
user metadata (store format, display type, planogram id) arrives with the photo's bytes in
the ingest stage, which fetches them anyway. A photo deleted before ingest ends there as a
dead letter with its reason where the bucket keeps no versions; a versioned bucket keeps
the version the event names, and ingest fetches that (reconciliation leaves deleted
objects' versions alone).

Nothing a message carries can stop the loop: a body that is not an S3 event, and a record
the pipeline refuses (a broken key, say), go to the dead-letter queue with the reason; any
other failure (Redis, the broker or S3 away or refusing) is logged and the message
redelivered after a wait that doubles with each receive (after ``maxReceiveCount``
deliveries the queue's redrive policy moves it to the DLQ). Only a signal stops the loop: SIGTERM
finishes the current message and hands the rest of the batch back (visibility 0).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from types import FrameType
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from redis import Redis

from pipeline import metrics
from pipeline.errors import InFlightElsewhereError, PermanentError, TransientError
from pipeline.listeners.events import RefusedRecord, S3Record, check_key, parse_message
from pipeline.logs import printable
from pipeline.messages import PhotoRef, StageMessage
from pipeline.settings import Settings
from pipeline.storage.keys import (
    check_layout,
    check_result_room,
    claim_key,
    inflight_key,
    is_upload,
    parse_raw_key,
)
from pipeline.storage.redis import claim_unless_done, mark_done, release_all
from pipeline.storage.s3 import ObjectStore, translate

log = logging.getLogger(__name__)
Enqueue = Callable[[StageMessage], None]
Batch = Callable[[], AbstractContextManager[object]]


@dataclass
class Stats:
    received: int = 0
    enqueued: int = 0
    duplicates: int = 0
    skipped: int = 0
    test_events: int = 0
    malformed: int = 0
    refused: int = 0
    failed: int = 0
    errors: int = 0
    damaged: int = 0  # bodies not as SQS sent them (its MD5 says): left for redelivery


@dataclass
class _Item:
    """One record of a message on its way: sorted, claimed, published, marked as seen."""
    rec: S3Record
    key: str
    seen: str = ""
    busy: str = ""
    # unclaimed (to claim), skip, refused; then done, claimed, busy or failed (the claim)
    state: str = "unclaimed"
    error: Exception | None = None
    msg: StageMessage | None = None  # handed to enqueue
    failed: bool = False  # its batch's publish or mark failed: it comes back


@dataclass
class _Job:
    """One message of a batch."""
    m: dict[str, Any]
    items: list[_Item] = field(default_factory=list)
    malformed: str | None = None
    damaged: str | None = None  # why the body is not the one SQS sent
    refused: list[RefusedRecord] = field(default_factory=list)  # records that are not S3's
    test_event: bool = False
    keep: bool = False  # a record must come back: leave the message on the queue
    letters: list[dict[str, Any]] = field(default_factory=list)  # for the DLQ, sent together


class Listener:
    """``enqueue`` hands one chain to the broker; ``batch`` (optional) opens a context in
    which those hand-overs are buffered and sent together when it closes."""

    def __init__(self, settings: Settings, *, sqs: Any, store: ObjectStore, redis: Redis,
                 enqueue: Enqueue, batch: Batch = contextlib.nullcontext) -> None:
        self.s = settings
        self.sqs = sqs
        self.store = store
        self.redis = redis
        self.enqueue = enqueue
        self.batch = batch
        self.stats = Stats()
        self.stop_event = threading.Event()
        self.queue_url = sqs.get_queue_url(QueueName=settings.sqs.queue)["QueueUrl"]
        self._local = threading.local()  # each poller's batch of handled messages
        self._lock = threading.Lock()
        self._batches = 0
        self.dlq_url = sqs.get_queue_url(QueueName=settings.sqs.dead_letter_queue)["QueueUrl"]

    def _count(self, outcome: str) -> None:
        with self._lock:
            setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)
        metrics.LISTENER_EVENTS.labels(outcome).inc()

    # -- lifecycle -------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def stop(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %d: finishing the current message, returning the rest", signum)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def run(self, max_batches: int | None = None, pollers: int | None = None) -> Stats:
        """Poll until stopped (or ``max_batches`` receives in all): ``pollers`` threads, each
        receiving and handling its own batches, so that one batch's round trips to SQS and
        Redis overlap another's."""
        n = self.s.sqs.pollers if pollers is None else pollers
        self._batches = 0
        if n <= 1:
            self._poll_loop(max_batches)
            return self.stats
        threads = [threading.Thread(target=self._poll_loop, args=(max_batches,),
                                    name=f"poller-{i}", daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():  # a timed join leaves the main thread free for signals
                t.join(0.5)
        return self.stats

    def _next_batch(self, max_batches: int | None) -> bool:
        with self._lock:
            if self.stop_event.is_set() or (max_batches is not None
                                            and self._batches >= max_batches):
                return False
            self._batches += 1
            return True

    def _poll_loop(self, max_batches: int | None) -> None:
        failures = 0
        while self._next_batch(max_batches):
            try:
                self.poll_once()
                failures = 0
            except Exception as exc:  # SQS or Redis away, or a bug: never leave the loop
                failures += 1
                self._count("errors")
                delay = min(30.0, 0.5 * 2 ** min(failures, 6)) * random.uniform(0.5, 1.0)
                log.warning("poll failed (%s: %s), retrying in %.1f s", type(exc).__name__,
                            exc, delay)
                self.stop_event.wait(delay)

    # -- one batch ---------------------------------------------------------------------------
    def poll_once(self) -> int:
        cfg = self.s.sqs
        try:
            resp = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=cfg.batch_size,
                WaitTimeSeconds=cfg.wait_time_s, VisibilityTimeout=cfg.visibility_timeout_s,
                MessageSystemAttributeNames=["ApproximateReceiveCount"])
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, "receive") from exc
        messages = resp.get("Messages", [])
        self._local.deferred = []
        try:
            self.handle_batch(messages)
        finally:
            deferred, self._local.deferred = self._local.deferred, None
            self._delete_batch(deferred)
        return len(messages)

    def handle(self, m: dict[str, Any]) -> None:
        """One SQS message, whatever it holds; never raises."""
        self.handle_batch([m])

    def handle_batch(self, messages: list[dict[str, Any]]) -> None:
        """The messages of one receive, in order. Their records are claimed in one Redis
        round trip, their chains published in one, and marked as seen in one. Raises only
        when SQS does not take back the messages a stop left unhandled."""
        jobs = [self._prepare(m) for m in messages]
        token = uuid.uuid4().hex  # owns this batch's claims
        self._claim([it for j in jobs for it in j.items], token)
        handled = len(jobs)
        sent: list[_Item] = []
        try:
            with self.batch():
                since = time.monotonic()
                for i, job in enumerate(jobs):
                    if self.stop_event.is_set():
                        handled = i
                        break
                    try:  # all of them: the handled ones are deleted at the batch's end
                        since = self._extend_if_slow([j.m for j in jobs], since)
                    except Exception as exc:  # they may come back meanwhile: duplicates
                        log.warning("could not extend the batch's visibility: %s", exc)
                    self.handle_job(job, token)
                    sent += [it for it in job.items if it.msg is not None]
        except Exception as exc:  # the flush failed: any of them may be enqueued, or not
            self._fail(sent, token, exc)
            sent = []
        if handled < len(jobs):
            rest = jobs[handled:]
            with contextlib.suppress(Exception):  # else they expire with the visibility
                release_all(self.redis, [it.busy for j in rest for it in j.items
                                         if it.state == "claimed"], token)
            self._return([j.m for j in rest])
        try:
            mark_done(self.redis, [(it.seen, it.msg.photo.upload_id, it.busy)
                                   for it in sent if it.msg is not None],
                      self.s.redis.claim_ttl_s, token)
        except Exception as exc:
            self._fail(sent, token, exc)
            sent = []
        for it in sent:
            self._count("enqueued")
            log.debug("enqueued %s/%s", it.rec.bucket, it.key)  # the stages log each photo
        self._send_letters(jobs[:handled])
        again: list[dict[str, Any]] = []
        for job in jobs[:handled]:
            if not job.keep and not any(it.failed for it in job.items):
                self._delete(job.m)
            else:
                again.append(job.m)
        if again:
            try:
                self._back_off(again)
            except Exception as exc:  # they come back after the visibility timeout
                log.warning("could not back off %d messages: %s", len(again), exc)

    def _prepare(self, m: dict[str, Any]) -> _Job:
        """Parse a message and sort its records; no side effects yet."""
        cfg = self.s.sqs
        damaged = _damaged(m)
        if damaged is not None:
            return _Job(m, damaged=damaged)
        try:
            parsed = parse_message(m.get("Body", ""), max_bytes=cfg.max_body_bytes,
                                   max_records=cfg.max_records)
        except Exception as exc:  # MalformedEventError, or any surprise from the parser
            return _Job(m, malformed=f"{type(exc).__name__}: {exc}")
        return _Job(m, items=[self._sort(rec) for rec in parsed.records],
                    refused=parsed.refused, test_event=not parsed.records and not parsed.refused)

    def _sort(self, rec: S3Record) -> _Item:
        s3cfg = self.s.s3
        try:
            key = check_key(rec.key)
            if rec.event_name.startswith("ObjectCreated") and is_upload(key, s3cfg.raw_prefix):
                if rec.bucket != s3cfg.raw_bucket:
                    raise PermanentError(f"event for bucket {rec.bucket!r}, not the raw bucket")
                check_result_room(check_layout(key, s3cfg.raw_prefix))
                seen = claim_key(rec.bucket, key, rec.version)
                return _Item(rec, key, seen, inflight_key(seen))
            return _Item(rec, key, state="skip")
        except Exception as exc:  # refused: kept on the DLQ with why
            return _Item(rec, rec.key, state="refused", error=exc)

    def _claim(self, items: list[_Item], token: str) -> None:
        first: dict[str, _Item] = {}
        copies: list[_Item] = []
        for it in items:
            if it.state == "unclaimed":
                if it.seen in first:  # the same version twice in one batch
                    copies.append(it)
                else:
                    first[it.seen] = it
        wanted = list(first.values())
        try:
            states = claim_unless_done(self.redis, [(it.seen, it.busy) for it in wanted],
                                       token, self.s.sqs.visibility_timeout_s)
        except Exception as exc:  # Redis away or refusing: every record comes back later
            # Whatever Redis said (out of memory, a failed save, a missing permission), it
            # is not the records' fault: none of them goes to the dead-letter queue for it.
            failed = exc if isinstance(exc, TransientError) else TransientError(
                f"claim: {type(exc).__name__}: {exc}")
            for it in wanted + copies:
                it.state, it.error = "failed", failed
            return
        for it, state in zip(wanted, states, strict=True):
            it.state = state
        for it in copies:
            # Enqueued once, by the first; if that one fails, its message comes back.
            leader = first[it.seen]
            it.state, it.error = ("done" if leader.state == "claimed" else leader.state,
                                  leader.error)

    def handle_job(self, job: _Job, token: str) -> None:
        """One message of the batch; never raises. Its enqueued records are marked as seen,
        and the message deleted, once the whole batch is published."""
        self._count("received")
        try:
            self._handle(job, token)
        except Exception as exc:  # SQS bookkeeping failed: the message comes back later
            job.keep = True
            self._count("errors")
            log.exception("message %s left for redelivery: %s", job.m.get("MessageId"), exc)

    def _handle(self, job: _Job, token: str) -> None:
        m = job.m
        if job.damaged is not None:  # the event it holds is whole on the queue: read again
            job.keep = True
            self._count("damaged")
            log.warning("message %s damaged on the way (%s): left for redelivery",
                        m.get("MessageId"), job.damaged)
            return
        if job.malformed is not None:
            self._count("malformed")
            self._dead_letter(job, m.get("Body", ""), job.malformed)
            return
        if job.test_event:
            self._count("test_events")
            return
        for bad in job.refused:  # each on its own: the message's good records go on
            self._count("malformed")
            self._dead_letter(job, json.dumps({"Records": [bad.raw]}), bad.reason)
        for it in job.items:
            rec = it.rec
            if it.state == "skip":
                self._count("skipped")
                log.info("skipped %s %s/%s", rec.event_name, rec.bucket, it.key)
                continue
            if it.state == "done":
                self._count("duplicates")
                log.info("duplicate event for %s/%s@%s", rec.bucket, it.key, rec.version)
                continue
            try:
                self._enqueue(it)
            except TransientError as exc:
                job.keep = True
                self._count("failed")
                log.warning("record %s/%s not enqueued, will be redelivered: %s",
                            rec.bucket, printable(it.key), exc)
            except Exception as exc:  # refused (PermanentError) or a bug: keep it, with why
                self._count("refused")
                self._dead_letter(job, json.dumps({"Records": [rec.model_dump(
                    mode="json", by_alias=True)]}), f"{type(exc).__name__}: {exc}")
            if it.state == "claimed" and it.msg is None:
                with contextlib.suppress(Exception):  # else it expires with the visibility
                    release_all(self.redis, [it.busy], token)

    def _enqueue(self, it: _Item) -> None:
        if it.error is not None:
            raise it.error
        if it.state == "busy":
            raise InFlightElsewhereError(f"{it.key} is being enqueued by another listener")
        msg = self.build_message(it.rec)
        self.enqueue(msg)
        it.msg = msg

    def _fail(self, sent: list[_Item], token: str, exc: Exception) -> None:
        """Published records whose batch did not end well: their messages come back and
        are enqueued again, a duplicate chain at worst, never a lost photo."""
        for it in sent:
            self._count("failed")
            log.warning("record %s/%s may not be enqueued, will be redelivered: %s",
                        it.rec.bucket, printable(it.key), exc)
        for it in sent:
            it.failed = True
        with contextlib.suppress(Exception):
            release_all(self.redis, [it.busy for it in sent], token)

    def build_message(self, rec: S3Record) -> StageMessage:
        o = rec.s3.object
        return build_photo_message(self.s, self.store, bucket=rec.bucket, key=rec.key,
                                   version_id=o.version_id, etag=o.etag, size=o.size,
                                   event_time=rec.event_time)

    # -- SQS bookkeeping -----------------------------------------------------------------------
    def _delete(self, m: dict[str, Any]) -> None:
        deferred: list[dict[str, Any]] | None = getattr(self._local, "deferred", None)
        if deferred is not None:  # inside a batch: deleted together at its end
            deferred.append(m)
        else:
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])

    def _delete_batch(self, messages: list[dict[str, Any]]) -> None:
        """One call per ten messages. A message whose delete fails comes back later and is
        then a duplicate (its version is already marked as seen), never a lost photo."""
        for start in range(0, len(messages), 10):
            chunk = messages[start:start + 10]
            try:
                resp = self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(chunk)])
            except (ClientError, BotoCoreError) as exc:
                self._count("errors")
                log.warning("delete of %d handled messages failed, they will come back as "
                            "duplicates: %s", len(chunk), exc)
                continue
            for failed in resp.get("Failed", []):
                self._count("errors")
                log.warning("delete of a handled message failed (%s), it will come back as a "
                            "duplicate", failed.get("Code"))

    def _dead_letter(self, job: _Job, body: str, reason: str) -> None:
        """Keep ``body`` on the DLQ with the reason (shelf dlq events list / redrive): the
        batch's letters are sent together once it is handled (``_send_letters``)."""
        m = job.m
        reason = printable(reason)[:1000]
        log.warning("event %s to the DLQ: %s", m.get("MessageId"), reason)
        data = body if isinstance(body, str) else repr(body)
        data = data.encode("utf-8", "backslashreplace").decode("utf-8")
        source = printable(str(m.get("MessageId")))
        # SQS counts the attributes (names, types, values) against the size limit too.
        room = self.s.sqs.max_body_bytes - len(reason.encode()) - len(source.encode()) - 256
        if len(data.encode()) > room:
            data = json.dumps({"truncated": True, "head": data[:4096]})
        job.letters.append({"MessageBody": data or "(empty)", "MessageAttributes": {
            "reason": {"DataType": "String", "StringValue": reason},
            "source_message_id": {"DataType": "String", "StringValue": source}}})

    def _send_letters(self, jobs: list[_Job]) -> None:
        """The letters of ``jobs`` in as few calls as SQS takes (ten letters, and the size
        of one message, a call). A message whose letter SQS did not take stays on the queue
        and comes back: its refusal is sent again then, never lost."""
        limit = self.s.sqs.max_body_bytes
        chunk: list[tuple[_Job, dict[str, Any]]] = []
        size = 0
        for job in jobs:
            for letter in job.letters:
                weight = _letter_bytes(letter)
                if chunk and (len(chunk) == 10 or size + weight > limit):
                    self._send_letter_chunk(chunk)
                    chunk, size = [], 0
                chunk.append((job, letter))
                size += weight
        if chunk:
            self._send_letter_chunk(chunk)

    def _send_letter_chunk(self, chunk: list[tuple[_Job, dict[str, Any]]]) -> None:
        try:
            resp = self.sqs.send_message_batch(QueueUrl=self.dlq_url, Entries=[
                {"Id": str(i), **letter} for i, (_, letter) in enumerate(chunk)])
        except (ClientError, BotoCoreError) as exc:
            for job, _ in chunk:
                job.keep = True
            self._count("errors")
            log.warning("%d events not taken by the DLQ, their messages come back: %s",
                        len(chunk), exc)
            return
        for failed in resp.get("Failed", []):
            chunk[int(failed["Id"])][0].keep = True
            self._count("errors")
            log.warning("an event not taken by the DLQ (%s), its message comes back",
                        failed.get("Code"))

    def _return(self, messages: list[dict[str, Any]]) -> None:
        """Hand unprocessed messages back at once (visibility 0) instead of hiding them."""
        self._visibility(messages, 0)
        log.info("returned %d unprocessed messages", len(messages))

    def _back_off(self, messages: list[dict[str, Any]]) -> None:
        """Messages left for redelivery after a transient fault come back after a wait that
        doubles with each receive (the visibility timeout, then twice that, up to 15
        minutes, jittered): an outage of Redis or the broker is not met with a retry a
        minute, and its events are not all spent against the redrive policy's count in
        five minutes (reconciliation also sends round, after its grace, the uploads still
        without an outcome)."""
        base = self.s.sqs.visibility_timeout_s
        for start in range(0, len(messages), 10):
            entries = []
            for i, m in enumerate(messages[start:start + 10]):
                try:
                    n = int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1))
                except (TypeError, ValueError):
                    n = 1
                wait = min(_MAX_BACK_OFF_S, base * 2 ** min(max(n, 1) - 1, 10))
                entries.append({"Id": str(i), "ReceiptHandle": m["ReceiptHandle"],
                                "VisibilityTimeout": max(base, round(wait * random.uniform(
                                    0.75, 1.0)))})
            self.sqs.change_message_visibility_batch(QueueUrl=self.queue_url,
                                                     Entries=entries)

    def _extend_if_slow(self, messages: list[dict[str, Any]], since: float) -> float:
        """Past half the visibility timeout, give the batch's messages a full one again."""
        timeout = self.s.sqs.visibility_timeout_s
        if time.monotonic() - since > timeout / 2:
            self._visibility(messages, timeout)
            return time.monotonic()
        return since

    def _visibility(self, messages: list[dict[str, Any]], seconds: int) -> None:
        for start in range(0, len(messages), 10):
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"],
                        "VisibilityTimeout": seconds}
                       for i, m in enumerate(messages[start:start + 10])]
            if entries:
                self.sqs.change_message_visibility_batch(QueueUrl=self.queue_url,
                                                         Entries=entries)


_MAX_BACK_OFF_S = 900


def _damaged(m: dict[str, Any]) -> str | None:
    """Why a received message's body is not the one SQS holds (its MD5 is not the
    ``MD5OfBody`` SQS sent with it); None when it is, or when SQS sent none. Damaged on
    the way, a body would be refused as malformed, or name another key, though the event
    on the queue is whole."""
    sent, body = m.get("MD5OfBody"), m.get("Body", "")
    if not isinstance(sent, str) or not isinstance(body, str):
        return None
    got = hashlib.md5(body.encode("utf-8", "surrogatepass"), usedforsecurity=False).hexdigest()
    return None if got == sent.lower() else f"MD5 {got} of its body, not SQS's {sent[:40]}"


def _letter_bytes(letter: dict[str, Any]) -> int:
    """What SQS counts of a letter against a batch's size: its body and its attributes."""
    attrs = letter["MessageAttributes"]
    return len(letter["MessageBody"].encode()) + sum(
        len(name) + len(a["DataType"]) + len(a["StringValue"].encode())
        for name, a in attrs.items())




def build_photo_message(settings: Settings, store: ObjectStore, *, bucket: str, key: str,
                        version_id: str | None, etag: str | None, size: int | None,
                        event_time: datetime | None) -> StageMessage:
    """The chain's first message for one object version: who sent it, from the key
    (``raw/{store}/{aisle}/{bay}/{camera}/{file}``), and a pre-signed GET of that version.
    The object's metadata is read where its bytes are, in ingest."""
    cam = parse_raw_key(key, settings.s3.raw_prefix)
    url = store.presign_get(bucket, key, settings.s3.presign_expiry_s, version_id)
    photo = PhotoRef(
        bucket=bucket, key=key, version_id=version_id, etag=(etag or "").strip('"') or None,
        size=size, url=url, event_time=event_time,
        store=cam.store if cam else "unknown", aisle=cam.aisle if cam else "unknown",
        bay=cam.bay if cam else "unknown", camera=cam.camera if cam else "unknown",
    )
    return StageMessage(photo=photo)
