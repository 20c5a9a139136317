"""Apply the declarative resource spec (``localstack/resources.json``) to S3 and SQS.

Idempotent, and the same calls work against AWS: buckets (with versioning), queues with their
redrive policy, the queue policy that lets S3 send, and the bucket's event notifications.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from pipeline.settings import REPO_ROOT, Settings

SPEC_PATH = REPO_ROOT / "localstack" / "resources.json"


def load_spec(path: Path = SPEC_PATH) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def _ensure_bucket(s3: Any, name: str, region: str) -> None:
    try:
        if region == "us-east-1":
            s3.create_bucket(Bucket=name)
        else:
            s3.create_bucket(Bucket=name,
                             CreateBucketConfiguration={"LocationConstraint": region})
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou",
                                                 "BucketAlreadyExists"):
            raise


def _queue_arn(sqs: Any, url: str) -> str:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attrs["Attributes"]["QueueArn"])


def apply_spec(spec: dict[str, Any], *, s3: Any, sqs: Any, region: str,
               rename: Callable[[str], str] = lambda n: n) -> dict[str, str]:
    """Create what ``spec`` declares; returns queue name -> URL."""
    for b in spec["buckets"]:
        name = rename(b["name"])
        _ensure_bucket(s3, name, region)
        if b.get("versioning"):
            s3.put_bucket_versioning(Bucket=name,
                                     VersioningConfiguration={"Status": "Enabled"})
    urls: dict[str, str] = {}
    for q in spec["queues"]:
        name = rename(q["name"])
        attrs = dict(q.get("attributes", {}))
        redrive = q.get("redrive")
        if redrive:
            dlq_arn = _queue_arn(sqs, urls[rename(redrive["dead_letter_queue"])])
            attrs["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": redrive["max_receive_count"]})
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        if attrs:
            sqs.set_queue_attributes(QueueUrl=url, Attributes=attrs)
        urls[name] = url
    for n in spec["notifications"]:
        bucket, queue = rename(n["bucket"]), rename(n["queue"])
        arn = _queue_arn(sqs, urls[queue])
        policy = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"},
            "Action": "sqs:SendMessage", "Resource": arn,
            "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"}}}]}
        sqs.set_queue_attributes(QueueUrl=urls[queue], Attributes={"Policy": json.dumps(policy)})
        # Every object under the prefix, whatever its name: ingest tells a photo by its
        # bytes and dead-letters the rest with why (an iPhone's .HEIC is not lost unseen).
        configs = [{
            "Id": f"{queue}-uploads", "QueueArn": arn, "Events": n["events"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": n["prefix"]}]}},
        }]
        s3.put_bucket_notification_configuration(
            Bucket=bucket, NotificationConfiguration={"QueueConfigurations": configs})
    return urls


def spec_names(settings: Settings) -> dict[str, str]:
    """The spec's resource names mapped to the names these settings use."""
    defaults = Settings.model_construct()
    s3d, s3 = defaults.s3, settings.s3
    return {
        s3d.raw_bucket: s3.raw_bucket, s3d.artifacts_bucket: s3.artifacts_bucket,
        s3d.results_bucket: s3.results_bucket, s3d.config_bucket: s3.config_bucket,
        defaults.sqs.queue: settings.sqs.queue,
        defaults.sqs.dead_letter_queue: settings.sqs.dead_letter_queue,
    }
