"""Messages passed between the listener and the stages: references and URLs, never bytes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, field_validator

METADATA_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")
# No upload is older than S3 itself.
EARLIEST_EVENT = datetime(2006, 3, 14, tzinfo=UTC)


def sane_event_time(value: datetime | None) -> datetime | None:
    """An upload's time as the network gave it, made safe to compare and file by: without a
    zone it is taken as UTC (S3 always sends one); one no upload can have (before S3
    existed, or more than a day ahead of now) is dropped, as if the event had none."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if not EARLIEST_EVENT <= value <= datetime.now(UTC) + timedelta(days=1):
        return None
    return value


class PhotoRef(BaseModel):
    """Where a photo lies and what the camera said about it."""

    model_config = ConfigDict(frozen=True)

    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    size: int | None = None
    url: str = ""  # pre-signed GET; minted from bucket/key when empty or expired
    event_time: datetime | None = None
    store: str = "unknown"
    aisle: str = "unknown"
    bay: str = "unknown"
    camera: str = "unknown"
    store_format: str = "standard"
    display_type: str = "gondola"
    planogram_id: str | None = None

    _event_time = field_validator("event_time")(sane_event_time)

    def with_metadata(self, metadata: Mapping[str, str]) -> PhotoRef:
        """What the key cannot say, from the object's user metadata (``x-amz-meta-*``, names
        lower-case, without the prefix): store format, display type, planogram id. Values
        outside a short safe alphabet are ignored; identity stays the key's."""
        ok = {k: v for k, v in metadata.items() if METADATA_VALUE.fullmatch(v or "")}
        return self.model_copy(update={
            "store_format": ok.get("store-format", self.store_format),
            "display_type": ok.get("display-type", self.display_type),
            "planogram_id": ok.get("planogram-id", self.planogram_id)})

    @property
    def upload_id(self) -> str:
        """One upload: this bucket, key and object version (the unit of "one result")."""
        from pipeline.storage.keys import upload_id

        return upload_id(self.bucket, self.key, self.version_id or self.etag)


class ArtifactRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    bucket: str
    key: str


class StageMessage(BaseModel):
    """What each stage receives and returns: the photo, its id and the artifacts so far."""

    photo: PhotoRef
    sha256: str | None = None
    captured_date: str | None = None  # YYYY-MM-DD
    taken_at: str | None = None  # the EXIF capture time, when credible (ISO 8601)
    artifacts: dict[str, ArtifactRef] = Field(default_factory=dict)
    route: str | None = None  # light | heavy
    route_reason: str | None = None
    model: str | None = None
    recompute: bool = False  # comply again although marked done (planogram arrived, reconciled)
    stage_seconds: dict[str, float] = Field(default_factory=dict)

    def with_artifact(self, name: str, ref: ArtifactRef) -> StageMessage:
        return self.model_copy(update={"artifacts": {**self.artifacts, name: ref}})


class DeadLetter(BaseModel):
    """Why a photo stopped, and what is needed to run it again."""

    id: str
    stage: str
    error_type: str
    error: str
    attempts: int
    message: StageMessage
    failed_at: datetime
    replayed_at: datetime | None = None
    auto_replays: int = 0  # times beat sent it round again by itself (transient faults)
