"""The key layout: raw keys parsed, artifact/result/claim keys built safely."""

from __future__ import annotations

import hashlib
import re
from urllib.parse import unquote

import pytest

from pipeline.errors import InvalidKeyError
from pipeline.storage.keys import (
    CameraKey,
    artifact_key,
    check_layout,
    check_result_room,
    claim_key,
    dead_letter_key,
    is_upload,
    parse_raw_key,
    partition_decode,
    partition_value,
    pending_key,
    result_key,
    spellings,
)

SHA = hashlib.sha256(b"shelf photo").hexdigest()


@pytest.mark.parametrize(("key", "expected"), [
    ("raw/store-001/aisle-07/bay-03/cam-2/IMG_0001.jpg",
     CameraKey("store-001", "aisle-07", "bay-03", "cam-2", "IMG_0001.jpg")),
    ("raw/café lyon/a 1/b1/c1/photo 1.jpeg", CameraKey("café lyon", "a 1", "b1", "c1",
                                                       "photo 1.jpeg")),
    ("photos/store-001/aisle-07/bay-03/cam-2/IMG_0001.jpg", None),
    ("RAW/store-001/aisle-07/bay-03/cam-2/IMG_0001.jpg", None),
    ("store-001/raw/aisle-07/bay-03/cam-2/IMG_0001.jpg", None),
    ("raw/store-001/aisle-07/bay-03/IMG_0001.jpg", None),
    ("raw/store-001/aisle-07/bay-03/cam-2/2025-06-02/IMG_0001.jpg",
     CameraKey("store-001", "aisle-07", "bay-03", "cam-2", "2025-06-02/IMG_0001.jpg")),
    ("raw/store-001/aisle-07/bay-03/cam-2/2025-06-02//IMG_0001.jpg",
     CameraKey("store-001", "aisle-07", "bay-03", "cam-2", "2025-06-02//IMG_0001.jpg")),
    ("raw/", None),
    ("", None),
    ("raw/store-001//bay-03/cam-2/IMG_0001.jpg", None),
    ("raw/store-001/aisle-07/bay-03/cam-2/", None),
    ("raw//store-001/aisle-07/bay-03/cam-2", None),
    ("raw/cafe\u0301 lyon/alle\u0301e/b1/c1/e\u0301te\u0301.jpg",  # as a Mac names them
     CameraKey("caf\u00e9 lyon", "all\u00e9e", "b1", "c1", "e\u0301te\u0301.jpg")),
    ("raw/../A1/B1/c1/f.jpg", None),  # a URL or a path reads these as another folder
    ("raw/S1/./B1/c1/f.jpg", None),
    ("raw/S1/A1/B1/c1/../f.jpg", None),
    ("raw/S1/A1/B1/c1/..f.jpg", CameraKey("S1", "A1", "B1", "c1", "..f.jpg")),
], ids=["valid", "valid-spaces-unicode", "wrong-prefix", "prefix-case-differs",
        "prefix-not-first", "too-few-segments", "camera-subfolders", "empty-subfolder",
        "prefix-only", "empty",
        "empty-middle-segment", "trailing-slash", "leading-double-slash",
        "decomposed-accents-composed", "dot-dot-store", "dot-aisle", "dot-dot-in-file-path",
        "dots-in-a-name"])
def test_parse_raw_key(key: str, expected: CameraKey | None) -> None:
    assert parse_raw_key(key) == expected


