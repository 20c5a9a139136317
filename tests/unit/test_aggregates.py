"""A day's rollups read each result once, however often the day is rebuilt."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline.analytics.aggregates import ResultCache
from pipeline.storage.keys import result_key
from pipeline.storage.memory import MemoryStore
from tests.unit.stores import CountingStore

BUCKET = "results"


def _put(store: MemoryStore, shop: str, sha: str, date: str, found: int = 5) -> str:
    key = result_key(store=shop, date=date, aisle="A1", upload_id=sha[:32])
    doc: dict[str, Any] = {
        "sha256": sha, "upload_id": sha[:32], "store": shop, "aisle": "A1", "bay": "B1",
        "camera": "c1", "date": date, "store_format": "standard", "display_type": "gondola",
        "detections": found, "source": {"bucket": "raw", "key": "raw/x.jpg"},
        "completed_at": f"{date}T10:00:00", "compliance": found / 10,
        "products": [{"box": [0, 0, 1, 1], "sku": "S", "brand": "B", "score": 0.9}] * 50,
        "shelves": [{"index": 0, "planned_facings": 10, "found_facings": found,
                     "compliance": found / 10, "detections": found, "out_of_stock": []}]}
    store.put_json(BUCKET, key, doc)
    return key


def test_a_rebuilt_day_reads_only_new_or_rewritten_results() -> None:
    store, cache = CountingStore(), ResultCache()
    a = _put(store, "S1", "a" * 64, "2026-11-20")
    b = _put(store, "S2", "b" * 64, "2026-11-20")
    _put(store, "S1", "c" * 64, "2026-11-19")  # another day: never read for this one
    assert sorted(r.sha256[0] for r in cache.day(store, BUCKET, "2026-11-20")) == ["a", "b"]
    assert sorted(store.gets) == sorted([a, b])

    store.gets.clear()
    c = _put(store, "S3", "d" * 64, "2026-11-20")  # a new photo
    _put(store, "S1", "a" * 64, "2026-11-20", found=9)  # a photo complied again
    got = {r.sha256[0]: r for r in cache.day(store, BUCKET, "2026-11-20")}
    assert sorted(store.gets) == sorted([a, c])
    assert got["a"].shelves[0].found_facings == 9 and set(got) == {"a", "b", "d"}
    assert got["b"].products == []  # kept as much as the rollups read

    store.gets.clear()
    store.delete(BUCKET, b)
    assert {r.sha256[0] for r in cache.day(store, BUCKET, "2026-11-20")} == {"a", "d"}
    assert store.gets == []


def test_a_read_cut_short_keeps_what_it_read() -> None:
    # Given a day of three results and a store that fails (an S3 fault, a time limit) on the
    # third read
    class FailingThird(CountingStore):
        def get_bytes(self, bucket: str, key: str) -> bytes:
            if len(self.gets) == 2:
                self.gets.append(key)
                raise TimeoutError("read cut short")
            return super().get_bytes(bucket, key)

    store, cache = FailingThird(), ResultCache()
    keys = [_put(store, f"S{i}", str(i) * 64, "2026-11-20") for i in range(3)]
    with pytest.raises(TimeoutError):
        cache.day(store, BUCKET, "2026-11-20")
    # When the day is read again, then only the result not read yet is read
    store.gets.clear()
    assert len(cache.day(store, BUCKET, "2026-11-20")) == 3
    assert len(store.gets) == 1 and store.gets[0] in keys


def test_a_result_s3_will_not_give_is_left_out_not_fatal_to_its_day() -> None:
    from pipeline.errors import PermanentError

    # Given a day of three results, one of which S3 refuses for good (a key it may not
    # decrypt)
    class Refusing(CountingStore):
        def get_bytes(self, bucket: str, key: str) -> bytes:
            if key == refused:
                raise PermanentError("AccessDenied")
            return super().get_bytes(bucket, key)

    store = Refusing()
    keys = [_put(store, f"S{i}", str(i) * 64, "2026-11-20") for i in range(3)]
    refused = keys[1]
    # Then the day reads the two others
    got = ResultCache().day(store, BUCKET, "2026-11-20")
    assert sorted(r.store for r in got) == ["S0", "S2"]


def test_a_listing_that_names_a_result_s3_does_not_hold_is_listed_again() -> None:
    from pipeline.errors import TransientError

    # Given a day of three results, and a listing of it damaged on its way: a bit flipped
    # in the second's key, which names no object while the result goes unlisted
    class DamagedOnce(CountingStore):
        damaged = True

        def list_objects(self, bucket: str, prefix: str) -> Any:
            for key, etag in super().list_objects(bucket, prefix):
                if key == keys[1] and self.damaged:
                    self.damaged = False
                    key = key[:-8] + chr(ord(key[-8]) ^ 4) + key[-7:]
                yield key, etag

    store, cache = DamagedOnce(), ResultCache()
    keys = [_put(store, f"S{i}", str(i) * 64, "2026-11-20") for i in range(3)]
    # When the day is rolled up, then it is not rolled up without that photo: the fault may
    # pass, and the day read again (its retry) has all three, reading only those not read
    with pytest.raises(TransientError, match="listed but is not in S3"):
        cache.day(store, BUCKET, "2026-11-20")
    store.gets.clear()
    assert sorted(r.store for r in cache.day(store, BUCKET, "2026-11-20")) == ["S0", "S1", "S2"]
    assert store.gets == keys[1:]


@pytest.mark.parametrize(("code", "transient"), [
    ("ExpiredToken", True), ("SlowDown", True), ("KMS.DisabledException", True),
    ("NoSuchBucket", True), ("AccessDenied", False), ("NoSuchKey", False),
    # a body damaged or cut on its way to S3: sent again, it arrives whole
    ("BadDigest", True), ("XAmzContentChecksumMismatch", True), ("IncompleteBody", True)])
def test_s3_errors_that_may_pass_are_transient(code: str, transient: bool) -> None:
    from botocore.exceptions import ClientError

    from pipeline.errors import TransientError
    from pipeline.storage.s3 import translate

    status = {"NoSuchBucket": 404, "NoSuchKey": 404, "AccessDenied": 403, "SlowDown": 503}
    exc = ClientError({"Error": {"Code": code, "Message": "m"},
                       "ResponseMetadata": {"HTTPStatusCode": status.get(code, 400)}},
                      "GetObject")
    assert isinstance(translate(exc, "get"), TransientError) is transient


@pytest.mark.parametrize("listing", ["objects", "versions"])
def test_a_listing_that_goes_round_in_a_cycle_stops_as_a_transient_fault(listing: str) -> None:
    import boto3
    from botocore.stub import Stubber

    from pipeline.errors import TransientError
    from pipeline.storage.s3 import ObjectStore

    # Given an S3 endpoint whose listing hands back page tokens A, B, then A again
    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="k",
                          aws_secret_access_key="s")
    stub = Stubber(client)
    for i, token in enumerate(["A", "B", "A", "B"]):
        if listing == "objects":
            stub.add_response("list_objects_v2", {
                "Contents": [{"Key": f"raw/{i}.jpg"}], "IsTruncated": True,
                "NextContinuationToken": token})
        else:
            stub.add_response("list_object_versions", {
                "Versions": [{"Key": f"raw/{i}.jpg", "VersionId": "v",
                              "LastModified": datetime(2026, 11, 20, tzinfo=UTC)}],
                "IsTruncated": True,
                "NextKeyMarker": f"raw/{token}", "NextVersionIdMarker": token})
    store = ObjectStore(client)
    listed: list[str] = []
    # Then the listing stops, saying why, at the page that hands back a token seen before
    with stub, pytest.raises(TransientError, match="cycle"):
        if listing == "objects":
            listed.extend(store.list_keys("b", "raw/"))
        else:
            listed.extend(str(v["Key"]) for v in store.list_versions("b", "raw/"))
    assert listed == ["raw/0.jpg", "raw/1.jpg"]


def test_a_version_listing_damaged_into_a_time_without_a_zone_is_a_transient_fault() -> None:
    import boto3
    from botocore.stub import Stubber

    from pipeline.errors import TransientError
    from pipeline.storage.s3 import ObjectStore

    # Given a listing whose second entry's time lost its zone on the way (a bit flipped in
    # its "Z": dateutil reads a time in an unknown zone as one in none)
    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="k",
                          aws_secret_access_key="s")
    stub = Stubber(client)
    stub.add_response("list_object_versions", {"Versions": [
        {"Key": "raw/0.jpg", "VersionId": "v", "LastModified": datetime(2026, 11, 20, tzinfo=UTC)},
        {"Key": "raw/1.jpg", "VersionId": "v", "LastModified": datetime(2026, 11, 20)}]})
    listed: list[str] = []
    # Then the listing stops there as a fault that may pass, not one reconciliation trips on
    # when it compares the time with its window's
    with stub, pytest.raises(TransientError, match="no zone"):
        listed.extend(str(v["Key"]) for v in ObjectStore(client).list_versions("b", "raw/"))
    assert listed == ["raw/0.jpg"]


@pytest.mark.parametrize("damage", [
    {"products": [{"box": [float("nan"), 0, 5, 5], "sku": "S", "brand": "B", "score": 0.9}]},
    {"products": [{"box": [0, 0, 1e30, 5], "sku": "S", "brand": "B", "score": 0.9}]},
    {"products": [{"box": [1, 2, 3], "sku": "S", "brand": "B", "score": 0.9}]},
    {"compliance": float("nan")},
    {"compliance": 1.5},
], ids=["nan-box", "huge-box", "three-numbers", "nan-compliance", "over-one"])
def test_a_result_no_photo_could_have_is_left_out_of_its_day(
        damage: dict[str, Any]) -> None:
    import json

    from pipeline.analytics.aggregates import read_results

    # Given a day of two results, one hand-edited or damaged into numbers no photo has
    store = MemoryStore()
    _put(store, "S1", "a" * 64, "2026-11-20")
    bad = _put(store, "S1", "b" * 64, "2026-11-20")
    doc = json.loads(store.get_bytes(BUCKET, bad)) | damage
    store.put_bytes(BUCKET, bad, json.dumps(doc).encode(), "application/json")
    # Then the day reads the other (a report drawing its boxes stopped at the bad one)
    results = read_results(store, BUCKET, "compliance/")
    assert [r.sha256[0] for r in results] == ["a"]
