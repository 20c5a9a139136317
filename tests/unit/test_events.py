"""S3 event notifications in SQS bodies: parsing, key decoding, versions, envelopes, errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline.errors import PermanentError
from pipeline.listeners.events import MalformedEventError, S3Record, parse_body, parse_message

BUCKET = "shelf-raw-eu"


def s3_record(*, key: str = "raw/store-001/aisle-07/bay-03/cam-2/IMG_0001.jpg",
              version_id: str | None = "3HL4kqtJlcpXroDTDmjVBH40Nrjfkd",
              etag: str | None = "0123456789abcdef0123456789abcdef",
              sequencer: str | None = "0055AED6DCD90281E5",
              event_name: str = "ObjectCreated:Put") -> dict[str, Any]:
    """One record shaped as S3 sends it (optional object fields left out when None)."""
    obj: dict[str, Any] = {"key": key, "size": 1843221}
    if etag is not None:
        obj["eTag"] = etag
    if version_id is not None:
        obj["versionId"] = version_id
    if sequencer is not None:
        obj["sequencer"] = sequencer
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "eu-west-1",
        "eventTime": "2024-05-14T08:31:07.215Z",
        "eventName": event_name,
        "userIdentity": {"principalId": "AWS:AIDAJDPLRKLG7UEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "203.0.113.17"},
        "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810",
                             "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMU"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "raw-photo-created",
            "bucket": {"name": BUCKET, "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                       "arn": f"arn:aws:s3:::{BUCKET}"},
            "object": obj,
        },
    }


def body(*records: dict[str, Any]) -> str:
    return json.dumps({"Records": list(records)})


def sns_envelope(message: str) -> str:
    return json.dumps({
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": "arn:aws:sns:eu-west-1:123456789012:shelf-raw-events",
        "Subject": "Amazon S3 Notification",
        "Message": message,
        "Timestamp": "2024-05-14T08:31:07.512Z",
        "SignatureVersion": "1",
    })


def test_put_record_parses_bucket_key_event_and_time() -> None:
    # Given an SQS body holding one ObjectCreated:Put record, exactly as S3 delivers it
    raw = body(s3_record())

    # When it is parsed
    records = parse_body(raw)

    # Then one record comes back with the fields the listener needs
    assert len(records) == 1
    rec = records[0]
    assert isinstance(rec, S3Record)
    assert rec.bucket == BUCKET
    assert rec.key == "raw/store-001/aisle-07/bay-03/cam-2/IMG_0001.jpg"
    assert rec.event_name == "ObjectCreated:Put"
    assert rec.event_time == datetime(2024, 5, 14, 8, 31, 7, 215000, tzinfo=UTC)
    assert rec.s3.object.size == 1843221


@pytest.mark.parametrize(("sent", "expected"), [
    ("2024-05-14T08:31:07Z", datetime(2024, 5, 14, 8, 31, 7, tzinfo=UTC)),
    ("2024-05-14T10:31:07+02:00", datetime(2024, 5, 14, 8, 31, 7, tzinfo=UTC)),
    ("2024-05-14T08:31:07", datetime(2024, 5, 14, 8, 31, 7, tzinfo=UTC)),  # no zone: UTC
    ("0001-01-01T00:00:00Z", None),  # before S3 existed
    ("9999-12-31T23:59:59Z", None),  # years ahead
], ids=["utc", "offset", "naive", "year-1", "year-9999"])
def test_event_time_is_aware_and_credible_or_absent(sent: str, expected: datetime | None
                                                    ) -> None:
    # Given a record whose event time a client or proxy mangled
    record = s3_record()
    record["eventTime"] = sent

    # When it is parsed, the record stands (the photo is as good as any) and its time is
    # one the stages can compare with a photo's capture time, or none
    rec = parse_body(body(record))[0]

    assert rec.event_time == expected
    assert rec.event_time is None or rec.event_time.tzinfo is not None


def test_several_records_keep_their_order() -> None:
    raw = body(s3_record(key="raw/s/a/b/c/one.jpg"), s3_record(key="raw/s/a/b/c/two.jpg"))

    assert [r.key for r in parse_body(raw)] == ["raw/s/a/b/c/one.jpg", "raw/s/a/b/c/two.jpg"]


@pytest.mark.parametrize(("encoded", "decoded"), [
    ("raw/store-001/aisle+7/bay-3/cam-2/shelf+photo.jpg",
     "raw/store-001/aisle 7/bay-3/cam-2/shelf photo.jpg"),
    ("raw/caf%C3%A9-lyon/a1/b1/c1/p%C3%AAche.jpg", "raw/café-lyon/a1/b1/c1/pêche.jpg"),
    ("raw/s/a/b/c/1%2B1%3D2.jpg", "raw/s/a/b/c/1+1=2.jpg"),
    ("raw/s/a/b/c/plain.jpg", "raw/s/a/b/c/plain.jpg"),
], ids=["plus-is-space", "utf8-percent", "encoded-plus-stays-plus", "nothing-encoded"])
def test_key_is_url_decoded(encoded: str, decoded: str) -> None:
    (rec,) = parse_body(body(s3_record(key=encoded)))

    assert rec.key == decoded
    assert rec.s3.object.key == encoded  # the raw field keeps what S3 sent


@pytest.mark.parametrize(("version_id", "etag", "sequencer", "expected"), [
    ("3HL4kqtJlcpXroDTDmjVBH40Nrjfkd", "abc123", "0055AED6DCD90281E5",
     "3HL4kqtJlcpXroDTDmjVBH40Nrjfkd"),
    (None, "abc123", "0055AED6DCD90281E5", "abc123"),
    (None, '"abc123"', "0055AED6DCD90281E5", "abc123"),
    (None, "d41d8cd98f00b204e9800998ecf8427e-3", None, "d41d8cd98f00b204e9800998ecf8427e-3"),
    (None, None, "0055AED6DCD90281E5", "0055AED6DCD90281E5"),
    (None, "", "0055AED6DCD90281E5", "0055AED6DCD90281E5"),
    (None, None, None, "unversioned"),
], ids=["version-id-first", "etag-without-version", "etag-quotes-stripped",
        "multipart-etag", "sequencer-last", "empty-etag-skipped", "nothing-at-all"])
def test_version_preference(version_id: str | None, etag: str | None, sequencer: str | None,
                            expected: str) -> None:
    (rec,) = parse_body(body(s3_record(version_id=version_id, etag=etag, sequencer=sequencer)))

    assert rec.version == expected


def test_test_event_yields_no_records() -> None:
    # Given the s3:TestEvent S3 sends when a notification configuration is saved
    raw = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent",
                      "Time": "2024-05-14T08:00:00.000Z", "Bucket": BUCKET,
                      "RequestId": "5582815E1AEA5ADF", "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3"})

    # Then it is acknowledged as carrying nothing, not rejected
    assert parse_body(raw) == []


def test_sns_envelope_is_unwrapped() -> None:
    # Given S3 -> SNS -> SQS: the S3 notification is a JSON string inside the SNS envelope
    raw = sns_envelope(body(s3_record(key="raw/s/a/b/c/via+sns.jpg")))

    # When parsed
    (rec,) = parse_body(raw)

    # Then the inner record comes out as if it had been delivered directly
    assert rec.bucket == BUCKET
    assert rec.key == "raw/s/a/b/c/via sns.jpg"


def test_sns_wrapped_test_event_yields_no_records() -> None:
    assert parse_body(sns_envelope(json.dumps({"Event": "s3:TestEvent"}))) == []


def test_sns_envelope_around_garbage_is_malformed() -> None:
    with pytest.raises(MalformedEventError):
        parse_body(sns_envelope("this is not json"))


def test_empty_records_list_is_no_records() -> None:
    assert parse_body(json.dumps({"Records": []})) == []


def _dropped(doc: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """``doc`` with the field at ``path`` removed."""
    node = doc
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    return doc


def _without(path: tuple[str, ...]) -> str:
    return body(_dropped(s3_record(), path))


def _with(path: tuple[str, ...], value: Any) -> str:
    rec = s3_record()
    node: dict[str, Any] = rec
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return body(rec)


@pytest.mark.parametrize("raw", [
    "",
    "not json at all",
    '{"Records": [',
    json.dumps([s3_record()]),
    json.dumps("Records"),
    json.dumps(42),
    "null",
    json.dumps({}),
    json.dumps({"Message": "hello"}),
    json.dumps({"Records": "raw/s/a/b/c/f.jpg"}),
    json.dumps({"Records": [42]}),
    json.dumps({"Records": None}),
    _without(("s3",)),
    _without(("eventName",)),
    _without(("s3", "bucket", "name")),
    _without(("s3", "object", "key")),
    _with(("s3", "object", "key"), 12345),
    _with(("s3", "object", "size"), "big"),
    _with(("s3", "bucket"), "shelf-raw-eu"),
], ids=["empty", "not-json", "truncated-json", "json-list", "json-string", "json-number",
        "json-null", "empty-object", "no-records-key", "records-a-string", "record-a-number",
        "records-null", "no-s3", "no-event-name", "no-bucket-name", "no-object-key",
        "key-a-number", "size-not-int", "bucket-a-string"])
def test_malformed_bodies_raise_permanent_error(raw: str) -> None:
    with pytest.raises(MalformedEventError) as info:
        parse_body(raw)

    # A PermanentError: the listener must dead-letter it, never retry
    assert isinstance(info.value, PermanentError)


@pytest.mark.parametrize(("raw", "message"), [
    ("[" * 100_000, "nested too deeply|not JSON"),
    ('{"a":' * 20_000 + "1" + "}" * 20_000, "nested too deeply|not JSON"),
    (json.dumps({"Records": [s3_record()] * 101}), "exceed the cap"),
    (json.dumps({"Records": [s3_record()], "pad": "x" * 300_000}), "exceeds"),
    (sns_envelope(sns_envelope(body(s3_record()))), "SNS envelope inside"),
    ("\ud800", "not JSON"),
    (json.dumps({"Records": [{**s3_record(), "x": json.loads("[" * 40 + "]" * 40)}]}),
     "nested more than 32 deep"),
    # records beside another shape's marker: read as that shape, they were thrown away
    (json.dumps({"Event": "s3:TestEvent", "Records": [s3_record()]}),
     "s3:TestEvent and Records at once"),
    (json.dumps({"Type": "Notification", "Message": json.dumps({"Event": "s3:TestEvent"}),
                 "Records": [s3_record()]}), "SNS envelope and Records at once"),
    (json.dumps({"source": "aws.s3", "detail-type": "Object Created", "detail": {},
                 "Records": [s3_record()]}), "EventBridge event and Records at once"),
], ids=["deep-list", "deep-object", "too-many-records", "huge-body", "nested-envelopes",
        "lone-surrogate-body", "deep-record-field", "test-event-and-records",
        "sns-and-records", "eventbridge-and-records"])
def test_hostile_bodies_are_malformed_not_crashes(raw: str, message: str) -> None:
    with pytest.raises(MalformedEventError, match=message):
        parse_body(raw)


@pytest.mark.parametrize(("key", "ok"), [
    ("raw/S1/A1/B1/c1/ü photo.jpg", True),
    ("raw/S1/A1/B1/c1/%2F..%2Fx.jpg", True),
    ("raw/S1/A1/B1/c1/\ud800.jpg", False),
    ("raw/S1/A1/B1/c1/a\x00b.jpg", False),
    ("raw/S1/A1/B1/c1/a\nb.jpg", False),
    ("raw/" + "x" * 1100 + ".jpg", False),
    ("", False),
    ("raw/S1\u009b2J/A1/B1/c1/x.jpg", False),  # a terminal's one-character escape (CSI)
    ("raw/S1/A1\u202e/B1/c1/x.jpg", False),  # reverses how what follows reads
    ("raw/S1\u00a0Nord/A1/B1/c1/x.jpg", True),  # a no-break space, as a Mac may write
], ids=["unicode", "encoded-slash", "lone-surrogate", "nul", "newline", "too-long", "empty",
        "c1-control", "direction-override", "no-break-space"])
def test_check_key(key: str, ok: bool) -> None:
    from pipeline.errors import InvalidKeyError
    from pipeline.listeners.events import check_key

    if ok:
        assert check_key(key) == key
    else:
        with pytest.raises(InvalidKeyError):
            check_key(key)


def test_surrogate_in_event_key_parses_then_is_refused() -> None:
    from pipeline.errors import InvalidKeyError
    from pipeline.listeners.events import check_key

    (rec,) = parse_body(body(s3_record(key="raw/S1/A1/B1/c1/%ED%A0%80x.jpg")))
    rec2 = parse_body('{"Records": [' + json.dumps(s3_record()).replace(
        "IMG_0001.jpg", "\\ud800.jpg") + "]}")[0]
    with pytest.raises(InvalidKeyError):
        check_key(rec2.key)
    # Undecodable percent-escapes are refused as such, not read as another key's U+FFFD
    with pytest.raises(InvalidKeyError, match="not valid Unicode"):
        check_key(rec.key)
    (ok,) = parse_body(body(s3_record(key="raw/S1/A1/B1/c1/%EF%BF%BDx.jpg")))
    assert check_key(ok.key) == "raw/S1/A1/B1/c1/\ufffdx.jpg"  # U+FFFD itself is a name


@pytest.mark.parametrize(("metadata", "expected"), [
    ({}, ("standard", "gondola", None)),
    ({"display-type": "endcap", "store-format": "flagship", "planogram-id": "pg-7"},
     ("flagship", "endcap", "pg-7")),
    ({"store-format": "<script>", "display-type": "end\ncap"}, ("standard", "gondola", None)),
    ({"planogram-id": "p" * 65}, ("standard", "gondola", None)),
    ({"store": "S999", "bay": "B9"}, ("standard", "gondola", None)),
], ids=["none", "all-three", "unsafe-values", "too-long", "identity-ignored"])
def test_object_metadata_adds_only_what_the_key_cannot_say(
        metadata: dict[str, str], expected: tuple[str, str, str | None]) -> None:
    from pipeline.messages import PhotoRef

    base = PhotoRef(bucket="raw", key="raw/S1/A1/B1/c1/p.jpg", store="S1", bay="B1")
    got = base.with_metadata(metadata)
    assert (got.store_format, got.display_type, got.planogram_id) == expected
    assert (got.store, got.bay) == ("S1", "B1")


def eventbridge(*, key: str = "raw/store-001/aisle-07/bay-03/cam-2/IMG 0001+a.jpg",
                detail_type: str = "Object Created", reason: str | None = "PutObject",
                version_id: str | None = "3HL4kqtJlcpXroDTDmjVBH40Nrjfkd") -> dict[str, Any]:
    """An S3 event as EventBridge delivers it to an SQS target (key as stored)."""
    obj: dict[str, Any] = {"key": key, "size": 1843221,
                           "etag": "0123456789abcdef0123456789abcdef",
                           "sequencer": "0055AED6DCD90281E5"}
    if version_id is not None:
        obj["version-id"] = version_id
    detail: dict[str, Any] = {"version": "0", "bucket": {"name": BUCKET}, "object": obj,
                              "request-id": "C3D13FE58DE4C810", "requester": "123456789012",
                              "source-ip-address": "203.0.113.17"}
    if reason is not None:
        detail["reason"] = reason
    return {"version": "0", "id": "17793124-05d4-b198-2fde-7ededc63b103",
            "detail-type": detail_type, "source": "aws.s3", "account": "123456789012",
            "time": "2024-05-14T08:31:07Z", "region": "eu-west-1",
            "resources": [f"arn:aws:s3:::{BUCKET}"], "detail": detail}


@pytest.mark.parametrize("key", [
    "raw/store-001/aisle-07/bay-03/cam-2/IMG 0001+a.jpg",
    "raw/café-lyon/a1/b1/c1/pêche%20.jpg",
    "raw/s/a/b/c/plain.jpg",
], ids=["space-and-plus", "unicode-and-percent", "plain"])
def test_eventbridge_event_is_one_record_with_the_stored_key(key: str) -> None:
    # Given S3 -> EventBridge -> SQS, which carries the key as stored, not URL-encoded
    raw = json.dumps(eventbridge(key=key))

    # When parsed
    (rec,) = parse_body(raw)

    # Then it reads as the notification S3 would have sent for the same object
    assert rec.key == key
    assert rec.bucket == BUCKET
    assert rec.event_name == "ObjectCreated:PutObject"
    assert rec.event_time == datetime(2024, 5, 14, 8, 31, 7, tzinfo=UTC)
    assert rec.version == "3HL4kqtJlcpXroDTDmjVBH40Nrjfkd"
    assert rec.s3.object.size == 1843221


def test_eventbridge_and_notification_of_one_object_share_its_version() -> None:
    # Both routes configured: the listener's duplicate check must see one object version
    (via_bridge,) = parse_body(json.dumps(eventbridge(version_id=None)))
    (via_sqs,) = parse_body(body(s3_record(key="raw/store-001/aisle-07/bay-03/cam-2/"
                                           "IMG+0001%2Ba.jpg", version_id=None)))

    assert (via_bridge.bucket, via_bridge.key, via_bridge.version) == \
        (via_sqs.bucket, via_sqs.key, via_sqs.version)


@pytest.mark.parametrize(("detail_type", "reason", "event_name"), [
    ("Object Created", "CompleteMultipartUpload", "ObjectCreated:CompleteMultipartUpload"),
    ("Object Created", None, "ObjectCreated"),
    ("Object Deleted", "DeleteObject", "ObjectRemoved:DeleteObject"),
    ("Object Tags Added", None, "ObjectTagsAdded"),
], ids=["multipart", "no-reason", "deleted", "other-kind"])
def test_eventbridge_event_names(detail_type: str, reason: str | None,
                                 event_name: str) -> None:
    (rec,) = parse_body(json.dumps(eventbridge(detail_type=detail_type, reason=reason)))

    assert rec.event_name == event_name


def _bridge_without(*path: str) -> str:
    return json.dumps(_dropped(eventbridge(), path))


@pytest.mark.parametrize("raw", [
    _bridge_without("detail"),
    _bridge_without("detail", "object"),
    _bridge_without("detail", "object", "key"),
    _bridge_without("detail", "bucket"),
    json.dumps({**eventbridge(), "detail": "raw/s/a/b/c/f.jpg"}),
    json.dumps({**eventbridge(), "detail": {**eventbridge()["detail"], "object": {"key": 7}}}),
    json.dumps(eventbridge(key="raw/s/a/b/c/\ud800.jpg")),
    json.dumps(eventbridge(key="raw/s/a/b/c/a\nb.jpg")),
], ids=["no-detail", "no-object", "no-key", "no-bucket", "detail-a-string", "key-a-number",
        "lone-surrogate-key", "control-character-key"])
def test_malformed_eventbridge_events_are_malformed(raw: str) -> None:
    with pytest.raises(MalformedEventError):
        parse_body(raw)


@pytest.mark.parametrize("bad", [{"eventName": 3}, "a string", None, [1, 2],
                                 {"eventName": "ObjectCreated:Put", "s3": {"bucket": {}}}],
                         ids=["name-not-text", "string", "null", "list", "no-object"])
def test_a_bad_record_is_refused_alone_and_the_others_are_read(bad: object) -> None:
    good = {"eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "b"}, "object": {"key": "raw/s/a/b/c/x.jpg"}}}
    parsed = parse_message(json.dumps({"Records": [good, bad, good]}))
    assert [r.key for r in parsed.records] == ["raw/s/a/b/c/x.jpg"] * 2
    assert [r.raw for r in parsed.refused] == [bad]
    assert "not an S3 event record" in parsed.refused[0].reason
    with pytest.raises(MalformedEventError, match="not an S3 event record"):
        parse_body(json.dumps({"Records": [good, bad]}))  # all or nothing for tools


@pytest.mark.parametrize(("sent", "expected"), [
    ("yesterday-ish", None),
    ("", None),
    (12345, None),
    (["2024-05-14T08:31:07Z"], None),
    ("2024-05-14T08:31:07.215Z ", datetime(2024, 5, 14, 8, 31, 7, 215000, tzinfo=UTC)),
], ids=["words", "blank", "a-number", "a-list", "padded"])
def test_an_unreadable_event_time_counts_as_none_and_the_record_is_read(
        sent: object, expected: datetime | None) -> None:
    (rec,) = parse_body(_with(("eventTime",), sent))
    assert rec.event_time == expected and rec.key.endswith("IMG_0001.jpg")


@pytest.mark.parametrize("version_id", ["null", "", " "])
def test_a_null_version_is_no_version(version_id: str) -> None:
    # Given two uploads to one key of a bucket whose versioning is suspended
    first, second = (parse_body(body(s3_record(version_id=version_id, etag=etag)))[0]
                     for etag in ("aaa", "bbb"))
    # Then each is told apart by its ETag, as reconciliation tells them apart
    assert first.s3.object.version_id is None
    assert (first.version, second.version) == ("aaa", "bbb")


def test_an_eventbridge_event_nested_deep_inside_is_malformed_as_a_whole() -> None:
    # A field nested almost as deep as the JSON reader allows: its record could not be
    # written back out to the dead-letter queue
    doc = eventbridge()
    doc["detail"]["object"]["size"] = json.loads("[" * 900 + "]" * 900)
    with pytest.raises(MalformedEventError, match="nested more than 32 deep"):
        parse_body(json.dumps(doc))