@pytest.mark.parametrize(("key", "taken"), [
    ("raw/S001/A07/B2/cam-3/IMG_0001.jpg", True),
    ("raw/S001/A07/B2/cam-3/IMG_0001.HEIC", True),  # ingest reads the bytes, says why not
    ("raw/S001/A07/B2/cam-3/shot.webp", True),
    ("raw/S001/A07/B2/cam-3/no-extension", True),
    ("raw/S001/A07/B2/shelf.jpg", True),  # off the layout: taken, then refused with why
    ("raw/S001/A07/B2/cam-3/", False),  # a console's folder marker
    ("raw/S001/A07/B2/cam-3/.DS_Store", False),
    ("raw/S001/A07/B2/cam-3/._IMG_0001.jpg", False),  # macOS resource fork
    ("raw/S001/A07/B2/cam-3/IMG_0001.MOV", False),  # a Live Photo's video
    ("raw/S001/A07/B2/cam-3/IMG_0001.AAE", False),  # an iPhone edit sidecar
    ("raw/S001/A07/B2/cam-3/IMG_0001.jpg.xmp", False),
    ("raw/S001/A07/B2/cam-3/IMG_0001.jpeg", True),
    ("uploads/S001/A07/B2/cam-3/IMG_0001.jpg", False),
])
def test_every_object_under_the_prefix_is_an_upload_but_markers_and_hidden_files(
        key: str, taken: bool) -> None:
    assert is_upload(key) is taken


def test_a_key_off_the_layout_is_refused_saying_the_layout() -> None:
    assert check_layout("raw/S1/A1/B1/c1/f.jpg") == CameraKey("S1", "A1", "B1", "c1", "f.jpg")
    for key in ("raw/S001/A07/B2/shelf.jpg", "raw//S001/A07/B2/cam-3/f.jpg"):
        with pytest.raises(InvalidKeyError) as refused:
            check_layout(key)
        assert "raw/{store}/{aisle}/{bay}/{camera}/{file}" in str(refused.value)


@pytest.mark.parametrize(("key", "expected"), [
    ("planograms/S1/A1/B1.json", ["planograms/S1/A1/B1.json"]),
    ("planograms/S1/all\u00e9e/B1.json",
     ["planograms/S1/all\u00e9e/B1.json", "planograms/S1/alle\u0301e/B1.json"]),
    ("planograms/S1/alle\u0301e/B1.json",
     ["planograms/S1/all\u00e9e/B1.json", "planograms/S1/alle\u0301e/B1.json"]),
    ("planograms/Caf\u00e9/all\u00e9e/B1.json",  # a mix, by folder, between the two
     ["planograms/Caf\u00e9/all\u00e9e/B1.json", "planograms/Caf\u00e9/alle\u0301e/B1.json",
      "planograms/Cafe\u0301/all\u00e9e/B1.json", "planograms/Cafe\u0301/alle\u0301e/B1.json"]),
], ids=["ascii", "composed", "decomposed", "two-folders"])
def test_spellings_of_a_key_composed_first(key: str, expected: list[str]) -> None:
    assert spellings(key) == expected


def test_parse_raw_key_honours_a_custom_prefix() -> None:
    key = "incoming/photos/s1/a1/b1/c1/f.jpg"

    assert parse_raw_key(key, prefix="incoming/photos/") == CameraKey("s1", "a1", "b1", "c1",
                                                                      "f.jpg")
    assert parse_raw_key(key) is None


def test_artifact_key_spreads_by_hash_prefix() -> None:
    assert artifact_key(SHA, "working.jpg") == f"{SHA[:2]}/{SHA}/working.jpg"


@pytest.mark.parametrize("sha", [
    SHA.upper(),
    SHA[:-1] + "G",
    SHA[:-1],
    SHA + "0",
    "",
    "z" * 64,
    SHA[:32] + " " + SHA[33:],
    "../" + SHA[3:],
], ids=["uppercase", "non-hex-char", "too-short", "too-long", "empty", "all-non-hex",
        "embedded-space", "path-traversal"])
def test_artifact_key_rejects_anything_but_lowercase_sha256(sha: str) -> None:
    with pytest.raises(ValueError, match="SHA-256"):
        artifact_key(sha, "working.jpg")


