"""Reading what a listing names when the listing is stale or was damaged on its way: every
object S3 holds is read once, none is left out for a key that names nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from pipeline.errors import TransientError
from pipeline.messages import DeadLetter, PhotoRef, StageMessage
from pipeline.operations import recompute_pending
from pipeline.settings import Settings
from pipeline.storage.catalog import CatalogEntry, CatalogStore, Signature
from pipeline.storage.keys import dead_letter_key, pending_key
from pipeline.tasks.deadletter import read_letters
from tests.unit.stores import ListingStore

B = "bucket"
KEYS = [f"docs/{n}.json" for n in range(5)]


def _store(**kw: object) -> ListingStore:
    store = ListingStore()
    for n, key in enumerate(KEYS):
        store.put_json(B, key, {"n": n})
    for name, value in kw.items():
        setattr(store, name, value)
    return store


@pytest.mark.parametrize(("damage", "vanish", "listings", "read"), [
    # a whole listing: read once
    ({}, set(), 1, KEYS),
    # a key damaged in the first listing: listed again, the object it named is read
    ({"docs/2.json": "docs/2.jsoN"}, set(), 2, KEYS),
    # two damaged, one of them into another listed key (read once, not twice)
    ({"docs/1.json": "docs/3.json", "docs/4.json": "dOcs/4.json"}, set(), 2, KEYS),
    # an object deleted between its listing and its reading: gone, not an error
    ({}, {"docs/0.json"}, 2, KEYS[1:]),
])
def test_every_object_s3_holds_is_read_once(damage: dict[str, str], vanish: set[str],
                                            listings: int, read: list[str]) -> None:
    store = _store(damage=damage, vanish=vanish)
    got = list(store.read_listed(B, "docs/", lambda k: store.get_json(B, k)["n"]))
    assert sorted(k for k, _ in got) == read
    assert all(KEYS[n] == k for k, n in got)
    assert store.listings == listings


def test_listings_that_keep_naming_nothing_are_a_fault_that_may_pass() -> None:
    store = _store(damage={"docs/2.json": "docs/2.jsoN"}, damage_times=3)
    with pytest.raises(TransientError, match="3 listings in a row"):
        list(store.read_listed(B, "docs/", lambda k: store.get_json(B, k)))
    # the next run, its listing whole, reads them all
    assert len(list(store.read_listed(B, "docs/", lambda k: store.get_json(B, k)))) == 5


def _dead_letter(n: int) -> DeadLetter:
    photo = PhotoRef(bucket=Settings().s3.raw_bucket, key=f"raw/S1/A1/B1/c1/p{n}.jpg",
                     version_id=f"v{n}", store="S1", aisle="A1", bay="B1", camera="c1")
    return DeadLetter(id=f"ingest-{n:016x}", stage="ingest", error_type="CorruptImageError",
                      error="not a JPEG", attempts=1, failed_at=datetime.now(UTC),
                      message=StageMessage(photo=photo, sha256=f"{n:064x}"))


def test_dead_letters_listed_with_a_damaged_key_are_all_read() -> None:
    store = ListingStore()
    for n in range(4):
        store.put_json(B, dead_letter_key(_dead_letter(n).id),
                       _dead_letter(n).model_dump(mode="json"))
    first = dead_letter_key(_dead_letter(1).id)
    store.damage = {first: first.replace("ingest-", "ingesu-")}
    seen: set[str] = set()
    letters = list(read_letters(store, B, seen=seen))
    assert sorted(d.id for d in letters) == sorted(_dead_letter(n).id for n in range(4))
    assert seen == {dead_letter_key(_dead_letter(n).id) for n in range(4)}


def test_a_catalog_entry_removed_or_damaged_while_listed_does_not_fail_the_index() -> None:
    store = ListingStore()
    catalog = CatalogStore(store, B)
    sig = Signature(source="catalog/images/x/0.png", embedding=[1.0], colour=[1.0], aspect=1.0)
    for sku in ("A", "B", "C"):
        catalog.put(CatalogEntry(sku=sku, embedder="e", signatures=[sig],
                                 added_at=datetime.now(UTC)), reindex=False)
    store.damage = {"catalog/skus/B.json": "catalog/skus/C.json"}
    store.vanish = {"catalog/skus/A.json"}
    assert [e.sku for e in catalog.entries()] == ["B", "C"]


def test_an_upload_complied_while_recompute_listed_it_is_left_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[StageMessage] = []
    monkeypatch.setattr("pipeline.tasks.stages.send_stage", lambda stage, msg: sent.append(msg))
    s, store = Settings(), ListingStore()
    keys = []
    for n in (1, 2):
        m = _dead_letter(n).message
        keys.append(pending_key("planograms/S1/A1/B1.json", m.photo.upload_id))
        store.put_json(s.s3.artifacts_bucket, keys[-1], m.model_dump(mode="json"))
    store.put_bytes(s.s3.config_bucket, "planograms/S1/A1/B1.json", json.dumps(
        {"planogram_id": "PG-1", "version": 1,
         "shelves": [{"index": 0, "positions": [{"sku": "A", "facings": 2}]}]}).encode(),
        "application/json")
    store.vanish = {keys[0]}  # complied, its pending copy removed, after the listing
    assert recompute_pending(s, store) == 1
    assert [m.photo.key for m in sent] == ["raw/S1/A1/B1/c1/p2.jpg"]


def test_a_packshot_added_while_the_listing_is_damaged_overwrites_none_stored() -> None:
    import cv2

    from pipeline.core.packshot import Cutout
    from pipeline.detect.embedder import Embedder
    from pipeline.detect.recognizer import Recognizer, weights_from
    from pipeline.synth.catalog import CATALOG, draw_packshot
    from pipeline.synth.enrol import on_white

    def png(i: int) -> bytes:
        image, mask = draw_packshot(CATALOG[i], 120)
        return bytes(cv2.imencode(".png", on_white(Cutout(image, mask)))[1].tobytes())

    s = Settings()
    store = ListingStore()
    recognizer = Recognizer(Embedder.from_dir(s.models.root, s.recognition.embedder,
                                              device="cpu"),
                            CatalogStore(store, B), weights_from(s.recognition))
    recognizer.enrol("A", [("front.png", png(0))], brand=None, name=None)
    stored = store.get_bytes(B, "catalog/images/A/0.png")
    # the next listing of the SKU's packshots names 0.png damaged, as 1.png
    store.damage, store.listings = {"catalog/images/A/0.png": "catalog/images/A/1.png"}, 0
    entry = recognizer.enrol("A", [("side.png", png(1))], brand=None, name=None)
    assert store.get_bytes(B, "catalog/images/A/0.png") == stored
    assert {sig.source for sig in entry.signatures} == {"catalog/images/A/0.png",
                                                        "catalog/images/A/2.png"}


@pytest.mark.parametrize("listing", ["objects", "folders", "versions"])
def test_a_listing_naming_a_key_outside_its_prefix_is_a_damaged_one(listing: str) -> None:
    import boto3
    from botocore.stub import Stubber

    from pipeline.storage.s3 import ObjectStore

    # Given a listing of one SKU's packshots whose second entry names another SKU's (a bit
    # flipped on the way: "SKU-001" and "SKU-003" differ by one)
    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="k",
                          aws_secret_access_key="s")
    stub = Stubber(client)
    prefix = "catalog/images/SKU-001/"
    keys = [f"{prefix}0.png", "catalog/images/SKU-003/1.png"]
    when = datetime(2026, 12, 7, tzinfo=UTC)
    store = ObjectStore(client)
    calls = {
        "objects": ("list_objects_v2", {"Contents": [{"Key": k} for k in keys]},
                    lambda: list(store.list_keys("b", prefix))),
        "folders": ("list_objects_v2", {"CommonPrefixes": [{"Prefix": k + "/"} for k in keys]},
                    lambda: list(store.list_prefixes("b", prefix))),
        "versions": ("list_object_versions", {"Versions": [
            {"Key": k, "VersionId": "v", "LastModified": when} for k in keys]},
            lambda: list(store.list_versions("b", prefix)))}
    operation, response, run = calls[listing]
    stub.add_response(operation, response)
    # Then it is a damaged listing, a fault that may pass, and nothing acts on that entry
    with stub, pytest.raises(TransientError, match="outside the prefix"):
        run()
