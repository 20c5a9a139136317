"""S3 event notifications as they arrive in SQS bodies, parsed with pydantic."""

from __future__ import annotations

import json
from datetime import datetime
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import PermanentError


class MalformedEventError(PermanentError):
    """An SQS body that is not an S3 event notification."""


class _Bucket(BaseModel):
    name: str


class _Object(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    key: str
    size: int | None = None
    etag: str | None = Field(default=None, alias="eTag")
    version_id: str | None = Field(default=None, alias="versionId")
    sequencer: str | None = None


class _S3(BaseModel):
    bucket: _Bucket
    object: _Object


class S3Record(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    event_name: str = Field(alias="eventName")
    event_time: datetime | None = Field(default=None, alias="eventTime")
    s3: _S3

    @property
    def bucket(self) -> str:
        return self.s3.bucket.name

    @property
    def key(self) -> str:
        """The object key, decoded (S3 sends it URL-encoded with '+' for spaces)."""
        return unquote_plus(self.s3.object.key)

    @property
    def version(self) -> str:
        """What identifies this version of the object: versionId, else ETag, else sequencer."""
        o = self.s3.object
        return o.version_id or (o.etag or "").strip('"') or o.sequencer or "unversioned"


class _Notification(BaseModel):
    records: list[S3Record] = Field(alias="Records")


def parse_body(body: str) -> list[S3Record]:
    """Records of an SQS body; ``[]`` for an ``s3:TestEvent``. Unwraps SNS envelopes."""
    try:
        doc = json.loads(body)
    except json.JSONDecodeError as exc:
        raise MalformedEventError(f"body is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise MalformedEventError("body is not a JSON object")
    if doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):
        return parse_body(doc["Message"])
    if doc.get("Event") == "s3:TestEvent":
        return []
    try:
        return _Notification.model_validate(doc).records
    except ValidationError as exc:
        raise MalformedEventError(f"not an S3 event notification: {exc.errors()[:3]}") from exc
