"""Pre-signed GETs computed by hand are the URLs botocore signs, byte for byte."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.auth
import pytest
from botocore.config import Config

from pipeline.storage.presign import SigningKeys, presign_get_url
from pipeline.storage.s3 import ObjectStore

NOW = datetime(2026, 3, 9, 23, 59, 58, tzinfo=UTC)


def _client(endpoint: str | None, region: str, token: str | None,
            style: str = "path") -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name=region,
                        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="wJalr/K7+bPx",
                        aws_session_token=token,
                        config=Config(s3={"addressing_style": style}, signature_version="s3v4"))


def _botocore_url(client: Any, monkeypatch: pytest.MonkeyPatch, bucket: str, key: str,
                  expiry_s: int, version_id: str | None) -> str:
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: NOW.replace(tzinfo=None))
    params = {"Bucket": bucket, "Key": key} | ({"VersionId": version_id} if version_id else {})
    return str(client.generate_presigned_url("get_object", Params=params, ExpiresIn=expiry_s))


@pytest.mark.parametrize(("endpoint", "region", "token", "key", "version_id", "expiry_s"), [
    ("http://127.0.0.1:4566", "us-east-1", None, "raw/S1/A1/B1/c1/p.jpg", None, 3600),
    ("http://127.0.0.1:4566", "us-east-1", None, "raw/S 1/a+b/ü~*'()!&=;,$@:.jpg", None, 60),
    ("http://localhost:4566", "eu-west-1", "FwoGZXIvYXdz+/token==", "raw/x/y.JPG",
     "3/L4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY", 604800),
    (None, "eu-central-1", None, "raw/S1/A1/B1/c1/shelf photo 1.jpg", "null", 900),
    (None, "us-east-1", "tok", "raw/%41/%2F//double/slash.jpeg", None, 1),
    ("https://s3.us-west-2.amazonaws.com:443", "us-west-2", None, "raw/a.jpg", "v1", 3600),
])
def test_hand_signed_url_is_the_one_botocore_signs(
        monkeypatch: pytest.MonkeyPatch, endpoint: str | None, region: str, token: str | None,
        key: str, version_id: str | None, expiry_s: int) -> None:
    client = _client(endpoint, region, token)
    expected = _botocore_url(client, monkeypatch, "shelf-raw", key, expiry_s, version_id)
    got = presign_get_url(endpoint_url=client.meta.endpoint_url, region=region,
                          keys=SigningKeys("AKIDEXAMPLE", "wJalr/K7+bPx", token),
                          bucket="shelf-raw", key=key, expiry_s=expiry_s, now=NOW,
                          version_id=version_id)
    assert got == expected


def test_a_different_secret_or_instant_signs_differently() -> None:
    def url(secret: str, now: datetime) -> str:
        return presign_get_url(endpoint_url="http://127.0.0.1:4566", region="us-east-1",
                               keys=SigningKeys("AK", secret), bucket="b", key="k",
                               expiry_s=60, now=now)

    base = url("s1", NOW)
    assert base != url("s2", NOW) and base != url("s1", NOW.replace(second=59))
    assert base.split("X-Amz-Signature=")[0] == url("s2", NOW).split("X-Amz-Signature=")[0]


def test_store_signs_by_hand_only_what_it_signs_as_botocore_would(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A path-style SigV4 client is signed by hand: the URL has botocore's shape and scope
    path_style = ObjectStore(_client("http://127.0.0.1:4566", "us-east-1", None))
    monkeypatch.setattr(path_style.client, "generate_presigned_url", None)  # never called
    url = path_style.presign_get("b", "raw/k.jpg", 60, "v9")
    assert url.startswith("http://127.0.0.1:4566/b/raw/k.jpg?versionId=v9&X-Amz-Algorithm=")
    assert "%2Fus-east-1%2Fs3%2Faws4_request" in url and "X-Amz-Signature=" in url
    # A virtual-hosted one goes through botocore, as before
    virtual = ObjectStore(_client(None, "eu-west-1", None, style="virtual"))
    assert virtual.presign_get("shelf-raw", "raw/k.jpg", 60).startswith(
        "https://shelf-raw.s3.eu-west-1.amazonaws.com/raw/k.jpg?")