@pytest.mark.parametrize(("value", "expected"), [
    ("store-001", "store-001"),
    ("Store #12 / Lyon", "Store%20%2312%20%2F%20Lyon"),
    ("a=b/c", "a%3Db%2Fc"),
    ("café", "caf%C3%A9"),
    ("../etc", "..%2Fetc"),
    ("///", "%2F%2F%2F"),
    ("unknown", "unknown"),
    ("Магазин", "%D0%9C%D0%B0%D0%B3%D0%B0%D0%B7%D0%B8%D0%BD"),
], ids=["already-safe", "spaces-hash-slash", "equals-and-slash", "non-ascii-encoded",
        "dots-kept-slash-encoded", "only-unsafe", "the-word-unknown", "cyrillic"])
def test_partition_value(value: str, expected: str) -> None:
    assert partition_value(value) == expected
    assert partition_decode(expected) == value


@pytest.mark.parametrize(("one", "other"), [
    ("Магазин", "Лавка"), ("a b", "a_b"), ("a/b", "a_b"), ("A", "a"), ("é", "e"),
    ("%41", "A")])
def test_partition_values_never_collide(one: str, other: str) -> None:
    assert partition_value(one) != partition_value(other)


def test_empty_partition_value_is_refused() -> None:
    with pytest.raises(ValueError):
        partition_value("")


def test_result_key_sanitises_partition_values() -> None:
    # Given store and aisle names full of characters that would break a Hive partition path
    key = result_key(store="Store #12/Lyon", date="2024-05-14", aisle="aisle=7 ?",
                     upload_id=SHA[:32])

    # Then each partition is a single safe segment and the layout holds
    assert key == ("compliance/store=Store%20%2312%2FLyon/date=2024-05-14/"
                   f"aisle=aisle%3D7%20%3F/{SHA[:32]}.json")
    segments = key.split("/")
    assert len(segments) == 5
    for seg in segments[1:4]:
        name, value = seg.split("=")
        assert name in {"store", "date", "aisle"}
        assert re.fullmatch(r"[A-Za-z0-9._%-]+", value), seg


def test_dead_letter_key() -> None:
    assert dead_letter_key("ingest-1a2b") == "dead-letter/ingest-1a2b.json"


def test_claim_key_differs_per_version() -> None:
    a = claim_key("shelf-raw", "raw/s/a/b/c/f.jpg", "v1")
    b = claim_key("shelf-raw", "raw/s/a/b/c/f.jpg", "v2")

    assert a != b
    assert a.startswith("shelf:seen:")


@pytest.mark.parametrize(("one", "other"), [
    (("bkt", "x@y", "z"), ("bkt", "x", "y@z")),
    (("a/b", "c", "v"), ("a", "b/c", "v")),
    (("bkt", "k", "v"), ("other", "k", "v")),
    (("bkt", "photo 1.jpg", "v"), ("bkt", "photo+1.jpg", "v")),
], ids=["at-in-key-vs-version", "slash-in-bucket-vs-key", "bucket-differs", "space-vs-plus"])
def test_claim_key_is_unambiguous(one: tuple[str, str, str], other: tuple[str, str, str]
                                  ) -> None:
    assert claim_key(*one) != claim_key(*other)


def test_claim_key_quotes_bucket_and_key() -> None:
    # Given a key with spaces, separators, non-ASCII and Redis-glob characters
    key = "raw/café lyon/a*1/b?1/c[1]/photo@2x.jpg"

    # When claimed
    claim = claim_key("shelf-raw", key, "3HL4kqtJ")

    # Then the Redis key holds none of them raw, and quoting is reversible
    prefix, rest = claim.split("shelf:seen:", 1)
    assert prefix == ""
    bucket_part, key_and_version = rest.split("/", 1)
    key_part, version = key_and_version.split("@", 1)
    assert bucket_part == "shelf-raw"
    assert version == "3HL4kqtJ"
    assert re.fullmatch(r"[A-Za-z0-9._~%-]+", key_part), key_part
    assert unquote(key_part) == key


