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

    # Given uploads with no end on record, and a listing of them damaged on its way: a bit
    # flipped in the first's key, the second's version id and the third's ETag
    raw = stack.settings.s3.raw_bucket
    prefix = f"raw/S7/A1/B1/c1/{uuid.uuid4().hex}/"
    held = {}
    for name in ("p0.jpg", "p1.jpg", "p2.jpg", "p3.jpg"):
        put = stack.s3.put_object(Bucket=raw, Key=prefix + name, Body=name.encode() * 100)
        held[name] = (put["VersionId"], put["ETag"].strip('"'))
    # and a fourth deleted since, the delete marker on top of it lost from the listing
    stack.s3.delete_object(Bucket=raw, Key=prefix + "p3.jpg")
    damage = {"p0.jpg": "Key", "p1.jpg": "VersionId", "p2.jpg": "ETag", "p3.jpg": "Deleted"}

    class DamagedListing:  # the real store, its listing of these uploads damaged
        def __getattr__(self, name: str) -> Any:
            return getattr(stack.store, name)

        def list_versions(self, bucket: str, prefix_: str) -> Any:
            for v in stack.store.list_versions(bucket, prefix):
                field = damage[v["Key"].removeprefix(prefix)]
                yield {**v, field: False if field == "Deleted" else
                       _flip(str(v[field]), len(str(v[field])) - 3)}

    sent: list[StageMessage] = []
    # When reconciliation runs over it
    r = reconcile(stack.settings, DamagedListing(),  # type: ignore[arg-type]
                  since=datetime.now(UTC) - timedelta(hours=1), grace_s=0,
                  enqueue=sent.append)

    # Then the two entries S3 holds no object for are left to the next run's listing, the
    # deleted one is left alone (S3 answers 404 for its key), and the third is sent round
    # as S3 holds it: its own version and ETag
    assert (r.scanned, r.vanished, r.ignored, r.requeued) == (4, 2, 1, 1)
    assert [(m.photo.key, m.photo.version_id, m.photo.etag) for m in sent] == [
        (prefix + "p2.jpg", *held["p2.jpg"])]
    assert sent[0].photo.size == 600


def test_reconciliation_over_a_link_that_damages_listings_sends_round_only_what_s3_holds(
        stack: Stack) -> None:
    import random
    from collections import Counter
    from datetime import UTC, datetime, timedelta

    from pipeline.chaos import Faults, start_proxy
    from pipeline.errors import TransientError
    from pipeline.messages import StageMessage
    from pipeline.operations import reconcile
    from pipeline.storage.s3 import ObjectStore, make_client

    # Given three uploads with no end on record under a prefix of their own, and S3 reached
    # through a link that flips one bit of every listing of object versions
    s3 = stack.settings.s3
    prefix = f"fuzz{uuid.uuid4().hex[:8]}/"
    held = set()
    for n in range(3):
        key = f"{prefix}S7/A1/B1/c1/p{n}.jpg"
        put = stack.s3.put_object(Bucket=s3.raw_bucket, Key=key, Body=b"jpg" * (n + 1))
        held.add((key, put["VersionId"], put["ETag"].strip('"'), 3 * (n + 1)))
    random.seed(7)
    proxy, url = start_proxy(stack.settings.aws.endpoint_url,
                             Faults(error_rate=0, throttle_rate=0, latency_rate=0,
                                    listing_damage_rate=1.0))
    settings = stack.settings.model_copy(update={
        "s3": s3.model_copy(update={"raw_prefix": prefix}),
        "aws": stack.settings.aws.model_copy(update={"endpoint_url": url})})
    store = ObjectStore(make_client(settings.aws, "s3"))
    since = datetime.now(UTC) - timedelta(hours=1)
    seen: Counter[str] = Counter()
    try:
        # When reconciliation runs again and again
        for _ in range(120):
            sent: list[StageMessage] = []
            try:
                r = reconcile(settings, store, since=since, grace_s=0, enqueue=sent.append)
            except TransientError:  # what it cannot read is a fault that may pass
                seen["listing unreadable"] += 1
                continue
            # Then each run that read its listing sends round only uploads S3 holds, as it
            # holds them: never an entry damaged on the way
            got = {(m.photo.key, m.photo.version_id, m.photo.etag, m.photo.size) for m in sent}
            assert got <= held
            seen["all sent round" if got == held else "some left to the next run"] += 1
            seen["vanished"] += r.vanished
    finally:
        proxy.shutdown()
    # And every kind of outcome happened
    assert proxy.faults.served["damaged listings"] >= 120
    assert seen["listing unreadable"] and seen["all sent round"] and seen["vanished"], seen
