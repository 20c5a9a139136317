"""Reconciliation over a raw bucket held in memory, with a dict for Redis."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pipeline.messages import StageMessage
from pipeline.operations import reconcile
from pipeline.settings import Settings
from pipeline.storage.memory import MemoryStore

SETTINGS = Settings()


class VersionedStore(MemoryStore):
    """Each object one version, written an hour ago; those in ``deleted`` behind a delete
    marker."""

    def __init__(self) -> None:
        super().__init__()
        self.deleted: set[str] = set()

    def list_versions(self, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
        for key in self.list_keys(bucket, prefix):
            yield {"Key": key, "VersionId": "v1", "ETag": '"e1"', "Size": 3,
                   "LastModified": datetime.now(UTC) - timedelta(hours=1),
                   "Deleted": key in self.deleted}

    def head(self, bucket: str, key: str, version_id: str | None = None
             ) -> dict[str, Any] | None:
        # A deleted key answers 404 for itself; its version v1 is still there.
        if version_id not in (None, "v1") or (version_id is None and key in self.deleted):
            return None
        return super().head(bucket, key)


class DictRedis:
    """What reconciliation asks of Redis (MGET, GET, SET NX with expiry, INCR), on a clock
    the test moves (``clock``, seconds)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.expiry: dict[str, float] = {}
        self.clock = 0.0

    def _live(self, key: str) -> str | None:
        if key in self.expiry and self.expiry[key] <= self.clock:
            self.values.pop(key, None)
            self.expiry.pop(key)
        return self.values.get(key)

    def mget(self, keys: list[str]) -> list[str | None]:
        return [self._live(k) for k in keys]

    def get(self, key: str) -> str | None:
        return self._live(key)

    def set(self, key: str, value: str, nx: bool = False, ex: int | None = None) -> bool:
        if nx and self._live(key) is not None:
            return False
        self.values[key] = value
        if ex is not None:
            self.expiry[key] = self.clock + ex
        return True

    def pipeline(self) -> DictRedis:
        self.queued: list[Any] = []
        return self

    def incr(self, key: str) -> None:
        self.queued.append(int(self._live(key) or 0) + 1)
        self.values[key] = str(self.queued[-1])

    def expire(self, key: str, ttl_s: int) -> None:
        self.expiry[key] = self.clock + ttl_s

    def execute(self) -> list[Any]:
        return self.queued


def test_an_upload_sent_round_waits_longer_each_time_while_its_copy_may_be_on_its_way(
        ) -> None:
    # Given an upload an hour old with no result and no dead letter, under a backlog
    store, redis = VersionedStore(), DictRedis()
    store.put_bytes(SETTINGS.s3.raw_bucket, "raw/S1/A1/B1/c1/p.jpg", b"jpg", "image/jpeg")
    sent: list[StageMessage] = []

    def run(at: float) -> Any:
        redis.clock = at
        return reconcile(SETTINGS, store, since=datetime.now(UTC) - timedelta(days=1),
                         grace_s=900, enqueue=sent.append, redis=redis)  # type: ignore[arg-type]

    # When reconciliation runs every ten minutes for an hour and a half
    runs = {at: run(at) for at in range(0, 5401, 600)}

    # Then it is sent round at once, again after the grace (900 s), again after twice the
    # grace, and left to the copy on its way at every other run
    sends = [at for at, r in runs.items() if r.requeued]
    assert sends == [0, 1200, 3000]
    assert all(r.resent == 1 for at, r in runs.items() if at not in sends)
    assert len(sent) == 3 and all(m.recompute for m in sent)
    assert [m.photo.key for m in sent] == ["raw/S1/A1/B1/c1/p.jpg"] * 3