@pytest.mark.parametrize(("store", "bay", "refused"), [
    ("S1", "B1", None), ("x" * 900, "B1", None), (" " * 330, "B1", "result"),
    ("магазин" * 30, "B1", "result"), ("a" * 1000, "B1", "result"),
    ("S", "B" * 990, "waiting"),
], ids=["short", "900-plain", "330-spaces", "cyrillic", "1000-plain", "990-byte-bay"])
def test_a_raw_key_whose_result_or_waiting_key_cannot_exist_is_refused_up_front(
        store: str, bay: str, refused: str | None) -> None:
    key = f"raw/{store}/A1/{bay}/c1/p.jpg"
    if len(key.encode()) > 1024:
        pytest.skip("the raw key itself is over S3's limit")
    if refused is None:
        check_result_room(check_layout(key))
        cam = parse_raw_key(key)
        assert cam is not None
        assert len(result_key(store=cam.store, date="2026-12-05", aisle=cam.aisle,
                              upload_id="f" * 32).encode()) <= 1024
        plan = f"planograms/{cam.store}/{cam.aisle}/{cam.bay}.json"
        assert len(pending_key(plan, "f" * 32).encode()) <= 1024
    else:
        with pytest.raises(InvalidKeyError, match=f"its {refused} key"):
            check_result_room(check_layout(key))


@pytest.mark.parametrize("plan", ["planograms/S001/A07/B2.json", "planograms/by-id/PG-7.json",
                                  "planograms/café lyon/a 1/b.1.json"])
def test_a_pending_upload_is_kept_under_the_planogram_it_waits_for(plan: str) -> None:
    from pipeline.storage.keys import pending_key, pending_planogram

    key = pending_key(plan, "0" * 32)

    assert key.startswith("pending/planograms/") and key.endswith("/" + "0" * 32 + ".json")
    assert pending_planogram(key) == plan
    with pytest.raises(ValueError):
        pending_key("elsewhere/B2.json", "0" * 32)


@pytest.mark.parametrize(("prefix", "ok"), [
    ("raw/", True), ("incoming/photos/", True), ("", True),
    ("raw", False), ("/raw/", False),
], ids=["folder", "nested-folder", "whole-bucket", "no-slash", "leading-slash"])
def test_the_raw_prefix_is_a_folder_or_the_whole_bucket(prefix: str, ok: bool) -> None:
    from pydantic import ValidationError

    from pipeline.settings import S3Settings

    if ok:
        assert S3Settings(raw_prefix=prefix).raw_prefix == prefix
    else:
        with pytest.raises(ValidationError, match="is no folder"):
            S3Settings(raw_prefix=prefix)


def test_a_planogram_named_in_mixed_forms_is_found() -> None:
    # A store and aisle typed in a shell (composed), the bay's file named on a Mac
    # (decomposed)
    from pipeline.messages import PhotoRef
    from pipeline.storage.memory import MemoryStore
    from pipeline.storage.planograms import load_planogram

    store = MemoryStore()
    doc = {"planogram_id": "PG-1", "version": 1,
           "shelves": [{"index": 0, "positions": [{"sku": "A"}]}]}
    store.put_json("config", "planograms/Caf\u00e9/\u00c9pices/Ba\u0308y-1.json", doc)
    photo = PhotoRef(bucket="raw", key="raw/Caf\u00e9/\u00c9pices/B\u00e4y-1/c1/f.jpg",
                     store="Caf\u00e9", aisle="\u00c9pices", bay="B\u00e4y-1", camera="c1")

    plan = load_planogram(store, "config", photo)

    assert plan is not None and plan.planogram_id == "PG-1"


@pytest.mark.parametrize(("field", "value"), [
    ("visibility_timeout_s", 0), ("visibility_timeout_s", 50_000), ("max_receive_count", 0)])
def test_sqs_settings_outside_what_sqs_takes_are_refused(field: str, value: int) -> None:
    from pydantic import ValidationError

    from pipeline.settings import SqsSettings

    with pytest.raises(ValidationError):
        SqsSettings(**{field: value})
