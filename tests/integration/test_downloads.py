"""Downloads through pre-signed URLs from the real (LocalStack) S3, checked against the
ETags it gives."""

from __future__ import annotations

import io
import os
import uuid

import pytest
from boto3.s3.transfer import TransferConfig

from pipeline.storage.download import Download, fetch
from tests.conftest import Stack

MIB = 1 << 20


@pytest.mark.parametrize(("size", "chunk", "parts"), [
    (9 * MIB + 7, 8 * MIB, 2),  # boto3's and the AWS CLI's parts
    (11 * MIB, 5 * MIB, 3),  # the Go and JavaScript SDKs'
    (3 * MIB, 5 * MIB, 1),  # one part, as some uploaders send every photo
])
def test_a_multipart_upload_is_checked_against_its_etag(stack: Stack, size: int, chunk: int,
                                                        parts: int) -> None:
    raw = stack.settings.s3.raw_bucket
    key = f"raw/S7/A1/B1/c1/{uuid.uuid4().hex}.jpg"
    data = os.urandom(size)
    if parts == 1:
        up = stack.s3.create_multipart_upload(Bucket=raw, Key=key)
        etag = stack.s3.upload_part(Bucket=raw, Key=key, UploadId=up["UploadId"],
                                    PartNumber=1, Body=data)["ETag"]
        stack.s3.complete_multipart_upload(
            Bucket=raw, Key=key, UploadId=up["UploadId"],
            MultipartUpload={"Parts": [{"ETag": etag, "PartNumber": 1}]})
    else:
        stack.s3.upload_fileobj(io.BytesIO(data), raw, key, Config=TransferConfig(
            multipart_threshold=5 * MIB, multipart_chunksize=chunk))

    got = fetch(stack.store.presign_get(raw, key, 60), max_bytes=64 * MIB, timeout_s=10)

    assert got.data == data
    assert got.etag is not None and got.etag.endswith(f"-{parts}")
    assert got.etag_kind == "parts"
    assert got.damaged() is None
    flipped = bytearray(data)
    flipped[size // 2] ^= 1
    assert Download(bytes(flipped), {}, got.etag, etag_kind="parts").damaged() is not None


def test_a_multipart_upload_of_an_unusual_part_size_is_checked_at_the_size_s3_gives(
        stack: Stack) -> None:
    # Given a photo uploaded in parts of 6 MiB and 12,345 bytes, which nothing guesses
    raw = stack.settings.s3.raw_bucket
    key = f"raw/S7/A1/B1/c1/{uuid.uuid4().hex}.jpg"
    data = os.urandom(13 * MIB)
    part = 6 * MIB + 12_345
    stack.s3.upload_fileobj(io.BytesIO(data), raw, key, Config=TransferConfig(
        multipart_threshold=5 * MIB, multipart_chunksize=part))
    url = stack.store.presign_get(raw, key, 60)
    # Then S3 gives its first part's size, and the bytes check at it
    assert stack.store.first_part_size(raw, key) == part
    got = fetch(url, max_bytes=64 * MIB, timeout_s=10,
                first_part_size=lambda: stack.store.first_part_size(raw, key))
    assert got.data == data and got.damaged() is not None and got.damaged(part) is None


def test_an_object_uploaded_whole_has_no_first_part_size(stack: Stack) -> None:
    raw = stack.settings.s3.raw_bucket
    key = f"raw/S7/A1/B1/c1/{uuid.uuid4().hex}.jpg"
    stack.s3.put_object(Bucket=raw, Key=key, Body=b"jpg")
    assert stack.store.first_part_size(raw, key) is None