class DamagedMarker(VersionedStore):
    """A listing whose delete markers were lost on the way."""

    def list_versions(self, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
        for v in super().list_versions(bucket, prefix):
            yield {**v, "Deleted": False}


# The listing shows the delete marker, or lost it on the way: S3 says the key itself is gone
@pytest.mark.parametrize("store_type", [VersionedStore, DamagedMarker])
def test_an_upload_deleted_since_is_not_brought_back(store_type: type[VersionedStore]
                                                     ) -> None:
    store = store_type()
    for name in ("kept", "deleted"):
        store.put_bytes(SETTINGS.s3.raw_bucket, f"raw/S1/A1/B1/c1/{name}.jpg", b"jpg",
                        "image/jpeg")
    store.deleted.add("raw/S1/A1/B1/c1/deleted.jpg")
    sent: list[StageMessage] = []

    r = reconcile(SETTINGS, store, since=datetime.now(UTC) - timedelta(days=1), grace_s=900,
                  enqueue=sent.append)

    assert [m.photo.key for m in sent] == ["raw/S1/A1/B1/c1/kept.jpg"]
    assert (r.requeued, r.ignored) == (1, 1)


def test_a_replayed_letter_whose_message_was_lost_is_sent_round_again(
        monkeypatch: Any) -> None:
    from pipeline.messages import DeadLetter, PhotoRef
    from pipeline.operations import replay
    from pipeline.storage.keys import dead_letter_key, ended_key, outcome_key, upload_id

    class FlagRedis(DictRedis):
        def delete(self, key: str) -> int:
            return int(self.values.pop(key, None) is not None)

    # Given an upload that ended as a dead letter, its end recorded in S3 and flagged in Redis
    store, redis = VersionedStore(), FlagRedis()
    s3, key = SETTINGS.s3, "raw/S1/A1/B1/c1/p.jpg"
    store.put_bytes(s3.raw_bucket, key, b"jpg", "image/jpeg")
    uid = upload_id(s3.raw_bucket, key, "v1")
    letter = DeadLetter(id="ingest-0000000000000001", stage="ingest", error_type="TransientError",
                        error="retries exhausted", attempts=11, failed_at=datetime.now(UTC),
                        message=StageMessage(photo=PhotoRef(
                            bucket=s3.raw_bucket, key=key, version_id="v1", store="S1",
                            aisle="A1", bay="B1", camera="c1")))
    assert letter.message.photo.upload_id == uid
    store.put_json(s3.artifacts_bucket, dead_letter_key(letter.id), letter.model_dump(mode="json"))
    store.put_json(s3.artifacts_bucket, outcome_key(uid), {"dead_letter": letter.id})
    redis.set(ended_key(uid), "1")
    sent: list[StageMessage] = []

    def run() -> Any:
        return reconcile(SETTINGS, store, since=datetime.now(UTC) - timedelta(days=1),
                         grace_s=900, enqueue=sent.append, redis=redis)  # type: ignore[arg-type]

    assert run().ended == 1 and not sent
    # When a person replays it and the replayed message is lost on its way (a Redis crash)
    monkeypatch.setattr("pipeline.tasks.stages.send_stage", lambda stage, msg: None)
    assert replay(SETTINGS, store, [letter], redis=redis) == 1  # type: ignore[arg-type]
    # Then the upload has no end on record, and reconciliation sends it round again
    assert store.head(s3.artifacts_bucket, outcome_key(uid)) is None
    again = run()
    assert (again.ended, again.requeued) == (0, 1)
    assert [m.photo.key for m in sent] == [key]


def test_an_upload_s3_cannot_answer_for_is_left_to_the_next_run_not_the_whole_run() -> None:
    from pipeline.errors import TransientError

    class Brownout(VersionedStore):  # S3 fails the HEAD of one upload's outcome
        def head(self, bucket: str, key: str, version_id: str | None = None
                 ) -> dict[str, Any] | None:
            if key == failing:
                raise TransientError(f"head s3://{bucket}/{key}: 503 Service Unavailable")
            return super().head(bucket, key, version_id)

    # Given three uploads an hour old with no end on record, and S3 failing for the second
    store = Brownout()
    for n in range(3):
        store.put_bytes(SETTINGS.s3.raw_bucket, f"raw/S1/A1/B1/c1/p{n}.jpg", b"jpg",
                        "image/jpeg")
    from pipeline.storage.keys import outcome_key, upload_id

    failing = outcome_key(upload_id(SETTINGS.s3.raw_bucket, "raw/S1/A1/B1/c1/p1.jpg", "v1"))
    sent: list[StageMessage] = []
    # When reconciliation runs
    r = reconcile(SETTINGS, store, since=datetime.now(UTC) - timedelta(days=1), grace_s=900,
                  enqueue=sent.append)
    # Then the two it could ask about are sent round, and the third is left to the next run
    assert sorted(m.photo.key for m in sent) == ["raw/S1/A1/B1/c1/p0.jpg",
                                                 "raw/S1/A1/B1/c1/p2.jpg"]
    assert (r.requeued, r.unchecked, r.ended) == (2, 1, 0)


def test_an_unversioned_upload_listed_with_a_damaged_etag_is_known_by_the_one_s3_holds(
        ) -> None:
    import hashlib

    from pipeline.storage.keys import outcome_key, upload_id

    class Unversioned(VersionedStore):  # no versions; the listing's ETags damaged
        def list_versions(self, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
            for v in super().list_versions(bucket, prefix):
                yield {**v, "VersionId": "null", "ETag": '"0badc0de"'}

    # Given two unversioned uploads, the first ended (its outcome under the upload id its
    # ETag gives), and a listing whose ETags were damaged on the way
    store, s3 = Unversioned(), SETTINGS.s3
    keys = ["raw/S1/A1/B1/c1/ended.jpg", "raw/S1/A1/B1/c1/lost.jpg"]
    for key in keys:
        store.put_bytes(s3.raw_bucket, key, key.encode(), "image/jpeg")
    etags = [hashlib.md5(key.encode(), usedforsecurity=False).hexdigest() for key in keys]
    store.put_json(s3.artifacts_bucket, outcome_key(upload_id(s3.raw_bucket, keys[0], etags[0])),
                   {"dead_letter": None})
    sent: list[StageMessage] = []
    # When reconciliation runs
    r = reconcile(SETTINGS, store, since=datetime.now(UTC) - timedelta(days=1), grace_s=900,
                  enqueue=sent.append)
    # Then the ended one is known by the ETag S3 holds and left alone, and the other is
    # sent round with that ETag, which its download is checked against
    assert (r.ended, r.requeued, r.vanished) == (1, 1, 0)
    assert [(m.photo.key, m.photo.etag, m.photo.upload_id) for m in sent] == [
        (keys[1], etags[1], upload_id(s3.raw_bucket, keys[1], etags[1]))]
