"""Operator views and actions: queue depths, in-flight work, dead letters and their replay."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis import Redis

from pipeline.errors import ObjectNotFoundError, PermanentError, PipelineError, TransientError
from pipeline.messages import DeadLetter, StageMessage
from pipeline.settings import Settings
from pipeline.storage.keys import dead_letter_key
from pipeline.storage.s3 import ObjectStore
from pipeline.tasks.app import ALL_QUEUES, broker_key
from pipeline.tasks.deadletter import read_letters

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Status:
    queues: dict[str, int]
    in_flight: int  # delivered to a worker, not yet acknowledged
    sqs_events: int
    sqs_dead_letters: int
    dead_letters: int


def status(settings: Settings, *, redis: Redis, sqs: Any, store: ObjectStore) -> Status:
    depths = {q: int(redis.llen(broker_key(settings, q))) for q in ALL_QUEUES}

    def sqs_depth(name: str) -> int:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(
            attrs["ApproximateNumberOfMessagesNotVisible"])

    letters = sum(1 for _ in store.list_keys(settings.s3.artifacts_bucket, "dead-letter/"))
    in_flight = int(redis.hlen(broker_key(settings, "unacked")))
    return Status(depths, in_flight, sqs_depth(settings.sqs.queue),
                  sqs_depth(settings.sqs.dead_letter_queue), letters)


def list_letters(settings: Settings, store: ObjectStore) -> list[DeadLetter]:
    return sorted(read_letters(store, settings.s3.artifacts_bucket), key=lambda d: d.failed_at)


def replay(settings: Settings, store: ObjectStore, letters: list[DeadLetter], *,
           redis: Redis | None = None, automatic: bool = False) -> int:
    """Send each letter's message to its stage again and mark the record replayed (and,
    ``automatic``, count one more of beat's replays). A letter is checked first (it is read
    back from a bucket): a known stage, the raw bucket's photo, artifacts in the pipeline's
    buckets; the photo's URL is minted afresh by ingest.

    The upload is in flight again, so its recorded end (the outcome pointing at the letter,
    and its flag in ``redis``) is dropped before the send: a replayed message lost on its way
    (a Redis crash) leaves an upload without an end, which reconciliation sends round again,
    rather than one that looks ended forever."""
    from pipeline.storage.keys import ended_key, outcome_key
    from pipeline.storage.redis import unflag
    from pipeline.tasks.stages import STEPS, check_message, send_stage

    for letter in letters:
        if letter.stage not in STEPS:
            raise ValueError(f"dead letter {letter.id}: unknown stage {letter.stage!r}")
        check_message(letter.message, settings)
    bucket = settings.s3.artifacts_bucket
    for letter in letters:
        msg = letter.message.model_copy(update={
            "photo": letter.message.photo.model_copy(update={"url": ""})})
        # Marked before it is sent: a replay that fails again at once writes its new letter
        # (and its new end) after this mark, never under it. A send that fails puts the
        # letter back (the upload, if its end is already gone, is reconciliation's again).
        done = letter.model_copy(update={"replayed_at": datetime.now(UTC), "auto_replays": (
            letter.auto_replays + automatic)})
        store.put_json(bucket, dead_letter_key(letter.id), done.model_dump(mode="json"))
        try:
            store.delete(bucket, outcome_key(msg.photo.upload_id))
            if redis is not None:
                unflag(redis, ended_key(msg.photo.upload_id))
            send_stage(letter.stage, msg)
        except BaseException:
            store.put_json(bucket, dead_letter_key(letter.id), letter.model_dump(mode="json"))
            raise
    return len(letters)


# A run that sends a letter round claims it first: another run reading it at the same time
# (still unmarked) would send it twice and count one replay.
REPLAYING = "shelf:replaying:"
REPLAY_CLAIM_S = 600


def replay_transient(settings: Settings, store: ObjectStore, redis: Redis, *,
                     now: datetime | None = None) -> int:
    """Send round again each photo dead-lettered by a transient fault (retries spent in an
    S3 or network outage) ``auto_replay_after_s`` after it failed, at most ``auto_replays``
    times; then it waits for a person (``shelf dlq replay``). Beat calls it with each
    reconciliation; the letters come from the Redis index the dead-letter queue's consumer
    keeps, so a run reads only those due. That index is rebuilt from the letters in S3
    when Redis has lost it. Returns how many were sent."""
    from pipeline.tasks.deadletter import read_letter
    from pipeline.tasks.stages import AUTO_REPLAYED, TRANSIENT_LETTERS

    c = settings.celery
    at = (now or datetime.now(UTC)).timestamp()
    index_transient_letters(settings, store, redis)
    due = [m.decode() if isinstance(m, bytes) else str(m)
           for m in redis.zrangebyscore(TRANSIENT_LETTERS, 0, at - c.auto_replay_after_s)]
    sent = 0
    for letter_id in due:
        letter = read_letter(store, settings.s3.artifacts_bucket, letter_id)
        if letter is not None and letter.replayed_at is None and \
                letter.error_type in AUTO_REPLAYED:
            if letter.auto_replays >= c.auto_replays:
                log.warning("dead letter %s: %d automatic replays spent, left for a person: "
                            "%s", letter_id, letter.auto_replays, letter.error)
            elif not redis.set(f"{REPLAYING}{letter_id}", "1", nx=True, ex=REPLAY_CLAIM_S):
                continue  # another run (two beats, or the last one still going) sends it
            else:
                try:
                    sent += replay(settings, store, [letter], redis=redis, automatic=True)
                except TransientError as exc:  # the outage goes on: the next run tries again
                    log.warning("dead letter %s not sent round yet: %s", letter_id, exc)
                    redis.delete(f"{REPLAYING}{letter_id}")
                    continue
                except (ValueError, PipelineError) as exc:  # no stage may take it: a person's
                    log.error("dead letter %s not sent round again: %s", letter_id, exc)
        redis.zrem(TRANSIENT_LETTERS, letter_id)  # a new failure indexes it again
    return sent


def index_transient_letters(settings: Settings, store: ObjectStore, redis: Redis) -> int:
    """Build the index of letters waiting to be sent round from the letters in S3, once: a
    Redis restarted without its data (or a letter whose message to the dead-letter queue
    was lost with it) would otherwise leave them waiting for a person. Returns how many
    were indexed; 0 when the index was there. A letter S3 does not hand over (a brownout)
    leaves the index to be built again at the next run, with the others indexed now."""
    from pipeline.tasks.deadletter import read_letters
    from pipeline.tasks.stages import AUTO_REPLAYED, TRANSIENT_LETTERS, TRANSIENT_LETTERS_BUILT

    if redis.exists(TRANSIENT_LETTERS_BUILT):
        return 0
    unread: list[str] = []
    due = {d.id: d.failed_at.timestamp()
           for d in read_letters(store, settings.s3.artifacts_bucket, unread=unread)
           if d.error_type in AUTO_REPLAYED and d.replayed_at is None}
    ids = list(due)
    for i in range(0, len(ids), 1000):
        redis.zadd(TRANSIENT_LETTERS, {k: due[k] for k in ids[i:i + 1000]})
    if unread:
        log.warning("dead letters: %d not read (S3 did not answer), indexed at the next run: "
                    "%s", len(unread), ", ".join(unread[:3]))
    else:
        redis.set(TRANSIENT_LETTERS_BUILT, datetime.now(UTC).isoformat())
    if ids:
        log.warning("dead letters: %d of transient faults indexed again from S3", len(ids))
    return len(ids)


def recompute_pending(settings: Settings, store: ObjectStore, *, store_id: str | None = None,
                      aisle: str | None = None, bay: str | None = None,
                      redis: Redis | None = None) -> int:
    """Send each upload still waiting for its bay's planogram back to the comply stage once
    a planogram that validates is there; returns how many were sent.

    Uploads wait under their planogram's key (``pending_key``): a run lists them and asks
    S3 once per planogram, and reads the uploads of those that are there only. A planogram
    that does not validate keeps its uploads waiting, not failing every minute. With
    ``redis`` (beat), an upload sent is not sent again for ``visibility_timeout_s``, so a
    backlog is complied once, not once a minute until its first comply has run."""
    from pipeline.errors import PlanogramError
    from pipeline.messages import StageMessage
    from pipeline.storage.keys import (
        LEGACY_PENDING_PREFIX,
        PENDING_PREFIX,
        pending_planogram,
        spellings,
    )
    from pipeline.storage.planograms import load_planogram, planogram_key
    from pipeline.tasks.stages import check_message, send_stage

    s3 = settings.s3
    wanted = {"store": store_id, "aisle": aisle, "bay": bay}
    waiting: dict[str, list[str]] = {}
    for key in store.list_keys(s3.artifacts_bucket, PENDING_PREFIX):
        waiting.setdefault(pending_planogram(key), []).append(key)

    def arrived(plan: str) -> bool:
        try:
            return any(store.head(s3.config_bucket, k) is not None for k in spellings(plan))
        except TransientError as exc:  # one bay's question, not the whole run's: the next
            log.warning("recompute: %s not looked up yet: %s", plan, exc)  # run asks again
            return False

    there = [k for plan in waiting if arrived(plan) for k in waiting[plan]]
    legacy = list(store.list_keys(s3.artifacts_bucket, LEGACY_PENDING_PREFIX))
    sent = 0
    ready: dict[tuple[str, str, str, str], bool] = {}
    for key in there + legacy:
        try:
            msg = StageMessage.model_validate(store.get_json(s3.artifacts_bucket, key))
        except TransientError as exc:
            log.warning("recompute: %s not read yet: %s", key, exc)
            continue
        except ObjectNotFoundError:  # complied and removed since the listing, or its key
            continue  # was damaged in the listing: the next run lists anew
        except ValueError as exc:  # not JSON, or not a stage message: the others go on
            log.error("recompute: %s is not a waiting upload's message, skipped: %s", key,
                      str(exc)[:300])
            continue
        p = msg.photo
        if any(v is not None and getattr(p, k) != v for k, v in wanted.items()):
            continue
        plan = (planogram_key(p), p.store, p.aisle, p.bay)  # a plan may name its bay
        if plan not in ready:
            try:
                ready[plan] = load_planogram(store, s3.config_bucket, p) is not None
            except (PlanogramError, TransientError) as exc:
                log.warning("uploads of %s/%s/%s keep waiting: %s", p.store, p.aisle, p.bay,
                            exc)
                ready[plan] = False
        if not ready[plan]:
            continue
        if redis is not None and not redis.set(f"shelf:recompute-sent:{p.upload_id}", "1",
                                               nx=True, ex=settings.celery.visibility_timeout_s):
            continue  # sent by an earlier run; its comply has not run yet
        try:
            check_message(msg, settings)
        except PermanentError as exc:  # (a photo of a bucket no longer the raw one)
            log.error("recompute: %s is not sent back: %s", key, exc)
            continue
        send_stage("comply", msg.model_copy(update={"recompute": True}))
        sent += 1
    return sent


@dataclass
class Reconciliation:
    scanned: int = 0  # uploads old enough to have ended
    ended: int = 0  # with a result or a dead letter
    recent: int = 0  # younger than the grace period: maybe still in flight
    requeued: int = 0  # neither: sent through the pipeline again
    # neither, but sent again less than a grace period ago: that copy may still be on its way
    resent: int = 0
    # not uploads the pipeline takes: outside the prefix, folder markers, hidden files,
    # keys off the layout or unreadable (the listener dead-lettered those, saying why)
    ignored: int = 0
    # S3 did not say whether they ended (a transient fault): the next run asks again
    unchecked: int = 0
    # listed, but S3 holds no such object version when asked: deleted since, or an entry
    # damaged on its way (the listing has no checksum); the next run's listing decides
    vanished: int = 0


def reconcile(settings: Settings, store: ObjectStore, *, since: datetime, grace_s: float,
              enqueue: Callable[[StageMessage], None], dry_run: bool = False,
              redis: Redis | None = None) -> Reconciliation:
    """Every raw upload (object version) since ``since`` that is older than ``grace_s`` and
    has neither a result nor a dead letter is enqueued again: a lost broker message, a Redis
    crash, a dropped notification or a hard time limit cannot lose a photo silently. An
    upload that was only slow is done twice at worst, which the stages absorb.

    With ``redis``, uploads flagged there as ended are not looked up in S3: one round trip
    per 500 uploads instead of a HEAD each; S3 still decides for every other upload. An
    upload sent round is marked there for ``grace_s``: under a backlog longer than that, the
    next runs do not send it again and again while its copy waits in the queue."""
    from pipeline.errors import InvalidKeyError
    from pipeline.listeners.events import check_key
    from pipeline.listeners.listener import build_photo_message
    from pipeline.storage.keys import (
        check_layout,
        check_result_room,
        ended_key,
        is_upload,
        outcome_key,
        upload_id,
    )
    from pipeline.storage.redis import flagged

    s3 = settings.s3
    out = Reconciliation()
    now = datetime.now(UTC).timestamp()
    cutoff = now - grace_s
    window_s = max(grace_s, now - since.timestamp())
    due = []
    for v in store.list_versions(s3.raw_bucket, s3.raw_prefix):
        key = str(v["Key"])
        try:
            check_key(key)
            if not is_upload(key, s3.raw_prefix):
                out.ignored += 1
                continue
            check_result_room(check_layout(key, s3.raw_prefix))
        except InvalidKeyError:  # the listener dead-lettered its event, saying why
            out.ignored += 1
            continue
        modified = v["LastModified"]
        if modified < since:
            continue
        if v.get("Deleted"):  # deleted since: not a photo to finish (its versions linger)
            out.ignored += 1
            continue
        if modified.timestamp() > cutoff:
            out.recent += 1
            continue
        out.scanned += 1
        version = v.get("VersionId")
        version = None if version in (None, "null") else str(version)
        etag = str(v.get("ETag", "")).strip('"') or None
        due.append((key, version, etag, v))
    ids = [upload_id(s3.raw_bucket, key, version or etag) for key, version, etag, _ in due]
    flags = [ended_key(i) for i in ids]
    known = flagged(redis, flags) if redis is not None else set()
    fault: TransientError | None = None

    def ended(uid: str) -> bool:  # a result or a dead letter on record in S3
        return store.head(s3.artifacts_bucket, outcome_key(uid)) is not None

    for (key, version, etag, v), uid, flag in zip(due, ids, flags, strict=True):
        try:
            if flag in known or ended(uid):
                out.ended += 1
                continue
            # Sent round only as S3 holds it: a listing over plain HTTP has no checksum, and
            # an entry damaged on the way (a key, version or ETag with a bit flipped) would
            # be sent round as an upload that does not exist, to be dead-lettered as gone,
            # or with an ETag no download of it matches. HEADs for those sent round only.
            obj = _held(store, s3.raw_bucket, key, version)
            if obj is None:
                out.vanished += 1
                continue
            # A delete marker on top says the key was deleted: a damaged marker in the
            # listing would hide that, and S3 answers for the key itself with a 404.
            if version is not None and _held(store, s3.raw_bucket, key, None) is None:
                out.ignored += 1
                continue
            held = str(obj.get("ETag", "")).strip('"') or None
            if held != etag and version is None:  # an unversioned upload is known by it
                uid = upload_id(s3.raw_bucket, key, held)
                if ended(uid):
                    out.ended += 1
                    continue
        except TransientError as exc:  # one upload's question, not the whole run's: in a
            # brownout any HEAD may fail, and a run that stopped at the first would never
            # reach the uploads after it
            out.unchecked += 1
            fault = exc
            continue
        msg = build_photo_message(settings, store, bucket=s3.raw_bucket, key=key,
                                  version_id=version, etag=held,
                                  size=int(obj.get("ContentLength", 0)),
                                  event_time=obj.get("LastModified") or v["LastModified"])
        if not dry_run:
            if redis is not None and not _hold_for_resend(redis, uid, grace_s, window_s):
                out.resent += 1
                continue
            # Comply again even if its stage mark says done: the upload has no end on record
            # (its result may be gone), and finishing it is the point of sending it round.
            enqueue(msg.model_copy(update={"recompute": True}))
        out.requeued += 1
    if fault is not None:
        log.warning("reconcile: %d uploads not checked, S3 did not answer for them (%s); the "
                    "next run asks again", out.unchecked, fault)
    return out


def _held(store: ObjectStore, bucket: str, key: str, version: str | None
          ) -> dict[str, Any] | None:
    """The HEAD of one listed upload, or None when S3 holds no such object version (a
    version id it cannot read is not one it gave)."""
    try:
        return store.head(bucket, key, version)
    except PermanentError:
        return None


def _hold_for_resend(redis: Redis, uid: str, grace_s: float, window_s: float) -> bool:
    """Whether reconciliation may send ``uid`` round now, holding it if so: an upload sent
    round waits ``grace_s`` before it may be sent again, twice that after a second send, and
    so on. Under a backlog longer than the grace, its earlier copy is still queued: sending
    every waiting upload again at each run would add a copy of the backlog each time."""
    from pipeline.storage.redis import claim, count, number

    sends = number(redis, f"shelf:resends:{uid}")
    hold = grace_s * 2 ** min(sends, 12)
    if not claim(redis, f"shelf:reconciled:{uid}", "1", int(min(hold, window_s))):
        return False
    count(redis, f"shelf:resends:{uid}", int(window_s))
    return True


@dataclass(frozen=True)
class EventLetter:
    """An S3 event on the SQS dead-letter queue: refused by the listener, or redriven there
    by the queue after too many failed deliveries."""

    message_id: str
    reason: str
    body: str
    receipt: str


def event_letters(settings: Settings, sqs: Any, *, limit: int = 1000) -> list[EventLetter]:
    """The SQS DLQ's messages, read without consuming them (visible again at once)."""
    url = sqs.get_queue_url(QueueName=settings.sqs.dead_letter_queue)["QueueUrl"]
    seen: dict[str, EventLetter] = {}
    for _ in range(max(1, limit // 10)):
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                  VisibilityTimeout=30, MessageAttributeNames=["All"]
                                  ).get("Messages", [])
        if not got:
            break
        for m in got:
            attrs = m.get("MessageAttributes", {})
            reason = attrs.get("reason", {}).get("StringValue") or \
                "failed delivery too often (queue redrive)"
            seen.setdefault(m["MessageId"], EventLetter(m["MessageId"], reason, m["Body"],
                                                        m["ReceiptHandle"]))
    entries = [{"Id": str(i), "ReceiptHandle": e.receipt, "VisibilityTimeout": 0}
               for i, e in enumerate(seen.values())]
    for start in range(0, len(entries), 10):
        sqs.change_message_visibility_batch(QueueUrl=url, Entries=entries[start:start + 10])
    return list(seen.values())


def redrive_events(settings: Settings, sqs: Any, letters: list[EventLetter]) -> int:
    """Send each event back to the main queue, then remove it from the DLQ."""
    main = sqs.get_queue_url(QueueName=settings.sqs.queue)["QueueUrl"]
    dlq = sqs.get_queue_url(QueueName=settings.sqs.dead_letter_queue)["QueueUrl"]
    for e in letters:
        sqs.send_message(QueueUrl=main, MessageBody=e.body)
        sqs.delete_message(QueueUrl=dlq, ReceiptHandle=e.receipt)
    return len(letters)
