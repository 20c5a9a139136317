"""Object versions in the real (LocalStack) S3: what reconciliation lists."""

from __future__ import annotations

import uuid

from tests.conftest import Stack


def test_versions_of_a_deleted_object_are_listed_as_deleted(stack: Stack) -> None:
    raw = stack.settings.s3.raw_bucket
    prefix = f"raw/S7/A1/B1/c1/{uuid.uuid4().hex}/"
    for name in ("kept.jpg", "gone.jpg"):
        stack.s3.put_object(Bucket=raw, Key=prefix + name, Body=b"jpg")
    stack.s3.delete_object(Bucket=raw, Key=prefix + "gone.jpg")  # a delete marker on top

    listed = {v["Key"].removeprefix(prefix): v["Deleted"]
              for v in stack.store.list_versions(raw, prefix)}

    assert listed == {"kept.jpg": False, "gone.jpg": True}


def _flip(text: str, at: int) -> str:
    """``text`` with one bit of its character ``at`` flipped, as a damaging link does."""
    return text[:at] + chr(ord(text[at]) ^ 2) + text[at + 1:]


def test_reconciliation_sends_round_what_s3_holds_not_what_a_damaged_listing_says(
        stack: Stack) -> None:
    from datetime import UTC, datetime, timedelta
    from typing import Any

    from pipeline.messages import StageMessage
    from pipeline.operations import reconcile

    # Given three uploads with no end on record, and a listing of them damaged on its way:
    # a bit flipped in the first's key, the second's version id and the third's ETag
    raw = stack.settings.s3.raw_bucket
    prefix = f"raw/S7/A1/B1/c1/{uuid.uuid4().hex}/"
    held = {}
    for name in ("p0.jpg", "p1.jpg", "p2.jpg"):
        put = stack.s3.put_object(Bucket=raw, Key=prefix + name, Body=name.encode() * 100)
        held[name] = (put["VersionId"], put["ETag"].strip('"'))
    damage = {"p0.jpg": "Key", "p1.jpg": "VersionId", "p2.jpg": "ETag"}

    class DamagedListing:  # the real store, its listing of these uploads damaged
        def __getattr__(self, name: str) -> Any:
            return getattr(stack.store, name)

        def list_versions(self, bucket: str, prefix_: str) -> Any:
            for v in stack.store.list_versions(bucket, prefix):
                field = damage[v["Key"].removeprefix(prefix)]
                yield {**v, field: _flip(str(v[field]), len(str(v[field])) - 3)}

    sent: list[StageMessage] = []
    # When reconciliation runs over it
    r = reconcile(stack.settings, DamagedListing(),  # type: ignore[arg-type]
                  since=datetime.now(UTC) - timedelta(hours=1), grace_s=0,
                  enqueue=sent.append)

    # Then the two entries S3 holds no object for are left to the next run's listing, and
    # the third is sent round as S3 holds it: its own version and ETag
    assert (r.scanned, r.vanished, r.requeued) == (3, 2, 1)
    assert [(m.photo.key, m.photo.version_id, m.photo.etag) for m in sent] == [
        (prefix + "p2.jpg", *held["p2.jpg"])]
    assert sent[0].photo.size == 600
