"""What each stage has already done, in Redis: a cheap check before work instead of an S3
HEAD per stage and photo.

S3 stays the source of truth: a mark is written only after its artifact, and a missing mark
(expired, or Redis lost) only means the work is done again, writing the same artifact. The
value carries what the next step needs from the skipped work (ingest's capture time, the
route's quality figures), so a skip costs no S3 call at all.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from redis import Redis
from redis.exceptions import RedisError

from pipeline.errors import TransientError

TTL_S = 3 * 24 * 3600


class Ledger(Protocol):
    def get(self, stage: str, subject: str) -> dict[str, Any] | None: ...

    def put(self, stage: str, subject: str, doc: dict[str, Any]) -> None: ...

    def forget(self, stage: str, subject: str) -> None: ...


class RedisLedger:
    def __init__(self, client: Redis) -> None:
        self.client = client

    @staticmethod
    def key(stage: str, subject: str) -> str:
        return f"shelf:done:{stage}:{subject}"

    def get(self, stage: str, subject: str) -> dict[str, Any] | None:
        try:
            raw = self.client.get(self.key(stage, subject))
        except RedisError as exc:
            raise TransientError(f"redis ledger get: {exc}") from exc
        return dict(json.loads(str(raw))) if raw else None

    def put(self, stage: str, subject: str, doc: dict[str, Any]) -> None:
        try:
            self.client.set(self.key(stage, subject), json.dumps(doc), ex=TTL_S)
        except RedisError as exc:
            raise TransientError(f"redis ledger put: {exc}") from exc

    def forget(self, stage: str, subject: str) -> None:
        try:
            self.client.delete(self.key(stage, subject))
        except RedisError as exc:
            raise TransientError(f"redis ledger forget: {exc}") from exc


class MemoryLedger:
    """The same in a dict, for the benchmark's floor (it must not mark the real pipeline's
    photos as done)."""

    def __init__(self) -> None:
        self.marks: dict[tuple[str, str], dict[str, Any]] = {}

    def get(self, stage: str, subject: str) -> dict[str, Any] | None:
        return self.marks.get((stage, subject))

    def put(self, stage: str, subject: str, doc: dict[str, Any]) -> None:
        self.marks[(stage, subject)] = dict(doc)

    def forget(self, stage: str, subject: str) -> None:
        self.marks.pop((stage, subject), None)
