"""SQS long-poll loop: S3 ObjectCreated events -> enqueued photo chains, one per version.

Per record, two Redis round trips: skip the object version if it was already enqueued, else
hold a short in-progress claim (one script); enqueue; only then mark the version as seen and
drop the claim (one script). A listener killed in between leaves an expiring claim and an
undeleted message, so the event comes back and is enqueued again: a duplicate chain, which
the stages absorb (results are per upload), rather than a lost photo. A message is deleted
only when none of its records is left to retry, ten at a time at the end of the batch.

The listener reads nothing from S3: who sent the photo is the key's to say, and the object's
user metadata (store format, display type, planogram id) arrives with the photo's bytes in
the ingest stage, which fetches them anyway. A photo deleted before ingest ends there as a
dead letter with its reason.

Nothing a message carries can stop the loop: a body that is not an S3 event, and a record
the pipeline refuses (a broken key, say), go to the dead-letter queue with the reason; any
other failure is logged and the message redelivered (after ``maxReceiveCount`` deliveries
the queue's redrive policy moves it to the DLQ). Only a signal stops the loop: SIGTERM
finishes the current message and hands the rest of the batch back (visibility 0).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from types import FrameType
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from redis import Redis

from pipeline import metrics
from pipeline.errors import InFlightElsewhereError, PermanentError, TransientError
from pipeline.listeners.events import S3Record, check_key, parse_body
from pipeline.messages import PhotoRef, StageMessage
from pipeline.settings import Settings
from pipeline.storage.keys import claim_key, inflight_key, parse_raw_key
from pipeline.storage.redis import claim_unless_done, mark_done, release
from pipeline.storage.s3 import ObjectStore, translate

log = logging.getLogger(__name__)
Enqueue = Callable[[StageMessage], None]


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


class Listener:
    def __init__(self, settings: Settings, *, sqs: Any, store: ObjectStore, redis: Redis,
                 enqueue: Enqueue) -> None:
        self.s = settings
        self.sqs = sqs
        self.store = store
        self.redis = redis
        self.enqueue = enqueue
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
        received_at = time.monotonic()
        self._local.deferred = []
        try:
            for i, m in enumerate(messages):
                if self.stop_event.is_set():
                    self._return(messages[i:])
                    break
                received_at = self._extend_if_slow(messages[i:], received_at)
                self.handle(m)
        finally:
            deferred, self._local.deferred = self._local.deferred, None
            self._delete_batch(deferred)
        return len(messages)

    def handle(self, m: dict[str, Any]) -> None:
        """One SQS message, whatever it holds; never raises."""
        self._count("received")
        try:
            self._handle(m)
        except Exception as exc:  # SQS bookkeeping failed: the message comes back later
            self._count("errors")
            log.exception("message %s left for redelivery: %s", m.get("MessageId"), exc)

    def _handle(self, m: dict[str, Any]) -> None:
        cfg = self.s.sqs
        try:
            records = parse_body(m.get("Body", ""), max_bytes=cfg.max_body_bytes,
                                 max_records=cfg.max_records)
        except Exception as exc:  # MalformedEventError, or any surprise from the parser
            self._count("malformed")
            self._dead_letter(m, m.get("Body", ""), f"{type(exc).__name__}: {exc}")
            self._delete(m)
            return
        if not records:
            self._count("test_events")
            self._delete(m)
            return
        retry = False
        for rec in records:
            try:
                self.handle_record(rec)
            except TransientError as exc:
                retry = True
                self._count("failed")
                log.warning("record %s/%s not enqueued, will be redelivered: %s",
                            rec.bucket, _printable(rec.key), exc)
            except Exception as exc:  # refused (PermanentError) or a bug: keep it, with why
                self._count("refused")
                self._dead_letter(m, json.dumps({"Records": [rec.model_dump(
                    mode="json", by_alias=True)]}), f"{type(exc).__name__}: {exc}")
        if not retry:
            self._delete(m)

    def handle_record(self, rec: S3Record) -> None:
        s3cfg = self.s.s3
        key = check_key(rec.key)
        if not rec.event_name.startswith("ObjectCreated") or not key.startswith(
                s3cfg.raw_prefix) or not key.lower().endswith(s3cfg.suffixes):
            self._count("skipped")
            log.info("skipped %s %s/%s", rec.event_name, rec.bucket, key)
            return
        if rec.bucket != s3cfg.raw_bucket:
            raise PermanentError(f"event for bucket {rec.bucket!r}, not the raw bucket")
        seen = claim_key(rec.bucket, key, rec.version)
        busy = inflight_key(seen)
        token = uuid.uuid4().hex
        state = claim_unless_done(self.redis, seen, busy, token, self.s.sqs.visibility_timeout_s)
        if state == "done":
            self._count("duplicates")
            log.info("duplicate event for %s/%s@%s", rec.bucket, key, rec.version)
            return
        if state == "busy":
            raise InFlightElsewhereError(f"{key} is being enqueued by another listener")
        try:
            msg = self.build_message(rec)
            self.enqueue(msg)
            mark_done(self.redis, seen, msg.photo.upload_id, self.s.redis.claim_ttl_s, busy,
                      token)
        except BaseException:
            with contextlib.suppress(Exception):  # else it expires with the visibility
                release(self.redis, busy, token)
            raise
        self._count("enqueued")
        log.debug("enqueued %s/%s", rec.bucket, key)  # one line per photo: the stages log it

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

    def _dead_letter(self, m: dict[str, Any], body: str, reason: str) -> None:
        """Keep ``body`` on the DLQ with the reason (shelf dlq events list / redrive)."""
        reason = _printable(reason)[:1000]
        log.warning("event %s to the DLQ: %s", m.get("MessageId"), reason)
        data = body if isinstance(body, str) else repr(body)
        data = data.encode("utf-8", "backslashreplace").decode("utf-8")
        if len(data.encode()) > self.s.sqs.max_body_bytes:
            data = json.dumps({"truncated": True, "head": data[:4096]})
        self.sqs.send_message(QueueUrl=self.dlq_url, MessageBody=data or "(empty)",
                              MessageAttributes={
                                  "reason": {"DataType": "String", "StringValue": reason},
                                  "source_message_id": {
                                      "DataType": "String",
                                      "StringValue": _printable(str(m.get("MessageId")))}})

    def _return(self, messages: list[dict[str, Any]]) -> None:
        """Hand unprocessed messages back at once (visibility 0) instead of hiding them."""
        self._visibility(messages, 0)
        log.info("returned %d unprocessed messages", len(messages))

    def _extend_if_slow(self, pending: list[dict[str, Any]], since: float) -> float:
        """Past half the visibility timeout, give the pending messages a full one again."""
        timeout = self.s.sqs.visibility_timeout_s
        if time.monotonic() - since > timeout / 2:
            self._visibility(pending, timeout)
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


def _printable(text: str) -> str:
    """``text`` safe for a log line or an SQS attribute: no control or lone surrogates."""
    out = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in out)


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
