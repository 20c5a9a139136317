"""Stage messages come through the broker: only pre-signed GETs of the raw bucket's photo on
the configured endpoint are fetched."""

from __future__ import annotations

import pytest

from pipeline.errors import ForgedUrlError
from pipeline.storage.download import check_presigned

SIG = "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=x&X-Amz-Signature=abc"
KEY = "raw/S1/A1/B1/cam 1/p+1.jpg"
GOOD_LOCAL = f"http://127.0.0.1:4566/shelf-raw/raw/S1/A1/B1/cam%201/p%2B1.jpg{SIG}"


@pytest.mark.parametrize("url", [
    GOOD_LOCAL,
], ids=["localstack-path-style"])
def test_presigned_url_of_the_photo_is_accepted(url: str) -> None:
    assert check_presigned(url, endpoint_url="http://127.0.0.1:4566", region="us-east-1",
                           bucket="shelf-raw", key=KEY) == url


@pytest.mark.parametrize("url", [
    f"https://shelf-raw.s3.eu-west-1.amazonaws.com/raw/S1/A1/B1/cam%201/p%2B1.jpg{SIG}",
    f"https://s3.eu-west-1.amazonaws.com/shelf-raw/raw/S1/A1/B1/cam%201/p%2B1.jpg{SIG}",
], ids=["virtual-hosted", "path-style"])
def test_aws_urls_are_accepted_without_an_endpoint(url: str) -> None:
    check_presigned(url, endpoint_url=None, region="eu-west-1", bucket="shelf-raw", key=KEY)


@pytest.mark.parametrize(("url", "reason"), [
    ("file:///etc/passwd", "scheme"),
    ("data:image/jpeg;base64,/9j/4AAQ", "scheme"),
    ("ftp://127.0.0.1:4566/shelf-raw/x.jpg", "scheme"),
    (f"http://169.254.169.254/latest/meta-data/{SIG}", "not the configured S3 endpoint"),
    (f"http://127.0.0.1:6390/shelf-raw/{KEY}{SIG}", "not the configured S3 endpoint"),
    (f"http://localhost:4566/shelf-raw/raw/S1/A1/B1/cam%201/p%2B1.jpg{SIG}",
     "not the configured S3 endpoint"),
    (f"http://127.0.0.1:4566/shelf-config/planograms/x.json{SIG}", "does not name"),
    (f"http://127.0.0.1:4566/shelf-raw/raw/S1/A1/B1/other.jpg{SIG}", "does not name"),
    (f"http://127.0.0.1:4566/shelf-raw/raw/S1/A1/B1/cam%201/..%2F..%2Fx{SIG}", "does not name"),
    ("http://127.0.0.1:4566/shelf-raw/raw/S1/A1/B1/cam%201/p%2B1.jpg", "not pre-signed"),
    (f"http://user:pw@127.0.0.1:4566/shelf-raw/{KEY}{SIG}", "credentials"),
    ("http://[::1", "unparseable"),
], ids=["file", "data", "ftp", "metadata-service", "redis-port", "other-host-name",
        "config-bucket", "other-key", "traversal", "unsigned", "userinfo", "garbage"])
def test_anything_else_is_refused(url: str, reason: str) -> None:
    with pytest.raises(ForgedUrlError, match=reason):
        check_presigned(url, endpoint_url="http://127.0.0.1:4566", region="us-east-1",
                        bucket="shelf-raw", key=KEY)


def test_aws_url_for_another_bucket_is_refused() -> None:
    with pytest.raises(ForgedUrlError):
        check_presigned(f"https://evil.s3.eu-west-1.amazonaws.com/{KEY}{SIG}", endpoint_url=None,
                        region="eu-west-1", bucket="shelf-raw", key=KEY)


@pytest.mark.parametrize(("query", "ok"), [
    (f"{SIG}&versionId=V2", True),
    (f"{SIG}&versionId=V1-old", False),  # another version's bytes under this upload's id
    (SIG, False),  # the latest version, whichever that is by the time it is read
    ("?X-Amz-Credential=x&xSignature=1&versionId=V2", False),  # no signature at all
], ids=["its-version", "other-version", "no-version", "signature-lookalike"])
def test_a_versioned_upload_is_read_through_a_url_of_its_version(query: str, ok: bool) -> None:
    url = f"http://127.0.0.1:4566/shelf-raw/raw/S1/A1/B1/cam%201/p%2B1.jpg{query}"
    if ok:
        assert check_presigned(url, endpoint_url="http://127.0.0.1:4566", region="us-east-1",
                               bucket="shelf-raw", key=KEY, version_id="V2") == url
    else:
        with pytest.raises(ForgedUrlError):
            check_presigned(url, endpoint_url="http://127.0.0.1:4566", region="us-east-1",
                            bucket="shelf-raw", key=KEY, version_id="V2")
