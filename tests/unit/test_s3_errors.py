"""What the S3 adapter makes of S3's and botocore's errors: a fault that may pass is
transient (retried), one that cannot is permanent (dead-lettered at once), with a reason."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ParamValidationError
from botocore.stub import Stubber

from pipeline.errors import ObjectNotFoundError, PermanentError, TransientError
from pipeline.storage.s3 import ObjectStore, translate


def _client() -> Any:
    return boto3.client("s3", region_name="us-east-1", aws_access_key_id="k",
                        aws_secret_access_key="s")


def test_a_head_404_of_a_missing_bucket_is_no_answer_yet_not_a_missing_object() -> None:
    # A HEAD's 404 has no body: the object, or its whole bucket (a config bucket a deploy
    # has not created yet), may be the one missing
    client = _client()
    stub = Stubber(client)
    stub.add_client_error("head_object", "404", http_status_code=404)
    stub.add_client_error("head_bucket", "404", http_status_code=404)
    with stub, pytest.raises(TransientError, match="no such bucket"):
        ObjectStore(client).head("shelf-config", "planograms/S1/A1/B1.json")


def test_a_head_404_in_a_bucket_that_is_there_is_a_missing_object_asked_once() -> None:
    client = _client()
    stub = Stubber(client)
    stub.add_client_error("head_object", "404", http_status_code=404)
    stub.add_response("head_bucket", {})
    stub.add_client_error("head_object", "404", http_status_code=404)  # no second head_bucket
    store = ObjectStore(client)
    with stub:
        assert store.head("shelf-config", "planograms/S1/A1/B1.json") is None
        assert store.head("shelf-config", "planograms/S1/A1/B2.json") is None
        stub.assert_no_pending_responses()


def test_a_bucket_one_may_not_list_is_taken_as_there() -> None:
    client = _client()
    stub = Stubber(client)
    stub.add_client_error("head_object", "404", http_status_code=404)
    stub.add_client_error("head_bucket", "403", http_status_code=403)
    with stub:
        assert ObjectStore(client).head("shelf-config", "x.json") is None


def _client_error(code: str | None, status: int) -> Exception:
    from botocore.exceptions import ClientError

    error: dict[str, Any] = {"Message": ""} if code is None else {"Code": code, "Message": ""}
    return ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "GetObject")


@pytest.mark.parametrize(("exc", "kind", "says"), [
    (ParamValidationError(report="Invalid bucket name \"bad/bucket\""), PermanentError,
     "Invalid bucket name"),
    (_client_error(None, 403), PermanentError, "403"),  # a proxy's HTML page: no S3 code
    (_client_error(None, 404), ObjectNotFoundError, "404"),
    (_client_error(None, 503), TransientError, "503"),
    (_client_error("SlowDown", 503), TransientError, "SlowDown"),
    (_client_error("AccessDenied", 403), PermanentError, "AccessDenied"),
], ids=["param-validation", "html-403", "html-404", "html-503", "slow-down", "access-denied"])
def test_errors_are_sorted_with_a_reason(exc: Exception, kind: type[Exception], says: str
                                         ) -> None:
    err = translate(exc, "get s3://b/k")
    assert type(err) is kind and says in str(err)
