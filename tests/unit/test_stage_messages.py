"""Stage messages come through the broker: what one may name and carry before any stage
acts on it (``check_message``), and what follows the last stage's result."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.errors import ForgedMessageError
from pipeline.messages import StageMessage
from pipeline.settings import Settings
from pipeline.storage.keys import artifact_key, result_key
from pipeline.tasks.stages import check_message

SETTINGS = Settings()
S3 = SETTINGS.s3
SHA = "ab" * 32
OTHER_SHA = "cd" * 32
PHOTO = {"bucket": S3.raw_bucket, "key": "raw/S1/A1/B1/cam1/p.jpg", "store": "S1",
         "aisle": "A1", "bay": "B1", "camera": "cam1", "etag": "e1"}


def message(**change: Any) -> StageMessage:
    photo = {**PHOTO, **change.pop("photo", {})}
    doc: dict[str, Any] = {"photo": photo, "sha256": SHA, "captured_date": "2025-06-02",
                           "taken_at": "2025-06-02T09:14:00+00:00",
                           "artifacts": {"detections": {
                               "bucket": S3.artifacts_bucket,
                               "key": artifact_key(SHA, "detections-product-light-11.json")}}}
    return StageMessage.model_validate(doc | change)


def test_a_message_as_the_stages_write_it_passes() -> None:
    msg = message()
    upload = msg.photo.upload_id
    result = {"bucket": S3.results_bucket,
              "key": result_key(store="S1", date="2025-06-02", aisle="A1", upload_id=upload)}

    check_message(message(photo={"planogram_id": "PG 7.1", "store_format": "express"}),
                  SETTINGS)
    check_message(message(artifacts={**msg.model_dump()["artifacts"], "result": result}),
                  SETTINGS)
    check_message(message(captured_date=None, taken_at=None, sha256=None, artifacts={}),
                  SETTINGS)


@pytest.mark.parametrize(("change", "said"), [
    ({"photo": {"bucket": "elsewhere"}}, "not the raw bucket"),
    ({"photo": {"store": "S9"}}, "not the one its key says"),
    ({"sha256": "A" * 64}, "not a hex digest"),
    ({"artifacts": {"detections": {"bucket": "elsewhere", "key": "x.json"}}}, "in bucket"),
    ({"artifacts": {"detections": {"bucket": S3.artifacts_bucket,
                                   "key": artifact_key(OTHER_SHA, "detections.json")}}},
     "not this photo's"),
    ({"artifacts": {"detections": {"bucket": S3.artifacts_bucket,
                                   "key": "outcomes/zzz.json"}}}, "not this photo's"),
    ({"artifacts": {"detections": {"bucket": S3.artifacts_bucket,
                                   "key": artifact_key(SHA, "../../catalog/index.json")}}},
     "climbs out"),
    ({"artifacts": {"result": {"bucket": S3.results_bucket,
                               "key": "compliance/store=S1/date=2025-06-02/aisle=A1/x.json"}}},
     "not this upload's result"),
    ({"captured_date": "2025-06-02/../../x"}, "not YYYY-MM-DD"),
    ({"captured_date": "2025-13-40"}, "not YYYY-MM-DD"),
    ({"taken_at": "yesterday"}, "not an ISO 8601 time"),
    ({"taken_at": "2025-06-02T09:14:00"}, "not an ISO 8601 time"),
    ({"photo": {"planogram_id": "../../catalog/index\n"}}, "planogram_id"),
    ({"photo": {"store_format": "x" * 300}}, "store_format"),
    ({"photo": {"display_type": "endcap\u001b[31m"}}, "display_type"),
], ids=["other-bucket", "spoofed-store", "upper-case-sha", "foreign-bucket",
        "another-photos-artifact", "outside-the-photos-prefix", "climbing-key",
        "another-uploads-result", "date-with-a-path", "impossible-date", "time-in-words",
        "time-without-zone", "planogram-id-path", "long-store-format", "escape-in-display"])
def test_forged_or_corrupt_messages_are_refused_saying_why(change: dict[str, Any],
                                                           said: str) -> None:
    with pytest.raises(ForgedMessageError, match=said):
        check_message(message(**change), SETTINGS)


class _RedisAway:
    def set(self, *args: Any, **kwargs: Any) -> None:
        from redis.exceptions import ConnectionError as RedisConnectionError

        raise RedisConnectionError("Connection refused")


def test_a_rollup_that_cannot_be_scheduled_leaves_the_finished_photo_alone(
        caplog: pytest.LogCaptureFixture) -> None:
    from types import SimpleNamespace

    from pipeline.tasks.stages import schedule_aggregate

    # Given a photo whose result is written, and Redis away as its rollup is asked for
    rt = SimpleNamespace(redis=_RedisAway(), settings=SETTINGS)

    # When the rebuild is scheduled, nothing is raised into the stage (which would turn the
    # finished photo into a dead letter): the periodic rollup rebuilds the day
    schedule_aggregate(rt, "2025-06-02")  # type: ignore[arg-type]

    assert "rollup of 2025-06-02 not asked for" in caplog.text


def test_a_redo_from_ingest_forgets_the_photos_marks_and_carries_no_artifact() -> None:
    from types import SimpleNamespace

    from pipeline.errors import ArtifactLostError, ObjectNotFoundError
    from pipeline.storage.ledger import MemoryLedger
    from pipeline.storage.memory import MemoryStore
    from pipeline.tasks.steps import earlier_artifact, redo_from_ingest

    ledger = MemoryLedger()
    for stage, subject in [("ingest", SHA), ("normalize", SHA), ("detect", f"{SHA}:light/11"),
                           ("comply", PHOTO["key"]), ("ingest", OTHER_SHA)]:
        ledger.put(stage, subject, {"done": True})
    rt: Any = SimpleNamespace(ledger=ledger, store=MemoryStore())
    # A read of an earlier stage's artifact that is gone names the photo to redo
    with pytest.raises(ArtifactLostError) as lost:
        earlier_artifact(rt, SHA, S3.artifacts_bucket, artifact_key(SHA, "ingested.jpg"))
    assert lost.value.sha256 == SHA and isinstance(lost.value, ObjectNotFoundError)
    msg = message(model="light/11", recompute=True)
    again = redo_from_ingest(rt, msg, SHA)
    # The photo's own stage marks before comply are gone; the upload's and others' stay
    assert set(ledger.marks) == {("comply", PHOTO["key"]), ("ingest", OTHER_SHA)}
    assert again.artifacts == {} and again.sha256 is None and again.recompute
    assert again.photo == msg.photo


def test_a_copy_dead_lettered_after_the_upload_s_result_leaves_the_result_its_end() -> None:
    # Reconciliation sent an upload round while its first copy was slow; the first wrote
    # the result, then the second failed ("lock never freed", a time limit)
    from pipeline.messages import PhotoRef, StageMessage
    from pipeline.settings import get_settings
    from pipeline.storage.keys import outcome_key
    from pipeline.storage.ledger import MemoryLedger
    from pipeline.storage.memory import MemoryStore
    from pipeline.tasks import steps
    from pipeline.tasks.runtime import Runtime

    class NoRedis:
        def set(self, *args: object, **kw: object) -> bool:
            return True

    rt = Runtime(get_settings(), MemoryStore(), NoRedis(), 0,  # type: ignore[arg-type]
                 MemoryLedger())
    msg = StageMessage(photo=PhotoRef(bucket="raw", key="raw/S1/A1/B1/c1/p.jpg",
                                      version_id="v1"))
    key = outcome_key(msg.photo.upload_id)
    steps.record_outcome(rt, msg, result="s3://results/compliance/x.json")
    steps.record_outcome(rt, msg, dead_letter="0" * 32)
    assert rt.store.get_json(rt.settings.s3.artifacts_bucket, key)["result"] == \
        "s3://results/compliance/x.json"
    other = StageMessage(photo=msg.photo.model_copy(update={"version_id": "v2"}))
    steps.record_outcome(rt, other, dead_letter="1" * 32)  # one with no result: its letter
    assert rt.store.get_json(rt.settings.s3.artifacts_bucket, outcome_key(
        other.photo.upload_id))["dead_letter"] == "1" * 32
