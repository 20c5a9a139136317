"""S3 event notifications as they arrive in SQS bodies, parsed with pydantic.

Three shapes arrive: S3's own notification (``{"Records": [...]}``, keys URL-encoded), the
same wrapped in an SNS envelope, and S3's EventBridge event (``"detail-type": "Object
Created"``, one object, its key as stored) routed by an EventBridge rule to the queue.

Bodies come from the network: their size, nesting and record count are capped, and every
failure to read one is a :class:`MalformedEventError`, never another exception.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.errors import InvalidKeyError, MalformedEventError
from pipeline.messages import sane_event_time
from pipeline.storage.keys import MAX_S3_KEY_BYTES

MAX_BODY_BYTES = 256 * 1024  # SQS message maximum
MAX_RECORDS = 100


# Control characters (C0, DEL, C1: U+009B alone starts a terminal's escape sequence) and
# the ones that reverse or isolate the direction of the text that follows: no camera or
# sync tool writes them, and in a store's name they would disguise it in every listing.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def check_key(key: str) -> str:
    """``key`` if the pipeline can carry it safely through S3, Redis, logs and partitions."""
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidKeyError(f"key is not valid Unicode ({exc.reason})") from exc
    if size == 0 or size > MAX_S3_KEY_BYTES:
        raise InvalidKeyError(f"key of {size} bytes (1..{MAX_S3_KEY_BYTES} allowed)")
    bad = sorted({f"U+{ord(c):04X}" for c in key if _CONTROLS.match(c)})
    if bad:
        raise InvalidKeyError(f"key contains control characters {', '.join(bad[:5])}")
    return key


class _Bucket(BaseModel):
    name: str


class _Object(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    key: str
    size: int | None = None
    etag: str | None = Field(default=None, alias="eTag")
    version_id: str | None = Field(default=None, alias="versionId")
    sequencer: str | None = None

    @field_validator("version_id")
    @classmethod
    def _no_null_version(cls, v: str | None) -> str | None:
        """S3 names the version of an object in a bucket whose versioning is suspended (or
        never on, for some S3 stores) ``"null"``: no version, as reconciliation reads it.
        Kept, every upload to the key would share one id (and one result)."""
        return None if v is None or v.strip() in ("", "null") else v


class _S3(BaseModel):
    bucket: _Bucket
    object: _Object


class S3Record(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    event_name: str = Field(alias="eventName")
    event_time: datetime | None = Field(default=None, alias="eventTime")
    s3: _S3

    _event_time = field_validator("event_time")(sane_event_time)

    @field_validator("event_time", mode="before")
    @classmethod
    def _readable_time(cls, v: object) -> object:
        """A time that does not read as ISO 8601 (blank, padded, mangled by a relay) counts
        as none, as an implausible one does: the upload is still a good record, which
        ingest files by the object's Last-Modified."""
        if v is None or isinstance(v, datetime):
            return v
        if isinstance(v, str):
            try:
                return datetime.fromisoformat(v.strip())
            except ValueError:
                return None
        return None

    @property
    def bucket(self) -> str:
        return self.s3.bucket.name

    @property
    def key(self) -> str:
        """The object key, decoded (S3 sends it URL-encoded with '+' for spaces). Escapes
        that are not UTF-8 stay lone surrogates, which :func:`check_key` refuses: replaced
        by U+FFFD they would name another object, and end as a photo that is not there."""
        return unquote_plus(self.s3.object.key, errors="surrogateescape")

    @property
    def version(self) -> str:
        """What identifies this version of the object: versionId, else ETag, else sequencer."""
        o = self.s3.object
        return o.version_id or (o.etag or "").strip('"') or o.sequencer or "unversioned"


# EventBridge detail types of S3 and the notification event names they correspond to.
EVENTBRIDGE_EVENTS = {"Object Created": "ObjectCreated", "Object Deleted": "ObjectRemoved",
                      "Object Restore Completed": "ObjectRestore"}


def _from_eventbridge(doc: dict[str, Any]) -> dict[str, Any]:
    """An S3 EventBridge event as the one-record notification S3 would have sent: the key
    URL-encoded as notifications carry it (EventBridge gives it as stored), the reason
    (``PutObject``, ``CompleteMultipartUpload``...) as the event name's suffix."""
    detail, kind = doc.get("detail"), doc.get("detail-type")
    obj = detail.get("object") if isinstance(detail, dict) else None
    if not isinstance(detail, dict) or not isinstance(obj, dict):
        raise MalformedEventError("EventBridge event without detail.object")
    key = obj.get("key")
    if not isinstance(key, str):
        raise MalformedEventError("EventBridge event without a string detail.object.key")
    try:
        check_key(key)  # before encoding: a lone surrogate cannot be URL-encoded
    except InvalidKeyError as exc:
        raise MalformedEventError(f"EventBridge event: {exc}") from exc
    reason = detail.get("reason")
    name = EVENTBRIDGE_EVENTS.get(kind, kind.replace(" ", "")) if isinstance(kind, str) \
        else "Unknown"
    return {"eventName": f"{name}:{reason}" if isinstance(reason, str) else name,
            "eventTime": doc.get("time"),
            "s3": {"bucket": detail.get("bucket"),
                   "object": {"key": quote_plus(key, safe="/"), "size": obj.get("size"),
                              "eTag": obj.get("etag"), "versionId": obj.get("version-id"),
                              "sequencer": obj.get("sequencer")}}}


