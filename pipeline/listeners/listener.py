"""SQS long-poll loop: S3 ObjectCreated events -> a claimed, enqueued photo chain.

A message is deleted only after every photo it names was enqueued (or found a duplicate);
a body that is not an S3 event goes to the dead-letter queue with the reason. On SIGTERM the
current message finishes and the rest of the batch is handed back (visibility 0).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipeline.errors import PermanentError, TransientError
from pipeline.listeners.events import MalformedEventError, S3Record, parse_body
from pipeline.messages import PhotoRef, StageMessage
from pipeline.settings import Settings
from pipeline.storage.keys import claim_key, parse_raw_key
from pipeline.storage.redis import claim, release
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
    failed: int = 0


class Listener:
    def __init__(self, settings: Settings, *, sqs: Any, store: ObjectStore, redis: Any,
                 enqueue: Enqueue) -> None:
        self.s = settings
        self.sqs = sqs
        self.store = store
        self.redis = redis
        self.enqueue = enqueue
        self.stats = Stats()
        self.stop_event = threading.Event()
        self.queue_url = sqs.get_queue_url(QueueName=settings.sqs.queue)["QueueUrl"]
        self.dlq_url = sqs.get_queue_url(QueueName=settings.sqs.dead_letter_queue)["QueueUrl"]

    # -- lifecycle -------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def stop(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %d: finishing the current message, returning the rest", signum)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def run(self, max_batches: int | None = None) -> Stats:
        batches = 0
        while not self.stop_event.is_set() and (max_batches is None or batches < max_batches):
            try:
                self.poll_once()
            except TransientError as exc:
                log.warning("poll failed, backing off: %s", exc)
                self.stop_event.wait(2.0)
            batches += 1
        return self.stats

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
        for i, m in enumerate(messages):
            if self.stop_event.is_set():
                self._return(messages[i:])
                break
            received_at = self._extend_if_slow(messages[i:], received_at)
            self.handle(m)
        return len(messages)

    def handle(self, m: dict[str, Any]) -> None:
        self.stats.received += 1
        try:
            records = parse_body(m["Body"])
        except MalformedEventError as exc:
            self.stats.malformed += 1
            self._dead_letter(m, str(exc))
            return
        if not records:
            self.stats.test_events += 1
            self._delete(m)
            return
        try:
            for rec in records:
                self.handle_record(rec)
        except (TransientError, PermanentError, ClientError, BotoCoreError) as exc:
            # Left undeleted: SQS delivers it again after the visibility timeout, and after
            # maxReceiveCount its redrive policy moves it to the DLQ.
            self.stats.failed += 1
            log.warning("message %s not done, will be redelivered: %s", m["MessageId"], exc)
            return
        self._delete(m)

    def handle_record(self, rec: S3Record) -> None:
        s3cfg = self.s.s3
        key = rec.key
        if not rec.event_name.startswith("ObjectCreated") or not key.startswith(
                s3cfg.raw_prefix) or not key.lower().endswith(s3cfg.suffixes):
            self.stats.skipped += 1
            log.info("skipped %s %s/%s", rec.event_name, rec.bucket, key)
            return
        ckey = claim_key(rec.bucket, key, rec.version)
        if not claim(self.redis, ckey, "listener", self.s.redis.claim_ttl_s):
            self.stats.duplicates += 1
            log.info("duplicate event for %s/%s@%s", rec.bucket, key, rec.version)
            return
        try:
            msg = self.build_message(rec)
            if msg is None:
                self.stats.skipped += 1
                return
            self.enqueue(msg)
        except BaseException:
            release(self.redis, ckey)  # not enqueued: a redelivery must be able to claim it
            raise
        self.stats.enqueued += 1
        log.info("enqueued %s/%s", rec.bucket, key)

    def build_message(self, rec: S3Record) -> StageMessage | None:
        head = self.store.head(rec.bucket, rec.key)
        if head is None:
            log.warning("object %s/%s is gone; nothing to process", rec.bucket, rec.key)
            return None
        meta = {k.lower(): v for k, v in head.get("Metadata", {}).items()}
        cam = parse_raw_key(rec.key, self.s.s3.raw_prefix)
        version_id = rec.s3.object.version_id
        url = self.store.presign_get(rec.bucket, rec.key, self.s.s3.presign_expiry_s,
                                     version_id)
        photo = PhotoRef(
            bucket=rec.bucket, key=rec.key, version_id=version_id,
            etag=(rec.s3.object.etag or "").strip('"') or None, size=rec.s3.object.size,
            url=url, event_time=rec.event_time,
            store=meta.get("store") or (cam.store if cam else "unknown"),
            aisle=meta.get("aisle") or (cam.aisle if cam else "unknown"),
            bay=meta.get("bay") or (cam.bay if cam else "unknown"),
            camera=meta.get("camera") or (cam.camera if cam else "unknown"),
            store_format=meta.get("store-format", "standard"),
            display_type=meta.get("display-type", "gondola"),
            planogram_id=meta.get("planogram-id"),
        )
        return StageMessage(photo=photo)

    # -- SQS bookkeeping -----------------------------------------------------------------------
    def _delete(self, m: dict[str, Any]) -> None:
        self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])

    def _dead_letter(self, m: dict[str, Any], reason: str) -> None:
        log.warning("malformed event %s to DLQ: %s", m["MessageId"], reason)
        self.sqs.send_message(QueueUrl=self.dlq_url, MessageBody=m["Body"], MessageAttributes={
            "reason": {"DataType": "String", "StringValue": reason[:1000]},
            "source_message_id": {"DataType": "String", "StringValue": m["MessageId"]}})
        self._delete(m)

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