@dataclass(frozen=True)
class RefusedRecord:
    """A record of a notification that is not an S3 record: as it came, and why."""

    raw: Any
    reason: str


# S3's notifications nest six deep, EventBridge's four; a body nested far deeper is no
# event, and its records would be too deep to write back out (json.dumps recurses).
MAX_DEPTH = 32


def _depth(doc: object) -> int:
    """How deep ``doc`` nests (a scalar 0), without recursion."""
    deepest, todo = 0, [(doc, 1)]
    while todo:
        node, level = todo.pop()
        children = node.values() if isinstance(node, dict) else node \
            if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if level <= MAX_DEPTH:
            todo.extend((c, level + 1) for c in children)
    return deepest


@dataclass(frozen=True)
class ParsedBody:
    records: list[S3Record]
    refused: list[RefusedRecord]


def parse_message(body: str, *, max_bytes: int = MAX_BODY_BYTES, max_records: int = MAX_RECORDS,
                  _envelopes: int = 0) -> ParsedBody:
    """The records of an SQS body, each read on its own: one malformed record is refused
    with its reason and the others go on. No records for an ``s3:TestEvent``. Unwraps one
    SNS envelope; an EventBridge event of S3 is one record. A body that is not a
    notification at all raises :class:`MalformedEventError`."""
    if not isinstance(body, str):
        raise MalformedEventError("body is not text")
    if len(body) > max_bytes:  # characters bound bytes from below: cheap first check
        raise MalformedEventError(f"body of {len(body)} characters exceeds {max_bytes}")
    try:
        doc = json.loads(body)
    except RecursionError as exc:
        raise MalformedEventError("body is nested too deeply") from exc
    except ValueError as exc:
        raise MalformedEventError(f"body is not JSON: {str(exc)[:200]}") from exc
    if not isinstance(doc, dict):
        raise MalformedEventError("body is not a JSON object")
    # (a body with fewer brackets than the cap cannot nest deeper: most are not walked)
    if body.count("{") + body.count("[") > MAX_DEPTH and _depth(doc) > MAX_DEPTH:
        raise MalformedEventError(f"body is nested more than {MAX_DEPTH} deep")
    shapes = [shape for shape, found in (
        ("an SNS envelope", doc.get("Type") == "Notification"),
        ("an s3:TestEvent", doc.get("Event") == "s3:TestEvent"),
        ("an EventBridge event", doc.get("source") == "aws.s3"),
        ("Records", "Records" in doc)) if found]
    if len(shapes) > 1:  # S3, SNS and EventBridge each send one: records beside another
        raise MalformedEventError(f"body is {' and '.join(shapes)} at once")
    if doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):
        if _envelopes:
            raise MalformedEventError("SNS envelope inside an SNS envelope")
        return parse_message(doc["Message"], max_bytes=max_bytes, max_records=max_records,
                             _envelopes=1)
    if doc.get("Event") == "s3:TestEvent":
        return ParsedBody([], [])
    if doc.get("source") == "aws.s3" and "detail-type" in doc:
        doc = {"Records": [_from_eventbridge(doc)]}
    records = doc.get("Records")
    if not isinstance(records, list):
        raise MalformedEventError("not an S3 event notification: no list of Records")
    if len(records) > max_records:
        raise MalformedEventError(f"{len(records)} records exceed the cap of {max_records}")
    good: list[S3Record] = []
    refused: list[RefusedRecord] = []
    for raw in records:
        try:
            good.append(S3Record.model_validate(raw))
        except (ValidationError, RecursionError) as exc:
            detail = exc.errors()[:3] if isinstance(exc, ValidationError) \
                else "nested too deeply"
            refused.append(RefusedRecord(raw, f"not an S3 event record: {detail}"))
    return ParsedBody(good, refused)


def parse_body(body: str, *, max_bytes: int = MAX_BODY_BYTES, max_records: int = MAX_RECORDS
               ) -> list[S3Record]:
    """Records of an SQS body, all or nothing: every record, or :class:`MalformedEventError`
    with the first refusal's reason; ``[]`` for an ``s3:TestEvent``. The listener reads
    records one by one (``parse_message``)."""
    parsed = parse_message(body, max_bytes=max_bytes, max_records=max_records)
    if parsed.refused:
        raise MalformedEventError(parsed.refused[0].reason)
    return parsed.records
